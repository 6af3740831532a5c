"""IQL on the O2O base: losses against direct computations, learning, and SB3 conventions."""

from __future__ import annotations

import copy
import os
import shutil
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_dare import IQL
from sb3_dare.common.buffers import OfflineOnlineSamples
from sb3_dare.common.evaluation import NormalizedEvalCallback, evaluate_normalized
from sb3_dare.data import load_offline_data
from sb3_dare.iql.iql import awr_weights, expectile_loss

ENV_ID = "InvertedPendulum-v5"
TINY = dict(batch_size=32, policy_kwargs=dict(net_arch=[16, 16]), offline_eval_freq=0, offline_log_interval=50, seed=0)


def make_model(dataset_id: str, env=ENV_ID, **kwargs) -> IQL:
    return IQL("MlpPolicy", env, dataset=dataset_id, **{**TINY, "offline_steps": 20, **kwargs})


# ---------------------------------------------------------------------- losses


def test_expectile_loss_and_awr_weights_by_hand():
    difference = th.tensor([-2.0, -0.5, 0.0, 1.0, 3.0])
    expected = [0.3 * 4.0, 0.3 * 0.25, 0.0, 0.7 * 1.0, 0.7 * 9.0]
    np.testing.assert_allclose(expectile_loss(difference, 0.7).numpy(), expected, rtol=1e-6)
    weights = awr_weights(th.tensor([-1.0, 0.0, 1.0, 10.0]), beta=3.0, max_weight=100.0)
    np.testing.assert_allclose(weights.numpy(), [np.exp(-3.0), 1.0, np.exp(3.0), 100.0], rtol=1e-6)


def _batch(n: int, obs_dim: int, action_dim: int, seed: int = 0) -> OfflineOnlineSamples:
    generator = th.Generator().manual_seed(seed)
    return OfflineOnlineSamples(
        observations=th.randn(n, obs_dim, generator=generator),
        actions=th.rand(n, action_dim, generator=generator) * 2 - 1,
        next_observations=th.randn(n, obs_dim, generator=generator),
        dones=(th.rand(n, 1, generator=generator) < 0.3).float(),
        rewards=th.randn(n, 1, generator=generator),
        discounts=None,
        is_offline=th.ones(n, dtype=th.bool),
        scores=th.zeros(n),
        mc_returns=th.zeros(n),
        indices=th.arange(n),
    )


def test_train_step_losses_match_direct_computation(pendulum_balance_dataset):
    model = make_model(pendulum_balance_dataset, expectile=0.8, beta=2.0, max_weight=5.0)
    model._setup_offline_logger("test")
    policy = model.policy
    before = copy.deepcopy(policy)
    batch = _batch(8, 4, 1)
    metrics = model._train_step(batch)

    obs, next_obs = batch.observations, batch.next_observations
    with th.no_grad():
        q_target_min = th.min(before.critic_target(obs, batch.actions), dim=0).values
        values = before.value_net(obs)
        target = batch.rewards[:, 0] + model.gamma * (1 - batch.dones[:, 0]) * before.value_net(next_obs)
        q1, q2 = before.critic(obs, batch.actions)
        diff = q_target_min - values
        expected_value_loss = th.mean(th.where(diff < 0, 0.2, 0.8) * diff**2)
        expected_critic_loss = 0.5 * (th.mean((q1 - target) ** 2) + th.mean((q2 - target) ** 2))
        weights = th.clamp(th.exp(2.0 * diff), max=5.0)
        mean = th.tanh(before.actor.mean_net(obs))
        std = th.exp(before.actor.log_std)
        log_prob = (-((batch.actions - mean) ** 2) / (2 * std**2) - th.log(std) - 0.5 * np.log(2 * np.pi)).sum(-1)
        expected_actor_loss = th.mean(-weights * log_prob)
    assert metrics["value_loss"].item() == pytest.approx(expected_value_loss.item(), rel=1e-5)
    assert metrics["critic_loss"].item() == pytest.approx(expected_critic_loss.item(), rel=1e-5)
    assert metrics["actor_loss"].item() == pytest.approx(expected_actor_loss.item(), rel=1e-5)
    # the target networks follow by polyak averaging
    for target_param, old_target, new_param in zip(
        policy.critic_target.parameters(), before.critic_target.parameters(), policy.critic.parameters(), strict=True
    ):
        np.testing.assert_allclose(
            target_param.detach().numpy(), ((1 - model.tau) * old_target + model.tau * new_param).detach().numpy(), rtol=1e-5
        )


