"""Cal-QL on the O2O base: the calibrated regulariser against direct computations, learning, and SB3 conventions."""

from __future__ import annotations

import copy
import math

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor

from sb3_dare.calql import CalQL, CalQLPolicy
from sb3_dare.calql.calql import calibrate, cql_gap
from sb3_dare.common.buffers import OfflineOnlineSamples
from sb3_dare.common.evaluation import evaluate_normalized
from sb3_dare.data import OfflineData

ENV_ID = "InvertedPendulum-v5"
OBS_DIM, ACTION_DIM = 3, 2
TINY = dict(batch_size=16, policy_kwargs=dict(net_arch=[16, 16]), offline_eval_freq=0, offline_log_interval=50, seed=0)


def tiny_data(n: int = 200, seed: int = 0) -> OfflineData:
    """Random transitions (obs 3, action 2) in episodes of 50, for updates that need no env."""
    rng = np.random.default_rng(seed)
    return OfflineData.from_arrays(
        rng.normal(size=(n, OBS_DIM)),
        rng.uniform(-1, 1, size=(n, ACTION_DIM)),
        rng.normal(size=n),
        rng.normal(size=(n, OBS_DIM)),
        np.zeros(n, dtype=bool),
        episode_starts=np.arange(0, n, 50),
    )


def tiny_model(**kwargs) -> CalQL:
    return CalQL("MlpPolicy", None, dataset=tiny_data(), **{**TINY, "offline_steps": 0, **kwargs})


def make_batch(n: int = 6, seed: int = 0, mc_returns: th.Tensor | None = None) -> OfflineOnlineSamples:
    generator = th.Generator().manual_seed(seed)
    if mc_returns is None:
        # known and unknown returns, some above the untrained critics' Q-values, some below
        mc_returns = th.tensor([2.0, float("nan"), -3.0, 0.5, float("nan"), 10.0])[:n]
    return OfflineOnlineSamples(
        observations=th.randn(n, OBS_DIM, generator=generator),
        actions=th.rand(n, ACTION_DIM, generator=generator) * 2 - 1,
        next_observations=th.randn(n, OBS_DIM, generator=generator),
        dones=(th.arange(n) % 3 == 0).float().reshape(-1, 1),
        rewards=th.randn(n, 1, generator=generator),
        discounts=None,
        is_offline=th.ones(n, dtype=th.bool),
        scores=th.zeros(n),
        mc_returns=mc_returns,
        indices=th.arange(n),
    )


def direct_gaps(q_data, q_uniform, q_current, q_next, log_prob_current, log_prob_next, mc_returns, temperature, importance):
    """The calibrated CQL gap computed element by element in float64 (the reference for cql_gap)."""
    n_critics, batch, n_actions = q_uniform.shape
    action_dim = ACTION_DIM
    gaps = np.zeros((n_critics, batch))
    for k in range(n_critics):
        for i in range(batch):
            returns = None if mc_returns is None else float(mc_returns[i])
            bound = -math.inf if returns is None or math.isnan(returns) else returns
            uniform = [float(q_uniform[k, i, j]) for j in range(n_actions)]
            current = [max(float(q_current[k, i, j]), bound) for j in range(n_actions)]
            following = [max(float(q_next[k, i, j]), bound) for j in range(n_actions)]
            if importance:
                candidates = (
                    [q - math.log(0.5**action_dim) for q in uniform]
                    + [q - float(log_prob_current[i, j]) for j, q in enumerate(current)]
                    + [q - float(log_prob_next[i, j]) for j, q in enumerate(following)]
                )
            else:
                candidates = [*uniform, float(q_data[k, i]), *current, *following]
            largest = max(c / temperature for c in candidates)
            log_sum_exp = largest + math.log(sum(math.exp(c / temperature - largest) for c in candidates))
            gaps[k, i] = temperature * log_sum_exp - float(q_data[k, i])
    return gaps


# ---------------------------------------------------------------------- the calibrated regulariser


