"""Plots of DARE's exchange diagnostics (PNG), drawn from a run's logs or from a model's replay buffer."""

from __future__ import annotations

import csv
import glob
import os
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sb3_dare.dare.dare import DAREMixin

DARE_KEYS = (
    "dare/offline_like_fraction",
    "dare/exchanged_off_to_on",
    "dare/exchanged_on_to_off",
    "dare/mu_off",
    "dare/sigma_off",
    "dare/mu_on",
    "dare/sigma_on",
    "dare/overlap",
)
# logged by newer versions only: read when present
OPTIONAL_DARE_KEYS = ("dare/split_overlap",)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_dare_log(run_dir: str) -> dict[str, np.ndarray]:
    """
    Read the ``dare/*`` series of a run, from SB3's CSV output (``progress.csv``) or its TensorBoard events.

    :param run_dir: the folder a logger wrote to (searched recursively)
    :return: ``{"time/total_timesteps": steps, "dare/...": values}``, each an array of the same length
    """
    # the newest run first (by modification time: DARE_IQL_10 is newer than DARE_IQL_9), then older ones
    csv_files = sorted(glob.glob(os.path.join(run_dir, "**", "progress.csv"), recursive=True), key=os.path.getmtime)
    for csv_file in reversed(csv_files):
        with open(csv_file, newline="") as file_handler:
            rows = [row for row in csv.DictReader(file_handler) if row.get("dare/offline_like_fraction")]
        if rows:
            keys = [key for key in ("time/total_timesteps", *DARE_KEYS, *OPTIONAL_DARE_KEYS) if key in rows[0]]
            return {key: np.array([float(row[key]) if row[key] else np.nan for row in rows]) for key in keys}
    event_files = sorted(glob.glob(os.path.join(run_dir, "**", "events.out.tfevents.*"), recursive=True), key=os.path.getmtime)
    if event_files:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        accumulator = EventAccumulator(os.path.dirname(event_files[-1]))
        accumulator.Reload()
        tags = set(accumulator.Tags().get("scalars", []))
        if "dare/offline_like_fraction" in tags:
            series: dict[str, np.ndarray] = {}
            for key in (*DARE_KEYS, *OPTIONAL_DARE_KEYS):
                if key in tags:
                    events = accumulator.Scalars(key)
                    series[key] = np.array([event.value for event in events])
                    series["time/total_timesteps"] = np.array([event.step for event in events], dtype=float)
            return series
    raise FileNotFoundError(
        f"No dare/* diagnostics found under {run_dir!r}: log a DARE run with the 'csv' or 'tensorboard' format "
        "(e.g. tensorboard_log=... or model.set_logger(configure(folder, ['csv'])); through RL Zoo: -tb <folder>)."
    )


def plot_exchange(run_dir: str, path: str | None = None) -> str:
    """
    Draw the exchange diagnostics over the online phase: the offline-like fraction, the exchanges in each
    direction, both fitted Gaussians (mean +- std) and their overlap, and (logs since 2026-12-06) the overlap of the
    offline-like and online-like subsets after the split.

    :param run_dir: the run's log folder
    :param path: the PNG to write (default ``<run_dir>/dare_exchange.png``)
    :return: the PNG's path
    """
    series = read_dare_log(run_dir)
    missing = [key for key in ("time/total_timesteps", *DARE_KEYS) if key not in series]
    if missing:
        raise ValueError(
            f"The DARE log under {run_dir!r} lacks {missing}: plot_exchange needs every dare/* key and "
            "time/total_timesteps, as DARE's online phase logs them (a log written by another version or cut short?)."
        )
    steps = series["time/total_timesteps"]
    plt = _pyplot()
    figure, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    axes[0, 0].plot(steps, series["dare/offline_like_fraction"], color="tab:blue")
    axes[0, 0].set_title("offline-like fraction of the batch")
    axes[0, 0].set_ylim(0, 1)
    axes[0, 1].plot(steps, series["dare/exchanged_off_to_on"], label="offline -> online-like")
    axes[0, 1].plot(steps, series["dare/exchanged_on_to_off"], label="online -> offline-like")
    axes[0, 1].set_title("exchanged samples per batch")
    axes[0, 1].legend()
    for name, color in (("off", "tab:blue"), ("on", "tab:orange")):
        mean, std = series[f"dare/mu_{name}"], series[f"dare/sigma_{name}"]
        axes[1, 0].plot(steps, mean, color=color, label=f"{name}line buffer")
        axes[1, 0].fill_between(steps, mean - std, mean + std, color=color, alpha=0.2)
    axes[1, 0].set_title("alignment score Gaussians (mean +- std)")
    axes[1, 0].legend()
    axes[1, 1].plot(steps, series["dare/overlap"], color="tab:green", label="offline vs online buffer")
    if "dare/split_overlap" in series:
        axes[1, 1].plot(steps, series["dare/split_overlap"], color="tab:red", label="offline-like vs online-like")
        axes[1, 1].legend()
    axes[1, 1].set_title("overlap (Bhattacharyya coefficient)")
    axes[1, 1].set_ylim(0, 1.05)
    for axis in axes[1]:
        axis.set_xlabel("environment steps")
    figure.tight_layout()
    path = path or os.path.join(run_dir, "dare_exchange.png")
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_score_histogram(model: DAREMixin, path: str, bins: int = 60) -> str:
    """
    Histogram of the cached alignment scores of the offline data and of the online transitions in the replay
    buffer, with the Gaussian fitted to each.

    :param model: a DARE model whose buffer holds scores
    :param path: the PNG to write
    :param bins: histogram bins
    :return: the PNG's path
    """
    buffer = model.replay_buffer
    offline = np.asarray(buffer.offline_scores if buffer.offline_scores is not None else [], dtype=float)
    online = buffer.online_scores[: buffer.size()].reshape(-1).astype(float)
    offline, online = offline[np.isfinite(offline)], online[np.isfinite(online)]
    if len(offline) == 0 and len(online) == 0:
        raise ValueError("The replay buffer holds no scores yet: they are computed when the offline phase ends.")
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 4.5))
    upper = np.percentile(np.concatenate([offline, online]), 99.5)
    edges = np.linspace(0.0, max(upper, 1e-6), bins + 1)
    grid = np.linspace(0.0, edges[-1], 400)
    for scores, name, color in ((offline, "offline data", "tab:blue"), (online, "online transitions", "tab:orange")):
        if len(scores) == 0:
            continue
        axis.hist(
            np.clip(scores, 0, edges[-1]), bins=edges, density=True, alpha=0.45, color=color, label=f"{name} (n={len(scores)})"
        )
        mean, std = scores.mean(), max(scores.std(), 1e-6)
        density = np.exp(-0.5 * ((grid - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))
        axis.plot(grid, density, color=color, linewidth=2, label=f"N({mean:.2f}, {std:.2f}^2)")
    axis.set_xlabel("alignment score d = ||â - a||^2 / 2 (small = consistent with the dataset)")
    axis.set_ylabel("density")
    axis.set_title("alignment scores in the replay buffer")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
