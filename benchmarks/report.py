"""Report of the O2O quality suite: metrics, IQM with 95 % stratified bootstrap intervals (rliable), figures, summary.

Reads every run JSON that ``benchmarks/o2o_suite.py`` wrote, computes per run the metrics of ``BENCHMARKS.md``

- offline score: the evaluation at the end of the offline phase;
- final score: the mean of the last 3 online evaluations;
- dip: the offline score minus the lowest score in the first 20 % of the online phase, floored at 0;
- online AUC: the area under the online curve (trapezoids from the switch, where the curve starts at the offline
  score, to the last online evaluation), divided by the online steps it spans: the curve's mean level, in score
  points;

then per (tier, task, algorithm, variant) the IQM across seeds with a 95 % stratified bootstrap interval
(``rliable``), over tasks too where every task has the same seeds. It writes ``summary.md`` next to the JSONs, with the
compute cost (wall-clock minutes, updates/s) next to every score, paired comparisons of DARE with its base and of each
ablation with the paper's rule (mean difference per seed, 95 % Student-t interval), stated plainly, DARE's exchange
diagnostics as a table, and PNG figures (learning curves with shaded intervals, DARE's
exchange diagnostics), each saying how many seeds and steps are behind it.

Usage: ``python benchmarks/report.py [--results-dir benchmarks/results/o2o] [--reps 2000]``.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DIP_FRACTION = 0.2
FINAL_LAST = 3
MIN_SEEDS_FOR_CLAIM = 3  # fewer paired seeds never yield "beats" or "is worse than"
CLAIM_WORDS = ("beats", "is worse than")  # the verdicts that claim a difference
MAX_SEEDS_SHOWN_AS_RANGE = 4  # the IQM's percentile bootstrap interval of at most 4 values is their range
BASE_OF = {"dare_iql": "iql", "dare_calql": "calql"}
# The primary (confirmatory) comparisons test the paper's two claims (ALGORITHM.md): DARE + base beats the base after
# fine-tuning (final score) with a smaller dip at the switch. The online AUC is reported, as a secondary comparison.
PRIMARY_METRICS = ("final", "dip")
DISPLAY = {"iql": "IQL", "dare_iql": "DARE_IQL", "calql": "CalQL", "dare_calql": "DARE_CalQL", "d3rlpy_iql": "d3rlpy IQL"}

# ---------------------------------------------------------------------------------------------- per-run metrics


def _phase(evaluations: Sequence[dict[str, Any]], phase: str) -> list[tuple[int, float]]:
    points = [(int(item["step"]), float(item["normalized_score"])) for item in evaluations if item["phase"] == phase]
    return sorted(points)


def offline_score(evaluations: Sequence[dict[str, Any]]) -> float | None:
    """The score of the last offline evaluation (the end of the offline phase), or None without one."""
    points = _phase(evaluations, "offline")
    return points[-1][1] if points else None


def final_score(evaluations: Sequence[dict[str, Any]], n_last: int = FINAL_LAST) -> float | None:
    """The mean score of the last ``n_last`` online evaluations (fewer if fewer exist), or None without one."""
    points = _phase(evaluations, "online")
    return float(np.mean([score for _, score in points[-n_last:]])) if points else None


def dip(evaluations: Sequence[dict[str, Any]], online_steps: int, fraction: float = DIP_FRACTION) -> float | None:
    """
    The drop after the switch: the offline score minus the lowest online score at steps <= ``fraction`` of the
    online phase, floored at 0. None when either side is missing.
    """
    start = offline_score(evaluations)
    early = [score for step, score in _phase(evaluations, "online") if step <= fraction * online_steps]
    if start is None or not early:
        return None
    return max(0.0, start - min(early))


def online_auc(evaluations: Sequence[dict[str, Any]]) -> float | None:
    """
    The area under the online curve divided by the steps it spans (its mean level, in score points): trapezoids
    over the online evaluations, the curve starting at step 0 from the offline score when there is one.
    """
    points = _phase(evaluations, "online")
    if not points:
        return None
    start = offline_score(evaluations)
    if start is not None and points[0][0] > 0:
        points = [(0, start), *points]
    if len(points) == 1:
        return points[0][1]
    steps = np.array([step for step, _ in points], dtype=float)
    scores = np.array([score for _, score in points], dtype=float)
    area = float(np.sum((scores[1:] + scores[:-1]) / 2 * np.diff(steps)))
    return area / float(steps[-1] - steps[0])


def run_metrics(result: dict[str, Any]) -> dict[str, float | None]:
    """The four scores of one run and its compute cost (minutes and rates)."""
    evaluations = result["evaluations"]
    online_steps = int(result["config"]["spec"]["online_steps"])
    compute = result["compute"]
    switch = compute.get("switch", {})
    return {
        "offline": offline_score(evaluations),
        "final": final_score(evaluations),
        "dip": dip(evaluations, online_steps),
        "auc": online_auc(evaluations),
        "offline_min": compute["offline"]["wall_clock_s"] / 60,
        "switch_min": (switch.get("behavior_fit_s", 0.0) + switch.get("scoring_and_setup_s", 0.0)) / 60,
        "online_min": compute["online"]["wall_clock_s"] / 60,
        "total_min": compute["total_wall_clock_s"] / 60,
        "offline_ups": compute["offline"]["updates_per_second"],
        "online_sps": compute["online"]["steps_per_second"],
        "behavior_reused": bool(switch.get("behavior_fit_reused")),
        "load": float(np.mean([result["machine"][when]["load_average"][0] for when in ("at_start", "at_end")])),
    }


# ---------------------------------------------------------------------------------------------- rliable


def _rliable() -> tuple[Any, Any]:
    """
    rliable's ``library`` and ``metrics``. rliable 1.2 needs arch < 8, and arch 7.2 calls pandas' private
    ``deprecate_kwarg`` with its pandas-2 signature, which pandas 3 changed: while arch is imported, a shim passes the
    warning class that pandas 3 expects first. Nothing else is changed.
    """
    try:
        from rliable import library, metrics
    except TypeError:
        import pandas.util._decorators as decorators

        original = decorators.deprecate_kwarg

        def compatible(*args: Any, **kwargs: Any) -> Any:
            if args and isinstance(args[0], str):
                return original(FutureWarning, *args, **kwargs)
            return original(*args, **kwargs)

        decorators.deprecate_kwarg = compatible  # type: ignore[assignment]
        try:
            import sys

            for name in [module for module in sys.modules if module == "arch" or module.startswith(("arch.", "rliable"))]:
                del sys.modules[name]
            from rliable import library, metrics
        finally:
            decorators.deprecate_kwarg = original  # type: ignore[assignment]
    return library, metrics


@contextlib.contextmanager
def _seeded_global_numpy(seed: int) -> Iterator[None]:
    """
    Seed NumPy's global generator for the block, then restore its state: rliable 1.2's stratified bootstrap draws
    its indices from ``np.random.choice`` and ignores the ``random_state`` it is given, so without this every report
    run gave other interval ends.
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def iqm_interval(scores: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """
    IQM of ``scores`` (runs x tasks) and its 95 % stratified bootstrap interval (runs resampled within each task).

    :return: (IQM, lower, upper)
    """
    library, metrics = _rliable()
    scores = np.asarray(scores, dtype=float).reshape(len(scores), -1)
    with warnings.catch_warnings(), _seeded_global_numpy(seed):
        warnings.simplefilter("ignore", FutureWarning)  # arch 7.2 announces a change of its random_state argument
        points, intervals = library.get_interval_estimates(
            {"x": scores},
            lambda values: np.array([metrics.aggregate_iqm(values)]),
            reps=reps,
            random_state=np.random.RandomState(seed),
        )
    return float(points["x"][0]), float(intervals["x"][0, 0]), float(intervals["x"][1, 0])


def _no_spread(values: np.ndarray) -> bool:
    """Whether the values are all equal up to rounding (scores subtracted in float64 differ in the last bits)."""
    return bool(np.ptp(values) <= 1e-9 * max(1.0, float(np.abs(values).max())))


def paired_interval(differences: np.ndarray) -> tuple[float, float, float]:
    """
    Mean of paired differences with its 95 % Student-t interval over seeds: one difference per seed, or a (seeds x
    tasks) table, whose per-seed means over the tasks are the replicates (tasks are fixed strata, seeds independent).

    Not the percentile bootstrap: with 3 to 5 seeds it covers well under 95 % (about 85 % at 5 seeds for normal data),
    which would overstate every verdict built on it.

    :param differences: (seeds,) or (seeds, tasks) paired differences
    :return: (mean, lower, upper); the interval is NaN with fewer than 2 seeds, and when every seed's difference is the
        same (no spread to estimate an interval from: a zero-width interval would turn any constant into a claim)
    """
    from scipy import stats

    values = np.asarray(differences, dtype=float)
    per_seed = values.mean(axis=1) if values.ndim == 2 else values
    mean = float(per_seed.mean())
    if len(per_seed) < 2 or _no_spread(per_seed):
        return mean, float("nan"), float("nan")
    half_width = float(stats.t.ppf(0.975, len(per_seed) - 1) * per_seed.std(ddof=1) / np.sqrt(len(per_seed)))
    return mean, mean - half_width, mean + half_width


def paired_p_value(differences: np.ndarray) -> float:
    """
    Two-sided p-value of the paired t-test of :func:`paired_interval` (mean difference 0), on the same replicates.

    :param differences: (seeds,) or (seeds, tasks) paired differences
    :return: the p-value; NaN with fewer than 2 seeds or no spread (see :func:`paired_interval`)
    """
    from scipy import stats

    values = np.asarray(differences, dtype=float)
    per_seed = values.mean(axis=1) if values.ndim == 2 else values
    if len(per_seed) < 2:
        return float("nan")
    if _no_spread(per_seed):
        return float("nan")
    spread = per_seed.std(ddof=1)
    t_statistic = per_seed.mean() / (spread / np.sqrt(len(per_seed)))
    return float(2 * stats.t.sf(abs(t_statistic), len(per_seed) - 1))


def holm_adjusted(p_values: Sequence[float], family_size: int | None = None) -> list[float]:
    """
    Holm's step-down adjustment of a family of p-values (NaN entries are left out of the family and stay NaN): a
    comparison whose adjusted value is below 0.05 keeps its verdict with a 5 % chance of any false claim in the family.

    :param p_values: the family's raw p-values
    :param family_size: the size of a family fixed in advance, of which ``p_values`` are the comparisons measured so
        far; the others count as p = 1 (they rank last, so each measured p-value at rank r, from 0, is multiplied by
        ``family_size - r``). Default: the measured ones are the family.
    :return: the adjusted p-values, in the same order
    """
    indexed = sorted((value, index) for index, value in enumerate(p_values) if np.isfinite(value))
    size = len(indexed) if family_size is None else max(family_size, len(indexed))
    adjusted = [float("nan")] * len(p_values)
    running = 0.0
    for rank, (value, index) in enumerate(indexed):
        running = max(running, min(1.0, (size - rank) * value))
        adjusted[index] = running
    return adjusted


def planned_primary_family_size(tier: str) -> int | None:
    """
    The number of primary comparisons a tier's plan makes (``o2o_suite.TIERS``), fixed before any result: for each DARE
    algorithm of the tier's default matrix against its base, each of :data:`PRIMARY_METRICS` on each task of the tier
    and over its tasks (when it has several). Tier M: 2 algorithms x (3 tasks + over tasks) x 2 metrics = 16; tier S
    (the IQL family on one task): 2. A tier whose budgets were overridden
    (``M-custom-<hash>``) has the plan of its tier; None for a tier the suite does not define.
    """
    from o2o_suite import TIERS, build_matrix  # the suite's plan; a neighbour script, as for the other benchmarks

    plan = TIERS.get(tier.split("-custom-")[0])
    if plan is None:
        return None
    n_tasks = len(plan.tasks)
    # the DARE algorithms the tier's default matrix runs (tier S: the IQL family only)
    dare_algorithms = {algorithm for algorithm, _, _, _ in build_matrix(plan) if algorithm in BASE_OF}
    return len(dare_algorithms) * (n_tasks + (1 if n_tasks > 1 else 0)) * len(PRIMARY_METRICS)


class Comparison:
    """
    One paired comparison's statement, rendered once the Holm adjustments are known: over all the comparisons of its
    tier, and, for a primary one (a DARE algorithm with default settings against its base, on one of
    :data:`PRIMARY_METRICS`), over the tier's planned primary family.
    """

    def __init__(
        self,
        text: str,
        p_value: float,
        prefix: str = "",
        scope: str = "",
        primary: bool = False,
        eligible: bool = True,
        metric: str = "",
    ):
        self.text = text  # ends without a full stop; the rendering adds the p-values
        self.p_value = p_value
        self.metric = metric  # "final", "auc" or "dip"
        # only comparisons that can support a claim (enough seeds) form the families: the others claim nothing
        self.eligible = eligible
        self.prefix = prefix
        self.scope = scope  # the task, or "over N tasks"
        self.primary = primary
        self.adjusted = {"all": float("nan"), "primary": float("nan")}
        self.family_size = {"all": 0, "primary": 0}

    def render(self) -> str:
        if not np.isfinite(self.p_value):
            return f"{self.prefix}{self.text}."
        if not self.eligible:
            return f"{self.prefix}{self.text}; p = {self.p_value:.3f} (too few seeds for a claim: outside the Holm families)."
        adjusted = f"Holm-adjusted {self.adjusted['all']:.3f} over the tier's {self.family_size['all']} comparisons"
        if self.primary:
            adjusted = (
                f"{adjusted}, {self.adjusted['primary']:.3f} over the {self.family_size['primary']} planned primary ones"
            )
        # a primary comparison is judged in its planned family, the others in the tier's
        family_adjusted = self.adjusted["primary" if self.primary else "all"]
        caveat = ""
        if self.verdict in CLAIM_WORDS and not family_adjusted < 0.05:
            caveat = f": '{self.verdict}' holds for this comparison alone, not after Holm's adjustment"
        return f"{self.prefix}{self.text}; p = {self.p_value:.3f}, {adjusted}{caveat}."

    @property
    def verdict(self) -> str:
        """The verdict word of the statement (``beats``, ``is worse than`` or ``does not beat``)."""
        return next((word for word in (*CLAIM_WORDS, "does not beat") if f" {word} " in self.text), "")


def adjust_and_render(
    lines: Sequence[str | Comparison], primary_family_size: int | None = None
) -> tuple[list[str], dict[str, list[Comparison]]]:
    """
    Holm-adjust the comparisons among ``lines`` (a tier's) as two families, and render them; other lines pass through.
    The family of all comparisons holds those that can support a claim (at least :data:`MIN_SEEDS_FOR_CLAIM` seeds);
    the primary family is fixed by the tier's plan (:func:`planned_primary_family_size`), the primary comparisons not
    yet measured with enough seeds counting as p = 1, so that adding results cannot choose the family.

    :param lines: a tier's lines
    :param primary_family_size: the planned size of the primary family (None: the primary comparisons measured)
    :return: the rendered lines, and per family (``"all"``, ``"primary"``) its comparisons with an adjusted p < 0.05
    """
    everything = [line for line in lines if isinstance(line, Comparison) and line.eligible and np.isfinite(line.p_value)]
    kept: dict[str, list[Comparison]] = {}
    families = (("all", everything, None), ("primary", [c for c in everything if c.primary], primary_family_size))
    for name, family, planned in families:
        size = len(family) if planned is None else max(planned, len(family))
        for comparison, adjusted in zip(family, holm_adjusted([c.p_value for c in family], size), strict=True):
            comparison.adjusted[name], comparison.family_size[name] = adjusted, size
        kept[name] = [c for c in family if c.adjusted[name] < 0.05]
    rendered = [line.render() if isinstance(line, Comparison) else line for line in lines]
    return rendered, kept


def _is_primary(key: tuple[str, str], reference: tuple[str, str]) -> bool:
    """DARE with default settings against its base: the comparison the suite exists for."""
    return key[1] == "default" and key[0] in BASE_OF and reference == (BASE_OF[key[0]], "default")


def _tagged(statements: list[str | Comparison], scope: str, primary: bool) -> list[str | Comparison]:
    for statement in statements:
        if isinstance(statement, Comparison):
            statement.scope, statement.primary = scope, primary and statement.metric in PRIMARY_METRICS
    return statements


# ---------------------------------------------------------------------------------------------- loading and grouping


def load_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every finished run JSON under ``results_dir``."""
    results = []
    for path in sorted(glob.glob(str(results_dir / "*.json"))):
        with open(path) as file:
            data = json.load(file)
        if isinstance(data, dict) and data.get("status") == "done" and "evaluations" in data:
            results.append(data)
    return results


def label(algorithm: str, variant: str) -> str:
    """``DARE_IQL`` for the default variant, ``DARE_IQL [exchange-origin]`` for an ablation."""
    name = DISPLAY.get(algorithm, algorithm)
    return name if variant == "default" else f"{name} [{variant}]"


def short_task(task: str) -> str:
    """``o2o-cpu/hopper/medium-v0`` -> ``hopper/medium``."""
    parts = task.split("/")
    return f"{parts[-2]}/{parts[-1].rsplit('-v', 1)[0]}" if len(parts) >= 2 else task


Group = dict[tuple[str, str], dict[int, dict[str, Any]]]  # (algorithm, variant) -> seed -> result


def group_results(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, Group]]:
    """tier -> task -> (algorithm, variant) -> seed -> result."""
    grouped: dict[str, dict[str, Group]] = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    for result in results:
        grouped[result["tier"]][result["task"]][(result["algorithm"], result["variant"])][int(result["seed"])] = result
    return grouped


def _order(key: tuple[str, str]) -> tuple[int, int, str]:
    algorithms = ["iql", "dare_iql", "calql", "dare_calql", "d3rlpy_iql"]
    algorithm, variant = key
    rank = algorithms.index(algorithm) if algorithm in algorithms else len(algorithms)
    return (rank, 0 if variant == "default" else 1, variant)


# ---------------------------------------------------------------------------------------------- formatting


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _fmt_interval(point: float, low: float, high: float, seeds: int, per_task: bool = False) -> str:
    """
    An IQM and its bootstrap interval; written ``(n seeds: low to high)`` rather than ``[low, high]`` when there are
    too few seeds for a 95 % interval: the percentile bootstrap of the IQM of at most 4 values reaches their lowest
    and highest (a resample repeating the lowest value three times out of four has that IQM, with probability 5 %),
    so on one task it is the seeds' range; over tasks (``per_task``: ``seeds`` a task) it covers well under 95 %.
    """
    if seeds < 2:
        return f"{point:.1f} (1 seed)"
    if seeds <= MAX_SEEDS_SHOWN_AS_RANGE:
        return f"{point:.1f} ({seeds} seeds{' a task' if per_task else ''}: {low:.1f} to {high:.1f})"
    return f"{point:.1f} [{low:.1f}, {high:.1f}]"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _steps(value: int) -> str:
    return f"{value // 1000}k" if value >= 1000 and value % 1000 == 0 else str(value)


def _budget(result: dict[str, Any]) -> str:
    spec = result["config"]["spec"]
    return (
        f"{_steps(spec['offline_steps'])} offline + {_steps(spec['online_steps'])} online steps, "
        f"evaluation every {_steps(spec['online_eval_freq'])} steps ({_plural(spec['eval_episodes'], 'episode')})"
    )


# ---------------------------------------------------------------------------------------------- figures


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(task: str, groups: Group, path: Path, reps: int) -> str:
    """Learning curves of every (algorithm, variant) of a task: IQM over seeds with the 95 % interval shaded."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(9, 5))
    seed_counts = []
    any_result = None
    for key in sorted(groups, key=_order):
        runs = groups[key]
        any_result = next(iter(runs.values()))
        offline_steps = int(any_result["config"]["spec"]["offline_steps"])
        by_x: dict[int, list[float]] = defaultdict(list)
        for result in runs.values():
            for item in result["evaluations"]:
                x = int(item["step"]) - offline_steps if item["phase"] == "offline" else int(item["step"])
                by_x[x].append(float(item["normalized_score"]))
        xs = sorted(by_x)
        estimates = [iqm_interval(np.array(by_x[x]), reps=reps) for x in xs]
        line = axis.plot(xs, [e[0] for e in estimates], label=f"{label(*key)} (n={len(runs)})")[0]
        if len(runs) > 1:
            axis.fill_between(xs, [e[1] for e in estimates], [e[2] for e in estimates], color=line.get_color(), alpha=0.2)
        seed_counts.append(len(runs))
    axis.axvline(0, color="grey", linestyle="--", linewidth=1)
    axis.text(0, axis.get_ylim()[1], " switch to online", va="top", fontsize=8, color="grey")
    axis.set_xlabel("offline gradient steps (< 0), then online environment steps (> 0)")
    axis.set_ylabel("normalised score (x100)")
    seeds = f"{min(seed_counts)}" if min(seed_counts) == max(seed_counts) else f"{min(seed_counts)}-{max(seed_counts)}"
    assert any_result is not None
    axis.set_title(f"{short_task(task)}: IQM and 95% CI over {seeds} seed(s)\n{_budget(any_result)}", fontsize=10)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path.name


def plot_exchange_diagnostics(task: str, key: tuple[str, str], runs: dict[int, dict[str, Any]], path: Path) -> str | None:
    """DARE's exchange diagnostics over the online phase: every seed (thin) and their mean on a common grid (bold)."""
    series = {seed: result["dare_diagnostics"] for seed, result in runs.items() if result.get("dare_diagnostics")}
    series = {seed: data for seed, data in series.items() if data.get("step")}
    if not series:
        return None
    plt = _pyplot()
    any_result = next(iter(runs.values()))
    online_steps = int(any_result["config"]["spec"]["online_steps"])
    grid = np.linspace(0, online_steps, 101)
    panels = (
        ("offline-like fraction of the batch", ("offline_like_fraction",)),
        ("exchanged samples per batch", ("exchanged_off_to_on", "exchanged_on_to_off")),
        ("score Gaussians: mean (offline / online buffer)", ("mu_off", "mu_on")),
        ("overlap (Bhattacharyya): by origin / offline-like vs online-like", ("overlap", "split_overlap")),
    )
    figure, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for axis, (title, keys) in zip(axes.flat, panels, strict=True):
        for index, name in enumerate(keys):
            color = f"C{index}"
            stacked = []
            for data in series.values():
                steps = np.array(data["step"], dtype=float)
                values = np.array([np.nan if value is None else value for value in data.get(name, [])], dtype=float)
                if len(values) != len(steps) or not len(values):
                    continue
                axis.plot(steps, values, color=color, alpha=0.3, linewidth=0.8)
                stacked.append(np.interp(grid, steps, values, left=np.nan, right=np.nan))
            if stacked:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # grid points outside every seed's logged range
                    mean = np.nanmean(np.vstack(stacked), axis=0)
                axis.plot(grid, mean, color=color, linewidth=2, label=name)
        axis.set_title(title, fontsize=10)
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    for axis in axes[1]:
        axis.set_xlabel("online environment steps")
    figure.suptitle(
        f"{label(*key)} on {short_task(task)}: exchange diagnostics, {_plural(len(series), 'seed')} "
        "(thin: each seed, bold: mean over seeds)\n"
        f"{_budget(any_result)}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path.name


# ---------------------------------------------------------------------------------------------- comparisons


# the compared metrics: (run_metrics key, higher is better, name in the statements)
PAIRED_METRICS = (("final", True, "final score"), ("auc", True, "online AUC"), ("dip", False, "dip"))


def _fmt_difference_interval(low: float, high: float, seeds: int) -> str:
    if seeds < 2:
        return "(no interval)"
    if not (np.isfinite(low) and np.isfinite(high)):
        return "(no interval: every seed's difference is the same)"
    return f"[{low:+.1f}, {high:+.1f}]"


def _verdict(low: float, high: float, higher_is_better: bool, enough: bool = True) -> str:
    """``beats`` / ``is worse than`` when the 95 % interval of (challenger - reference) excludes 0, else ``does not beat``."""
    if enough and (low > 0 if higher_is_better else high < 0):
        return "beats"
    if enough and (high < 0 if higher_is_better else low > 0):
        return "is worse than"
    return "does not beat"


def paired_verdicts(
    challenger: str,
    reference: str,
    challenger_runs: dict[int, dict[str, Any]],
    reference_runs: dict[int, dict[str, Any]],
) -> list[str | Comparison]:
    """
    Plain statements comparing two (algorithm, variant) groups of a task on the seeds they share (they share the
    offline checkpoint, so the difference is the online phase): final score, online AUC (higher is better) and dip
    (lower is better), each as the mean paired difference with its 95 % Student-t interval (:func:`paired_interval`).

    :param challenger: the challenger's label
    :param reference: the reference's label
    :param challenger_runs: the challenger's runs by seed
    :param reference_runs: the reference's runs by seed
    :return: the statements (each comparison with its p-value, adjusted later over the tier's comparisons)
    """
    seeds = sorted(set(challenger_runs) & set(reference_runs))
    if not seeds:
        return [f"{challenger} and {reference} share no seed: no comparison."]
    lines: list[str | Comparison] = []
    wins = []
    compared_seeds = 0
    for metric, higher_is_better, name in PAIRED_METRICS:
        pairs = [(run_metrics(challenger_runs[s])[metric], run_metrics(reference_runs[s])[metric]) for s in seeds]
        diffs = np.array([a - b for a, b in pairs if a is not None and b is not None])
        if not len(diffs):
            continue
        compared_seeds = max(compared_seeds, len(diffs))
        mean, low, high = paired_interval(diffs)
        word = _verdict(low, high, higher_is_better, enough=len(diffs) >= MIN_SEEDS_FOR_CLAIM)
        wins.append(word == "beats")
        verdict = f"{challenger} {word} {reference}"
        interval = _fmt_difference_interval(low, high, len(diffs))
        direction = "" if higher_is_better else " (lower is better)"
        seeds_text = _plural(len(diffs), "seed")
        text = f"{verdict} on {name}{direction}: mean paired difference {mean:+.1f} {interval} over {seeds_text}"
        lines.append(Comparison(text, paired_p_value(diffs), eligible=len(diffs) >= MIN_SEEDS_FOR_CLAIM, metric=metric))
    if compared_seeds < MIN_SEEDS_FOR_CLAIM:
        lines.append(
            f"{_plural(compared_seeds, 'paired seed')} cannot show a difference, so no claim either way is made "
            f"(a claim needs at least {MIN_SEEDS_FOR_CLAIM} seeds and a 95 % interval that excludes 0)."
        )
    if wins and not any(wins):
        lines.insert(0, f"**{challenger} does not beat {reference} here.**")
    return lines


def welch_interval(first: np.ndarray, second: np.ndarray) -> tuple[float, float, float, float]:
    """
    Difference of the means of two independent groups with its 95 % Welch t interval and two-sided p-value.

    :param first: the first group's values
    :param second: the second group's values
    :return: (mean difference first - second, lower, upper, p); the interval and p are NaN when either group has
        fewer than 2 values or neither has any spread
    """
    from scipy import stats

    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    difference = float(first.mean() - second.mean()) if len(first) and len(second) else float("nan")
    if len(first) < 2 or len(second) < 2 or (_no_spread(first) and _no_spread(second)):
        return difference, float("nan"), float("nan"), float("nan")
    result = stats.ttest_ind(first, second, equal_var=False)
    interval = result.confidence_interval(0.95)
    return difference, float(interval.low), float(interval.high), float(result.pvalue)


def peer_statements(groups: Group, reps: int) -> list[str]:
    """
    The d3rlpy peer against sb3_dare's IQL, unpaired (each has its own offline phase): the final-score IQMs side by
    side, and the difference of the means with its Welch t interval and p-value; a difference is claimed when each
    side has at least 3 seeds and the interval excludes 0 (one such comparison per task, not adjusted: it is outside
    the Holm families, which hold DARE's comparisons).
    """
    peer, ours = groups.get(("d3rlpy_iql", "default")), groups.get(("iql", "default"))
    if not peer or not ours:
        return []
    values = {}
    for name, runs in (("d3rlpy IQL", peer), ("IQL", ours)):
        values[name] = np.array([m for m in (run_metrics(r)["final"] for r in runs.values()) if m is not None])
    peer_values, our_values = values["d3rlpy IQL"], values["IQL"]
    if not len(peer_values) or not len(our_values):
        return []  # runs without a final score (an online phase too short for one)
    peer_text = _fmt_interval(*iqm_interval(peer_values, reps=reps), len(peer_values))
    our_text = _fmt_interval(*iqm_interval(our_values, reps=reps), len(our_values))
    difference, low, high, p_value = welch_interval(peer_values, our_values)
    enough = min(len(peer_values), len(our_values)) >= MIN_SEEDS_FOR_CLAIM
    if enough and (low > 0 or high < 0):
        relation = f"d3rlpy's IQL ends {'higher' if low > 0 else 'lower'} (unadjusted)"
    else:
        relation = "no difference is claimed" + ("" if enough else f" (a claim needs {MIN_SEEDS_FOR_CLAIM} seeds a side)")
    welch = (
        f"difference of the means {difference:+.1f} [{low:+.1f}, {high:+.1f}] (Welch t interval), p = {p_value:.3f}"
        if np.isfinite(low)
        else f"difference of the means {difference:+.1f} (no interval)"
    )
    return [
        f"Peer (unpaired, own offline phase): d3rlpy IQL final score {peer_text} over "
        f"{_plural(len(peer_values), 'seed')}, sb3_dare IQL {our_text} over {_plural(len(our_values), 'seed')}; "
        f"{welch}: {relation}."
    ]


# ---------------------------------------------------------------------------------------------- the summary


def _table_rows(groups: Group, reps: int) -> list[str]:
    rows = [
        "| algorithm | seeds | offline score | final score | dip | online AUC "
        "| cost: wall-clock min (offline + switch + online) | offline updates/s | online steps/s | load average |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(groups, key=_order):
        runs = groups[key]
        per_seed = [run_metrics(result) for result in runs.values()]
        cells = []
        for metric in ("offline", "final", "dip", "auc"):
            values = np.array([m[metric] for m in per_seed if m[metric] is not None])
            cells.append(_fmt_interval(*iqm_interval(values, reps=reps), len(values)) if len(values) else "n/a")

        def mean(name: str, metrics: list[dict[str, Any]] = per_seed) -> float:
            return float(np.mean([m[name] for m in metrics]))

        shared = " (shared checkpoint)" if key[0] != "d3rlpy_iql" else ""
        # a behaviour model fitted by another variant of the seed counts its fit time, as the shared checkpoint does
        shared_fit = " (shared fit)" if any(m["behavior_reused"] for m in per_seed) else ""
        parts = f"{mean('offline_min'):.1f}{shared} + {mean('switch_min'):.1f}{shared_fit} + {mean('online_min'):.1f}"
        cost = f"{mean('total_min'):.1f} = {parts}"
        rows.append(
            f"| {label(*key)} | {len(runs)} | {' | '.join(cells)} | {cost} | {mean('offline_ups'):.1f} | "
            f"{mean('online_sps'):.1f} | {mean('load'):.1f} |"
        )
    return rows


DIAGNOSTICS = (
    ("offline_like_fraction", "offline-like fraction of the batch", 2),
    ("exchanged_off_to_on", "offline-buffer samples made online-like, per batch", 1),
    ("exchanged_on_to_off", "online-buffer samples made offline-like, per batch", 1),
    # the posterior rule's side conditions assume online samples score higher (less behaviour-consistent) than the
    # dataset's; these two columns show whether they did
    ("mu_off", "mean score, offline-buffer samples", 2),
    ("mu_on", "mean score, online-buffer samples", 2),
    ("overlap", "overlap of the two score Gaussians", 2),
    ("split_overlap", "overlap of the offline-like and online-like samples' Gaussians (after the split)", 2),
)


def _diagnostic_cell(series: list[list[float | None] | None], digits: int) -> str:
    """
    Mean over runs of each run's mean over the online phase, from the runs that logged the diagnostic (runs made
    before it existed have no series; non-finite values are stored as None).
    """
    means = []
    for values in series:
        finite = np.array([np.nan if value is None else value for value in values or []], dtype=float)
        if np.isfinite(finite).any():
            means.append(float(np.nanmean(finite)))
    if not means:
        return "n/a (not logged)"
    cell = f"{np.mean(means):.{digits}f}"
    return cell if len(means) == len(series) else f"{cell} ({len(means)} of {len(series)} seeds)"


def _diagnostics_rows(groups: Group) -> list[str]:
    """DARE's exchange per group: each run's mean over the online phase's log windows, then the mean over seeds."""
    rows = []
    for key in sorted(groups, key=_order):
        if key[0] not in BASE_OF:
            continue
        per_run = [r["dare_diagnostics"] for r in groups[key].values() if (r.get("dare_diagnostics") or {}).get("step")]
        if not per_run:
            missing = " | ".join("n/a (no exchange)" for _ in DIAGNOSTICS)
            rows.append(f"| {label(*key)} | {len(groups[key])} | {missing} |")
            continue
        cells = [_diagnostic_cell([run.get(name) for run in per_run], digits) for name, _, digits in DIAGNOSTICS]
        rows.append(f"| {label(*key)} | {len(per_run)} | {' | '.join(cells)} |")
    if not rows:
        return []
    header = "| algorithm | seeds | " + " | ".join(title for _, title, _ in DIAGNOSTICS) + " |"
    intro = (
        "DARE's exchange (means over the online phase; a low score is an action close to the behaviour model's "
        "samples; the posterior rule's side conditions assume that the online samples score above the dataset's):"
    )
    return [intro, "", header, "|---" * (len(DIAGNOSTICS) + 2) + "|", *rows, ""]


def _conditions(results: Sequence[dict[str, Any]]) -> list[str]:
    first = results[0]
    spec = first["config"]["spec"]
    loads = [
        load
        for r in results
        for load in (r["machine"]["at_start"]["load_average"][0], r["machine"]["at_end"]["load_average"][0])
    ]
    cpus = sorted({r["machine"]["at_start"]["cpu_count"] for r in results})
    threads = sorted({r["machine"]["at_start"]["torch_threads"] for r in results})
    ours = [r for r in results if r["algorithm"] != "d3rlpy_iql"] or list(results)
    versions = ours[0]["versions"]
    peer = [r for r in results if r["algorithm"] == "d3rlpy_iql"]
    commits = sorted({(r.get("git") or {}).get("commit") or "unknown" for r in results})
    dirty_runs = [r.get("git") or {} for r in results if (r.get("git") or {}).get("dirty")]
    diffs = {git["diff_sha256"] for git in dirty_runs if git.get("diff_sha256")}
    dirty = ""
    if dirty_runs:
        dirty = f" with uncommitted changes in {_plural(len(dirty_runs), 'run')}"
        unrecorded = sum(1 for git in dirty_runs if "diff_sha256" not in git)
        if diffs:
            dirty += f" ({_plural(len(diffs), 'distinct diff')} recorded"
            dirty += f"; {unrecorded} older runs record none)" if unrecorded else ")"
        else:
            dirty += " (their diffs were not recorded)"
    lines = [
        f"- Budget: {_budget(first)}; batch {spec['batch_size']}; hidden layers {spec['net_arch']} "
        "(actor, critics, value net); offline_ratio 0.5; one update per env step.",
        f"- Machine: {', '.join(map(str, cpus))} CPU cores, torch threads per run {', '.join(map(str, threads))}, "
        f"no GPU (device {spec.get('device', 'cpu')}); 1-minute load average {min(loads):.1f} to {max(loads):.1f} "
        "at the runs' starts and ends (the machine was shared: rates are noisy).",
        "- Versions: " + ", ".join(f"{name} {version}" for name, version in versions.items() if version),
        *(
            ["- Peer row (its own environment): " + ", ".join(f"{n} {v}" for n, v in peer[0]["versions"].items() if v)]
            if peer
            else []
        ),
        f"- Code: commit {', '.join(c[:10] for c in commits)}{dirty}.",
    ]
    dare = [r for r in results if r["config"].get("dare")]
    if dare:
        # the paper's scale differs by dataset kind: list it per task (the default variant's; ablations change it)
        defaults = [r for r in dare if r["variant"] == "default"]
        options = (defaults or dare)[0]["config"]["dare"]
        scales = sorted({(short_task(r["task"]), r["config"]["dare"]["guidance_scale"]) for r in defaults})
        scale_text = ", ".join(f"{task} {scale}" for task, scale in scales) or "see the variants"
        lines.append(
            f"- DARE's behaviour model (reduced budget for this tier): {options['behavior_model']}, "
            f"{options['behavior_steps']} fit steps (lr {options['behavior_kwargs'].get('learning_rate')}), "
            f"{options['energy_steps']} CEP energy steps on at most {options['max_support_states']} states, "
            f"guidance scale {scale_text} (the paper's values for the dataset kinds), exchange "
            f"'{options['exchange']}' for the paper's rule; fitted once per seed and shared by the exchange variants of "
            "that seed (the Gaussian and no-guidance variants fit their own)."
        )
    return lines


def _references(key: tuple[str, str], groups: Group) -> list[tuple[str, tuple[str, str]]]:
    """
    What a DARE group is compared with, as (name, group key): the default variant with its base; an ablation with
    the paper's rule and then with the base (does the variant still beat it?), when the paper's rule was run.
    """
    algorithm, variant = key
    if algorithm not in BASE_OF:
        return []
    base = (BASE_OF[algorithm], "default")
    with_base = [(label(*base), base)] if base in groups else []
    if variant == "default":
        return with_base
    rule = (algorithm, "default")
    return [(f"{label(*rule)} (the paper's rule)", rule), *with_base] if rule in groups else []


def write_summary(results: Sequence[dict[str, Any]], out_dir: Path, reps: int = 2000) -> Path:
    """Write the figures and ``summary.md`` of all ``results``; returns the summary's path."""
    grouped = group_results(results)
    lines = [
        "# O2O quality suite: results",
        "",
        f"Generated by `benchmarks/report.py` from {len(results)} run JSONs in this folder (one per algorithm, task, "
        "seed and variant, written by `benchmarks/o2o_suite.py`). Every number and figure below was measured in those "
        "runs; nothing is extrapolated. Scores are normalised (x100) with the dataset's reference returns. Aggregates "
        "are the IQM across seeds with a 95 % stratified bootstrap interval (rliable), written [low, high]; with 4 seeds "
        "or fewer it is written (n seeds: low to high) instead, because it is no 95 % interval: on one task the IQM's "
        "percentile bootstrap then reaches the lowest and highest seed, so it is their range, and over tasks (n seeds a "
        "task) it covers well under 95 %. "
        "Comparisons are mean paired differences per seed (base and DARE runs of a seed share the offline checkpoint, so "
        "they differ only online) with a 95 % Student-t interval over seeds (the percentile bootstrap covers well under "
        "95 % with 3-5 seeds; the t interval assumes roughly normal differences, which 3-5 seeds cannot check, and the "
        "dip, floored at 0, is far from normal); a comparison says 'beats' or 'is worse than' only with at least 3 seeds "
        "and an interval that excludes 0. Each interval holds for its own comparison, so among many a few exclude 0 by "
        "chance: every comparison also gives its paired t-test p-value and Holm's adjustment over the tier's comparisons "
        "that have enough seeds for a claim (and, for DARE against its base on final score and dip, over the tier's "
        "primary family, fixed by its plan; a primary comparison is judged in that family, the others in the tier's), "
        "each 'beats' or 'is worse than' that does not survive its family's adjustment says so, and each tier starts "
        "with what survives. The peer row (d3rlpy) is compared unpaired: the difference of the means with its Welch t "
        "interval, outside the Holm families. "
        "The IQM intervals' ends move by up to about 2 points between bootstrap seeds, and with 5 seeds the percentile "
        "bootstrap covers nearer 90 % than 95 %. "
        "Metrics: offline score = last offline evaluation; final = mean of the last 3 online evaluations; dip = offline "
        "score minus the lowest score in the first 20 % of the online phase (floored at 0); online AUC = mean level of "
        "the online curve (trapezoids from the switch). Cost = wall-clock minutes (mean over seeds), evaluation time "
        "included (an offline checkpoint or a behaviour model shared by the runs of a seed counts its time in each of them, "
        "marked shared); the rates exclude evaluation time. The machine is shared: the load average column (1-minute, mean of "
        "the run's start and end, on 2 cores) says how busy it was; rates measured under different loads are not a "
        "speed comparison (`benchmarks/speed.py` makes that one, sides alternated).",
        "",
    ]
    for tier in sorted(grouped):
        tier_results = [r for r in results if r["tier"] == tier]
        tier_lines: list[str | Comparison] = []
        for task in sorted(grouped[tier]):
            groups = grouped[tier][task]
            slug = f"{tier}_{task.replace('/', '-')}"
            tier_lines += [
                f"### {short_task(task)} (`{task}`)",
                "",
                *_table_rows(groups, reps),
                "",
                *_diagnostics_rows(groups),
            ]
            statements: list[str | Comparison] = []
            for key in sorted(groups, key=_order):
                for name, reference in _references(key, groups):
                    verdicts = paired_verdicts(label(*key), name, groups[key], groups[reference])
                    statements += _tagged(verdicts, short_task(task), _is_primary(key, reference))
            statements += peer_statements(groups, reps)
            if statements:
                tier_lines += ["Comparisons:", "", *[_bullet(s) for s in statements], ""]
            curve = plot_learning_curves(task, groups, out_dir / f"curves_{slug}.png", reps=min(reps, 1000))
            tier_lines += [f"![learning curves]({curve})", ""]
            for key in sorted(groups, key=_order):
                if key[0] in BASE_OF:
                    suffix = key[0] if key[1] == "default" else f"{key[0]}_{key[1]}"
                    figure = plot_exchange_diagnostics(task, key, groups[key], out_dir / f"exchange_{slug}_{suffix}.png")
                    if figure:
                        tier_lines += [f"![exchange diagnostics of {label(*key)}]({figure})", ""]
        # in task order (not the order the JSONs were read in), so that the stratified bootstrap is reproducible
        tier_lines += _over_tasks({task: grouped[tier][task] for task in sorted(grouped[tier])}, reps)
        planned = planned_primary_family_size(tier)
        rendered, kept = adjust_and_render(tier_lines, planned)
        compared: list[Comparison] = [
            line for line in tier_lines if isinstance(line, Comparison) and line.eligible and np.isfinite(line.p_value)
        ]
        lines += [f"## Tier {tier}", "", "Conditions:", "", *_conditions(tier_results), ""]
        if compared:
            n_primary = sum(c.primary for c in compared)
            size = n_primary if planned is None else max(planned, n_primary)
            plan = (
                f"{size}, fixed by the tier's plan, not by which results exist: for each DARE algorithm against its base, the "
                "final score and the dip (the paper's two claims) on each task and over the tasks; "
                f"{n_primary} of them measured with enough seeds so far, the others counting as p = 1"
                if planned is not None
                else f"{size}: the final score and dip of a DARE algorithm against its base"
            )
            lines += [
                f"Multiple comparisons: this tier makes {len(compared)} paired comparisons with enough seeds for a claim "
                f"(at least {MIN_SEEDS_FOR_CLAIM}), each with its own p-value below. The primary family has {plan}. "
                "Holm's adjustment keeps the chance of any false claim within a family at 5 %. Over all the "
                f"comparisons, these keep p < 0.05: {_survivors(kept['all'])}. Over the primary family: "
                f"{_survivors(kept['primary'])}.",
                "",
            ]
        lines += rendered
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


def _over_tasks(tasks: dict[str, Group], reps: int) -> list[str | Comparison]:
    """IQM over tasks (runs resampled within each task) for every group present on all tasks with the same seeds."""
    if len(tasks) < 2:
        return []
    keys = set.intersection(*(set(groups) for groups in tasks.values()))
    rows = [
        "### Over tasks",
        "",
        "| algorithm | tasks x seeds | offline score | final score | dip | online AUC | cost: wall-clock min per run |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in sorted(keys, key=_order):
        seeds = sorted(set.intersection(*(set(groups[key]) for groups in tasks.values())))
        if not seeds:
            continue
        metrics = [[run_metrics(groups[key][s]) for groups in tasks.values()] for s in seeds]
        cells = []
        for metric in ("offline", "final", "dip", "auc"):
            table = np.array([[m[metric] for m in row] for row in metrics], dtype=float)
            # the interval resamples the seeds within each task (stratified)
            interval = iqm_interval(table, reps=reps)
            cells.append(_fmt_interval(*interval, len(seeds), per_task=True) if np.isfinite(table).all() else "n/a")
        cost = np.mean([m["total_min"] for row in metrics for m in row])
        rows.append(f"| {label(*key)} | {len(tasks)} x {len(seeds)} | {' | '.join(cells)} | {cost:.1f} |")
    if len(rows) == 4:
        return []
    statements: list[str | Comparison] = []
    present = {key: next(iter(tasks.values()))[key] for key in keys}  # the groups present on every task
    for key in sorted(keys, key=_order):
        # the same references as per task: DARE with its base, an ablation with the paper's rule and the base
        for name, reference in _references(key, present):
            compared = _paired_over_tasks(label(*key), name, tasks, key, reference)
            statements += _tagged(compared, f"over {len(tasks)} tasks", _is_primary(key, reference))
    return [*rows, "", *(["Comparisons over tasks:", "", *[_bullet(s) for s in statements], ""] if statements else [])]


def _survivors(kept: list[Comparison]) -> str:
    return "; ".join(f"{c.text.split(': mean paired')[0]} ({c.scope})" for c in kept) or "none"


def _bullet(statement: str | Comparison) -> str | Comparison:
    if isinstance(statement, Comparison):
        statement.prefix = "- "
        return statement
    return f"- {statement}"


def _difference(challenger_run: dict[str, Any], reference_run: dict[str, Any], metric: str) -> float:
    """A metric's paired difference of two runs; NaN when either run lacks it."""
    challenger, reference = run_metrics(challenger_run)[metric], run_metrics(reference_run)[metric]
    return float("nan") if challenger is None or reference is None else challenger - reference


def _paired_over_tasks(
    challenger: str, reference: str, tasks: dict[str, Group], key: tuple[str, str], reference_key: tuple[str, str]
) -> list[str | Comparison]:
    """
    Mean paired difference over every (task, seed) both groups ran, with the t interval of :func:`paired_interval`
    over the seeds' means across tasks; only seeds present on every task enter, so the table is complete.
    """
    base_key = reference_key
    seeds = sorted(set.intersection(*(set(groups[key]) & set(groups[base_key]) for groups in tasks.values())))
    if len(seeds) < MIN_SEEDS_FOR_CLAIM:
        return []
    lines: list[str | Comparison] = []
    for metric, higher_is_better, name in PAIRED_METRICS:
        table = np.array(
            [[_difference(groups[key][s], groups[base_key][s], metric) for groups in tasks.values()] for s in seeds],
            dtype=float,
        )
        table = table[np.isfinite(table).all(axis=1)]  # seeds with the metric on every task (a dip can be missing)
        if len(table) < MIN_SEEDS_FOR_CLAIM:
            lines.append(
                f"{challenger} against {reference} on {name} over {len(tasks)} tasks: only {_plural(len(table), 'seed')} "
                f"with it on every task, fewer than the {MIN_SEEDS_FOR_CLAIM} a comparison needs."
            )
            continue
        mean, low, high = paired_interval(table)
        direction = "" if higher_is_better else " (lower is better)"
        verdict = f"{challenger} {_verdict(low, high, higher_is_better)} {reference}"
        text = (
            f"{verdict} on {name}{direction} over {len(tasks)} tasks x {len(table)} seeds: mean paired difference "
            f"{mean:+.1f} {_fmt_difference_interval(low, high, len(table))} (t interval over the seeds' means over tasks)"
        )
        lines.append(Comparison(text, paired_p_value(table), metric=metric))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "o2o")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples per interval")
    args = parser.parse_args(argv)
    results = load_results(args.results_dir)
    if not results:
        print(f"No finished runs in {args.results_dir}.")
        return 1
    os.makedirs(args.results_dir, exist_ok=True)
    path = write_summary(results, args.results_dir, reps=args.reps)
    print(f"Wrote {path} ({len(results)} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
