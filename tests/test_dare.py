"""DARE on IQL (and Cal-QL): the mask leaves the base untouched when it should, scores, end to end, from_base."""

from __future__ import annotations

import copy
import warnings

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch as th
from stable_baselines3.common.logger import configure

from sb3_dare import IQL, CalQL
from sb3_dare.common.buffers import OfflineOnlineSamples
from sb3_dare.dare import BehaviorModel
from sb3_dare.dare.dare import DARE_IQL, DARE_CalQL
from sb3_dare.plots import plot_exchange, plot_score_histogram

ENV_ID = "InvertedPendulum-v5"
TINY = dict(batch_size=32, policy_kwargs=dict(net_arch=[16, 16]), offline_eval_freq=0, offline_log_interval=50, seed=0)
TINY_BEHAVIOR = dict(behavior_steps=50, energy_steps=30, behavior_batch_size=64, behavior_kwargs=dict(hidden_sizes=[16, 16]))


class FixedBehavior(BehaviorModel):
    """A deterministic 'behaviour model' (reference action = a fixed function of the state), for exact comparisons."""

    name = "fixed-test"

    def fit(self, observations, actions, n_steps, batch_size=256, learning_rate=None, progress_bar=False, seed=None):
        self.fitted.fill_(True)
        return {"loss": 0.0}

    def sample(self, observations, n_samples=1, batch_size=65_536, generator=None, guidance_scale=None):
        observations = th.as_tensor(observations, dtype=th.float32, device=self.device)
        reference = th.tanh(observations[:, : self.action_dim].sum(dim=1, keepdim=True)).expand(-1, self.action_dim)
        return reference.unsqueeze(1).expand(-1, n_samples, -1)


def make_dare(dataset_id, **kwargs) -> DARE_IQL:
    if not isinstance(kwargs.get("behavior_model", "diffusion"), str) or kwargs.get("behavior_model") == "gaussian":
        kwargs.setdefault("guidance_scale", 0.0)
    return DARE_IQL("MlpPolicy", ENV_ID, dataset=dataset_id, **{**TINY, **TINY_BEHAVIOR, "offline_steps": 20, **kwargs})


def test_exchange_none_run_equals_the_seeded_iql_run(pendulum_balance_dataset):
    # a whole seeded run, offline phase, switch (behaviour fit, scoring) and online steps: the same parameters as IQL's
    # (building and fitting the behaviour model and scoring draw from their own generators, not the global ones)
    runs = []
    for make in (
        lambda: IQL("MlpPolicy", ENV_ID, dataset=pendulum_balance_dataset, **{**TINY, "offline_steps": 20}),
        lambda: make_dare(pendulum_balance_dataset, exchange="none", behavior_model="gaussian"),
    ):
        model = make()
        model.learn(60)
        runs.append(model.policy.state_dict())
    assert runs[0].keys() == runs[1].keys()
    for name in runs[0]:
        assert th.equal(runs[0][name], runs[1][name]), name


def random_batch(n: int = 16) -> OfflineOnlineSamples:
    generator = th.Generator().manual_seed(3)
    return OfflineOnlineSamples(
        observations=th.randn(n, 4, generator=generator),
        actions=th.rand(n, 1, generator=generator) * 2 - 1,
        next_observations=th.randn(n, 4, generator=generator),
        dones=th.zeros(n, 1),
        rewards=th.ones(n, 1),
        discounts=None,
        is_offline=th.arange(n) < n // 2,
        scores=th.rand(n, generator=generator),
        mc_returns=th.zeros(n),
        indices=th.arange(n),
    )


def test_exchange_none_equals_iql_exactly(pendulum_balance_dataset):
    iql = IQL("MlpPolicy", ENV_ID, dataset=pendulum_balance_dataset, **{**TINY, "offline_steps": 0})
    dare = make_dare(pendulum_balance_dataset, exchange="none", behavior_model="gaussian", offline_steps=0)
    for model in (iql, dare):
        model._setup_offline_logger("test")
    dare.policy.load_state_dict(iql.policy.state_dict())
    for name in ("actor", "critic", "value_net"):
        getattr(dare, name).optimizer.load_state_dict(getattr(iql, name).optimizer.state_dict())
    dare.offline_phase_done = True  # the online phase: DARE's split would apply
    batch = random_batch()
    th.manual_seed(0)
    iql_metrics = iql._train_step(batch)
    th.manual_seed(0)
    dare_metrics = dare._train_step(batch)
    for key, value in iql_metrics.items():
        assert th.equal(value, dare_metrics[key]), key
    for (name, value), other in zip(iql.policy.state_dict().items(), dare.policy.state_dict().values(), strict=True):
        assert th.equal(value, other), name


