"""
The per-sample split of a batch into offline-like and online-like samples (ALGORITHM.md, piece 6).

Every rule takes the batch's alignment scores ``d`` (small = consistent with the dataset) and the data origin
``is_offline`` and returns a boolean mask: True = offline-like (keeps the conservative offline objective).
Everything stays on the device; no host synchronisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch as th

EXCHANGE_RULES = ("posterior", "bayes", "origin", "threshold", "random", "none")


@dataclass
class GaussianFit:
    """Moments of one subset's scores (0-dim tensors)."""

    mean: th.Tensor
    std: th.Tensor


@dataclass
class ExchangeResult:
    """
    The split of one batch and its diagnostics (0-dim tensors, for logging).

    :param offline_like: (batch,) True where the sample keeps the offline objective
    :param offline_fit: Gaussian fitted to the offline-buffer samples' scores
    :param online_fit: Gaussian fitted to the online-buffer samples' scores
    :param exchanged_off_to_on: offline-buffer samples made online-like
    :param exchanged_on_to_off: online-buffer samples made offline-like
    :param overlap: Bhattacharyya coefficient of the two fitted Gaussians (1 = identical, 0 = disjoint; 1 when the
        batch has one origin only)
    :param split_overlap: the same coefficient for Gaussians fitted to this batch's scores of the offline-like and the
        online-like samples after the split (1 when one subset is empty). A rule that splits by the score lowers it
        by construction (the threshold rule most): compared with ``overlap`` (without ``score_ema``, whose
        ``overlap`` is that of the averaged Gaussians) it shows how far the rule moved the split towards a score
        threshold, not whether that helps (None: not computed)
    """

    offline_like: th.Tensor
    offline_fit: GaussianFit
    online_fit: GaussianFit
    exchanged_off_to_on: th.Tensor
    exchanged_on_to_off: th.Tensor
    overlap: th.Tensor
    split_overlap: th.Tensor | None = None

    def metrics(self) -> dict[str, th.Tensor]:
        """The ``dare/*`` diagnostics of this batch."""
        split = {} if self.split_overlap is None else {"dare/split_overlap": self.split_overlap}
        return {
            "dare/exchanged_off_to_on": self.exchanged_off_to_on.float(),
            "dare/exchanged_on_to_off": self.exchanged_on_to_off.float(),
            "dare/mu_off": self.offline_fit.mean,
            "dare/sigma_off": self.offline_fit.std,
            "dare/mu_on": self.online_fit.mean,
            "dare/sigma_on": self.online_fit.std,
            "dare/offline_like_fraction": self.offline_like.float().mean(),
            "dare/overlap": self.overlap,
            **split,
        }


def fit_gaussian(scores: th.Tensor, mask: th.Tensor, std_floor: th.Tensor) -> GaussianFit:
    """
    Mean and standard deviation of ``scores[mask]`` by moments, without leaving the device.

    :param scores: (batch,) scores
    :param mask: (batch,) which scores belong to the subset
    :param std_floor: lower bound of the standard deviation (0-dim tensor)
    :return: the fit; an empty subset gets mean 0 and std ``std_floor`` (a placeholder: :func:`exchange` makes no
        swap on it)
    """
    weights = mask.to(scores.dtype)
    count = weights.sum().clamp(min=1.0)
    mean = (weights * scores).sum() / count
    variance = (weights * (scores - mean).pow(2)).sum() / count
    return GaussianFit(mean=mean, std=th.maximum(variance.sqrt(), std_floor))


def gaussian_log_density(values: th.Tensor, fit: GaussianFit) -> th.Tensor:
    """log N(values; mean, std^2)."""
    return -0.5 * ((values - fit.mean) / fit.std).pow(2) - fit.std.log() - 0.5 * math.log(2.0 * math.pi)


