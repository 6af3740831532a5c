"""Shared fixtures: tiny Minari datasets in a temporary MINARI_DATASETS_PATH."""

from __future__ import annotations

import os
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pytest

# keep tests single-threaded and quiet; the machines are small and noisy
os.environ.setdefault("MUJOCO_GL", "egl")


def make_episode_buffers(
    env_id: str = "Pendulum-v1",
    n_episodes: int = 3,
    max_steps: int | None = 50,
    seed: int = 0,
    policy: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list:
    """Roll out a (random by default) policy and return Minari EpisodeBuffers built from numpy arrays."""
    from minari.data_collector import EpisodeBuffer

    env = gym.make(env_id)
    env.action_space.seed(seed)
    buffers = []
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=seed + episode)
        observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
        while True:
            action = env.action_space.sample() if policy is None else policy(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            if max_steps is not None and len(actions) + 1 >= max_steps:
                truncated = True
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
            terminations.append(terminated)
            truncations.append(truncated)
            if terminated or truncated:
                break
        buffers.append(
            EpisodeBuffer(
                id=episode,
                observations=np.asarray(observations),
                actions=np.asarray(actions),
                rewards=np.asarray(rewards),
                terminations=np.asarray(terminations),
                truncations=np.asarray(truncations),
                infos=None,
            )
        )
    env.close()
    return buffers


def balancing_policy(noise: float = 1.0, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A noisy linear controller for InvertedPendulum-v5: mean episode return about 180 (random: about 5)."""
    rng = np.random.default_rng(seed)
    gains = np.array([1.0, 10.0, 1.0, 1.0])

    def policy(obs: np.ndarray) -> np.ndarray:
        return np.clip([gains @ obs + noise * rng.normal()], -3.0, 3.0).astype(np.float32)

    return policy


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    """A temporary MINARI_DATASETS_PATH (Minari reads the variable on every call)."""
    root = tmp_path / "minari_datasets"
    root.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


@pytest.fixture
def make_minari_dataset(minari_root):
    """Factory: create a small Minari dataset from rollouts; returns its id."""
    import minari

    def factory(
        dataset_id: str = "test/pendulum/random-v0",
        env_id: str = "Pendulum-v1",
        n_episodes: int = 3,
        max_steps: int | None = 50,
        ref_scores: tuple[float, float] | None = (-1500.0, -150.0),
        policy: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> str:
        buffers = make_episode_buffers(env_id, n_episodes=n_episodes, max_steps=max_steps, policy=policy)
        kwargs = {}
        if ref_scores is not None:
            kwargs = {"ref_min_score": ref_scores[0], "ref_max_score": ref_scores[1]}
        minari.create_dataset_from_buffers(
            dataset_id,
            buffer=buffers,
            env=env_id,
            algorithm_name="random",
            author="sb3_dare tests",
            author_email="tests@example.com",
            code_permalink="https://example.com",
            description="test dataset",
            **kwargs,
        )
        return dataset_id

    return factory


@pytest.fixture(autouse=True)
def _single_torch_thread():
    """One torch thread per test process: CI runs two pytest workers on two cores."""
    import torch as th

    previous = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(previous)


@pytest.fixture
def pendulum_balance_dataset(make_minari_dataset):
    """A Minari dataset of a noisy balancing controller on InvertedPendulum-v5 (~3k transitions); returns its id."""
    return make_minari_dataset(
        dataset_id="test/invertedpendulum/medium-v0",
        env_id="InvertedPendulum-v5",
        n_episodes=20,
        max_steps=300,
        ref_scores=(5.0, 1000.0),
        policy=balancing_policy(),
    )


@pytest.fixture
def pendulum_balance_arrays(pendulum_balance_dataset):
    """The same transitions as an in-memory OfflineData (not saved with a model, and naming no env)."""
    from sb3_dare.data import OfflineData, load_offline_data

    data = load_offline_data(pendulum_balance_dataset)
    return OfflineData.from_arrays(
        data.observations, data.actions, data.rewards, data.next_observations, data.terminations, data.truncations
    )


@pytest.fixture
def hub_offline(monkeypatch):
    """The Hugging Face hub client in offline mode: a download refuses at once instead of retrying for ~20 s."""
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # the variable is read when the constants are first imported, which an earlier test in this process may have done
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