def test_the_update_logs_the_batch_exchange_diagnostics(pendulum_balance_dataset):
    from sb3_dare.dare.exchange import exchange

    dare = make_dare(pendulum_balance_dataset, behavior_model="gaussian", offline_steps=0, exchange_warmup=False)
    dare._setup_offline_logger("test")
    dare.offline_phase_done = True
    dare.replay_buffer.attach_offline_data(dare._load_offline_data(dare.env))
    batch = random_batch()
    metrics = dare._train_step(batch)
    # the diagnostics are those of the posterior rule on this batch's cached scores (no moving averages by default)
    expected = exchange(batch.scores, batch.is_offline, rule="posterior", sigma_floor=dare.sigma_floor).metrics()
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value.item(), rel=1e-6), key
    assert metrics["dare/offline_like_fraction"] < 1.0  # some samples are online-like: their actor term is logged
    assert th.isfinite(metrics["dare/online_like_log_prob"])


def test_the_posterior_mask_reaches_the_update_and_waits_for_the_warm_up(pendulum_balance_dataset):
    """DARE's split is the posterior rule on the batch's cached scores (not the origin split), the update trains with
    that mask, and until the online part holds a batch the warm-up keeps the origin split."""
    from sb3_dare.dare.exchange import exchange

    dare = make_dare(pendulum_balance_dataset, behavior_model=FixedBehavior(4, 1), exchange_warmup=True)
    dare.learn(5)  # the offline phase, then 5 online steps: fewer than a batch (32)
    batch = random_batch()
    # an offline sample scored like online data and an online one scored like offline data: the posterior swaps both
    scores = th.tensor([0.1, 0.12, 0.09, 0.11, 0.1, 0.13, 0.08, 0.9, 0.95, 1.0, 0.9, 1.05, 0.98, 0.1, 0.92, 1.02])
    batch = batch._replace(scores=scores)
    assert th.equal(dare._offline_like_mask(batch), batch.is_offline)  # warm-up: origin
    dare.exchange_warmup = False
    expected = exchange(scores, batch.is_offline, rule="posterior", sigma_floor=dare.sigma_floor).offline_like
    assert not th.equal(expected, batch.is_offline) and not expected[7] and expected[13]
    assert th.equal(dare._offline_like_mask(batch), expected)
    masks = []
    original = dare._online_like_objective

    def recording(observations, next_observations, replay_data, online_index, *args):
        masks.append(online_index.clone())
        return original(observations, next_observations, replay_data, online_index, *args)

    dare._online_like_objective = recording
    dare._train_step(batch)
    assert th.equal(masks[0], th.nonzero(~expected).squeeze(-1))  # the online-like objective got the posterior's rows


def test_save_and_load_keep_the_score_moving_averages(pendulum_balance_dataset, tmp_path):
    model = make_dare(pendulum_balance_dataset, behavior_model="gaussian", exchange_warmup=False, score_ema=0.9)
    model.learn(10)
    state = model._moments_ema.state.clone()
    assert th.isfinite(state).all()
    model.save(tmp_path / "dare")
    loaded = DARE_IQL.load(tmp_path / "dare", env=gym.make(ENV_ID))
    assert th.equal(loaded._moments_ema.state, state)
    assert DARE_IQL.load(tmp_path / "dare", env=gym.make(ENV_ID), score_ema=None)._moments_ema is None


def test_the_warm_up_leaves_the_score_moving_averages_alone(pendulum_balance_dataset):
    # with score_ema, the warm-up's fits (a few online transitions drawn again and again) do not seed the averages
    dare = make_dare(pendulum_balance_dataset, behavior_model=FixedBehavior(4, 1), exchange_warmup=True, score_ema=0.9)
    dare.learn(5)  # fewer online transitions than a batch (32): the warm-up
    batch = random_batch()
    dare._offline_like_mask(batch)
    assert th.isnan(dare._moments_ema.state).all()
    dare.exchange_warmup = False
    dare._offline_like_mask(batch)
    assert th.isfinite(dare._moments_ema.state).all()