def online_posterior(
    scores: th.Tensor, offline_fit: GaussianFit, online_fit: GaussianFit, offline_prior: th.Tensor
) -> th.Tensor:
    """
    ``p_on(d) = rho_on N(d; mu_on, s_on^2) / (rho_off N(d; mu_off, s_off^2) + rho_on N(d; mu_on, s_on^2))``,
    computed in log space (a sigmoid of the log-odds) so that far tails do not underflow.

    :param scores: (batch,) scores d
    :param offline_fit: the offline Gaussian
    :param online_fit: the online Gaussian
    :param offline_prior: rho_off, the batch's offline fraction (rho_on = 1 - rho_off)
    """
    log_odds = (
        gaussian_log_density(scores, online_fit)
        + th.log1p(-offline_prior)
        - gaussian_log_density(scores, offline_fit)
        - th.log(offline_prior)
    )
    return th.sigmoid(log_odds)


def bhattacharyya_coefficient(first: GaussianFit, second: GaussianFit) -> th.Tensor:
    """Overlap of two Gaussians: ``sqrt(2 s1 s2 / (s1^2 + s2^2)) exp(-(m1 - m2)^2 / (4 (s1^2 + s2^2)))``."""
    variance_sum = first.std.pow(2) + second.std.pow(2)
    return th.sqrt(2.0 * first.std * second.std / variance_sum) * th.exp(
        -(first.mean - second.mean).pow(2) / (4.0 * variance_sum)
    )


def _random_swaps(candidates: th.Tensor, counts: th.Tensor, generator: th.Generator | None) -> th.Tensor:
    """Pick ``counts`` samples uniformly among ``candidates`` (a mask), without a host sync."""
    keys = th.rand(candidates.shape, device=candidates.device, generator=generator)
    keys = th.where(candidates, keys, th.full_like(keys, 2.0))  # non-candidates sort last
    ranks = th.argsort(th.argsort(keys))
    return candidates & (ranks < counts)


def exchange(
    scores: th.Tensor,
    is_offline: th.Tensor,
    rule: str = "posterior",
    sigma_floor: float = 0.05,
    quantile: float = 0.5,
    moments_ema: ScoreMomentsEMA | None = None,
    generator: th.Generator | None = None,
) -> ExchangeResult:
    """
    Split a batch into offline-like and online-like samples.

    Rules: ``"posterior"`` (DARE): fit a Gaussian to each origin's scores and move an offline-buffer sample
    with ``p_on > 1/2`` and ``d > mu_off`` to online-like, an online-buffer sample with ``p_on < 1/2`` and
    ``d < mu_on`` to offline-like, with the batch fractions as priors. ``"bayes"``: the same posterior without the
    side conditions (every sample takes the side its posterior favours, whichever Gaussian lies higher: an
    ablation for batches where the online samples score below the dataset's). ``"origin"``: offline-like = from the
    offline data (the usual O2O split). ``"threshold"`` (StratDiff): offline-like = score below the batch's
    ``quantile``. ``"random"``: as many swaps in each direction as the posterior rule makes, on random
    samples. ``"none"``: every sample offline-like (the base algorithm).

    :param scores: (batch,) alignment scores, small = behaviour-consistent
    :param is_offline: (batch,) bool, the data origin
    :param rule: one of :data:`EXCHANGE_RULES`
    :param sigma_floor: floor on each fitted standard deviation, relative to the standard deviation of the
        whole batch's scores (scale-free: the scores' scale depends on the action dimension)
    :param quantile: the threshold rule's quantile
    :param moments_ema: blend each batch's moments into these moving averages and use the averages
    :param generator: random generator of the random rule
    :return: the mask and the diagnostics
    """
    if rule not in EXCHANGE_RULES:
        raise ValueError(f"Unknown exchange rule {rule!r}; choose one of {EXCHANGE_RULES}.")
    is_online = ~is_offline
    std_floor = sigma_floor * scores.std(unbiased=False) + 1e-6
    offline_fit = fit_gaussian(scores, is_offline, std_floor)
    online_fit = fit_gaussian(scores, is_online, std_floor)
    # both Gaussians rest on data: this batch's samples of each origin, or with moving averages, any batch's
    observed = (is_offline.any(), is_online.any())
    fits_known = observed[0] & observed[1]
    if moments_ema is not None:
        offline_fit, online_fit = moments_ema.update(offline_fit, online_fit, std_floor, observed=observed)
        fits_known = moments_ema.known()
    # with one origin only there is no separation to measure: 1 (no separation), not the overlap with a placeholder,
    # which would read as a near-perfect one
    overlap = th.where(fits_known, bhattacharyya_coefficient(offline_fit, online_fit), th.ones((), device=scores.device))

    offline_like = is_offline.clone()
    if rule in ("posterior", "bayes", "random"):
        offline_prior = is_offline.float().mean().clamp(1e-6, 1.0 - 1e-6)
        p_online = online_posterior(scores, offline_fit, online_fit, offline_prior)
        # without data of both origins the posterior compares a placeholder: no swap
        to_online = is_offline & (p_online > 0.5) & fits_known
        to_offline = is_online & (p_online < 0.5) & fits_known
        if rule != "bayes":
            # the specification's side conditions: a sample moves only from beyond its own origin's mean, towards the
            # other's (they assume online samples score higher; when they score lower, a sample moves only where the
            # Gaussians' different widths turn the posterior around beyond its origin's mean)
            to_online = to_online & (scores > offline_fit.mean)
            to_offline = to_offline & (scores < online_fit.mean)
        if rule == "random":
            to_online = _random_swaps(is_offline, to_online.sum(), generator)
            to_offline = _random_swaps(is_online, to_offline.sum(), generator)
        offline_like = (is_offline & ~to_online) | to_offline
    elif rule == "threshold":
        offline_like = scores <= th.quantile(scores, quantile)
    elif rule == "none":
        offline_like = th.ones_like(is_offline)
    # the separation of the subsets the losses see: fitted like the origins' Gaussians, on this batch's scores (1 when
    # one subset is empty, as above)
    split_overlap = th.where(
        offline_like.any() & (~offline_like).any(),
        bhattacharyya_coefficient(
            fit_gaussian(scores, offline_like, std_floor), fit_gaussian(scores, ~offline_like, std_floor)
        ),
        th.ones((), device=scores.device),
    )
    return ExchangeResult(
        offline_like=offline_like,
        offline_fit=offline_fit,
        online_fit=online_fit,
        exchanged_off_to_on=(is_offline & ~offline_like).sum(),
        exchanged_on_to_off=(is_online & offline_like).sum(),
        overlap=overlap,
        split_overlap=split_overlap,
    )


