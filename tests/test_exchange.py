"""Exchange rules on hand-made score sets, and the posterior against a direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch as th

from sb3_dare.dare.exchange import (
    GaussianFit,
    ScoreMomentsEMA,
    bhattacharyya_coefficient,
    exchange,
    online_posterior,
)


def two_clusters():
    # offline scores around 1, online around 5; offline sample 9 behaves like online data, online sample 11 like
    # offline data
    offline = [0.8, 1.0, 1.2, 0.9, 1.1, 1.0, 0.95, 1.05, 4.9, 1.0]
    online = [5.0, 4.8, 5.2, 5.1, 4.9, 5.0, 1.0, 5.05, 4.95, 5.1]
    scores = th.tensor(offline + online)
    is_offline = th.tensor([True] * 10 + [False] * 10)
    return scores, is_offline


def test_posterior_rule_swaps_the_misplaced_samples():
    scores, is_offline = two_clusters()
    result = exchange(scores, is_offline, rule="posterior")
    expected = is_offline.clone()
    expected[8] = False  # offline sample at 4.9 -> online-like
    expected[16] = True  # online sample at 1.0 -> offline-like
    assert th.equal(result.offline_like, expected)
    assert int(result.exchanged_off_to_on) == 1 and int(result.exchanged_on_to_off) == 1
    metrics = result.metrics()
    assert metrics["dare/offline_like_fraction"].item() == pytest.approx(0.5)
    assert metrics["dare/mu_off"].item() == pytest.approx(float(scores[:10].mean()), rel=1e-6)
    assert metrics["dare/sigma_on"].item() == pytest.approx(float(scores[10:].std(unbiased=False)), rel=1e-5)


def test_posterior_matches_direct_formula():
    scores = th.tensor([0.0, 1.0, 2.5, 4.0])
    off, on = GaussianFit(th.tensor(1.0), th.tensor(0.5)), GaussianFit(th.tensor(3.0), th.tensor(1.5))
    rho_off = 0.25

    def normal(x, m, s):
        return math.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))

    expected = [
        (1 - rho_off) * normal(d, 3.0, 1.5) / (rho_off * normal(d, 1.0, 0.5) + (1 - rho_off) * normal(d, 3.0, 1.5))
        for d in scores.tolist()
    ]
    np.testing.assert_allclose(online_posterior(scores, off, on, th.tensor(rho_off)).numpy(), expected, rtol=1e-5)


def test_far_tails_do_not_underflow():
    off, on = GaussianFit(th.tensor(0.0), th.tensor(0.01)), GaussianFit(th.tensor(1.0), th.tensor(0.01))
    posterior = online_posterior(th.tensor([-50.0, 50.0]), off, on, th.tensor(0.5))
    assert th.isfinite(posterior).all()
    assert posterior[1] > 0.5 and posterior[0] < 0.5


def test_origin_threshold_none_rules():
    scores, is_offline = two_clusters()
    assert th.equal(exchange(scores, is_offline, rule="origin").offline_like, is_offline)
    assert exchange(scores, is_offline, rule="none").offline_like.all()
    threshold = exchange(scores, is_offline, rule="threshold", quantile=0.5).offline_like
    assert th.equal(threshold, scores <= th.quantile(scores, 0.5))
    assert int(threshold.sum()) == 10


def test_random_rule_makes_as_many_swaps_as_the_posterior():
    scores, is_offline = two_clusters()
    generator = th.Generator().manual_seed(0)
    result = exchange(scores, is_offline, rule="random", generator=generator)
    assert int(result.exchanged_off_to_on) == 1 and int(result.exchanged_on_to_off) == 1
    changed = set(th.nonzero(result.offline_like != is_offline).squeeze(-1).tolist())
    assert len(changed) == 2


def test_sigma_floor_is_relative_to_the_batch():
    scores = th.tensor([1.0, 1.0, 1.0, 5.0, 5.0, 5.0])  # each origin has zero spread
    is_offline = th.tensor([True, True, True, False, False, False])
    result = exchange(scores, is_offline, sigma_floor=0.1)
    floor = 0.1 * float(scores.std(unbiased=False))
    assert result.offline_fit.std.item() == pytest.approx(floor, rel=1e-4)
    assert th.equal(result.offline_like, is_offline)  # well separated: nothing moves


def test_overlap_is_the_bhattacharyya_coefficient():
    same = GaussianFit(th.tensor(1.0), th.tensor(2.0))
    assert bhattacharyya_coefficient(same, same).item() == pytest.approx(1.0)
    far = GaussianFit(th.tensor(100.0), th.tensor(1.0))
    assert bhattacharyya_coefficient(GaussianFit(th.tensor(0.0), th.tensor(1.0)), far).item() < 1e-100 + 1e-30


def test_batches_without_online_samples_keep_everything_offline_like():
    scores = th.rand(16)
    for rule in ("posterior", "bayes", "random", "origin"):
        assert exchange(scores, th.ones(16, dtype=th.bool), rule=rule).offline_like.all()


def test_moving_average_of_moments():
    ema = ScoreMomentsEMA(0.5)
    scores, is_offline = two_clusters()
    first = exchange(scores, is_offline, moments_ema=ema)
    second = exchange(scores + 1.0, is_offline, moments_ema=ema)
    assert first.offline_fit.mean.item() == pytest.approx(float(scores[:10].mean()), rel=1e-6)
    assert second.offline_fit.mean.item() == pytest.approx(float(scores[:10].mean()) + 0.5, rel=1e-6)
    with pytest.raises(ValueError, match="score_ema"):
        ScoreMomentsEMA(1.5)


def test_unknown_rule():
    with pytest.raises(ValueError, match=r"'magic'.*choose one of.*posterior"):
        exchange(th.zeros(4), th.ones(4, dtype=th.bool), rule="magic")


def test_overlap_against_numerical_integration():
    """BC = integral of sqrt(p q): checked on a grid for Gaussians of different means and widths."""
    first, second = GaussianFit(th.tensor(0.0), th.tensor(1.0)), GaussianFit(th.tensor(1.5), th.tensor(2.5))
    grid = np.linspace(-30, 30, 200_001)

    def density(fit: GaussianFit) -> np.ndarray:
        mean, std = float(fit.mean), float(fit.std)
        return np.exp(-0.5 * ((grid - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))

    numeric = np.trapezoid(np.sqrt(density(first) * density(second)), grid)
    assert bhattacharyya_coefficient(first, second).item() == pytest.approx(numeric, rel=1e-6)


def test_a_swap_needs_the_posterior_and_the_side_of_the_other_mean():
    """An offline sample goes online only if p_on > 1/2 and its score is above the offline mean (and conversely): a
    narrow online cluster inside a wide offline one has p_on > 1/2 at the offline mean, on both of its sides."""
    offline = th.tensor([-6.0, -3.0, -1.0, -0.05, 0.05, 1.0, 3.0, 6.0])  # mean 0, wide
    online = th.tensor([-0.02, -0.01, 0.0, 0.01, 0.02, 0.0, 0.01, -0.01])  # mean 0, narrow
    scores, is_offline = th.cat([offline, online]), th.tensor([True] * 8 + [False] * 8)
    result = exchange(scores, is_offline, rule="posterior")
    fits = (result.offline_fit, result.online_fit)
    p_online = online_posterior(scores, *fits, th.tensor(0.5))
    assert p_online[3] > 0.5 and p_online[4] > 0.5  # both near the centre look online
    # only the one above the offline mean moves; the one below stays offline-like
    assert not result.offline_like[4] and result.offline_like[3]


def test_bayes_rule_drops_the_side_conditions():
    """Online samples scoring below the dataset's (as in most tier-M runs): a narrow online
    Gaussian below a wide offline one. The posterior rule moves nothing; "bayes" moves each sample to the side its
    posterior favours: low-scoring dataset samples to online-like, high-scoring online samples to offline-like."""
    offline = th.tensor([1.0, 2.0, 2.5, 3.0, 3.0, 3.5, 4.0, 5.0])  # mean 3, wide
    online = th.tensor([0.9, 1.0, 1.1, 1.0, 0.95, 1.05, 1.0, 2.4])  # mean about 1.2, narrow, one sample far above
    scores, is_offline = th.cat([offline, online]), th.tensor([True] * 8 + [False] * 8)
    posterior = exchange(scores, is_offline, rule="posterior")
    assert th.equal(posterior.offline_like, is_offline)
    bayes = exchange(scores, is_offline, rule="bayes")
    p_online = online_posterior(scores, bayes.offline_fit, bayes.online_fit, th.tensor(0.5))
    expected = (is_offline & (p_online <= 0.5)) | (~is_offline & (p_online < 0.5))
    assert th.equal(bayes.offline_like, expected)
    assert not bayes.offline_like[0] and bayes.offline_like[15]  # the dataset's 1.0 goes online, the online 2.4 offline
    # where the online samples score higher, both rules agree on these clusters
    scores, is_offline = two_clusters()
    assert th.equal(exchange(scores, is_offline, rule="bayes").offline_like, exchange(scores, is_offline).offline_like)


def test_moving_average_of_variances():
    ema = ScoreMomentsEMA(0.5)
    scores, is_offline = two_clusters()
    first = exchange(scores, is_offline, moments_ema=ema)
    second = exchange(scores * 3.0, is_offline, moments_ema=ema)  # variances x9
    variance = first.offline_fit.std.item() ** 2
    assert second.offline_fit.std.item() ** 2 == pytest.approx(0.5 * variance + 0.5 * 9 * variance, rel=1e-5)


def test_moving_averages_leave_out_an_origin_without_samples():
    # a batch without online samples has only a placeholder online Gaussian (mean 0, the std floor): it is not blended
    # into the online average, and no swap rests on an origin never observed
    ema = ScoreMomentsEMA(0.5)
    scores, is_offline = two_clusters()
    offline_only = exchange(scores[:10], is_offline[:10], moments_ema=ema)
    assert not ema.known() and offline_only.offline_like.all()
    assert np.isfinite(offline_only.online_fit.mean.item())  # the diagnostics stay finite (NaN would stop training)
    both = exchange(scores, is_offline, moments_ema=ema)
    assert ema.known()
    # the online average starts from the first batch that has online samples, not from the placeholder's 0
    assert both.online_fit.mean.item() == pytest.approx(float(scores[10:].mean()), rel=1e-6)
    assert both.offline_fit.mean.item() == pytest.approx(float(scores[:10].mean()), rel=1e-6)
    assert both.exchanged_off_to_on.item() == 1 and both.exchanged_on_to_off.item() == 1
    # a later batch without online samples keeps the online average as it was
    exchange(scores[:10] + 2.0, is_offline[:10], moments_ema=ema)
    assert ema.state[2].item() == pytest.approx(float(scores[10:].mean()), rel=1e-6)


def test_split_overlap_measures_the_separation_the_losses_see():
    scores, is_offline = two_clusters()
    origin = exchange(scores, is_offline, rule="origin")
    # the origin split's subsets are the origins: the same two Gaussians
    assert origin.split_overlap.item() == pytest.approx(origin.overlap.item(), rel=1e-6)
    posterior = exchange(scores, is_offline, rule="posterior")
    # the two misplaced samples moved: the subsets separate better than the origins (the paper's second claim)
    assert posterior.split_overlap.item() < posterior.overlap.item()
    offline_like = posterior.offline_like
    direct = bhattacharyya_coefficient(
        GaussianFit(scores[offline_like].mean(), scores[offline_like].std(unbiased=False)),
        GaussianFit(scores[~offline_like].mean(), scores[~offline_like].std(unbiased=False)),
    )
    assert posterior.split_overlap.item() == pytest.approx(direct.item(), rel=1e-5)
    assert "dare/split_overlap" in posterior.metrics()


def test_one_sided_batches_and_splits_read_as_no_separation():
    # a placeholder Gaussian (mean 0, the std floor) must not read as a near-perfect separation
    scores, is_offline = two_clusters()
    offline_only = exchange(scores[:10], is_offline[:10], rule="posterior")
    assert offline_only.overlap.item() == 1.0 and offline_only.split_overlap.item() == 1.0
    everything_offline_like = exchange(scores, is_offline, rule="none")
    assert everything_offline_like.split_overlap.item() == 1.0 and everything_offline_like.overlap.item() < 1.0
