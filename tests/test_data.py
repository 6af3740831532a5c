"""Loading offline data: Minari ids, folders, arrays, replay buffers; validation of bad input."""

from __future__ import annotations

import os
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3 import SAC

from sb3_dare.data import OfflineData, load_offline_data
from sb3_dare.data.offline_data import discounted_returns_to_go


def test_load_minari_id_matches_episodes(make_minari_dataset):
    import minari

    dataset_id = make_minari_dataset(n_episodes=3, max_steps=40)
    data = load_offline_data(dataset_id)
    episodes = list(minari.load_dataset(dataset_id).iterate_episodes())
    assert len(data) == sum(len(ep.actions) == 0 or len(ep.actions) for ep in episodes) == 120
    assert data.n_episodes == 3
    assert data.observations.dtype == data.actions.dtype == data.rewards.dtype == data.mc_returns.dtype == np.float32
    assert data.terminations.dtype == data.truncations.dtype == bool
    np.testing.assert_allclose(data.observations[:40], episodes[0].observations[:-1], rtol=1e-6)
    np.testing.assert_allclose(data.next_observations[40:80], episodes[1].observations[1:], rtol=1e-6)
    # Pendulum actions live in [-2, 2]: stored rescaled to [-1, 1] exactly as SB3 does
    np.testing.assert_allclose(data.actions[:40], episodes[0].actions / 2.0, rtol=1e-6)
    assert data.truncations.sum() == 3 and data.terminations.sum() == 0
    np.testing.assert_array_equal(data.episode_starts, [0, 40, 80])
    assert data.ref_min_score == -1500.0 and data.ref_max_score == -150.0
    assert data.env_id == "Pendulum-v1"
    assert data.source == dataset_id


def test_load_from_folder_and_minari_object(make_minari_dataset, minari_root):
    import minari

    dataset_id = make_minari_dataset()
    by_id = load_offline_data(dataset_id)
    by_folder = load_offline_data(minari_root / dataset_id)
    by_data_folder = load_offline_data(minari_root / dataset_id / "data")
    by_object = load_offline_data(minari.load_dataset(dataset_id))
    for other in (by_folder, by_data_folder, by_object):
        np.testing.assert_array_equal(other.observations, by_id.observations)
        np.testing.assert_array_equal(other.actions, by_id.actions)
    assert load_offline_data(by_id) is by_id


def test_load_with_minari_data_collector(minari_root):
    pytest.importorskip("jax")
    import minari

    env = minari.DataCollector(gym.make("InvertedPendulum-v5"))
    env.action_space.seed(0)
    for episode in range(4):
        env.reset(seed=episode)
        for _ in range(30):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                break
    env.create_dataset(
        "test/invertedpendulum/collector-v0",
        algorithm_name="random",
        author="t",
        author_email="t@x.org",
        code_permalink="https://example.com",
        description="d",
    )
    env.close()
    data = load_offline_data("test/invertedpendulum/collector-v0", env="InvertedPendulum-v5")
    assert data.observation_dim == 4 and data.action_dim == 1
    assert np.all(np.abs(data.actions) <= 1.0)  # bounds are +-3: rescaled
    assert data.rewards.dtype == np.float32
    assert data.n_episodes >= 4


def test_mc_returns_against_hand_computation():
    rewards = np.array([1.0, 2.0, 3.0, 10.0, 20.0, 5.0])
    starts = np.array([0, 3, 5])
    gamma = 0.5
    expected = [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3, 10 + 0.5 * 20, 20, 5]
    np.testing.assert_allclose(discounted_returns_to_go(rewards, starts, gamma), expected, rtol=1e-6)
    data = OfflineData.from_arrays(
        np.arange(6.0)[:, None],
        np.zeros((6, 1)),
        rewards,
        np.arange(1.0, 7.0)[:, None],
        terminations=np.array([0, 0, 1, 0, 0, 0]),
        truncations=np.array([0, 0, 0, 0, 1, 0]),
        gamma=gamma,
    )
    # boundaries inferred from the termination, the truncation and the end of the data
    np.testing.assert_array_equal(data.episode_starts, [0, 3, 5])
    np.testing.assert_allclose(data.mc_returns, expected, rtol=1e-6)
    np.testing.assert_allclose(data.discounted_returns(gamma, reward_scale=2.0, reward_bias=-1.0)[3:5], [19 + 0.5 * 39, 39])