class ScoreMomentsEMA:
    """
    Exponential moving averages of each origin's score mean and variance over batches (the ``score_ema`` option).

    :param decay: weight of the past, in (0, 1)
    :param device: device of the statistics
    """

    def __init__(self, decay: float, device: th.device | str = "cpu"):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"score_ema must be in (0, 1) (or None to fit every batch on its own), got {decay}.")
        self.decay = decay
        # mean_off, var_off, mean_on, var_on; NaN until the first batch
        self.state = th.full((4,), float("nan"), device=device)

    def update(
        self,
        batch_offline: GaussianFit,
        batch_online: GaussianFit,
        std_floor: th.Tensor,
        observed: tuple[th.Tensor, th.Tensor] | None = None,
    ) -> tuple[GaussianFit, GaussianFit]:
        """
        Blend this batch's moments in and return the averaged fits.

        :param batch_offline: this batch's offline fit
        :param batch_online: this batch's online fit
        :param std_floor: lower bound of the returned standard deviations
        :param observed: whether the batch has offline and online samples (0-dim bool tensors; default both): the
            moments of an origin without samples are left out, not blended in
        :return: the averaged offline and online fits (for an origin never observed, this batch's placeholder)
        """
        current = th.stack([batch_offline.mean, batch_offline.std.pow(2), batch_online.mean, batch_online.std.pow(2)])
        blended = th.where(th.isnan(self.state), current, self.decay * self.state + (1.0 - self.decay) * current)
        if observed is not None:
            seen = th.stack([observed[0], observed[0], observed[1], observed[1]])
            blended = th.where(seen, blended, self.state)
        self.state = blended
        # an origin never observed shows this batch's placeholder (its diagnostics stay finite; no swap uses it)
        shown = th.where(th.isnan(self.state), current, self.state)
        return (
            GaussianFit(shown[0], th.maximum(shown[1].sqrt(), std_floor)),
            GaussianFit(shown[2], th.maximum(shown[3].sqrt(), std_floor)),
        )

    def known(self) -> th.Tensor:
        """Whether both origins have been observed (0-dim bool tensor, on the device)."""
        return ~th.isnan(self.state).any()