def test_dare_iql_losses_match_direct_computation(pendulum_balance_dataset):
    # ALGORITHM.md, DARE_IQL: the value loss on all samples; the AWR actor term on offline-like samples; Q targets
    # r + gamma (1 - d) V(s') for offline-like and r + gamma (1 - d) (min_k Qbar_k(s', a') - alpha log pi(a'|s'))
    # for online-like samples; the actor term alpha log pi(ã|s) - min_k Q_k(s, ã) on online-like samples, the critic
    # taking no gradient from it; the actor terms summed over their samples and divided by the batch size
    dare = make_dare(pendulum_balance_dataset, behavior_model="gaussian", offline_steps=0, online_ent_coef=0.2)
    dare.policy.observation_normalizer.set_statistics(th.full((4,), 0.3), th.full((4,), 2.0))
    batch = random_batch(16)
    offline_like = th.tensor([True, False] * 8)
    parameters = [p for name in ("actor", "critic", "value_net") for p in getattr(dare, name).parameters()]

    th.manual_seed(5)
    total_loss, _ = dare._losses(batch, offline_like)
    model_gradients = th.autograd.grad(total_loss, parameters)

    th.manual_seed(5)
    n_samples, gamma, alpha = 16, dare.gamma, dare.online_ent_coef
    observations = (batch.observations - 0.3) / 2.0
    next_observations = (batch.next_observations - 0.3) / 2.0
    rewards, not_done = batch.rewards.squeeze(-1), 1.0 - batch.dones.squeeze(-1)
    online = ~offline_like

    def policy(states: th.Tensor) -> th.distributions.Normal:
        return th.distributions.Normal(th.tanh(dare.actor.mean_net(states)), dare.actor.log_std.exp())

    def min_q(critic: th.nn.Module, states: th.Tensor, actions: th.Tensor) -> th.Tensor:
        return th.stack([critic(states[i : i + 1], actions[i : i + 1])[:, 0] for i in range(len(states))], 1).min(0).values

    with th.no_grad():
        target_q = min_q(dare.critic_target, observations, batch.actions)
        next_action_draw = policy(next_observations[online]).rsample()
        y_online = rewards[online] + gamma * not_done[online] * (
            min_q(dare.critic_target, next_observations[online], next_action_draw.clamp(-1, 1))
            - alpha * policy(next_observations[online]).log_prob(next_action_draw).sum(-1)
        )
        y = rewards + gamma * not_done * dare.value_net(next_observations)
        y[online] = y_online
    values = dare.value_net(observations)
    u = target_q - values
    value_loss = (th.where(u < 0, 1 - dare.expectile, dare.expectile) * u**2).mean()
    weights = th.exp(dare.beta * (target_q - values.detach())).clamp(max=dare.max_weight)
    awr_terms = -weights * policy(observations).log_prob(batch.actions).sum(-1)
    action_draw = policy(observations[online]).rsample()
    frozen_critic = {name: p.detach() for name, p in dare.critic.named_parameters()}
    q_policy = th.func.functional_call(dare.critic, frozen_critic, (observations[online], action_draw.clamp(-1, 1)))
    online_terms = alpha * policy(observations[online]).log_prob(action_draw).sum(-1) - q_policy.min(0).values
    actor_loss = (awr_terms[offline_like].sum() + online_terms.sum()) / n_samples
    critic_loss = ((dare.critic(observations, batch.actions) - y) ** 2).mean()
    hand_gradients = th.autograd.grad(value_loss + actor_loss + critic_loss, parameters)

    for model_gradient, hand_gradient in zip(model_gradients, hand_gradients, strict=True):
        th.testing.assert_close(model_gradient, hand_gradient, rtol=1e-4, atol=1e-6)


def test_cached_and_per_batch_scoring_give_the_same_masks(pendulum_balance_dataset):
    cached = make_dare(
        pendulum_balance_dataset, behavior_model=FixedBehavior(4, 1), score_mode="cached", exchange_warmup=False
    )
    cached.learn(40)
    per_batch = make_dare(
        pendulum_balance_dataset, behavior_model=FixedBehavior(4, 1), score_mode="per_batch", exchange_warmup=False
    )
    per_batch.learn(0)
    per_batch.replay_buffer = cached.replay_buffer  # the same transitions; per_batch ignores the cached scores
    for _ in range(5):
        batch = cached.replay_buffer.sample(32)
        assert not th.isnan(batch.scores).any()
        np.testing.assert_allclose(
            per_batch.score_transitions(batch.observations, batch.actions).numpy(), batch.scores.numpy(), rtol=1e-6
        )
        assert th.equal(cached._offline_like_mask(batch), per_batch._offline_like_mask(batch))