def test_critic_ensemble_is_one_batched_module(pendulum_balance_dataset):
    model = make_model(pendulum_balance_dataset, policy_kwargs=dict(net_arch=[16], n_critics=3))
    q_values = model.critic(th.zeros(5, 4), th.zeros(5, 1))
    assert q_values.shape == (3, 5)
    # members are independent networks
    assert not th.allclose(q_values[0], q_values[1])


# ---------------------------------------------------------------------- learning


def test_offline_iql_beats_random_and_online_stays_finite(pendulum_balance_dataset):
    model = IQL(
        "MlpPolicy",
        ENV_ID,
        dataset=pendulum_balance_dataset,
        offline_steps=1000,
        batch_size=128,
        policy_kwargs=dict(net_arch=[64, 64]),
        offline_eval_freq=0,
        seed=0,
    )
    model.learn(0)
    assert model.num_timesteps == 0 and model.offline_updates == 1000
    offline = evaluate_normalized(model, gym.make(ENV_ID), n_eval_episodes=3)
    assert offline["mean_reward"] > 50.0  # random actions keep the pole up for about 5 steps
    model.learn(300)
    assert model.num_timesteps == 300 and model.offline_updates == 1000
    for parameter in model.policy.parameters():
        assert th.isfinite(parameter).all()


# ---------------------------------------------------------------------- the two phases


class CountingCallback(BaseCallback):
    def __init__(self):
        super().__init__()
        self.offline_calls = 0
        self.env_steps = 0

    def on_offline_step(self) -> bool:
        self.offline_calls += 1
        return True

    def _on_step(self) -> bool:
        self.env_steps += 1
        return True


def test_actor_and_critic_learning_rates_reach_their_optimizers(pendulum_balance_dataset):
    model = make_model(pendulum_balance_dataset, offline_steps=3, learning_rate=3e-4, actor_learning_rate=1e-4)
    model.pretrain()
    assert model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    for optimizer in (model.critic.optimizer, model.value_net.optimizer):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(3e-4)
    default = make_model(pendulum_balance_dataset, offline_steps=1, learning_rate=5e-4)
    default.pretrain()
    assert default.actor.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)  # None: the critics' rate


def test_net_arch_per_network(pendulum_balance_dataset):
    """net_arch as a dict sizes each network on its own; missing keys take the default (2x256)."""
    model = make_model(pendulum_balance_dataset, policy_kwargs=dict(net_arch=dict(pi=[8], qf=[12, 12], vf=[6, 6, 6])))
    assert [m.out_features for m in model.actor.mean_net if isinstance(m, th.nn.Linear)] == [8, 1]
    assert [layer.out_features for layer in model.critic.q_networks.hidden] == [12, 12]
    assert [m.out_features for m in model.value_net.net if isinstance(m, th.nn.Linear)] == [6, 6, 6, 1]
    partial = make_model(pendulum_balance_dataset, policy_kwargs=dict(net_arch=dict(pi=[8])))
    assert [layer.out_features for layer in partial.critic.q_networks.hidden] == [256, 256]


def test_learn_runs_offline_then_online_and_counts(pendulum_balance_dataset):
    model = make_model(pendulum_balance_dataset, offline_steps=30)
    callback = CountingCallback()
    model.learn(40, callback=callback)
    assert callback.offline_calls == 30 and callback.env_steps == 40
    assert model.offline_updates == 30 and model.num_timesteps == 40
    assert model._n_updates == 30 + 40  # one update per env step online (learning_starts=0)
    # a second learn() continues online without a second offline phase
    model.learn(10, callback=callback, reset_num_timesteps=False)
    assert callback.offline_calls == 30 and model.offline_updates == 30 and model.num_timesteps == 50


def test_offline_callback_can_stop_the_offline_phase(pendulum_balance_dataset):
    class StopAt(CountingCallback):
        def on_offline_step(self) -> bool:
            super().on_offline_step()
            return self.offline_calls < 5

    model = make_model(pendulum_balance_dataset, offline_steps=30)
    model.pretrain(callback=StopAt())
    assert model.offline_updates == 5 and not model.offline_phase_done
    model.pretrain()
    assert model.offline_updates == 30 and model.offline_phase_done
    # learn() stops too, before the online phase (SB3 semantics); the next learn() finishes the offline phase first
    model = make_model(pendulum_balance_dataset, offline_steps=30)
    stop = StopAt()
    model.learn(20, callback=stop)
    assert (model.offline_updates, model.num_timesteps, stop.env_steps) == (5, 0, 0) and not model.offline_phase_done
    counter = CountingCallback()
    model.learn(20, callback=counter)
    assert (counter.offline_calls, model.offline_updates, model.num_timesteps) == (25, 30, 20) and model.offline_phase_done