def test_episode_boundary_inferred_from_observation_jump():
    obs = np.array([[0.0], [1.0], [5.0], [6.0]])
    next_obs = np.array([[1.0], [2.0], [6.0], [7.0]])  # 2 -> 5: a new episode that nobody marked
    data = OfflineData.from_arrays(obs, np.zeros((4, 1)), np.ones(4), next_obs, terminations=np.zeros(4))
    np.testing.assert_array_equal(data.episode_starts, [0, 2])


def test_normalized_score_and_missing_reference(make_minari_dataset):
    data = load_offline_data(make_minari_dataset())
    assert data.normalized_score(-150.0) == pytest.approx(100.0)
    np.testing.assert_allclose(data.normalized_score(np.array([-1500.0, -825.0])), [0.0, 50.0])
    bare = OfflineData.from_arrays(np.zeros((3, 2)), np.zeros((3, 1)), np.zeros(3), np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="ref_min_score and no ref_max_score"):
        bare.normalized_score(1.0)


def test_from_replay_buffer():
    env = gym.make("Pendulum-v1", max_episode_steps=30)
    model = SAC("MlpPolicy", env, learning_starts=100, buffer_size=1000, policy_kwargs=dict(net_arch=[8]), seed=0)
    model.learn(70)
    data = OfflineData.from_replay_buffer(model.replay_buffer, ref_min_score=-1.0, ref_max_score=1.0)
    assert len(data) == 70
    assert data.n_episodes == 3  # 30 + 30 + 10
    assert data.truncations.sum() == 2 and data.terminations.sum() == 0
    np.testing.assert_allclose(data.actions, model.replay_buffer.actions[:70, 0], rtol=1e-6)
    np.testing.assert_allclose(data.next_observations[:29], data.observations[1:30])


def test_from_replay_buffer_wrapped_ring():
    env = gym.make("Pendulum-v1", max_episode_steps=30)
    model = SAC("MlpPolicy", env, learning_starts=1000, buffer_size=50, policy_kwargs=dict(net_arch=[8]), seed=0)
    model.learn(70)
    data = OfflineData.from_replay_buffer(model.replay_buffer)
    assert len(data) == 50
    # chronological order: each transition's next observation is the following observation within an episode
    inner = np.ones(50, dtype=bool)
    inner[data.episode_starts - 1] = False
    inner[-1] = False
    np.testing.assert_allclose(data.next_observations[inner], data.observations[np.flatnonzero(inner) + 1])


def test_from_replay_buffer_memory_optimized_wrapped_ring():
    # one observation array: the oldest row of a full ring holds its predecessor's next observation, so it is dropped
    from stable_baselines3.common.buffers import ReplayBuffer

    buffer = ReplayBuffer(
        4, spaces.Box(-10, 10, (1,)), spaces.Box(-1, 1, (1,)), optimize_memory_usage=True, handle_timeout_termination=False
    )
    for step in range(6):  # one episode: observations 0, 1, ..., 6
        buffer.add(
            np.array([[step]]), np.array([[step + 1]]), np.array([[step / 10]]), np.array([0.0]), np.array([False]), [{}]
        )
    with pytest.warns(UserWarning, match="every episode end is read as a termination"):
        data = OfflineData.from_replay_buffer(buffer)
    np.testing.assert_allclose(data.observations[:, 0], [3, 4, 5])
    np.testing.assert_allclose(data.next_observations[:, 0], [4, 5, 6])
    np.testing.assert_allclose(data.actions[:, 0], [0.3, 0.4, 0.5], rtol=1e-6)


# ---------------------------------------------------------------------- bad input


def test_missing_dataset_without_download(minari_root):
    with pytest.raises(FileNotFoundError, match=r"python -m sb3_dare\.data build"):
        load_offline_data("nowhere/hopper/medium-v0", download=False)
    # with an env, the build command names it (not a placeholder)
    with pytest.raises(FileNotFoundError, match=r"build --env Pendulum-v1 --quality medium --id nowhere/pendulum/medium-v0"):
        load_offline_data("nowhere/pendulum/medium-v0", env="Pendulum-v1", download=False)