def test_score_sigma_reaches_the_scores(pendulum_balance_dataset):
    """The score is ||a_ref - a||^2 / (2 score_sigma^2): halving sigma multiplies it by 4."""
    observations = th.randn(8, 4, generator=th.Generator().manual_seed(0))
    actions = th.linspace(-1, 1, 8).unsqueeze(1)
    scores = {}
    for sigma in (1.0, 0.5):
        model = make_dare(pendulum_balance_dataset, behavior_model=FixedBehavior(4, 1), score_sigma=sigma)
        model.behavior.fitted.fill_(True)
        scores[sigma] = model.score_transitions(observations, actions)
    reference = th.tanh(observations[:, :1].sum(dim=1, keepdim=True))
    th.testing.assert_close(scores[1.0], (reference - actions).pow(2).sum(dim=1) / 2.0)
    th.testing.assert_close(scores[0.5], 4.0 * scores[1.0])


def test_likelihood_reduction_over_several_reference_actions():
    """score = -log mean_k exp(-||a_k - a||^2 / (2 sigma^2)): by hand for two references per state."""
    import math

    from sb3_dare.dare.alignment import alignment_scores

    class TwoReferences(FixedBehavior):
        def sample(self, observations, n_samples=1, batch_size=65_536, generator=None, guidance_scale=None):
            n = th.as_tensor(observations).shape[0]
            return th.tensor([[0.0], [1.0]]).expand(n, 2, 1)  # references 0 and 1 for every state

    model = TwoReferences(4, 1)
    actions = th.tensor([[0.0], [0.5], [-1.0]])
    observations = th.zeros(3, 4)
    for sigma in (1.0, 0.5):
        distances = th.stack([(actions[:, 0] - 0.0) ** 2, (actions[:, 0] - 1.0) ** 2], dim=1) / (2 * sigma**2)
        likelihood = -(th.logsumexp(-distances, dim=1) - math.log(2))
        got = alignment_scores(model, observations, actions, n_reference_samples=2, reduction="likelihood", sigma=sigma)
        th.testing.assert_close(got, likelihood)
        mean = alignment_scores(model, observations, actions, n_reference_samples=2, reduction="mean", sigma=sigma)
        th.testing.assert_close(mean, distances.mean(dim=1))


def test_a_policy_more_concentrated_than_the_data_scores_lower():
    """E[d | a] = (||a - m||^2 + tr S) / 2 for one reference action from a sampler of mean m and covariance S: the
    data's own actions average tr S, actions at the mean tr S / 2 (docs/benchmarks.md, "What the scores measured")."""
    from sb3_dare.dare.alignment import alignment_scores

    spread = th.tensor([0.3, 0.1])  # per-dimension std of the behaviour: tr S = 0.1

    class GaussianSampler(FixedBehavior):
        def sample(self, observations, n_samples=1, batch_size=65_536, generator=None, guidance_scale=None):
            n = th.as_tensor(observations).shape[0]
            return spread * th.randn(n, n_samples, 2, generator=generator)  # mean 0 in every state

    model, observations = GaussianSampler(4, 2), th.zeros(200_000, 4)
    data_actions = spread * th.randn(200_000, 2, generator=th.Generator().manual_seed(1))
    data_scores = alignment_scores(model, observations, data_actions, generator=th.Generator().manual_seed(2))
    mean_scores = alignment_scores(model, observations, th.zeros(200_000, 2), generator=th.Generator().manual_seed(3))
    assert data_scores.mean().item() == pytest.approx(0.1, rel=0.02)
    assert mean_scores.mean().item() == pytest.approx(0.05, rel=0.02)