def test_pretrain_sets_up_logger_and_logs_offline_keys(pendulum_balance_dataset, tmp_path):
    model = make_model(pendulum_balance_dataset, offline_steps=100, offline_eval_freq=50, offline_eval_episodes=1)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.pretrain()
    import pandas as pd

    log = pd.read_csv(tmp_path / "progress.csv")
    for key in (
        "offline/critic_loss",
        "offline/value_loss",
        "offline/actor_loss",
        "offline/normalized_score",
        "offline/mean_reward",
        "offline/updates",
        "offline/learning_rate",
        "offline/q_value",
        "offline/value",
        "offline/advantage_weight",
        "offline/actor_log_std",
        "offline/std_reward",
        "offline/updates_per_second",
    ):
        assert key in log.columns, key
    assert list(log["offline/updates"]) == [50, 100]
    # the online phase's train/* keys (x-axis: env steps) stay out of the offline logs (x-axis: offline updates)
    assert not [key for key in log.columns if key.startswith("train/")]
    # pretrain() without set_logger() builds the logger itself (SB3 does so only in learn())
    fresh = make_model(pendulum_balance_dataset, offline_steps=5)
    fresh.pretrain(n_steps=3)
    assert fresh.offline_updates == 3


def test_tensorboard_run_named_after_the_algorithm_in_both_phases(pendulum_balance_dataset, tmp_path):
    pytest.importorskip("tensorboard")
    model = make_model(pendulum_balance_dataset, offline_steps=5, tensorboard_log=str(tmp_path / "tb"))
    model.pretrain()
    model.learn(5, reset_num_timesteps=False)  # continues the run, as in SB3
    assert sorted(path.name for path in (tmp_path / "tb").iterdir()) == ["IQL_1"]


def test_offline_only_without_env(pendulum_balance_dataset):
    model = IQL("MlpPolicy", None, dataset=pendulum_balance_dataset, **{**TINY, "offline_steps": 10})
    assert model.observation_space.shape == (4,)
    model.learn(0)
    assert model.offline_updates == 10
    action, _ = model.predict(np.zeros(4, dtype=np.float32), deterministic=True)
    assert action.shape == (1,) and np.abs(action).max() <= 3.0
    with pytest.raises(ValueError, match="no env"):
        model.learn(10)


def test_offline_evaluation_without_any_env_is_skipped_with_a_warning(pendulum_balance_arrays):
    model = IQL("MlpPolicy", None, dataset=pendulum_balance_arrays, **{**TINY, "offline_steps": 10, "offline_eval_freq": 5})
    with pytest.warns(UserWarning, match=r"No env to evaluate the offline phase with \(the model has no env, and the "):
        model.learn(0)
    assert model.offline_updates == 10 and model.offline_eval_freq == 0  # trained on, without evaluations


def test_version_is_the_installed_one():
    from importlib.metadata import version

    import sb3_dare

    assert sb3_dare.__version__ == version("sb3_dare") and sb3_dare.__version__.count(".") >= 2


def test_dataset_is_loaded_lazily(minari_root, hub_offline):
    model = make_model("missing/dataset/medium-v0")  # nothing is read at construction
    with pytest.raises(FileNotFoundError, match=r"python -m sb3_dare\.data build"):
        model.learn(0)


def test_progress_bar_and_tensorboard(pendulum_balance_dataset, tmp_path, monkeypatch):
    from sb3_dare.common import callbacks

    seen = []
    real_end = callbacks.O2OProgressBarCallback._on_training_end

    def recording_end(self):
        seen.append((self.pbar.n, self.pbar.total, self.pbar.desc))
        real_end(self)
        seen.append(self.pbar)  # closed and released

    monkeypatch.setattr(callbacks.O2OProgressBarCallback, "_on_training_end", recording_end)
    model = make_model(pendulum_balance_dataset, offline_steps=10, tensorboard_log=str(tmp_path / "tb"))
    model.learn(10, progress_bar=True)
    assert [entry.name for entry in os.scandir(tmp_path / "tb")] == ["IQL_1"]  # one run folder, named after the algorithm
    # one bar over both phases: 10 offline updates, then 10 env steps, relabelled when the online phase starts
    assert seen[0][:2] == (20, 20) and seen[0][2].startswith("online steps") and seen[1] is None