@pytest.mark.parametrize("temperature, importance", [(1.0, True), (0.5, True), (1.0, False)])
def test_cql_gap_matches_direct_computation(temperature, importance):
    generator = th.Generator().manual_seed(1)
    n_critics, batch, n_actions = 2, 4, 3
    q_data = th.randn(n_critics, batch, generator=generator)
    q_uniform, q_current, q_next = (th.randn(n_critics, batch, n_actions, generator=generator) * 2 for _ in range(3))
    log_prob_current, log_prob_next = (th.randn(batch, n_actions, generator=generator) for _ in range(2))
    mc_returns = th.tensor([1.5, float("nan"), -10.0, 0.0])
    for returns in (mc_returns, None):
        gaps = cql_gap(
            q_data,
            q_uniform,
            q_current,
            q_next,
            log_prob_current,
            log_prob_next,
            returns,
            action_dim=ACTION_DIM,
            temperature=temperature,
            importance_sample=importance,
        )
        expected = direct_gaps(
            q_data, q_uniform, q_current, q_next, log_prob_current, log_prob_next, returns, temperature, importance
        )
        assert gaps.shape == (n_critics, batch)
        np.testing.assert_allclose(gaps.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_calibration_applies_only_where_the_return_is_known():
    q_values = th.tensor([[[0.0, 5.0], [0.0, 5.0], [0.0, 5.0]]], requires_grad=True)  # (1 critic, 3 samples, 2 actions)
    mc_returns = th.tensor([2.0, float("nan"), -1.0])
    bounded = calibrate(q_values, mc_returns)
    np.testing.assert_array_equal(bounded.detach().numpy(), [[[2.0, 5.0], [0.0, 5.0], [0.0, 5.0]]])
    bounded.sum().backward()
    # a Q-value raised to the bound gets no gradient (the regulariser no longer pushes it down)
    np.testing.assert_array_equal(q_values.grad.numpy(), [[[0.0, 1.0], [1.0, 1.0], [1.0, 1.0]]])


def test_unknown_returns_in_an_update_are_no_bound():
    """A batch whose returns are all unknown gives exactly the uncalibrated (CQL) update."""
    unknown = th.full((6,), float("nan"))
    results = []
    for calibration in (True, False):
        model = tiny_model(calibration=calibration)
        th.manual_seed(3)
        results.append(model._train_step(make_batch(mc_returns=unknown)))
    for key in ("critic_loss", "conservative_loss", "actor_loss", "cql_gap"):
        assert th.equal(results[0][key], results[1][key]), key


@pytest.mark.parametrize("max_target_backup, backup_entropy", [(False, False), (True, False), (True, True)])
def test_train_step_losses_match_direct_computation(max_target_backup, backup_entropy):
    model = tiny_model(
        cql_n_actions=3,
        cql_alpha=2.0,
        ent_coef="auto_0.5",
        gamma=0.9,
        cql_max_target_backup=max_target_backup,
        backup_entropy=backup_entropy,
    )
    before = copy.deepcopy(model.policy)
    batch = make_batch()
    th.manual_seed(7)
    metrics = model._train_step(batch)

    # replay the update's random draws on the pre-update networks
    n, obs, next_obs = 3, batch.observations, batch.next_observations
    n_target = n if max_target_backup else 1
    th.manual_seed(7)
    with th.no_grad():
        new_actions, new_log_prob = before.actor.action_log_prob(obs)
        states = th.cat([obs.unsqueeze(1).expand(-1, n, -1), next_obs.unsqueeze(1).expand(-1, n + n_target, -1)], dim=1)
        sampled, sampled_log_prob = before.actor.action_log_prob(states)
        uniform = th.rand(len(obs), n, ACTION_DIM) * 2 - 1
        current, following = sampled[:, :n], sampled[:, n : 2 * n]
        # the TD target backs up the sample a'_j with the largest min_k Qbar_k(s', a'_j) (the only one without the
        # max-target backup), minus alpha log pi(a'_j | s') with backup_entropy
        backed_up = []
        for i in range(len(obs)):
            candidates = []
            for j in range(n_target):
                target_action = sampled[i, 2 * n + j]
                q = before.critic_target(next_obs[i], target_action).min().item()
                candidates.append((q, q - 0.5 * sampled_log_prob[i, 2 * n + j].item()))
            best_q, best_with_entropy = max(candidates)
            backed_up.append(best_with_entropy if backup_entropy else best_q)
        target = batch.rewards[:, 0] + 0.9 * (1 - batch.dones[:, 0]) * th.tensor(backed_up)
        q_data = before.critic(obs, batch.actions)
        expected_td = np.mean([sum((q_data[k, i] - target[i]).item() ** 2 for k in range(2)) for i in range(len(obs))])
        q_at = lambda actions: before.critic(obs.unsqueeze(1).expand(-1, n, -1), actions)  # noqa: E731
        gaps = direct_gaps(
            q_data,
            q_at(uniform),
            q_at(current),
            q_at(following),
            sampled_log_prob[:, :n],
            sampled_log_prob[:, n : 2 * n],
            batch.mc_returns,
            1.0,
            True,
        )
        expected_conservative = 2.0 * gaps.sum(axis=0).mean()
        q_new = before.critic(obs, new_actions).min(dim=0).values
        expected_actor = (0.5 * new_log_prob - q_new).mean().item()
        expected_ent_coef_loss = -(math.log(0.5) * (new_log_prob - ACTION_DIM)).mean().item()
    assert metrics["td_loss"].item() == pytest.approx(expected_td, rel=1e-5)
    assert metrics["conservative_loss"].item() == pytest.approx(expected_conservative, rel=1e-5)
    assert metrics["critic_loss"].item() == pytest.approx(expected_td + expected_conservative, rel=1e-5)
    assert metrics["actor_loss"].item() == pytest.approx(expected_actor, rel=1e-5)
    assert metrics["ent_coef_loss"].item() == pytest.approx(expected_ent_coef_loss, rel=1e-5)
    assert metrics["ent_coef"].item() == pytest.approx(0.5, rel=1e-6)
    # the actor loss moved the actor only: the critics' gradient is that of the critic loss alone
    for target_param, old_target, new_param in zip(
        model.critic_target.parameters(), before.critic_target.parameters(), model.critic.parameters(), strict=True
    ):
        th.testing.assert_close(target_param, (1 - model.tau) * old_target + model.tau * new_param)


@pytest.mark.parametrize("max_target_backup", [False, True])
def test_all_action_evaluations_in_one_critic_call(max_target_backup):
    model = tiny_model(cql_n_actions=4, cql_max_target_backup=max_target_backup)
    calls: list[tuple[str, tuple[int, ...]]] = []
    for name in ("critic", "critic_target"):
        module = getattr(model.policy, name)
        module.register_forward_hook(lambda _m, inputs, _out, name=name: calls.append((name, tuple(inputs[1].shape))))
    model._train_step(make_batch())
    # one call on the data action and the 3 x 4 sampled actions of every state, one for the actor's loss,
    # one target call for the TD target (on its one sample a' per state, or 4 with the max-target backup)
    target_samples = 4 if max_target_backup else 1
    expected = [
        ("critic", (6, 13, ACTION_DIM)),
        ("critic", (6, ACTION_DIM)),
        ("critic_target", (6, target_samples, ACTION_DIM)),
    ]
    assert sorted(calls) == sorted(expected)


# ---------------------------------------------------------------------- the Lagrange form and the mask


@pytest.mark.parametrize("target_gap, direction", [(-1e3, 1.0), (1e3, -1.0)])
def test_lagrange_multiplier_grows_while_the_gap_exceeds_the_target(target_gap, direction):
    model = tiny_model(cql_lagrange=True, cql_target_gap=target_gap)
    assert model.log_cql_alpha_prime is not None and model.log_cql_alpha_prime.item() == 1.0  # as the reference
    metrics = model._train_step(make_batch())
    assert metrics["cql_alpha_prime"].item() == pytest.approx(math.e)
    assert np.sign(model.log_cql_alpha_prime.item() - 1.0) == direction


@pytest.mark.parametrize("lagrange", [False, True])
def test_offline_like_mask(monkeypatch, lagrange):
    """An all-True mask is exactly the base algorithm; an all-False one removes the conservative term and nothing else."""
    results = {}
    for mask in (None, True, False):
        model = tiny_model(cql_lagrange=lagrange)
        if mask is not None:
            monkeypatch.setattr(model, "_offline_like_mask", lambda data, mask=mask: th.full((len(data.actions),), mask))
        th.manual_seed(5)
        results[mask] = (model._train_step(make_batch()), copy.deepcopy(model.policy.state_dict()), model)
    (metrics_none, state_none, model_none), (metrics_all, state_all, _), (metrics_off, state_off, model_off) = (
        results[None],
        results[True],
        results[False],
    )
    assert metrics_none.keys() == metrics_all.keys()
    for key, value in metrics_none.items():
        assert th.equal(value, metrics_all[key]), key
    for key, value in state_none.items():
        assert th.equal(value, state_all[key]), key
    assert metrics_off["conservative_loss"].item() == 0.0
    assert th.equal(metrics_off["critic_loss"], metrics_off["td_loss"])
    for key in ("td_loss", "actor_loss", "cql_gap", "q_value"):
        assert th.equal(metrics_off[key], metrics_none[key]), key
    assert not th.equal(state_off["critic.q_networks.output.weight"], state_none["critic.q_networks.output.weight"])
    if lagrange:
        # no offline-like sample: the multiplier gets no gradient
        assert model_off.log_cql_alpha_prime.item() == 1.0 and model_none.log_cql_alpha_prime.item() != 1.0


# ---------------------------------------------------------------------- construction


def test_defaults_and_entropy_coefficient():
    model = tiny_model()
    assert CalQL.policy_aliases["MlpPolicy"] is CalQLPolicy and isinstance(model.policy, CalQLPolicy)
    assert (model.learning_rate, model.actor_learning_rate, model.cql_alpha, model.cql_n_actions) == (3e-4, 1e-4, 10.0, 10)
    assert (model.cql_temperature, model.cql_lagrange, model.cql_target_gap, model.offline_ratio) == (1.0, False, 0.8, 0.5)
    assert model.learning_starts == 0 and model.normalize_observations and not model.backup_entropy
    assert model.target_entropy == -ACTION_DIM and model.log_cql_alpha_prime is None
    assert model.log_ent_coef is not None and model.log_ent_coef.item() == 0.0
    model.pretrain(n_steps=1)
    # the temperature follows the actor's rate (as the reference), the critics theirs
    assert model.ent_coef_optimizer.param_groups[0]["lr"] == 1e-4 and model.actor.optimizer.param_groups[0]["lr"] == 1e-4
    assert model.critic.optimizer.param_groups[0]["lr"] == 3e-4
    fixed = tiny_model(ent_coef=0.2, target_entropy=-0.5)
    assert fixed.log_ent_coef is None and fixed.ent_coef_optimizer is None and fixed.target_entropy == -0.5
    assert fixed._train_step(make_batch())["ent_coef"].item() == pytest.approx(0.2)
    assert tiny_model(ent_coef="auto_0.1").log_ent_coef.exp().item() == pytest.approx(0.1)


@pytest.mark.parametrize("cql_alpha_online", [None, 0.5, 0.0])
def test_cql_alpha_online_weighs_the_regulariser_after_the_switch(cql_alpha_online, tmp_path):
    from sb3_dare import DARE_CalQL

    model = tiny_model(offline_steps=3, cql_alpha=4.0, cql_alpha_online=cql_alpha_online)
    model.pretrain(n_steps=2)
    assert model.current_cql_alpha == 4.0 and not model.offline_phase_done
    model.pretrain()
    expected = 4.0 if cql_alpha_online is None else cql_alpha_online
    # cql_alpha keeps the offline weight; the updates after the switch use the online one
    assert model.offline_phase_done and model.cql_alpha == 4.0 and model.current_cql_alpha == expected
    weighted, unit = copy.deepcopy(model), copy.deepcopy(model)
    unit.cql_alpha, unit.cql_alpha_online = 1.0, None
    th.manual_seed(1)
    weighted_loss = weighted._train_step(make_batch())["conservative_loss"].item()
    th.manual_seed(1)
    unit_loss = unit._train_step(make_batch())["conservative_loss"].item()
    assert unit_loss != 0.0 and weighted_loss == pytest.approx(expected * unit_loss, rel=1e-5, abs=1e-7)
    # saved and loaded, both weights are there; an override at load replaces the online one only
    model.save(tmp_path / "model.zip")
    loaded = CalQL.load(tmp_path / "model.zip", dataset=tiny_data())
    assert (loaded.cql_alpha, loaded.cql_alpha_online, loaded.current_cql_alpha) == (4.0, cql_alpha_online, expected)
    overridden = CalQL.load(tmp_path / "model.zip", dataset=tiny_data(), cql_alpha_online=None)
    assert overridden.current_cql_alpha == 4.0
    # DARE from this base starts its own switch with the base's offline weight
    dare = DARE_CalQL.from_base(model, behavior_model="gaussian", guidance_scale=0.0)
    assert (dare.cql_alpha, dare.cql_alpha_online, dare.current_cql_alpha) == (4.0, cql_alpha_online, 4.0)


def test_reference_initialisation_and_log_std_offset(tmp_path):
    default = tiny_model(policy_kwargs=dict(net_arch=[16, 16]))
    model = tiny_model(policy_kwargs=dict(net_arch=[16, 16], orthogonal_init=True, log_std_offset=-1.0))
    # the defaults add no parameter: models saved before these options load unchanged
    assert set(model.policy.state_dict()) - set(default.policy.state_dict()) == {
        "actor.log_std_multiplier",
        "actor.log_std_offset",
    }
    assert not any("log_std_multiplier" in key for key in default.policy.state_dict())

    def gram(matrix):  # the Gram matrix of the smaller side: gain^2 times the identity for an orthogonal matrix
        return matrix @ matrix.T if matrix.shape[0] <= matrix.shape[1] else matrix.T @ matrix

    actor_layers = [layer for layer in model.actor.trunk if isinstance(layer, th.nn.Linear)]
    critic_layers = [*model.critic.q_networks.hidden, model.critic.q_networks.output]
    for layers in (actor_layers, critic_layers):
        for index, layer in enumerate(layers):
            gain = 1e-2 if index == len(layers) - 1 else math.sqrt(2.0)
            weights = [layer.weight] if isinstance(layer, th.nn.Linear) else [w.T for w in layer.weight]
            for weight in weights:  # each (out, in) matrix, each critic member on its own
                product = gram(weight.detach())
                th.testing.assert_close(product, gain**2 * th.eye(len(product)), atol=1e-5, rtol=1e-4)
            assert th.count_nonzero(layer.bias) == 0
    members = model.critic.q_networks.hidden[0].weight
    assert not th.allclose(members[0], members[1])  # independent members
    th.testing.assert_close(model.critic_target.state_dict(), model.critic.state_dict())

    # log-std = m * output + b, m = 1 and b = -1 at the start, learned with the actor
    observations = th.randn(5, OBS_DIM)
    raw_log_std = model.actor.trunk(observations).chunk(2, dim=-1)[1]
    th.testing.assert_close(model.actor.mean_log_std(observations)[1], raw_log_std - 1.0)
    actor_parameters = {id(p) for group in model.actor.optimizer.param_groups for p in group["params"]}
    assert {id(model.actor.log_std_multiplier), id(model.actor.log_std_offset)} <= actor_parameters
    before = model.actor.log_std_offset.item()
    model._train_step(make_batch())
    assert model.actor.log_std_offset.item() != before
    model.save(tmp_path / "model.zip")
    loaded = CalQL.load(tmp_path / "model.zip", dataset=tiny_data())
    assert loaded.policy.orthogonal_init and loaded.policy.log_std_offset == -1.0
    th.testing.assert_close(loaded.policy.state_dict(), model.policy.state_dict())
    with pytest.raises(ValueError, match="log_std_offset must be a finite float"):
        tiny_model(policy_kwargs=dict(net_arch=[16], log_std_offset=float("inf")))


def test_a_model_saved_before_the_new_options_loads_and_acts_the_same():
    # saved by commit 9b78c25 (before cql_max_target_backup, cql_alpha_online, orthogonal_init, log_std_offset):
    # a Lagrange CalQL after 3 offline updates on tiny_data(), with its deterministic actions on 4 observations
    import json
    from pathlib import Path

    fixtures = Path(__file__).parent / "fixtures"
    expected = json.loads((fixtures / "calql_9b78c25.json").read_text())
    model = CalQL.load(fixtures / "calql_9b78c25.zip", dataset=tiny_data())
    actions, _ = model.predict(np.array(expected["observations"], dtype=np.float32), deterministic=True)
    # close, not bit-equal: the fixture was computed on another CPU, whose kernels may round the last bit differently
    np.testing.assert_allclose(actions, np.array(expected["actions"], dtype=np.float32), rtol=1e-6, atol=1e-6)
    assert model.log_cql_alpha_prime.item() == expected["log_cql_alpha_prime"]
    assert not model.cql_max_target_backup and model.cql_alpha_online is None
    assert model.current_cql_alpha == expected["cql_alpha"]
    assert not model.policy.orthogonal_init and model.policy.log_std_offset is None
    metrics = model._train_step(make_batch())  # and it trains on
    assert all(np.isfinite(value.item()) for value in metrics.values())


def test_offline_logs(tmp_path):
    model = tiny_model(cql_lagrange=True, offline_log_interval=2)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.pretrain(n_steps=4)
    import pandas as pd

    log = pd.read_csv(tmp_path / "progress.csv")
    for key in ("td_loss", "conservative_loss", "cql_gap", "calibration_rate", "ent_coef", "cql_alpha_prime", "actor_loss"):
        assert f"offline/{key}" in log.columns, key
    assert list(log["offline/updates"]) == [2, 4]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(cql_alpha=-1.0), r"cql_alpha must be in \[0.0, inf\)"),
        (dict(cql_alpha_online=-1.0), r"cql_alpha_online must be in \[0.0, inf\)"),
        (dict(cql_alpha_online=float("nan")), r"cql_alpha_online must be in \[0.0, inf\)"),
        (dict(cql_n_actions=0), r"cql_n_actions must be an integer in \[1, inf\)"),
        (dict(cql_n_actions=2.5), "cql_n_actions must be an integer"),
        (dict(cql_temperature=0.0), r"cql_temperature must be in \(0.0, inf\)"),
        (dict(cql_target_gap=float("nan")), "cql_target_gap must be in"),
        (dict(actor_learning_rate=0.0), "actor_learning_rate must be > 0"),
        (dict(ent_coef="automatic"), "ent_coef must be 'auto'"),
        (dict(ent_coef="auto_-1"), "ent_coef must be 'auto'"),
        (dict(ent_coef=-0.1), "ent_coef must be 'auto'"),
        (dict(target_entropy="high"), "target_entropy must be 'auto' or a finite float"),
        (dict(truncated_returns="bootstrap"), "truncated_returns must be one of partial, reward_floor"),
        (dict(offline_ratio=1.5), r"offline_ratio must be in \[0.0, 1.0\]"),
        (dict(policy_kwargs=dict(net_arch=[16], unknown_option=1)), r"Unknown policy_kwargs \['unknown_option'\]"),
    ],
)
def test_constructor_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(**kwargs)