def test_missing_dataset_offline_download_error(minari_root, hub_offline):
    with pytest.raises(FileNotFoundError, match="could not be downloaded") as info:
        load_offline_data("mujoco/hopper/medium-v0", download=True)
    assert "python -m sb3_dare.data build --env <EnvId> --quality medium --id mujoco/hopper/medium-v0" in str(info.value)
    assert info.value.__cause__ is not None


def test_folder_that_is_not_a_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a Minari dataset"):
        load_offline_data(tmp_path)


def test_missing_folder_and_braces_in_names(tmp_path, minari_root):
    with pytest.raises(FileNotFoundError, match=r"Dataset folder .*nonexistent.* does not exist"):
        load_offline_data(str(tmp_path / "nonexistent"))
    with pytest.raises(FileNotFoundError, match=r"runs/\{seed\}/data-v0.*was not found"):  # no str.format KeyError
        load_offline_data("runs/{seed}/data-v0", download=False)


def test_data_of_another_env_warns(make_minari_dataset, recwarn):
    """Same spaces are not the same env: Pendulum data used with a Pendulum of another id is named in a warning."""
    dataset_id = make_minari_dataset()  # recorded in Pendulum-v1
    gym.register("PendulumOther-v0", entry_point="gymnasium.envs.classic_control.pendulum:PendulumEnv", max_episode_steps=200)
    try:
        with pytest.warns(UserWarning, match=r"recorded in Pendulum-v1, but the env is PendulumOther-v0"):
            data = load_offline_data(dataset_id, env="PendulumOther-v0")
        with pytest.warns(UserWarning, match=r"recorded in Pendulum-v1, but the env is PendulumOther-v0"):
            load_offline_data(data, env=gym.make("PendulumOther-v0"))
    finally:
        gym.registry.pop("PendulumOther-v0")
    recwarn.clear()
    load_offline_data(dataset_id, env=gym.make("Pendulum-v1"))
    assert not [w for w in recwarn if "recorded in" in str(w.message)]


def test_references_survive_a_change_of_directory(make_minari_dataset, minari_root, tmp_path, monkeypatch):
    """A folder is saved as an absolute path; arrays have no reference (a loaded model asks for them again)."""
    from sb3_dare import IQL

    dataset_id = make_minari_dataset()
    monkeypatch.chdir(minari_root)
    relative = os.path.join(*dataset_id.split("/"))
    data = load_offline_data(relative)
    assert data.reference == os.path.join(str(minari_root), relative) and os.path.isabs(data.reference)
    model = IQL("MlpPolicy", "Pendulum-v1", dataset=relative, offline_steps=0, batch_size=8)
    assert model.dataset == data.reference
    arrays = OfflineData.from_arrays(
        data.observations, data.actions, data.rewards, data.next_observations, data.terminations, source="my_arrays"
    )
    assert arrays.reference is None
    assert IQL("MlpPolicy", "Pendulum-v1", dataset=arrays, offline_steps=0, batch_size=8).dataset is None


def test_flags_of_one_env_column_are_accepted_and_others_refused():
    observations = np.zeros((4, 2))
    flags = np.array([[0], [1], [0], [1]])  # SB3's dones[:n] of one env
    data = OfflineData.from_arrays(observations, np.zeros((4, 1)), np.ones(4), observations, flags, truncations=flags * 0)
    np.testing.assert_array_equal(data.terminations, [False, True, False, True])
    with pytest.raises(ValueError, match=r"terminations must hold one flag per transition.*got shape \(4, 2\)"):
        OfflineData.from_arrays(observations, np.zeros((4, 1)), np.ones(4), observations, np.zeros((4, 2)))


def test_space_mismatch_shows_both(make_minari_dataset):
    dataset_id = make_minari_dataset()
    with pytest.raises(ValueError, match=r"Observation space mismatch(.|\n)*dataset: Box(.|\n)*env: ") as info:
        load_offline_data(dataset_id, env="InvertedPendulum-v5")
    assert "(3,)" in str(info.value) and "(4,)" in str(info.value)


def test_action_space_mismatch():
    data = OfflineData.from_arrays(np.zeros((4, 3)), np.zeros((4, 2)), np.zeros(4), np.zeros((4, 3)), np.zeros(4))
    env = gym.make("Pendulum-v1")
    # both spaces are shown (the dataset's 2 dimensions, Pendulum's 1) with the fix
    expected = r"(?s)Action space mismatch.*dataset: Box\(.*\(2,\).*env: +Box\(.*\(1,\).*Use the env"
    with pytest.raises(ValueError, match=expected):
        load_offline_data(data, env=env)