def test_eval_and_checkpoint_callbacks(pendulum_balance_dataset, tmp_path):
    model = make_model(pendulum_balance_dataset, offline_steps=10)
    eval_callback = NormalizedEvalCallback(gym.make(ENV_ID), n_eval_episodes=1, eval_freq=10, verbose=0)
    plain_eval = EvalCallback(gym.make(ENV_ID), n_eval_episodes=1, eval_freq=10, log_path=str(tmp_path), verbose=0)
    checkpoint = CheckpointCallback(save_freq=10, save_path=str(tmp_path), name_prefix="iql")
    model.learn(20, callback=[eval_callback, plain_eval, checkpoint])
    assert len(eval_callback.normalized_scores) == 2
    assert eval_callback.last_normalized_score == pytest.approx((eval_callback.last_mean_reward - 5.0) / (1000.0 - 5.0) * 100)
    assert len(plain_eval.evaluations_results) == 2
    assert (tmp_path / "iql_20_steps.zip").exists() and (tmp_path / "evaluations.npz").exists()
    # a dataset given by id is loaded once, not at every evaluation
    by_id = NormalizedEvalCallback(gym.make(ENV_ID), dataset=pendulum_balance_dataset, n_eval_episodes=1, eval_freq=5)
    loads = []
    import sb3_dare.common.evaluation as evaluation

    original = evaluation.load_offline_data
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluation, "load_offline_data", lambda *args, **kwargs: loads.append(args) or original(*args, **kwargs))
        model.learn(10, callback=by_id, reset_num_timesteps=False)
    assert len(by_id.normalized_scores) == 2 and len(loads) == 1


def test_predict_deterministic_and_stochastic(pendulum_balance_dataset):
    model = make_model(pendulum_balance_dataset)
    model.learn(0)
    obs = np.zeros((5, 4), dtype=np.float64)
    deterministic, _ = model.predict(obs, deterministic=True)
    assert deterministic.shape == (5, 1) and np.all(np.abs(deterministic) <= 3.0)
    np.testing.assert_array_equal(deterministic, model.predict(obs, deterministic=True)[0])
    stochastic = np.stack([model.predict(obs[0])[0] for _ in range(20)])
    assert np.all(np.abs(stochastic) <= 3.0) and stochastic.std() > 0


def test_observation_statistics_live_in_the_policy(pendulum_balance_dataset):
    model = make_model(pendulum_balance_dataset)
    model.learn(0)
    data = load_offline_data(pendulum_balance_dataset)
    mean, std = data.observation_statistics()
    np.testing.assert_allclose(model.policy.observation_normalizer.mean.numpy(), mean, rtol=1e-6)
    np.testing.assert_allclose(model.policy.observation_normalizer.std.numpy(), std, rtol=1e-6)
    unnormalized = make_model(pendulum_balance_dataset, normalize_observations=False)
    unnormalized.learn(0)
    assert not bool(unnormalized.policy.observation_normalizer.initialized)


def test_save_load_identical_predictions_and_continue(pendulum_balance_dataset, tmp_path):
    model = make_model(pendulum_balance_dataset, offline_steps=20)
    model.learn(10)
    model.save(tmp_path / "iql")
    env = gym.make(ENV_ID)
    loaded = IQL.load(tmp_path / "iql", env=env)
    obs = np.random.default_rng(0).normal(size=(10, 4))
    np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    assert loaded.dataset == pendulum_balance_dataset and loaded.offline_updates == 20 and loaded.offline_phase_done
    for key, value in model.policy.state_dict().items():
        th.testing.assert_close(loaded.policy.state_dict()[key], value)
    # optimizer states travel too
    assert loaded.actor.optimizer.state_dict()["state"].keys() == model.actor.optimizer.state_dict()["state"].keys()
    callback = CountingCallback()
    loaded.learn(10, callback=callback)  # re-attaches the dataset, no second offline phase
    assert callback.offline_calls == 0 and loaded.replay_buffer.n_offline > 0


def test_in_memory_dataset_is_not_saved(pendulum_balance_arrays, tmp_path):
    in_memory = pendulum_balance_arrays
    model = make_model(in_memory, offline_steps=10)
    model.learn(5)
    model.save(tmp_path / "iql")
    loaded = IQL.load(tmp_path / "iql", env=gym.make(ENV_ID))
    assert loaded.dataset is None
    with pytest.raises(ValueError, match="dataset=data"):
        loaded.learn(5)
    again = IQL.load(tmp_path / "iql", env=gym.make(ENV_ID), dataset=in_memory)
    again.learn(5)
    assert again.replay_buffer.n_offline == len(in_memory)
    again.save(tmp_path / "again")  # the object is not pickled into the zip
    assert os.path.getsize(tmp_path / "again.zip") < 200_000


