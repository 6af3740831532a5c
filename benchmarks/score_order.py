"""Do the pre-trained actor's actions score above the dataset's own? DARE's premise at the switch to online.

DARE's exchange (ALGORITHM.md, piece 6) assumes that online samples score higher (further from the behaviour model)
than the dataset's. The tier-M runs measured the opposite on all three tasks with energy guidance (docs/benchmarks.md,
"What the scores measured"). This script asks, without an online run, which readings of the score (piece 4's
options: K reference actions, mean or likelihood reduction, the kernel width sigma) and whether guidance give the
assumed order. On dataset states of an offline checkpoint of the suite it scores

- the dataset's actions,
- the pre-trained actor's samples (what the first online transitions hold: SB3 collects with ``deterministic=False``),
- the actor's mean actions,

against K reference actions drawn once per state and guidance scale (every score setting and source sees the same
draws), and reports each source's mean and standard deviation of the score (what the exchange's Gaussians are fitted
to) and the AUC: the probability that an actor action scores above a dataset action (0.5: no order; the exchange
assumes the online samples score higher), with its standard error (Hanley and McNeil). The K = 1 rows use the first
of the K references: DARE's default score, in distribution. It also reports the decomposition
``mean_k d_k = (||a - m||^2 + tr S) / (2 sigma^2)`` with m and S the K references' mean and (biased) covariance per
state, which is exact, and the unbiased estimates of the distance from the sampler's mean and of its spread; and the
share of action components at the bounds; with a guided model, how steep the energy network's training target is
(:func:`energy_target`). The states are the dataset's, not those the actor visits online: a reading of the first
online transitions only.

Usage::

    python benchmarks/score_order.py --checkpoint benchmarks/cache/checkpoints/iql/o2o-cpu-hopper-medium-v0/seed0-<key>
    python benchmarks/score_order.py --checkpoint DIR --behavior DIR/behavior-<key>.pt --states 8192 --out order.json
    python benchmarks/score_order.py --summary benchmarks/results/score_order   # summary.md over the JSONs there

``--checkpoint`` is a folder the suite (``benchmarks/o2o_suite.py``) wrote: ``model.zip``, ``meta.json`` (family and
dataset) and the behaviour models fitted for it (``behavior-*.pt``); the guided one is used unless ``--behavior``
names another. Scored with the model's own guidance scale and with none, or with the scales ``--guidance-scales``
lists (a sweep: where between no guidance and the model's scale does the order turn?).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sb3_dare.dare.behavior import BehaviorModel

#: (K reference actions, reduction, sigma) per row; K = 1 is DARE's default score.
SCORE_SETTINGS: tuple[tuple[int, str, float], ...] = (
    (1, "mean", 1.0),
    (16, "mean", 1.0),
    (16, "likelihood", 1.0),
    (16, "likelihood", 0.3),
    (16, "likelihood", 0.1),
)
SOURCES = ("dataset", "actor_sample", "actor_mean")
#: an action component this close to a bound of [-1, 1] counts as at the bound
BOUND_MARGIN = 0.01


def auc(higher: np.ndarray, lower: np.ndarray) -> float:
    """
    P(X > Y) + P(X = Y) / 2 for X drawn from ``higher`` and Y from ``lower`` (the Mann-Whitney statistic over n m).

    :param higher: scores of the first sample, 1-D, finite
    :param lower: scores of the second sample, 1-D, finite
    :return: the probability, in [0, 1]
    """
    higher, lower = np.asarray(higher, dtype=np.float64), np.asarray(lower, dtype=np.float64)
    for name, values in (("higher", higher), ("lower", lower)):
        if values.ndim != 1 or len(values) == 0 or not np.isfinite(values).all():
            raise ValueError(f"auc needs two non-empty 1-D arrays of finite scores; {name} has shape {values.shape}.")
    pooled = np.concatenate([higher, lower])
    order = np.argsort(pooled, kind="mergesort")
    ranks = np.empty(len(pooled))
    ranks[order] = np.arange(1, len(pooled) + 1)
    # ties share their mean rank
    values, inverse, counts = np.unique(pooled, return_inverse=True, return_counts=True)
    if len(values) < len(pooled):
        rank_sums = np.bincount(inverse, weights=ranks)
        ranks = (rank_sums / counts)[inverse]
    n, m = len(higher), len(lower)
    return float((ranks[:n].sum() - n * (n + 1) / 2) / (n * m))


def auc_standard_error(value: float, n: int, m: int) -> float:
    """
    The AUC's standard error by Hanley and McNeil (1982), for independent samples of sizes ``n`` and ``m``.

    :param value: the AUC
    :param n: size of the first sample
    :param m: size of the second sample
    :return: the standard error
    """
    q1, q2 = value / (2 - value), 2 * value**2 / (1 + value)
    variance = (value * (1 - value) + (n - 1) * (q1 - value**2) + (m - 1) * (q2 - value**2)) / (n * m)
    return float(np.sqrt(max(variance, 0.0)))


def score_order(
    behavior: BehaviorModel,
    observations: np.ndarray,
    actions: Mapping[str, np.ndarray],
    guidance_scales: Sequence[float],
    settings: Sequence[tuple[int, str, float]] = SCORE_SETTINGS,
    seed: int = 0,
) -> dict[str, Any]:
    """
    Score each source of actions under every guidance scale and score setting, on shared reference actions.

    :param behavior: a fitted behaviour model
    :param observations: (n, obs_dim) raw observations
    :param actions: source name -> (n, action_dim) actions at those observations; ``"dataset"`` must be one
    :param guidance_scales: the guidance scales to sample the references with
    :param settings: (K, reduction, sigma) per row; the references are the first K of max(K) drawn per state
    :param seed: seed of the reference draws (the same for every guidance scale)
    :return: ``rows``: one per (guidance scale, setting), with each source's mean and standard deviation of the score
        and every other source's AUC (and its standard error) against the dataset; ``references``: one per guidance
        scale, with the spread of the max(K) references and each source's distance from their mean (the exact
        decomposition's parts and their unbiased estimates) and the shares of action components at the bounds
    """
    import torch as th

    from sb3_dare.dare.alignment import scores_from_references

    if "dataset" not in actions:
        raise ValueError("actions must include the source 'dataset' (the order is measured against it).")
    if not settings or any(k < 1 for k, _, _ in settings):
        raise ValueError(f"settings must be a non-empty list of (K >= 1, reduction, sigma), got {list(settings)}.")
    n_states = len(observations)
    for name, value in actions.items():
        if np.shape(value)[:1] != (n_states,):
            raise ValueError(f"actions[{name!r}] has shape {np.shape(value)}: it needs one row per observation ({n_states}).")
    n_references = max(k for k, _, _ in settings)
    observations_t = th.as_tensor(observations, dtype=th.float32, device=behavior.device)
    actions_t = {name: th.as_tensor(value, dtype=th.float32, device=behavior.device) for name, value in actions.items()}
    rows: list[dict[str, Any]] = []
    references_summary: list[dict[str, Any]] = []
    for guidance_scale in guidance_scales:
        generator = th.Generator(device=behavior.device).manual_seed(seed)
        with th.no_grad():
            references = behavior.sample(
                observations_t, n_samples=n_references, generator=generator, guidance_scale=guidance_scale
            )
        reference_mean = references.mean(dim=1)
        # tr S per state: the references' (biased) variance summed over the action dimensions
        spread = float((references - reference_mean.unsqueeze(1)).pow(2).sum(dim=-1).mean(dim=1).mean())
        distance = {name: float((value - reference_mean).pow(2).sum(dim=-1).mean()) for name, value in actions_t.items()}
        block: dict[str, Any] = {
            "guidance_scale": guidance_scale,
            "n_reference_samples": n_references,
            # mean_k ||a_k - a||^2 = ||a - m||^2 + tr S exactly, with m and S the K references' mean and biased covariance
            "spread_tr_S": spread,
            "distance_to_reference_mean": distance,
            "at_bounds": {
                "references": float((references.abs() > 1 - BOUND_MARGIN).float().mean()),
                **{name: float((value.abs() > 1 - BOUND_MARGIN).float().mean()) for name, value in actions_t.items()},
            },
        }
        if n_references > 1:
            # E[tr S] = tr Sigma (K - 1) / K and E||a - m||^2 = ||a - mu||^2 + tr Sigma / K: the unbiased estimates
            spread_unbiased = spread * n_references / (n_references - 1)
            block["spread_tr_Sigma_unbiased"] = spread_unbiased
            block["distance_to_sampler_mean_unbiased"] = {
                name: value - spread_unbiased / n_references for name, value in distance.items()
            }
        references_summary.append(block)
        for k, reduction, sigma in settings:
            scores = {
                name: scores_from_references(references[:, :k], value, reduction=reduction, sigma=sigma).cpu().numpy()
                for name, value in actions_t.items()
            }
            aucs = {name: auc(value, scores["dataset"]) for name, value in scores.items() if name != "dataset"}
            rows.append(
                {
                    "guidance_scale": guidance_scale,
                    "n_reference_samples": k,
                    "reduction": reduction,
                    "sigma": sigma,
                    "mean_score": {name: float(value.mean()) for name, value in scores.items()},
                    "std_score": {name: float(value.std()) for name, value in scores.items()},
                    "auc_vs_dataset": aucs,
                    "auc_standard_error": {
                        name: auc_standard_error(value, n_states, n_states) for name, value in aucs.items()
                    },
                }
            )
    return {"rows": rows, "references": references_summary}


def energy_target(
    q_function: Callable[[Any, Any], Any],
    behavior: BehaviorModel,
    observations: np.ndarray,
    energy_beta: float,
    guidance_scale: float,
    n_support_actions: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """
    How peaked the energy network's training target is: CEP fits the energy to softmax_j(beta_e Q(s, a_j)) over
    unguided support actions a_j, and guided sampling then aims at about mu(a|s) exp(w beta_e Q(s, a)).

    :param q_function: (observations, actions) -> Q, the critic the energy was trained against
    :param behavior: the behaviour model (its unguided samples are the support actions)
    :param observations: (n, obs_dim) raw observations
    :param energy_beta: CEP's inverse temperature beta_e
    :param guidance_scale: the guidance scale w
    :param n_support_actions: support actions per state (the suite's default, 16)
    :param seed: seed of the support actions
    :return: medians over the states of the Q range across the support actions, of the target's entropy (at most
        log M) and largest probability, and w beta_e times the Q range (the guided target's log density ratio between
        the best and the worst support action)
    """
    import torch as th

    generator = th.Generator(device=behavior.device).manual_seed(seed)
    observations_t = th.as_tensor(observations, dtype=th.float32, device=behavior.device)
    with th.no_grad():
        support = behavior.sample(observations_t, n_samples=n_support_actions, generator=generator, guidance_scale=0.0)
        repeated = observations_t.repeat_interleave(n_support_actions, dim=0)
        q_values = q_function(repeated, support.reshape(-1, support.shape[-1])).reshape(-1, n_support_actions)
    probabilities = th.softmax(energy_beta * q_values, dim=1)
    entropy = -(probabilities * th.log(probabilities.clamp_min(1e-30))).sum(dim=1)
    q_range = q_values.max(dim=1).values - q_values.min(dim=1).values
    return {
        "energy_beta": energy_beta,
        "guidance_scale": guidance_scale,
        "n_support_actions": n_support_actions,
        "q_range_median": float(q_range.median()),
        "target_entropy_median": float(entropy.median()),
        "target_entropy_max": float(np.log(n_support_actions)),
        "target_max_probability_median": float(probabilities.max(dim=1).values.median()),
        "guided_log_ratio_median": float(guidance_scale * energy_beta * q_range.median()),
    }


def actor_actions(model: Any, observations: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """
    The actor's actions at ``observations``, drawn without touching the global random state.

    :param model: a loaded IQL or CalQL model
    :param observations: (n, obs_dim) raw observations
    :param seed: seed of the actor's samples
    :return: ``actor_sample`` (as SB3 collects online: ``deterministic=False``) and ``actor_mean``
    """
    import torch as th

    with th.random.fork_rng():
        th.manual_seed(seed)
        sampled, _ = model.predict(observations, deterministic=False)
    mean, _ = model.predict(observations, deterministic=True)
    return {"actor_sample": np.asarray(sampled, dtype=np.float32), "actor_mean": np.asarray(mean, dtype=np.float32)}


def guided_behavior_model(folder: Path) -> tuple[Path, BehaviorModel]:
    """
    The one guided behaviour model (with a trained energy network) among a checkpoint folder's ``behavior-*.pt``.

    :param folder: a suite checkpoint folder
    :return: the file's path and the loaded model (each file is loaded once to find it, so it is not loaded again)
    """
    from sb3_dare.dare.behavior import load_behavior_model

    files = sorted(folder.glob("behavior-*.pt"))
    guided = [(path, model) for path in files if (model := load_behavior_model(path)).has_energy]
    if len(guided) != 1:
        found = ", ".join(path.name for path in files) or "none"
        problem = "no guided behaviour model" if not guided else "several guided behaviour models"
        raise SystemExit(
            f"{folder} holds {problem} (behaviour files: {found}). Name one with --behavior, or run a DARE variant "
            "with guidance on this checkpoint first (o2o_suite.py)."
        )
    return guided[0]


def markdown(result: Mapping[str, Any]) -> str:
    """
    One result as Markdown: the scores and AUCs per setting, and the references' decomposition per guidance scale.

    :param result: a result as :func:`main` writes it
    :return: the tables
    """
    lines = [
        f"{result['family']} checkpoint of {result['task']} seed {result['seed']}, {result['n_states']} dataset states",
        "",
        "| guidance | K | reduction | sigma | dataset | actor sample | actor mean | AUC sample | AUC mean |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        means, aucs = row["mean_score"], row["auc_vs_dataset"]
        lines.append(
            f"| {row['guidance_scale']:g} | {row['n_reference_samples']} | {row['reduction']} | {row['sigma']:g} | "
            f"{means['dataset']:.3f} | {means['actor_sample']:.3f} | {means['actor_mean']:.3f} | "
            f"{aucs['actor_sample']:.3f} | {aucs['actor_mean']:.3f} |"
        )
    lines += [
        "",
        "| guidance | tr S | distance^2 to m: dataset | actor sample | actor mean | at bounds: references | dataset |",
        "|---|---|---|---|---|---|---|",
    ]
    for block in result["references"]:
        distance = block["distance_to_reference_mean"]
        lines.append(
            f"| {block['guidance_scale']:g} | {block['spread_tr_S']:.3f} | {distance['dataset']:.3f} | "
            f"{distance['actor_sample']:.3f} | {distance['actor_mean']:.3f} | "
            f"{block['at_bounds']['references']:.3f} | {block['at_bounds']['dataset']:.3f} |"
        )
    target = result.get("energy_target")
    if target is not None:
        lines += [
            "",
            f"energy target (beta_e {target['energy_beta']:g}, medians): Q range {target['q_range_median']:.2f}, entropy "
            f"{target['target_entropy_median']:.2f} of {target['target_entropy_max']:.2f}, largest probability "
            f"{target['target_max_probability_median']:.2f}, w beta_e Q range {target['guided_log_ratio_median']:.0f}",
        ]
    return "\n".join(lines) + "\n"


def _default_and_other_aucs(result: Mapping[str, Any], guidance_scale: float) -> tuple[dict[str, Any] | None, list[float]]:
    """
    A result's rows at one guidance scale, split as the summary tables read them.

    :param result: a result as :func:`main` writes it
    :param guidance_scale: the guidance scale
    :return: the row of DARE's default score (K = 1; None if not scored) and the actor-sample AUCs of the other rows
    """
    rows = [row for row in result["rows"] if row["guidance_scale"] == guidance_scale]
    default = next((row for row in rows if row["n_reference_samples"] == 1), None)
    return default, [row["auc_vs_dataset"]["actor_sample"] for row in rows if row is not default]


def summary(results_dir: Path) -> str:
    """
    One Markdown table over the result JSONs in ``results_dir``: per checkpoint and guidance scale, DARE's default
    score (K = 1) of the dataset and the actor's samples, their AUC, the AUC's range over the other readings, and the
    references' decomposition.

    :param results_dir: a folder of JSONs written by ``score_order.py --out``
    :return: the Markdown text
    """
    lines = [
        "# Score order at the switch (`benchmarks/score_order.py`)",
        "",
        "AUC: the probability that an action of the pre-trained actor (a sample, as collected online) scores above a",
        "dataset action on the same dataset states (0.5: no order; standard errors about 0.006 at 4,096 states each).",
        "DARE's exchange assumes the online samples score higher: read the mean scores too, which the exchange's",
        "Gaussians are fitted to. K = 1: DARE's default score. Other readings: K = 16 reference actions, mean or",
        "likelihood, sigma 1, 0.3 and 0.1. tr Sigma: the behaviour sampler's spread; distance: the mean squared",
        "distance of each source's actions from the sampler's mean (both unbiased estimates from 16 references per",
        "state); at bounds: the share of action components within 0.01 of the action bounds (references, data).",
        "",
        "| family | task | seed | guidance | states | score, dataset (K = 1) | score, actor sample (K = 1) | AUC (K = 1) "
        "| AUC, other readings | tr Sigma | distance: dataset | actor sample | actor mean | at bounds: references "
        "| dataset |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    results = []
    for path in sorted(results_dir.glob("*.json")):
        result = json.loads(path.read_text())
        if not isinstance(result, dict) or not {"family", "task", "seed", "rows", "references"} <= result.keys():
            raise SystemExit(f"{path} is not a result of score_order.py --out; move it out of {results_dir}.")
        results.append(result)
    results.sort(key=lambda result: (result["family"], result["task"], result["seed"]))
    for result in results:
        for block in sorted(result["references"], key=lambda block: -block["guidance_scale"]):
            guidance = block["guidance_scale"]
            default, others = _default_and_other_aucs(result, guidance)
            spread = block.get("spread_tr_Sigma_unbiased", block["spread_tr_S"])
            distance = block.get("distance_to_sampler_mean_unbiased", block["distance_to_reference_mean"])
            default_cells = (
                f"{default['mean_score']['dataset']:.3f} | {default['mean_score']['actor_sample']:.3f} | "
                f"{default['auc_vs_dataset']['actor_sample']:.2f}"
                if default is not None
                else "n/a | n/a | n/a"
            )
            other_cells = f"{min(others):.2f} to {max(others):.2f}" if others else "n/a"
            lines.append(
                f"| {result['family']} | {result['task']} | {result['seed']} | {guidance:g} | {result['n_states']} | "
                f"{default_cells} | {other_cells} | {spread:.3f} | {distance['dataset']:.3f} | "
                f"{distance['actor_sample']:.3f} | {distance['actor_mean']:.3f} | "
                f"{block['at_bounds']['references']:.3f} | {block['at_bounds']['dataset']:.3f} |"
            )
    scales = sorted({block["guidance_scale"] for result in results for block in result["references"]})
    if len(scales) > 2:
        lines += [
            "",
            "By guidance scale: the AUC of the actor's samples against the data with DARE's default score (K = 1), and in",
            "brackets its range over the other readings; '-': not scored. Every scale of a checkpoint reuses the same",
            "noise, so the columns differ only by the guidance.",
            "",
            "| family | task | seed | " + " | ".join(f"w = {w:g}" for w in scales) + " |",
            "|---|---|---|" + "---|" * len(scales),
        ]
        for result in results:
            cells = []
            for w in scales:
                default, others = _default_and_other_aucs(result, w)
                cell = "-" if default is None else f"{default['auc_vs_dataset']['actor_sample']:.2f}"
                if others:
                    cell += f" ({min(others):.2f}-{max(others):.2f})"
                cells.append(cell)
            lines.append(f"| {result['family']} | {result['task']} | {result['seed']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Energy target (CEP): the energy is fitted to softmax_j(beta_e Q(s, a_j)) over 16 unguided support actions per",
        "state; guided sampling aims at about mu(a|s) exp(w beta_e Q(s, a)). Medians over the states: the Q range across",
        "the support actions, the target's entropy (at most log 16 = 2.77) and largest probability, and w beta_e times",
        "the Q range (the guided target's log density ratio between the best and the worst support action).",
        "",
        "| family | task | seed | w | beta_e | Q range | target entropy | largest probability | w beta_e Q range |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        target = result.get("energy_target")
        if target is not None:
            lines.append(
                f"| {result['family']} | {result['task']} | {result['seed']} | {target['guidance_scale']:g} | "
                f"{target['energy_beta']:g} | {target['q_range_median']:.2f} | {target['target_entropy_median']:.2f} | "
                f"{target['target_max_probability_median']:.2f} | {target['guided_log_ratio_median']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """
    The command line: score one checkpoint (``--checkpoint``), or tabulate results (``--summary``).

    :param argv: the arguments (default: ``sys.argv[1:]``)
    :return: the exit status
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--checkpoint", type=Path, help="a suite checkpoint folder (model.zip, meta.json)")
    target.add_argument("--summary", type=Path, help="write summary.md over the result JSONs in this folder, and stop")
    parser.add_argument("--behavior", type=Path, help="behaviour model file (default: the folder's guided one)")
    parser.add_argument("--states", type=int, default=4096, help="dataset states scored (default 4096)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the states, actor samples and references")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--energy-beta", type=float, default=3.0, help="CEP's beta_e the energy was fitted with (3)")
    parser.add_argument(
        "--guidance-scales",
        type=float,
        nargs="+",
        metavar="W",
        help="guidance scales to draw the references with (default: the behaviour model's own and 0); every scale "
        "reuses the same noise, so a scale's rows do not depend on which others are listed",
    )
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args(argv)
    if args.summary is not None:
        if not args.summary.is_dir():
            raise SystemExit(f"--summary {args.summary}: no such folder.")
        text = summary(args.summary)
        (args.summary / "summary.md").write_text(text)
        print(text, end="")
        return 0
    if args.states < 2:
        raise SystemExit(f"--states must be at least 2, got {args.states}.")
    if args.threads < 1:
        raise SystemExit(f"--threads must be at least 1, got {args.threads}.")
    if args.guidance_scales is not None and not all(np.isfinite(w) and w >= 0 for w in args.guidance_scales):
        raise SystemExit(f"--guidance-scales must be finite and >= 0 (0: no guidance), got {args.guidance_scales}.")
    if args.behavior is not None and not args.behavior.is_file():
        raise SystemExit(f"--behavior {args.behavior}: no such file (a behaviour model written by BehaviorModel.save).")
    meta_path, model_path = args.checkpoint / "meta.json", args.checkpoint / "model.zip"
    if not (meta_path.is_file() and model_path.is_file()):
        raise SystemExit(f"{args.checkpoint} is not a suite checkpoint folder: it needs model.zip and meta.json.")
    config = json.loads(meta_path.read_text()).get("offline_config")
    if not isinstance(config, dict) or not {"family", "task", "seed"} <= config.keys():
        raise SystemExit(f"{meta_path} has no offline_config with family, task and seed: not written by o2o_suite.py.")

    import torch as th

    import sb3_dare
    from sb3_dare import IQL, CalQL
    from sb3_dare.common.o2o import O2OAlgorithm
    from sb3_dare.dare.behavior import load_behavior_model
    from sb3_dare.dare.dare import guidance_q_values
    from sb3_dare.data import load_offline_data

    classes: dict[str, type[O2OAlgorithm]] = {"iql": IQL, "calql": CalQL}
    if config["family"] not in classes:
        raise SystemExit(f"Unknown checkpoint family {config['family']!r}; expected one of {list(classes)}.")
    th.set_num_threads(args.threads)
    if args.behavior is not None:
        behavior_path, behavior = args.behavior, load_behavior_model(args.behavior)
    else:
        behavior_path, behavior = guided_behavior_model(args.checkpoint)
    # the guidance scale the file was saved with: the suite fits its guided models at the task's scale (DARE's default)
    guidance = float(getattr(behavior, "guidance_scale", 0.0))
    scales = {guidance, 0.0} if args.guidance_scales is None else set(args.guidance_scales)
    if max(scales) > 0 and not behavior.has_energy:  # checked before the model and the dataset are loaded
        raise SystemExit(f"{behavior_path} has no energy network: only --guidance-scales 0 can be scored with it.")
    model = classes[config["family"]].load(str(model_path), device="cpu")
    data = load_offline_data(config["task"])
    rng = np.random.default_rng(args.seed)
    index = np.sort(rng.choice(len(data.observations), size=min(args.states, len(data.observations)), replace=False))
    observations = np.asarray(data.observations[index], dtype=np.float32)
    actions = {"dataset": np.asarray(data.actions[index], dtype=np.float32), **actor_actions(model, observations, args.seed)}
    start = time.perf_counter()
    scored = score_order(behavior, observations, actions, sorted(scales, reverse=True), seed=args.seed)
    if guidance > 0:
        critic = functools.partial(guidance_q_values, model)  # what DARE fitted the energy against
        scored["energy_target"] = energy_target(critic, behavior, observations, args.energy_beta, guidance, seed=args.seed)
    result = {
        "family": config["family"],
        "task": config["task"],
        "seed": config["seed"],
        # the cache folder's and file's own names: the key of the offline config and of the behaviour model's settings
        "checkpoint": args.checkpoint.name,
        "behavior": Path(behavior_path).name,
        "versions": {"sb3_dare": sb3_dare.__version__, "torch": th.__version__},
        "n_states": len(index),
        "scoring_s": time.perf_counter() - start,
        **scored,
    }
    print(markdown(result), end="")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
