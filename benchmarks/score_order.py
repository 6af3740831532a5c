"""Do the pre-trained actor's actions score above the dataset's own? DARE's premise at the switch to online.

DARE's exchange (ALGORITHM.md, piece 6) assumes that online samples score higher (further from the behaviour model)
than the dataset's. The tier-M runs measured the opposite on all three tasks with energy guidance (docs/benchmarks.md,
"What the scores measured"). This script asks, without an online run, which readings of the score (piece 4's
options: K reference actions, mean or likelihood reduction, the kernel width sigma) and whether guidance give the
assumed order. On dataset states of an offline checkpoint of the suite it scores

- the dataset's actions,
- the pre-trained actor's samples (what the first online transitions hold: SB3 collects with ``deterministic=False``),
- the actor's mean actions,

against K reference actions drawn once per state and guidance setting (so every score setting and source sees the
same references: a paired comparison), and reports each source's mean score and the AUC: the probability that an
actor action scores above a dataset action (0.5: no order; above 0.5: the order DARE assumes). The K = 1 rows are
the scores DARE uses by default (the first reference of the K). It also reports the decomposition
``mean_k d_k = (||a - m||^2 + tr S) / (2 sigma^2)`` with m and S the references' mean and covariance per state,
which says why a source scores low: its distance from the reference mean, while ``tr S`` is the behaviour's spread.
The states are the dataset's, not those the actor visits online: a reading of the first online transitions only.

Usage::

    python benchmarks/score_order.py --checkpoint benchmarks/cache/checkpoints/iql/o2o-cpu-hopper-medium-v0/seed0-<key>
    python benchmarks/score_order.py --checkpoint DIR --behavior DIR/behavior-<key>.pt --states 8192 --out order.json
    python benchmarks/score_order.py --summary benchmarks/results/score_order   # summary.md over the JSONs there

``--checkpoint`` is a folder the suite (``benchmarks/o2o_suite.py``) wrote: ``model.zip``, ``meta.json`` (family and
dataset) and the behaviour models fitted for it (``behavior-*.pt``); the guided one is used unless ``--behavior``
names another. Scored with the model's own guidance scale and with none.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

#: (K reference actions, reduction, sigma) per row; K = 1 is DARE's default score.
SCORE_SETTINGS: tuple[tuple[int, str, float], ...] = (
    (1, "mean", 1.0),
    (16, "mean", 1.0),
    (16, "likelihood", 1.0),
    (16, "likelihood", 0.3),
    (16, "likelihood", 0.1),
)
SOURCES = ("dataset", "actor_sample", "actor_mean")


def auc(higher: np.ndarray, lower: np.ndarray) -> float:
    """
    P(X > Y) + P(X = Y) / 2 for X drawn from ``higher`` and Y from ``lower`` (the Mann-Whitney statistic over n m).

    :param higher: scores of the first sample
    :param lower: scores of the second sample
    :return: the probability, in [0, 1]
    """
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


def score_order(
    behavior: Any,
    observations: np.ndarray,
    actions: dict[str, np.ndarray],
    guidance_scales: list[float],
    settings: tuple[tuple[int, str, float], ...] = SCORE_SETTINGS,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """
    Score each source of actions under every guidance scale and score setting, on shared reference actions.

    :param behavior: a fitted behaviour model
    :param observations: (n, obs_dim) raw observations
    :param actions: source name -> (n, action_dim) actions at those observations; ``"dataset"`` must be one
    :param guidance_scales: the guidance scales to sample the references with
    :param settings: (K, reduction, sigma) per row; the references are the first K of max(K) drawn per state
    :param seed: seed of the reference draws (the same for every guidance scale)
    :return: one row per (guidance scale, setting): mean score per source, AUC of every other source against the
        dataset, and (on the rows with the most references and ``"mean"``) the distance and spread decomposition
    """
    import torch as th

    from sb3_dare.dare.alignment import scores_from_references

    if "dataset" not in actions:
        raise ValueError("actions must include the source 'dataset' (the order is measured against it).")
    n_references = max(k for k, _, _ in settings)
    observations_t = th.as_tensor(observations, dtype=th.float32, device=behavior.device)
    actions_t = {name: th.as_tensor(value, dtype=th.float32, device=behavior.device) for name, value in actions.items()}
    rows = []
    for guidance_scale in guidance_scales:
        generator = th.Generator(device=behavior.device).manual_seed(seed)
        with th.no_grad():
            references = behavior.sample(
                observations_t, n_samples=n_references, generator=generator, guidance_scale=guidance_scale
            )
        reference_mean = references.mean(dim=1)
        # tr S per state: the references' (biased) variance summed over the action dimensions
        spread = (references - reference_mean.unsqueeze(1)).pow(2).sum(dim=-1).mean(dim=1)
        for k, reduction, sigma in settings:
            row: dict[str, Any] = {
                "guidance_scale": guidance_scale,
                "n_reference_samples": k,
                "reduction": reduction,
                "sigma": sigma,
            }
            scores = {
                name: scores_from_references(references[:, :k], value, reduction=reduction, sigma=sigma).cpu().numpy()
                for name, value in actions_t.items()
            }
            row["mean_score"] = {name: float(value.mean()) for name, value in scores.items()}
            row["auc_vs_dataset"] = {
                name: auc(value, scores["dataset"]) for name, value in scores.items() if name != "dataset"
            }
            if k == n_references and reduction == "mean":
                row["decomposition"] = {
                    "spread_tr_S": float(spread.mean()),
                    # action components within 0.01 of the bounds: where guidance pushes the references
                    "at_bounds": {
                        "references": float((references.abs() > 0.99).float().mean()),
                        **{name: float((value.abs() > 0.99).float().mean()) for name, value in actions_t.items()},
                    },
                    "distance_to_reference_mean": {
                        name: float((value - reference_mean).pow(2).sum(dim=-1).mean()) for name, value in actions_t.items()
                    },
                }
            rows.append(row)
    return rows


def actor_actions(model: Any, observations: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The actor's samples (as SB3 collects online) and mean actions at ``observations``."""
    import torch as th

    th.manual_seed(seed)
    sampled, _ = model.predict(observations, deterministic=False)
    mean, _ = model.predict(observations, deterministic=True)
    return {"actor_sample": np.asarray(sampled, dtype=np.float32), "actor_mean": np.asarray(mean, dtype=np.float32)}