def test_load_offline_checkpoint_then_fine_tune(pendulum_balance_dataset, tmp_path):
    model = make_model(pendulum_balance_dataset, offline_steps=20)
    model.learn(0)
    model.save(tmp_path / "offline")
    loaded = IQL.load(tmp_path / "offline", env=gym.make(ENV_ID))
    loaded.learn(15)
    assert loaded.num_timesteps == 15 and loaded.offline_updates == 20


def test_set_env_and_multiple_envs(pendulum_balance_dataset):
    model = make_model(pendulum_balance_dataset, env=make_vec_env(ENV_ID, n_envs=2, seed=0))
    model.learn(20)
    assert model.num_timesteps == 20 and model.replay_buffer.size() == 10
    model.set_env(make_vec_env(ENV_ID, n_envs=2, seed=1))
    model.learn(10, reset_num_timesteps=False)
    assert model.num_timesteps == 30


def test_vecnormalize_refused(pendulum_balance_dataset, tmp_path):
    def vec_normalize() -> VecNormalize:
        return VecNormalize(DummyVecEnv([lambda: gym.make(ENV_ID)]))

    with pytest.raises(ValueError, match="normalize_observations=True"):
        make_model(pendulum_balance_dataset, env=vec_normalize())
    model = make_model(pendulum_balance_dataset, offline_steps=5)
    env = model.env
    with pytest.raises(ValueError, match="normalize_observations=True"):
        model.set_env(vec_normalize())
    assert model.env is env  # the model keeps its env
    model.save(tmp_path / "iql")
    with pytest.raises(ValueError, match="normalize_observations=True"):
        IQL.load(tmp_path / "iql", env=vec_normalize())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(offline_ratio=1.5), r"offline_ratio must be in \[0.0, 1.0\]"),
        (dict(batch_size=1), "batch_size must be >= 2"),
        (dict(offline_steps=-1), "offline_steps must be >= 0"),
        (dict(expectile=1.0), r"expectile must be in \(0.0, 1.0\)"),
        (dict(beta=-1.0), "beta must be >= 0"),
        (dict(max_weight=0.0), "max_weight must be > 0"),
        (dict(tau=0.0), "tau must be in"),
        (dict(policy_kwargs=dict(net_arch=[16], unknown_option=1)), r"Unknown policy_kwargs \['unknown_option'\]"),
        (dict(policy_kwargs=dict(net_arch=dict(pi=[16], critic=[8]))), "net_arch has unknown keys"),
    ],
)
def test_constructor_validation(pendulum_balance_dataset, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_model(pendulum_balance_dataset, **kwargs)


def test_discrete_action_space_refused(pendulum_balance_dataset):
    with pytest.raises(ValueError, match=r"continuous \(Box\)"):
        IQL("MlpPolicy", "CartPole-v1", dataset=pendulum_balance_dataset)


def test_missing_dataset_with_offline_steps(pendulum_balance_dataset):
    model = IQL("MlpPolicy", ENV_ID, **{**TINY, "offline_steps": 10})
    with pytest.raises(ValueError, match="offline_steps=0"):
        model.learn(5)
    online_only = IQL("MlpPolicy", ENV_ID, **{**TINY, "offline_steps": 0})
    online_only.learn(5)
    assert online_only.num_timesteps == 5


@pytest.mark.skipif(not th.cuda.is_available(), reason="needs a GPU")
def test_cuda(pendulum_balance_dataset):
    model = make_model(pendulum_balance_dataset, device="cuda")
    model.learn(10)
    assert next(model.policy.parameters()).is_cuda


@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None, reason="torch.compile on CPU needs a C++ compiler"
)
def test_torch_compile_gives_the_eager_losses_and_gradients(pendulum_balance_dataset, monkeypatch):
    """torch_compile=True on CPU: the compiled losses and their gradients are the eager ones (float tolerance; after
    Adam steps parameters are not compared, since Adam turns float-level differences of near-zero gradients into
    steps of the learning rate's size)."""
    compile_calls = []
    real_compile = th.compile

    def counting_compile(function, **kwargs):
        compiled = real_compile(function, **kwargs)

        def counted(*args):
            compile_calls.append(function.__name__)
            return compiled(*args)

        return counted

    monkeypatch.setattr(th, "compile", counting_compile)
    model = make_model(pendulum_balance_dataset, offline_steps=2, torch_compile=True)
    model.pretrain()
    assert compile_calls == ["_losses", "_losses"]  # both updates went through the compiled function
    batch = model.replay_buffer.sample(32)
    results = []
    for losses in (model._losses, model._compiled_losses):
        model.policy.zero_grad(set_to_none=True)
        total, metrics = losses(batch, None)
        total.backward()
        results.append((total.detach(), metrics, [p.grad.clone() for p in model.policy.parameters() if p.grad is not None]))
    (eager_total, eager_metrics, eager_grads), (total, metrics, grads) = results
    th.testing.assert_close(total, eager_total, rtol=1e-5, atol=1e-5)
    for key, value in eager_metrics.items():
        th.testing.assert_close(metrics[key], value, rtol=1e-5, atol=1e-5)
    assert len(grads) == len(eager_grads) > 0
    for grad, eager_grad in zip(grads, eager_grads, strict=True):
        th.testing.assert_close(grad, eager_grad, rtol=1e-4, atol=1e-5)