@pytest.mark.parametrize("behavior_model", ["gaussian", "diffusion"])
def test_end_to_end_learn_log_save_load_continue(pendulum_balance_dataset, tmp_path, behavior_model):
    guidance = 1.0 if behavior_model == "diffusion" else 0.0
    model = make_dare(pendulum_balance_dataset, behavior_model=behavior_model, guidance_scale=guidance, exchange_warmup=False)
    model.set_logger(configure(str(tmp_path / "logs"), ["csv"]))
    model.learn(60, log_interval=1)
    assert model.behavior.is_fitted and model.offline_phase_done
    assert (guidance > 0) == model.behavior.has_energy
    buffer = model.replay_buffer
    assert not np.isnan(buffer.offline_scores).any()
    assert np.isnan(buffer.online_scores[:60]).sum() <= buffer.score_batch_size  # scored in batches
    buffer.flush_scores()
    assert not np.isnan(buffer.online_scores[:60]).any()
    log = pd.read_csv(tmp_path / "logs" / "progress.csv")
    for key in (
        "dare/exchanged_off_to_on",
        "dare/exchanged_on_to_off",
        "dare/mu_off",
        "dare/sigma_off",
        "dare/mu_on",
        "dare/sigma_on",
        "dare/offline_like_fraction",
        "dare/overlap",
        "dare/split_overlap",
    ):
        assert key in log.columns, key
    assert plot_exchange(str(tmp_path / "logs")).endswith(".png")
    # a log written before dare/split_overlap existed still plots
    old_log = tmp_path / "old_log"
    old_log.mkdir()
    log.drop(columns=["dare/split_overlap"]).to_csv(old_log / "progress.csv", index=False)
    assert plot_exchange(str(old_log)).endswith(".png")
    assert plot_score_histogram(model, str(tmp_path / "scores.png"))

    model.save(tmp_path / "dare")
    loaded = DARE_IQL.load(tmp_path / "dare", env=gym.make(ENV_ID))
    assert loaded.behavior.is_fitted and loaded.score_provenance["behavior_model"] == behavior_model
    for key, value in model.behavior.state_dict().items():
        th.testing.assert_close(loaded.behavior.state_dict()[key], value)
    # right after load(), before any learn(): the same guided sampler and so the same scores
    assert getattr(loaded.behavior, "guidance_scale", 0.0) == getattr(model.behavior, "guidance_scale", 0.0) == guidance
    loaded._score_generator.set_state(model._score_generator.get_state())
    sample = buffer.sample(8)
    expected = model.score_transitions(sample.observations, sample.actions)
    th.testing.assert_close(loaded.score_transitions(sample.observations, sample.actions), expected)
    obs = np.random.default_rng(0).normal(size=(5, 4))
    np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    loaded.learn(20)  # offline data re-attached and re-scored, no refit, no second offline phase
    assert loaded.offline_updates == 20 and not np.isnan(loaded.replay_buffer.offline_scores).any()


def test_construction_refuses_what_would_fail_at_the_switch():
    # checked in the constructor, not when the offline phase ends (possibly a million updates later)
    with pytest.raises(ValueError, match=r"DARE_IQL fits its behaviour model on the offline dataset .* use IQL"):
        DARE_IQL("MlpPolicy", ENV_ID, offline_steps=0, offline_ratio=0.0)
    with pytest.raises(ValueError, match=r"energy_beta must be a finite number > 0, got -1\.0"):
        DARE_IQL("MlpPolicy", ENV_ID, dataset="unused", energy_beta=-1.0)


def test_scores_of_other_settings_are_discarded_after_load(pendulum_balance_dataset, tmp_path):
    # a buffer saved with its scores, loaded into a model with another guidance scale: the old scores would mix two
    # scales in the exchange's Gaussian fits, so every transition is scored again with the new setting
    model = make_dare(pendulum_balance_dataset, guidance_scale=1.0, exchange_warmup=False)
    model.learn(40)
    model.replay_buffer.flush_scores()
    old_offline = model.replay_buffer.offline_scores.copy()
    model.save(tmp_path / "dare")
    model.save_replay_buffer(tmp_path / "buffer")

    def count_scored(loaded: DARE_IQL) -> list[int]:
        scored: list[int] = []
        score = loaded._score_numpy
        loaded._score_numpy = lambda observations, actions: scored.append(len(observations)) or score(observations, actions)
        return scored

    same = DARE_IQL.load(tmp_path / "dare", env=gym.make(ENV_ID))
    same.load_replay_buffer(tmp_path / "buffer")
    scored = count_scored(same)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # same settings: the cached scores are kept, no warning
        same.learn(5, reset_num_timesteps=False)
    same.replay_buffer.flush_scores()
    assert sum(scored) == 5  # only the new transitions
    np.testing.assert_array_equal(same.replay_buffer.offline_scores, old_offline)

    loaded = DARE_IQL.load(tmp_path / "dare", env=gym.make(ENV_ID), guidance_scale=3.0)
    loaded.load_replay_buffer(tmp_path / "buffer")
    scored = count_scored(loaded)
    with pytest.warns(UserWarning, match=r"guidance_scale 1\.0 -> 3\.0.*scored again"):
        loaded.learn(5, reset_num_timesteps=False)
    loaded.replay_buffer.flush_scores()
    assert sum(scored) == len(old_offline) + 40 + 5  # every offline and online transition, with the new setting
    assert loaded.score_provenance["guidance_scale"] == 3.0
    assert not np.isnan(loaded.replay_buffer.offline_scores).any()


