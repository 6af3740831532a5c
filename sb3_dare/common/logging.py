"""Training metrics accumulated on the device and read once per log window (no host sync per update)."""

from __future__ import annotations

import math

import torch as th
from stable_baselines3.common.logger import Logger


class DivergenceError(RuntimeError):
    """A training loss became NaN or infinite."""


class MetricAccumulator:
    """
    Sums of per-update scalar metrics kept on the device; :meth:`flush` averages them over the window,
    checks that every loss is finite and records them into an SB3 logger.
    """

    def __init__(self) -> None:
        self._sums: dict[str, th.Tensor] = {}
        self._counts: dict[str, int] = {}
        self.window_start = 0

    def add(self, metrics: dict[str, th.Tensor]) -> None:
        """Add one update's metrics (0-dim tensors, detached)."""
        for key, value in metrics.items():
            if key in self._sums:
                self._sums[key] = self._sums[key] + value
                self._counts[key] += 1
            else:
                self._sums[key] = value.clone()
                self._counts[key] = 1

    def __len__(self) -> int:
        return max(self._counts.values(), default=0)

    def flush(self, logger: Logger, prefix: str, window_end: int) -> dict[str, float]:
        """
        Record the window's means under ``prefix/`` and start a new window.

        :param logger: the SB3 logger
        :param prefix: key prefix, e.g. ``offline`` or ``train``
        :param window_end: update count at the end of the window (named in a divergence error)
        :return: the means
        :raises DivergenceError: if a metric is NaN or infinite
        """
        if not self._sums:
            return {}
        keys = list(self._sums)
        # one host copy for the whole window
        values = th.stack([self._sums[key].float() for key in keys]).cpu().tolist()
        means = {key: value / self._counts[key] for key, value in zip(keys, values, strict=True)}
        window_start = self.window_start
        self._sums, self._counts = {}, {}
        self.window_start = window_end
        bad = [key if "/" in key else f"{prefix}/{key}" for key, value in means.items() if not math.isfinite(value)]
        if bad:
            raise DivergenceError(
                f"Training diverged: {', '.join(bad)} became NaN or infinite in the updates {window_start}..{window_end}. "
                "Lower the learning rate, check the rewards' scale (reward_scale) and the dataset for outliers; "
                "the last checkpoint saved before this window is still usable."
            )
        for key, value in means.items():
            # keys that name their own group (e.g. "dare/mu_off") keep it
            logger.record(key if "/" in key else f"{prefix}/{key}", value)
        return means