def test_nan_named_with_count_and_first_index():
    obs = np.zeros((10, 2))
    rewards = np.zeros(10)
    rewards[[4, 7]] = np.nan
    with pytest.raises(ValueError, match=r"'rewards' has 2 NaN/Inf values in 2 transitions \(first at transition 4\)"):
        OfflineData.from_arrays(obs, np.zeros((10, 1)), rewards, obs, np.zeros(10))
    actions = np.zeros((10, 1))
    actions[3] = np.inf
    with pytest.raises(ValueError, match="'actions' has 1 NaN/Inf"):
        OfflineData.from_arrays(obs, actions, np.zeros(10), obs, np.zeros(10))


def test_empty_dataset():
    with pytest.raises(ValueError, match=r"is empty: it holds no transitions\. Check the dataset id or the arrays"):
        OfflineData.from_arrays(np.zeros((0, 2)), np.zeros((0, 1)), np.zeros(0), np.zeros((0, 2)), np.zeros(0))


def test_discrete_action_space_refused(minari_root, capsys):
    import minari
    from minari.data_collector import EpisodeBuffer

    buffer = EpisodeBuffer(
        id=0,
        observations=np.zeros((4, 4), dtype=np.float32),
        actions=np.array([0, 1, 0]),
        rewards=np.ones(3),
        terminations=np.array([0, 0, 1], bool),
        truncations=np.zeros(3, bool),
    )
    minari.create_dataset_from_buffers(
        "test/cartpole/discrete-v0",
        buffer=[buffer],
        env="CartPole-v1",
        algorithm_name="x",
        author="t",
        author_email="t@x.org",
        code_permalink="https://example.com",
        description="d",
    )
    with pytest.raises(ValueError, match=r"continuous \(Box\) actions only"):
        load_offline_data("test/cartpole/discrete-v0")
    # info still describes it, and says why it cannot be trained on
    from sb3_dare.data.__main__ import main as data_cli

    assert data_cli(["info", "test/cartpole/discrete-v0"]) == 0
    output = capsys.readouterr().out
    assert "3 in 1 episodes (1 terminated, 0 truncated)" in output and "Discrete(2)" in output
    assert "sb3_dare can train on it  no: " in output and "continuous (Box) actions only" in output


def _one_episode_dataset(dataset_id: str, observation_space, action_space, observations, actions) -> None:
    """A one-episode Minari dataset (ending in a termination) with explicit spaces, under the test's root."""
    import minari
    from minari.data_collector import EpisodeBuffer

    n_steps = len(actions)
    buffer = EpisodeBuffer(
        id=0,
        observations=observations,
        actions=actions,
        rewards=np.ones(n_steps),
        terminations=np.arange(n_steps) == n_steps - 1,
        truncations=np.zeros(n_steps, bool),
    )
    minari.create_dataset_from_buffers(
        dataset_id, buffer=[buffer], env=None, observation_space=observation_space, action_space=action_space,
        algorithm_name="x", author="t", author_email="t@x.org", code_permalink="https://example.com", description="d",
    )  # fmt: skip


def test_dict_observations_need_flatten(minari_root, capsys):
    observation_space = spaces.Dict({"position": spaces.Box(-1, 1, (2,)), "goal": spaces.Box(-1, 1, (3,))})
    action_space = spaces.Box(-1, 1, (2,))
    observations = {
        "position": np.random.uniform(-1, 1, (5, 2)).astype(np.float32),
        "goal": np.random.uniform(-1, 1, (5, 3)).astype(np.float32),
    }
    _one_episode_dataset("test/maze/dict-v0", observation_space, action_space, observations, np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="flatten_observations=True"):
        load_offline_data("test/maze/dict-v0")
    data = load_offline_data("test/maze/dict-v0", flatten_observations=True)
    assert data.observation_dim == 5
    expected = spaces.flatten(observation_space, {key: observations[key][0] for key in observation_space.spaces})
    np.testing.assert_allclose(data.observations[0], expected)
    # the info command describes it (flattened) instead of asking for an option it does not have
    from sb3_dare.data.__main__ import main as data_cli

    assert data_cli(["info", "test/maze/dict-v0"]) == 0
    out = capsys.readouterr().out
    assert "4 in 1 episodes" in out and "yes (with flatten_observations=True)" in out