def test_return_range_reward_scale_end_to_end(pendulum_balance_dataset, tmp_path):
    # the IQL reference's locomotion setting: resolved from the dataset when it is attached, the same after load()
    model = IQL(
        "MlpPolicy", ENV_ID, dataset=pendulum_balance_dataset, reward_scale="return_range", **{**TINY, "offline_steps": 5}
    )
    model.learn(5)
    data = load_offline_data(pendulum_balance_dataset)
    expected = 1000.0 / float(data.episode_returns.max() - data.episode_returns.min())
    assert model.reward_scale == "return_range" and model.replay_buffer.reward_scale == pytest.approx(expected)
    batch = model.replay_buffer.sample(32)
    online = ~batch.is_offline
    np.testing.assert_allclose(batch.rewards[online].numpy(), expected, rtol=1e-6)  # InvertedPendulum rewards are 1
    model.save(tmp_path / "iql")
    loaded = IQL.load(tmp_path / "iql", env=gym.make(ENV_ID))
    loaded.learn(3, reset_num_timesteps=False)
    assert loaded.replay_buffer.reward_scale == pytest.approx(expected)


def test_training_on_other_data_after_load_is_reported(pendulum_balance_dataset, tmp_path):
    data = load_offline_data(pendulum_balance_dataset)
    model = IQL("MlpPolicy", ENV_ID, dataset=data, **{**TINY, "offline_steps": 5})
    model.learn(5)
    assert model.offline_data_fingerprint == data.fingerprint()
    model.save(tmp_path / "iql")
    same = IQL.load(tmp_path / "iql", env=gym.make(ENV_ID), dataset=load_offline_data(pendulum_balance_dataset))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        same.learn(3, reset_num_timesteps=False)
    other = load_offline_data(pendulum_balance_dataset)
    other.rewards[:] = 0.0
    changed = IQL.load(tmp_path / "iql", env=gym.make(ENV_ID), dataset=other)
    with pytest.warns(UserWarning, match="was trained on other offline data"):
        changed.learn(3, reset_num_timesteps=False)
    assert changed.offline_data_fingerprint == other.fingerprint()


def test_a_model_past_the_switch_continues_online_whatever_offline_steps_says(pendulum_balance_dataset, tmp_path):
    # RL Zoo's --trained-agent hands the yml's offline_steps (1M) to load(): a fine-tuned model must not go back to
    # offline updates
    model = IQL("MlpPolicy", ENV_ID, dataset=pendulum_balance_dataset, **{**TINY, "offline_steps": 10})
    model.learn(20)
    model.save(tmp_path / "iql")
    loaded = IQL.load(tmp_path / "iql", env=gym.make(ENV_ID), offline_steps=1_000_000)
    with pytest.warns(UserWarning, match="The offline phase ended at 10 updates: offline_steps=1000000 is ignored"):
        loaded.learn(10, reset_num_timesteps=False)
    assert loaded.offline_updates == 10 and loaded.num_timesteps == 30
    with pytest.warns(UserWarning, match="offline_steps=1000000 is ignored"):
        loaded.pretrain()
    assert loaded.offline_updates == 10
    loaded.pretrain(n_steps=3)  # explicitly
    assert loaded.offline_updates == 13