def test_plot_exchange_reads_the_newest_log_and_names_missing_keys(tmp_path):
    import os

    older, newer = tmp_path / "DARE_IQL_9", tmp_path / "DARE_IQL_10"
    for folder, fraction in ((older, 0.25), (newer, 0.75)):
        folder.mkdir()
        (folder / "progress.csv").write_text(f"time/total_timesteps,dare/offline_like_fraction\n10,{fraction}\n")
    os.utime(older / "progress.csv", (1, 1))  # the older run, although its name sorts last
    from sb3_dare.plots import read_dare_log

    assert read_dare_log(str(tmp_path))["dare/offline_like_fraction"].tolist() == [0.75]
    with pytest.raises(ValueError, match=r"lacks \['dare/exchanged_off_to_on'"):
        plot_exchange(str(tmp_path))


def test_from_base_shares_the_offline_phase(pendulum_balance_dataset, tmp_path):
    base = IQL("MlpPolicy", ENV_ID, dataset=pendulum_balance_dataset, **{**TINY, "offline_steps": 30})
    base.learn(0)
    base.save(tmp_path / "iql_offline")
    for source in (base, tmp_path / "iql_offline"):
        dare = DARE_IQL.from_base(source, env=gym.make(ENV_ID), behavior_model="gaussian", guidance_scale=0.0, **TINY_BEHAVIOR)
        assert dare.offline_updates == 30 and dare.expectile == base.expectile
        for key, value in base.policy.state_dict().items():
            th.testing.assert_close(dare.policy.state_dict()[key], value)
        dare.learn(10)
        assert dare.offline_updates == 30 and dare.behavior.is_fitted
    with pytest.raises(ValueError, match="needs a trained IQL"):
        DARE_IQL.from_base(dare)


def test_from_base_refuses_another_base_and_takes_overrides(pendulum_balance_dataset, tmp_path):
    calql = CalQL("MlpPolicy", ENV_ID, dataset=pendulum_balance_dataset, **{**TINY, "cql_n_actions": 2, "offline_steps": 0})
    with pytest.raises(ValueError, match=r"DARE_IQL\.from_base needs a trained IQL, got CalQL"):
        DARE_IQL.from_base(calql)
    calql.save(tmp_path / "calql")
    with pytest.raises(ValueError, match=r"holds a CalQL model, not an IQL one"):  # a saved zip of the wrong base
        DARE_IQL.from_base(tmp_path / "calql", env=gym.make(ENV_ID))
    base = IQL("MlpPolicy", ENV_ID, dataset=pendulum_balance_dataset, **{**TINY, "offline_steps": 10, "expectile": 0.8})
    base.learn(0)
    # the base's hyperparameters carry over unless overridden; the DARE options are the keyword arguments' own
    dare = DARE_IQL.from_base(base, behavior_model="gaussian", guidance_scale=0.0, batch_size=16, **TINY_BEHAVIOR)
    assert dare.batch_size == 16 and dare.expectile == 0.8 and dare.behavior_model == "gaussian"
    assert dare.env is base.env and dare.offline_updates == 10