def _guided_behavior_file(folder: Path) -> Path:
    from sb3_dare.dare.behavior import load_behavior_model

    files = sorted(folder.glob("behavior-*.pt"))
    guided = [path for path in files if load_behavior_model(path).has_energy]
    if not guided:
        found = ", ".join(path.name for path in files) or "none"
        raise SystemExit(
            f"{folder} holds no guided behaviour model (behaviour files: {found}). Run a DARE variant with guidance on "
            "this checkpoint first (o2o_suite.py), or name a behaviour model with --behavior."
        )
    return guided[0]


def markdown(result: dict[str, Any]) -> str:
    """The rows as a Markdown table."""
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
    for row in result["rows"]:
        if "decomposition" in row:
            parts = row["decomposition"]
            distance = parts["distance_to_reference_mean"]
            lines.append(
                f"| {row['guidance_scale']:g} | {parts['spread_tr_S']:.3f} | {distance['dataset']:.3f} | "
                f"{distance['actor_sample']:.3f} | {distance['actor_mean']:.3f} | "
                f"{parts['at_bounds']['references']:.3f} | {parts['at_bounds']['dataset']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def summary(results_dir: Path) -> str:
    """
    One Markdown table over the result JSONs in ``results_dir``: per checkpoint and guidance scale, DARE's default
    score (K = 1) of the dataset and the actor's samples, their AUC, the AUC's range over the other readings, and the
    decomposition (the spread and each source's distance from the references' mean).
    """
    lines = [
        "# Score order at the switch (`benchmarks/score_order.py`)",
        "",
        "AUC: the probability that an action of the pre-trained actor (a sample, as collected online) scores above a",
        "dataset action on the same dataset states; DARE's exchange assumes above 0.5. K = 1: DARE's default score.",
        "Other readings: K = 16 reference actions, mean or likelihood, sigma 1, 0.3 and 0.1. tr S: the behaviour",
        "sampler's spread; distance: the mean squared distance from the sampler's mean (16 references per state); at",
        "bounds: the share of action components within 0.01 of the action bounds (of the references, of the data).",
        "",
        "| family | task | seed | guidance | states | score, dataset (K = 1) | score, actor sample (K = 1) | AUC (K = 1) "
        "| AUC, other readings | tr S | distance: dataset | actor sample | actor mean | at bounds: references | dataset |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    results = [json.loads(path.read_text()) for path in sorted(results_dir.glob("*.json"))]
    results.sort(key=lambda result: (result["family"], result["task"], result["seed"]))
    for result in results:
        for guidance in sorted({row["guidance_scale"] for row in result["rows"]}, reverse=True):
            rows = [row for row in result["rows"] if row["guidance_scale"] == guidance]
            default = next(row for row in rows if row["n_reference_samples"] == 1)
            others = [row["auc_vs_dataset"]["actor_sample"] for row in rows if row is not default]
            parts = next(row["decomposition"] for row in rows if "decomposition" in row)
            distance = parts["distance_to_reference_mean"]
            lines.append(
                f"| {result['family']} | {result['task']} | {result['seed']} | {guidance:g} | {result['n_states']} | "
                f"{default['mean_score']['dataset']:.3f} | {default['mean_score']['actor_sample']:.3f} | "
                f"{default['auc_vs_dataset']['actor_sample']:.2f} | {min(others):.2f} to {max(others):.2f} | "
                f"{parts['spread_tr_S']:.3f} | {distance['dataset']:.3f} | {distance['actor_sample']:.3f} | "
                f"{distance['actor_mean']:.3f} | {parts['at_bounds']['references']:.3f} | "
                f"{parts['at_bounds']['dataset']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="a suite checkpoint folder (model.zip, meta.json)")
    parser.add_argument("--summary", type=Path, help="write summary.md over the result JSONs in this folder, and stop")
    parser.add_argument("--behavior", type=Path, help="behaviour model file (default: the folder's guided one)")
    parser.add_argument("--states", type=int, default=4096, help="dataset states scored (default 4096)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the states, actor samples and references")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args(argv)
    if args.summary is not None:
        text = summary(args.summary)
        (args.summary / "summary.md").write_text(text)
        print(text, end="")
        return 0
    if args.checkpoint is None:
        parser.error("name a checkpoint folder with --checkpoint (or a results folder with --summary)")

    import torch as th

    import sb3_dare
    from sb3_dare import IQL, CalQL
    from sb3_dare.dare.behavior import load_behavior_model
    from sb3_dare.data import load_offline_data

    th.set_num_threads(args.threads)
    meta_path, model_path = args.checkpoint / "meta.json", args.checkpoint / "model.zip"
    if not (meta_path.is_file() and model_path.is_file()):
        raise SystemExit(f"{args.checkpoint} is not a suite checkpoint folder: it needs model.zip and meta.json.")
    if args.states < 2:
        raise SystemExit(f"--states must be at least 2, got {args.states}.")
    config = json.loads(meta_path.read_text())["offline_config"]
    classes = {"iql": IQL, "calql": CalQL}
    if config["family"] not in classes:
        raise SystemExit(f"Unknown checkpoint family {config['family']!r}; expected one of {list(classes)}.")
    behavior_path = args.behavior or _guided_behavior_file(args.checkpoint)
    behavior = load_behavior_model(behavior_path)
    model = classes[config["family"]].load(str(model_path), device="cpu")
    data = load_offline_data(config["task"])
    rng = np.random.default_rng(args.seed)
    index = np.sort(rng.choice(len(data.observations), size=min(args.states, len(data.observations)), replace=False))
    observations = np.asarray(data.observations[index], dtype=np.float32)
    actions = {"dataset": np.asarray(data.actions[index], dtype=np.float32), **actor_actions(model, observations, args.seed)}
    guidance = float(getattr(behavior, "guidance_scale", 0.0))
    start = time.perf_counter()
    rows = score_order(behavior, observations, actions, sorted({guidance, 0.0}, reverse=True), seed=args.seed)
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
        "rows": rows,
    }
    print(markdown(result), end="")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