def test_dict_observations_follow_the_env_key_order(minari_root):
    """Minari reads a Dict space back with sorted keys; the env's FlattenObservation uses the env's own order."""
    import collections

    env_space = spaces.Dict(
        collections.OrderedDict(b=spaces.Box(-10, 10, (2,), np.float64), a=spaces.Box(-10, 10, (3,), np.float64))
    )
    box_actions = spaces.Box(-1.0, 1.0, (2,), np.float32)

    class DictEnv(gym.Env):
        observation_space, action_space = env_space, box_actions

        def reset(self, seed=None, options=None):
            return {"b": np.array([1.0, 2.0]), "a": np.array([3.0, 4.0, 5.0])}, {}

        def step(self, action):
            return self.reset()[0], 0.0, False, False, {}

    observations = {"b": np.tile([[1.0, 2.0]], (5, 1)), "a": np.tile([[3.0, 4.0, 5.0]], (5, 1))}
    _one_episode_dataset("test/order/dict-v0", env_space, box_actions, observations, np.zeros((4, 2), np.float32))
    env = gym.wrappers.FlattenObservation(DictEnv())
    data = load_offline_data("test/order/dict-v0", env=env, flatten_observations=True)
    np.testing.assert_allclose(data.observations[0], env.reset()[0])  # [1, 2, 3, 4, 5], as the env flattens it
    # flattened without the env (sorted keys: a, b), the data would be permuted for this env: refused with the fix
    unordered = load_offline_data("test/order/dict-v0", flatten_observations=True)
    np.testing.assert_allclose(unordered.observations[0], [3.0, 4.0, 5.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"key order \['a', 'b'\].*order \['b', 'a'\].*env=env, flatten_observations"):
        load_offline_data(unordered, env=env)


def test_build_command_hint_names_a_quality_the_builder_has():
    from sb3_dare.data.loading import build_command_hint

    assert "--quality medium-replay --id mujoco/hopper/medium-replay-v0" in build_command_hint(
        "mujoco/hopper/medium-replay-v0"
    )
    for dataset_id in ("mujoco/hopper/simple-v0", "D4RL/pen/human-v2"):  # qualities the builder does not make
        assert "--quality medium " in build_command_hint(dataset_id)


def test_integer_rewards_are_converted():
    data = OfflineData.from_arrays(np.zeros((3, 2)), np.zeros((3, 1)), np.array([1, 0, 1]), np.zeros((3, 2)), np.zeros(3))
    assert data.rewards.dtype == np.float32


def test_out_of_bound_actions_clipped_with_one_warning():
    actions = np.array([[0.5], [3.0], [-4.0], [1.0]])
    with pytest.warns(UserWarning, match="2 actions lie outside") as record:
        data = OfflineData.from_arrays(
            np.zeros((4, 2)), actions, np.zeros(4), np.zeros((4, 2)), np.zeros(4), action_space=spaces.Box(-2.0, 2.0, (1,))
        )
    assert len([w for w in record if "outside" in str(w.message)]) == 1
    np.testing.assert_allclose(data.actions[:, 0], [0.25, 1.0, -1.0, 0.5])


def test_observations_outside_box_warn_but_load():
    obs = np.array([[0.0], [2.0], [0.5]])
    with pytest.warns(UserWarning, match="1 observations lie outside"):
        data = OfflineData.from_arrays(
            obs, np.zeros((3, 1)), np.zeros(3), obs, np.zeros(3), observation_space=spaces.Box(-1.0, 1.0, (1,))
        )
    np.testing.assert_allclose(data.observations[:, 0], [0.0, 2.0, 0.5])


def test_in_bound_data_gives_no_warning(make_minari_dataset):
    dataset_id = make_minari_dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        load_offline_data(dataset_id, env=gym.make("Pendulum-v1"))


def test_large_dataset_boundaries_and_returns():
    """200k transitions (the vectorised paths: boundary inference, returns-to-go by distance to the episode's end)."""
    n = 200_000
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n, 11)).astype(np.float32)
    ends = np.zeros(n, dtype=bool)
    ends[999::1000] = True
    data = OfflineData.from_arrays(obs, rng.uniform(-1, 1, (n, 3)), rng.normal(size=n), np.roll(obs, -1, axis=0), ends)
    assert data.n_episodes == 200
    np.testing.assert_array_equal(data.episode_starts, np.arange(0, n, 1000))
    # one episode's returns-to-go against the plain backward recursion
    episode = slice(int(data.episode_starts[7]), int(data.episode_starts[8]))
    expected, running = np.empty(1000), 0.0
    for index, reward in enumerate(data.rewards[episode][::-1].astype(np.float64)):
        running = reward + 0.99 * running
        expected[999 - index] = running
    np.testing.assert_allclose(data.mc_returns[episode], expected, rtol=1e-4, atol=1e-4)