def test_from_base_on_an_in_memory_dataset(pendulum_balance_arrays, tmp_path):
    in_memory = pendulum_balance_arrays
    base = IQL("MlpPolicy", ENV_ID, dataset=in_memory, **{**TINY, "offline_steps": 10})
    base.learn(0)
    dare = DARE_IQL.from_base(base, behavior_model="gaussian", guidance_scale=0.0, **TINY_BEHAVIOR)
    dare.learn(5)  # the object is handed over: the switch fits and scores on it
    assert dare.replay_buffer.n_offline == len(in_memory) and dare.behavior.is_fitted
    base.save(tmp_path / "iql")
    options = dict(behavior_model="gaussian", guidance_scale=0.0, **TINY_BEHAVIOR)
    with pytest.raises(ValueError, match=r"in-memory dataset.*DARE_IQL\.from_base\(base, env, dataset=data\)"):
        DARE_IQL.from_base(tmp_path / "iql", env=gym.make(ENV_ID), **options)  # a zip holds no in-memory dataset
    again = DARE_IQL.from_base(tmp_path / "iql", env=gym.make(ENV_ID), dataset=in_memory, **options)
    again.learn(5)
    assert again.replay_buffer.n_offline == len(in_memory)
    dare.save(tmp_path / "dare")
    loaded = DARE_IQL.load(tmp_path / "dare", env=gym.make(ENV_ID), dataset=in_memory)
    loaded.learn(5, reset_num_timesteps=False)
    assert loaded.num_timesteps == 10 and loaded.replay_buffer.n_offline == len(in_memory)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(behavior_model="vae"), r"Unknown behavior_model 'vae'; choose one of \('diffusion', 'gaussian'\)"),
        (dict(guidance_scale=-1.0), "guidance_scale must be >= 0"),
        (dict(exchange="magic"), r"Unknown exchange rule 'magic'; choose one of \(.*'posterior'"),
        (dict(score_mode="sometimes"), r"Unknown score_mode 'sometimes'; choose one of \('cached', 'per_batch'\)"),
        (dict(exchange_quantile=1.0), r"exchange_quantile must be in \(0, 1\), got 1.0"),
        (dict(score_ema=1.0), r"score_ema must be in \(0, 1\) or None, got 1.0"),
        (dict(online_ent_coef=-0.1), "online_ent_coef must be >= 0, got -0.1"),
        (dict(n_reference_samples=0), "n_reference_samples must be >= 1, got 0"),
        # caught at construction, not when the offline phase ends
        (dict(behavior_steps=0), "behavior_steps must be >= 1 to fit the behaviour model"),
        (dict(guidance_scale=1.0, energy_steps=0), "energy_steps must be >= 1 .* set guidance_scale=0"),
        (dict(guidance_scale=1.0, n_support_actions=1), "n_support_actions must be >= 2"),
    ],
)
def test_validation(pendulum_balance_dataset, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_dare(pendulum_balance_dataset, **kwargs)


def test_energy_settings_unused_without_guidance_are_not_checked(pendulum_balance_dataset):
    # energy_steps=0 and n_support_actions=1 would be refused with guidance; without it no energy network is trained
    model = make_dare(pendulum_balance_dataset, guidance_scale=0.0, energy_steps=0, n_support_actions=1)
    model.learn(5)
    assert model.behavior.is_fitted and not model.behavior.has_energy


def test_a_registered_behavior_model_is_chosen_by_name(pendulum_balance_dataset, tmp_path):
    from sb3_dare.dare import BEHAVIOR_MODELS, register_behavior_model

    try:
        registered = register_behavior_model("fixed-registered-test")(type("RegisteredFixed", (FixedBehavior,), {}))
        with pytest.raises(ValueError, match="already registered under the name 'fixed-registered-test'"):
            register_behavior_model("fixed-registered-test")(type("OtherFixed", (FixedBehavior,), {}))
        with pytest.warns(UserWarning, match="ignored with the 'fixed-registered-test' behaviour model"):
            model = make_dare(
                pendulum_balance_dataset, behavior_model="fixed-registered-test", guidance_scale=2.0, behavior_kwargs={}
            )
        model.learn(5)
        assert type(model.behavior) is registered and model.effective_guidance_scale == 0.0
        model.save(tmp_path / "dare")
        loaded = DARE_IQL.load(tmp_path / "dare", env=gym.make(ENV_ID))  # rebuilt by name from the registry
        assert type(loaded.behavior) is registered
    finally:
        BEHAVIOR_MODELS.pop("fixed-registered-test", None)
    with pytest.raises(ValueError, match=r"Unknown behavior_model 'fixed-registered-test'.*register_behavior_model"):
        make_dare(pendulum_balance_dataset, behavior_model="fixed-registered-test")


def test_guidance_ignored_for_gaussian_with_one_warning(pendulum_balance_dataset):
    with pytest.warns(UserWarning, match="ignored with the 'gaussian' behaviour model"):
        model = make_dare(pendulum_balance_dataset, behavior_model="gaussian", guidance_scale=3.0)
    assert model.effective_guidance_scale == 0.0


def test_behavior_model_object_and_file(pendulum_balance_dataset, tmp_path):
    from sb3_dare.dare import make_behavior_model

    behavior = make_behavior_model("gaussian", 4, 1, hidden_sizes=[8])
    data = make_dare(pendulum_balance_dataset, behavior_model="gaussian")._load_offline_data(None)
    behavior.fit(data.observations, data.actions, n_steps=20, batch_size=32)
    behavior.save(tmp_path / "behavior.pt")
    fitted_state = {key: value.clone() for key, value in behavior.state_dict().items()}
    for source in (behavior, str(tmp_path / "behavior.pt")):
        source = copy.deepcopy(source) if not isinstance(source, str) else source
        model = make_dare(pendulum_balance_dataset, behavior_model=source, guidance_scale=0.0)
        assert model.behavior_model == "gaussian" and model.behavior_kwargs["hidden_sizes"] == [8]
        fits: list[tuple] = []
        model.behavior.fit = lambda *args, calls=fits, **kwargs: calls.append(args)  # a fitted model is not refitted
        model.learn(5)
        assert model.behavior.is_fitted and fits == []
        for key, value in model.behavior.state_dict().items():
            th.testing.assert_close(value, fitted_state[key])


# ---------------------------------------------------------------------- DARE on Cal-QL

CALQL_TINY = dict(TINY, cql_n_actions=2)


def test_dare_calql_exchange_none_equals_calql_exactly(pendulum_balance_dataset):
    calql = CalQL("MlpPolicy", ENV_ID, dataset=pendulum_balance_dataset, **{**CALQL_TINY, "offline_steps": 0})
    dare = DARE_CalQL(
        "MlpPolicy",
        ENV_ID,
        dataset=pendulum_balance_dataset,
        exchange="none",
        behavior_model="gaussian",
        guidance_scale=0.0,
        **{**CALQL_TINY, **TINY_BEHAVIOR, "offline_steps": 0},
    )
    for model in (calql, dare):
        model._setup_offline_logger("test")
    dare.set_parameters(calql.get_parameters(), exact_match=False)
    dare.log_ent_coef.data.copy_(calql.log_ent_coef.data)
    dare.offline_phase_done = True
    batch = random_batch()
    th.manual_seed(0)
    calql_metrics = calql._train_step(batch)
    th.manual_seed(0)
    dare_metrics = dare._train_step(batch)
    for key, value in calql_metrics.items():
        assert th.equal(value, dare_metrics[key]), key


def test_dare_calql_drops_the_regulariser_on_online_like_samples(pendulum_balance_dataset):
    dare = DARE_CalQL(
        "MlpPolicy",
        ENV_ID,
        dataset=pendulum_balance_dataset,
        behavior_model="gaussian",
        guidance_scale=0.0,
        **{**CALQL_TINY, **TINY_BEHAVIOR, "offline_steps": 0},
    )
    dare._setup_offline_logger("test")
    dare.offline_phase_done = True
    batch = random_batch()
    state = copy.deepcopy(dare.get_parameters())
    th.manual_seed(0)
    dare._offline_like_mask = lambda data: th.zeros(len(data.rewards), dtype=th.bool)  # type: ignore[method-assign]
    released = dare._train_step(batch)
    dare.set_parameters(state)
    th.manual_seed(0)
    dare._offline_like_mask = lambda data: None  # type: ignore[method-assign]
    full = dare._train_step(batch)
    # every sample online-like: no conservative term, the critic's loss is its TD loss alone; with the origin split's
    # None (the base's update) the regulariser is on every sample
    assert released["conservative_loss"].item() == 0.0 and full["conservative_loss"].item() != 0.0
    assert released["critic_loss"].item() == pytest.approx(released["td_loss"].item())
    assert full["critic_loss"].item() == pytest.approx(full["td_loss"].item() + full["conservative_loss"].item())


def test_dare_calql_end_to_end_and_from_base(pendulum_balance_dataset, tmp_path):
    base = CalQL("MlpPolicy", ENV_ID, dataset=pendulum_balance_dataset, **{**CALQL_TINY, "offline_steps": 20})
    base.learn(0)
    dare = DARE_CalQL.from_base(
        base, env=gym.make(ENV_ID), behavior_model="gaussian", guidance_scale=0.0, exchange_warmup=False, **TINY_BEHAVIOR
    )
    th.testing.assert_close(dare.log_ent_coef, base.log_ent_coef)
    dare.set_logger(configure(str(tmp_path / "logs"), ["csv"]))
    dare.learn(40, log_interval=1)
    assert dare.offline_updates == 20 and dare.behavior.is_fitted
    assert "dare/offline_like_fraction" in pd.read_csv(tmp_path / "logs" / "progress.csv").columns
    dare.save(tmp_path / "dare_calql")
    loaded = DARE_CalQL.load(tmp_path / "dare_calql", env=gym.make(ENV_ID))
    loaded.learn(10)
    assert loaded.num_timesteps == 10
