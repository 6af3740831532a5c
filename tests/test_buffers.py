"""The offline + online replay buffer: proportions, extra arrays, MC returns, scoring, pickling."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.save_util import load_from_pkl, save_to_pkl

from sb3_dare.common.buffers import OfflineOnlineReplayBuffer, OfflineOnlineSamples
from sb3_dare.data import OfflineData

OBS_SPACE = spaces.Box(-np.inf, np.inf, (3,), np.float64)
ACTION_SPACE = spaces.Box(-2.0, 2.0, (2,), np.float32)


def make_offline(n: int = 100, episode_length: int = 10) -> OfflineData:
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n + 1, 3))
    terminations = np.zeros(n, dtype=bool)
    terminations[episode_length - 1 :: episode_length] = True
    return OfflineData.from_arrays(
        obs[:-1],
        rng.uniform(-1, 1, (n, 2)),
        np.ones(n),
        obs[1:],
        terminations,
        episode_starts=np.arange(0, n, episode_length),
        source="unit-test",
    )


def make_buffer(n_envs: int = 1, buffer_size: int = 50, **kwargs) -> OfflineOnlineReplayBuffer:
    return OfflineOnlineReplayBuffer(buffer_size, OBS_SPACE, ACTION_SPACE, device="cpu", n_envs=n_envs, **kwargs)


def add_steps(buffer: OfflineOnlineReplayBuffer, n_steps: int, dones: list[list[bool]] | None = None, start: float = 0.0):
    for step in range(n_steps):
        done = np.array(dones[step]) if dones is not None else np.zeros(buffer.n_envs, dtype=bool)
        obs = np.full((buffer.n_envs, 3), start + step)
        buffer.add(
            obs, obs + 1, np.zeros((buffer.n_envs, 2)), np.ones(buffer.n_envs), done, [{} for _ in range(buffer.n_envs)]
        )


def test_sample_fields_and_proportions():
    buffer = make_buffer(offline_ratio=0.25)
    buffer.attach_offline_data(make_offline())
    batch = buffer.sample(64)
    assert isinstance(batch, OfflineOnlineSamples)
    assert batch.is_offline.all()  # online part empty: everything offline
    add_steps(buffer, 20)
    batch = buffer.sample(64)
    assert int(batch.is_offline.sum()) == 16
    assert (batch.indices[batch.is_offline] >= 0).all() and (batch.indices[~batch.is_offline] < 0).all()
    # the first six fields are those of SB3's ReplayBufferSamples
    assert batch._fields[:6] == ("observations", "actions", "next_observations", "dones", "rewards", "discounts")
    assert batch.observations.dtype == th.float32 and batch.observations.shape == (64, 3)
    assert batch.rewards.shape == batch.dones.shape == (64, 1)
    assert batch.scores.shape == batch.mc_returns.shape == (64,)


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_extreme_ratios(ratio):
    buffer = make_buffer(offline_ratio=ratio)
    buffer.attach_offline_data(make_offline())
    add_steps(buffer, 5)
    assert bool(buffer.sample(32).is_offline.all()) is (ratio == 1.0)


def test_offline_samples_match_data_and_terminations_only_stop_bootstrapping():
    data = make_offline()
    data.truncations[4] = True  # a time limit: must not stop bootstrapping
    buffer = make_buffer()
    buffer.attach_offline_data(data)
    np.random.seed(0)
    batch = buffer.sample(256)
    indices = batch.indices.numpy()
    np.testing.assert_allclose(batch.observations.numpy(), data.observations[indices])
    np.testing.assert_allclose(batch.dones.numpy()[:, 0], data.terminations[indices])
    np.testing.assert_allclose(batch.mc_returns.numpy(), data.mc_returns[indices])


def test_online_mc_returns_per_env_column():
    buffer = make_buffer(n_envs=2, gamma=0.5)
    add_steps(buffer, 4, dones=[[False, False], [True, False], [False, False], [False, True]])
    # env 0: episode of 2 steps (reward 1 each), then an unfinished one; env 1: 4 steps
    np.testing.assert_allclose(buffer.online_mc_returns[:2, 0], [1.5, 1.0])
    assert np.isnan(buffer.online_mc_returns[2:4, 0]).all()  # unknown until the episode ends
    np.testing.assert_allclose(buffer.online_mc_returns[:4, 1], [1.875, 1.75, 1.5, 1.0])


def test_reward_scale_and_bias_apply_to_rewards_and_returns():
    buffer = make_buffer(gamma=0.5, reward_scale=10.0, reward_bias=-5.0, offline_ratio=0.0)
    data = make_offline()
    buffer.attach_offline_data(data)
    np.testing.assert_allclose(buffer.offline_mc_returns, data.discounted_returns(0.5, 10.0, -5.0))
    add_steps(buffer, 2, dones=[[False], [True]])
    np.testing.assert_allclose(buffer.online_mc_returns[:2, 0], [5 + 0.5 * 5, 5])
    assert (buffer.sample(16).rewards == 5.0).all()


def test_return_range_reward_scale():
    # IQL's locomotion setting: the scale makes the dataset's episode returns span 1000; online rewards and every
    # MC return use the same number
    rng = np.random.default_rng(1)
    n, length = 100, 10
    obs = rng.normal(size=(n + 1, 3))
    rewards = np.repeat(np.arange(10.0), length) * 0.1  # episode k returns k (all rewards 0.1 k)
    data = OfflineData.from_arrays(
        obs[:-1], rng.uniform(-1, 1, (n, 2)), rewards, obs[1:], np.zeros(n, dtype=bool),
        episode_starts=np.arange(0, n, length), source="unit-test",
    )  # fmt: skip
    assert data.return_range_scale() == pytest.approx(1000.0 / 9.0)
    buffer = make_buffer(gamma=0.5, reward_scale="return_range", reward_bias=-1.0)
    with pytest.raises(ValueError, match="attach the offline data"):
        buffer.sample(4)
    buffer.attach_offline_data(data)
    scale = 1000.0 / 9.0
    assert buffer.reward_scale == pytest.approx(scale) and buffer.reward_scale_setting == "return_range"
    np.testing.assert_allclose(buffer.offline_mc_returns, data.discounted_returns(0.5, scale, -1.0), rtol=1e-6)
    add_steps(buffer, 2, dones=[[False], [True]])  # online rewards 1
    np.testing.assert_allclose(buffer.online_mc_returns[:2, 0], [(scale - 1) * 1.5, scale - 1], rtol=1e-6)
    batch = buffer.sample(64)
    online = ~batch.is_offline
    np.testing.assert_allclose(batch.rewards[online].numpy(), scale - 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match=r"its 10 episodes all return 10\)"):
        make_offline().return_range_scale()  # every episode returns 10: no range to scale
    with pytest.raises(ValueError, match="reward_scale must be a finite number or 'return_range'"):
        make_buffer(reward_scale="returns")


def test_a_loaded_buffer_scores_its_waiting_transitions_as_the_live_one_would(tmp_path):
    # transitions waiting for their score across the ring's wrap point: after pickling, the algorithm sets the score
    # function again; the waiting ones are queued in the order they entered and scored in the same batch as in the
    # live buffer (the score of a transition depends on its batch's random draws)
    def run(reload: bool) -> list[list[float]]:
        batches: list[list[float]] = []

        def score(observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
            batches.append(observations[:, 0].tolist())
            return observations[:, 0].copy()

        buffer = make_buffer(buffer_size=5, score_batch_size=4)
        buffer.set_score_function(score)
        add_steps(buffer, 7)  # steps 0-3 scored at once; 4, 5 and 6 (rows 4, 0, 1) wait
        if reload:
            save_to_pkl(tmp_path / "buffer.pkl", buffer)
            buffer = load_from_pkl(tmp_path / "buffer.pkl")
            buffer.set_score_function(score)
        add_steps(buffer, 1, start=7.0)  # the fourth waiting transition: one batch
        return batches

    assert run(reload=False) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert run(reload=True) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_offline_scores_stay_with_their_dataset():
    # scores travel with a pickled buffer; re-attached to data of the same size but other content (the same id under
    # another MINARI_DATASETS_PATH, say) they would be another dataset's scores: discarded, with a warning
    data = make_offline()
    buffer = make_buffer()
    buffer.attach_offline_data(data)
    buffer.set_score_function(lambda observations, actions: observations[:, 0].copy())
    scores = buffer.offline_scores.copy()
    buffer.attach_offline_data(make_offline())  # the same content again: the scores are kept
    np.testing.assert_array_equal(buffer.offline_scores, scores)
    other = make_offline()
    other.rewards[0] += 1.0
    with pytest.warns(UserWarning, match="belong to another dataset of the same size"):
        buffer.attach_offline_data(other)
    assert buffer.offline_data_fingerprint == other.fingerprint()
    # the score function is set: the new data is scored at once (no NaN reaches a batch)
    np.testing.assert_array_equal(buffer.offline_scores, other.observations[:, 0].astype(np.float32))
    buffer.score_function = None
    with pytest.warns(UserWarning, match="belong to another dataset of the same size"):
        buffer.attach_offline_data(data)
    assert np.isnan(buffer.offline_scores).all()  # scored when an algorithm sets its score function


def test_a_batch_never_carries_a_missing_score_once_the_buffer_scores():
    buffer = make_buffer()
    buffer.attach_offline_data(make_offline())
    buffer.set_score_function(lambda observations, actions: observations[:, 0].copy())
    buffer.sample(16)  # scored: fine
    buffer.offline_scores[:] = np.nan  # changed outside the buffer
    with pytest.raises(RuntimeError, match="has no alignment score"):
        buffer.sample(16)
    buffer.set_score_function(buffer.score_function)  # the fix the message gives
    assert not np.isnan(buffer.sample(16).scores.numpy()).any()
    buffer.score_function = None  # without a score function (the offline phase) scores are not needed
    buffer.offline_scores[:] = np.nan
    buffer.sample(16)
    # a score function that returns NaN is named as the cause, with the transition
    with pytest.raises(ValueError, match=r"returned \d+ non-finite scores for .* transitions \(the first for observation"):
        buffer.set_score_function(lambda observations, actions: np.full(len(observations), np.nan))


def test_ring_wraps_and_long_episode_is_clamped():
    buffer = make_buffer(buffer_size=4, gamma=1.0)
    add_steps(buffer, 6, dones=[[False]] * 5 + [[True]])
    assert buffer.full
    # only the 4 newest steps of the 6-step episode remain; their returns-to-go are 4, 3, 2, 1
    newest_first = [(5 - k) % 4 for k in range(4)]
    np.testing.assert_allclose(buffer.online_mc_returns[newest_first, 0], [1, 2, 3, 4])
    assert buffer.sample(32).observations.min() >= 2.0  # steps 0 and 1 were overwritten


def test_scores_written_when_transitions_enter():
    calls = []

    def score(obs, actions):
        calls.append(len(obs))
        return obs[:, 0] * 10.0

    buffer = make_buffer(score_batch_size=4)
    buffer.attach_offline_data(make_offline())
    buffer.set_score_function(score)
    np.testing.assert_allclose(buffer.offline_scores, buffer.offline_observations[:, 0] * 10.0, rtol=1e-6)
    assert calls == [100]
    buffer.set_score_function(score)  # nothing is missing: nothing is scored again
    assert calls == [100]
    add_steps(buffer, 3)
    assert np.isnan(buffer.online_scores[:3, 0]).all() and calls == [100]  # waiting for a full batch
    add_steps(buffer, 1, start=3.0)
    np.testing.assert_allclose(buffer.online_scores[:4, 0], [0, 10, 20, 30])
    assert calls == [100, 4]
    add_steps(buffer, 1, start=4.0)
    np.random.seed(0)  # the batch must draw the pending row 4: fixed, not left to the global stream
    batch = buffer.sample(64)  # a pending transition that is sampled gets scored first: never a NaN
    assert not th.isnan(batch.scores).any()
    assert calls == [100, 4, 1]


def test_refuses_vecnormalize_and_memory_optimisation():
    with pytest.raises(ValueError, match="optimize_memory_usage"):
        make_buffer(optimize_memory_usage=True)
    buffer = make_buffer()
    buffer.attach_offline_data(make_offline())
    with pytest.raises(ValueError, match="normalize_observations=True"):
        buffer.sample(4, env=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="offline_ratio"):
        make_buffer(offline_ratio=1.5)


def test_empty_buffer_sample_error():
    with pytest.raises(ValueError, match="replay buffer is empty: attach offline data or collect transitions"):
        make_buffer().sample(4)


def test_save_load_keeps_online_part_and_reattaches_offline(tmp_path, monkeypatch):
    data = make_offline()
    data.reference = "test/unit/medium-v0"  # as if loaded from that Minari id (arrays have no reference)
    buffer = make_buffer(n_envs=2)
    buffer.attach_offline_data(data)
    buffer.set_score_function(lambda obs, actions: obs.sum(axis=1))
    add_steps(buffer, 7, dones=[[False, False]] * 3 + [[True, False]] + [[False, False]] * 3)
    buffer.flush_scores()
    save_to_pkl(tmp_path / "buffer.pkl", buffer)
    loaded = load_from_pkl(tmp_path / "buffer.pkl")
    assert loaded.n_offline == 0 and loaded.offline_source == "test/unit/medium-v0" and loaded.score_function is None
    for name in ("observations", "next_observations", "actions", "rewards", "online_mc_returns", "online_scores"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(buffer, name))
    np.testing.assert_array_equal(loaded.offline_scores, buffer.offline_scores)  # expensive: kept
    np.testing.assert_array_equal(loaded.episode_lengths, buffer.episode_lengths)
    import sb3_dare.data

    monkeypatch.setattr(sb3_dare.data, "load_offline_data", lambda source, **kwargs: data)
    loaded.reattach_offline_data()
    assert loaded.n_offline == len(data)
    # arrays alone cannot be found again: re-attaching them needs the data itself
    arrays_only = make_buffer()
    arrays_only.attach_offline_data(make_offline())
    assert arrays_only.offline_source is None
    with pytest.raises(ValueError, match="no offline data reference; pass the OfflineData"):
        arrays_only.reattach_offline_data()
    np.testing.assert_array_equal(loaded.offline_scores, buffer.offline_scores)
    assert loaded.sample(16).observations.shape == (16, 3)


def test_online_storage_is_float32():
    buffer = make_buffer(buffer_size=1000)
    assert buffer.observations.dtype == buffer.next_observations.dtype == np.float32


def test_reward_floor_returns_online_and_offline():
    """With truncated_returns="reward_floor", a time-limit cut continues at the lowest reward; a terminal end does not."""
    data = make_offline()  # rewards 1, every episode terminates: exact returns in both modes
    buffer = make_buffer(n_envs=2, gamma=0.5, reward_bias=-2.0, truncated_returns="reward_floor")
    buffer.attach_offline_data(data)
    assert buffer.offline_reward_floor == -1.0
    np.testing.assert_allclose(buffer.offline_mc_returns, data.discounted_returns(0.5, 1.0, -2.0), rtol=1e-6)
    for step, (done, truncated) in enumerate([([False, False], [False, False]), ([True, True], [True, False])]):
        obs = np.full((2, 3), float(step))
        infos = [{"TimeLimit.truncated": cut} for cut in truncated]
        buffer.add(obs, obs + 1, np.zeros((2, 2)), np.ones(2), np.array(done), infos)
    # env 0 was cut after two steps of reward -1: it continues at the floor -1, worth -1 / (1 - 0.5) = -2 after the cut
    np.testing.assert_allclose(buffer.online_mc_returns[:2, 0], [-1 + 0.5 * (-1 + 0.5 * -2), -1 + 0.5 * -2])
    np.testing.assert_allclose(buffer.online_mc_returns[:2, 1], [-1.5, -1.0])  # env 1 terminated: exact
    partial = make_buffer(gamma=0.5, reward_bias=-2.0)
    add_steps(partial, 2, dones=[[False], [True]])
    np.testing.assert_allclose(partial.online_mc_returns[:2, 0], [-1.5, -1.0])  # the default: sums up to the cut
    with pytest.raises(ValueError, match="truncated_returns must be one of partial, reward_floor"):
        make_buffer(truncated_returns="bootstrap")