def test_reward_floor_returns_of_cut_episodes():
    """Episodes cut short continue at the floor reward; terminal ones are exact; all-failure episodes get r / (1 - gamma)."""
    gamma = 0.5
    data = OfflineData.from_arrays(
        np.arange(6.0)[:, None],
        np.zeros((6, 1)),
        np.array([1.0, 2.0, 3.0, 10.0, 20.0, 5.0]),
        np.arange(1.0, 7.0)[:, None],
        terminations=np.array([0, 0, 1, 0, 0, 0]),
        truncations=np.array([0, 0, 0, 0, 1, 0]),
        gamma=gamma,
    )
    floor = data.min_reward()
    assert floor == 1.0 and data.min_reward(reward_scale=2.0, reward_bias=-5.0) == -3.0
    tail = floor / (1 - gamma)  # the value of continuing at the floor reward forever
    returns = data.discounted_returns(gamma, reward_floor=floor)
    # episode 0 terminates: exact; episode 1 is cut by a time limit, episode 2 by the end of the data
    np.testing.assert_allclose(returns[:3], data.mc_returns[:3], rtol=1e-6)
    np.testing.assert_allclose(returns[3:5], [10 + 0.5 * 20 + 0.25 * tail, 20 + 0.5 * tail], rtol=1e-6)
    np.testing.assert_allclose(returns[5], 5 + 0.5 * tail, rtol=1e-6)
    # AntMaze-like: a failed episode (raw reward 0, scale 10, bias -5) cut by the time limit gets -5 / (1 - gamma)
    # everywhere, the reference's r_neg / (1 - gamma); its partial sums would end at -5, far above the true value
    n = 50
    failed = OfflineData.from_arrays(
        np.arange(n, dtype=float)[:, None],
        np.zeros((n, 1)),
        np.zeros(n),
        np.arange(1.0, n + 1)[:, None],
        terminations=np.zeros(n),
        truncations=np.eye(1, n, n - 1)[0],
    )
    bounded = failed.discounted_returns(0.99, 10.0, -5.0, reward_floor=failed.min_reward(10.0, -5.0))
    np.testing.assert_allclose(bounded, np.full(n, -5.0 / 0.01), rtol=1e-5)
    assert failed.discounted_returns(0.99, 10.0, -5.0)[-1] == pytest.approx(-5.0)


def test_multi_dimensional_box_observations_are_flattened(minari_root):
    """A (2, 3) Box dataset loads as 6 features, row-major like FlattenObservation; the unflattened env is told so."""
    observation_space = spaces.Box(-1, 1, (2, 3), np.float32)
    observations = np.arange(4 * 6, dtype=np.float32).reshape(4, 2, 3) / 100
    action_space = spaces.Box(-1, 1, (1,), np.float32)
    _one_episode_dataset("test/grid/box2d-v0", observation_space, action_space, observations, np.zeros((3, 1), np.float32))
    data = load_offline_data("test/grid/box2d-v0")
    assert data.observation_space.shape == (6,)
    np.testing.assert_allclose(data.observations, observations[:-1].reshape(3, 6))

    class GridEnv(gym.Env):
        action_space = spaces.Box(-1, 1, (1,), np.float32)

        def __init__(self):
            self.observation_space = observation_space

    with pytest.raises(ValueError, match=r"wrap the env with gymnasium\.wrappers\.FlattenObservation"):
        load_offline_data("test/grid/box2d-v0", env=GridEnv())
    flat_env = gym.wrappers.FlattenObservation(GridEnv())
    assert load_offline_data("test/grid/box2d-v0", env=flat_env).observation_space.shape == (6,)