# ---------------------------------------------------------------------- learning, saving


class CountingCallback(BaseCallback):
    def __init__(self):
        super().__init__()
        self.offline_calls = 0

    def on_offline_step(self) -> bool:
        self.offline_calls += 1
        return True

    def _on_step(self) -> bool:
        return True


def test_offline_calql_beats_random_and_online_stays_finite(pendulum_balance_dataset):
    # gamma 0.95 and rates 1e-3 let the critics reach the scale of the returns within a few hundred updates
    model = CalQL(
        "MlpPolicy",
        ENV_ID,
        dataset=pendulum_balance_dataset,
        offline_steps=600,
        batch_size=128,
        gamma=0.95,
        learning_rate=1e-3,
        actor_learning_rate=1e-3,
        policy_kwargs=dict(net_arch=[64, 64]),
        offline_eval_freq=0,
        seed=0,
    )
    model.learn(0)
    assert model.num_timesteps == 0 and model.offline_updates == 600
    offline = evaluate_normalized(model, Monitor(gym.make(ENV_ID)), n_eval_episodes=3)
    assert offline["mean_reward"] > 100.0  # random actions keep the pole up for about 5 steps, the data about 180
    model.learn(200)
    assert model.num_timesteps == 200 and model.offline_updates == 600 and model._n_updates == 800
    for parameter in model.policy.parameters():
        assert th.isfinite(parameter).all()
    assert math.isfinite(model.log_ent_coef.item())


def test_save_load_identical_predictions_and_continue(pendulum_balance_dataset, tmp_path):
    model = CalQL(
        "MlpPolicy",
        ENV_ID,
        dataset=pendulum_balance_dataset,
        cql_lagrange=True,
        truncated_returns="reward_floor",
        reward_bias=-2.0,
        **{**TINY, "offline_steps": 20},
    )
    model.learn(10)
    # InvertedPendulum pays 1 per step (0 at a fall), -2 + that with the bias; balanced episodes are cut at 300 steps, and
    # the floor (-2 per step after the cut) lowers their returns below the partial sums
    buffer, data = model.replay_buffer, model.offline_data
    assert buffer.truncated_returns == "reward_floor" and buffer.offline_reward_floor == -2.0
    floored, partial = data.discounted_returns(model.gamma, 1.0, -2.0, -2.0), data.discounted_returns(model.gamma, 1.0, -2.0)
    np.testing.assert_allclose(buffer.offline_mc_returns, floored, rtol=1e-6)
    assert (floored <= partial + 1e-4).all() and (floored < partial - 1.0).any()
    model.save(tmp_path / "calql")
    loaded = CalQL.load(tmp_path / "calql", env=gym.make(ENV_ID))
    obs = np.random.default_rng(0).normal(size=(10, 4))
    np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    assert loaded.offline_updates == 20 and loaded.offline_phase_done and loaded.cql_lagrange
    assert loaded.truncated_returns == loaded.replay_buffer.truncated_returns == "reward_floor"
    for key, value in model.policy.state_dict().items():
        th.testing.assert_close(loaded.policy.state_dict()[key], value)
    # the learned scalars and every optimizer state travel too
    assert loaded.log_ent_coef.item() == model.log_ent_coef.item() and loaded.log_ent_coef.requires_grad
    assert loaded.log_cql_alpha_prime.item() == model.log_cql_alpha_prime.item()
    for name in ("ent_coef_optimizer", "cql_alpha_prime_optimizer"):
        saved, restored = getattr(model, name).state_dict(), getattr(loaded, name).state_dict()
        th.testing.assert_close(restored["state"], saved["state"])
        assert restored["param_groups"][0]["params"] == saved["param_groups"][0]["params"]
    assert loaded.ent_coef_optimizer.param_groups[0]["params"][0] is loaded.log_ent_coef
    callback = CountingCallback()
    loaded.learn(10, callback=callback)  # re-attaches the dataset, no second offline phase
    assert callback.offline_calls == 0 and loaded.offline_updates == 20 and loaded.replay_buffer.n_offline > 0
    assert loaded.log_cql_alpha_prime.item() != model.log_cql_alpha_prime.item()  # and the multiplier keeps learning


@pytest.mark.skipif(not th.cuda.is_available(), reason="needs a GPU")
def test_cuda():
    model = tiny_model(device="cuda", cql_lagrange=True)
    model.pretrain(n_steps=5)
    assert next(model.policy.parameters()).is_cuda and model.log_cql_alpha_prime.is_cuda
