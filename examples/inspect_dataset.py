"""Make a small offline dataset (random Pendulum-v1 episodes, as a real Minari dataset) and show what sb3_dare loads.

Run: ``python examples/inspect_dataset.py``. Nothing is downloaded; the dataset lives in a temporary folder.
"""

from __future__ import annotations

import os
import tempfile

import gymnasium as gym
import numpy as np


def main() -> None:
    with tempfile.TemporaryDirectory() as root:
        os.environ["MINARI_DATASETS_PATH"] = root
        import minari
        from minari.data_collector import EpisodeBuffer

        from sb3_dare.data import load_offline_data

        env = gym.make("Pendulum-v1")
        env.action_space.seed(0)
        buffers = []
        for episode in range(5):
            obs, _ = env.reset(seed=episode)
            observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
            done = False
            while not done:
                action = env.action_space.sample()
                obs, reward, terminated, truncated, _ = env.step(action)
                observations.append(obs)
                actions.append(action)
                rewards.append(reward)
                terminations.append(terminated)
                truncations.append(truncated)
                done = terminated or truncated
            buffers.append(
                EpisodeBuffer(
                    id=episode,
                    observations=np.array(observations),
                    actions=np.array(actions),
                    rewards=np.array(rewards),
                    terminations=np.array(terminations),
                    truncations=np.array(truncations),
                )
            )
        minari.create_dataset_from_buffers(
            "example/pendulum/random-v0",
            buffer=buffers,
            env="Pendulum-v1",
            algorithm_name="uniform random",
            author="sb3_dare",
            author_email="none@example.com",
            code_permalink="https://example.com",
            description="random Pendulum-v1 episodes",
            ref_min_score=-1500.0,
            ref_max_score=-150.0,
        )
        data = load_offline_data("example/pendulum/random-v0", env="Pendulum-v1")
        print(data)
        print(f"episode returns: {np.round(data.episode_returns, 1)}")
        print(f"normalised scores: {np.round(data.normalized_score(data.episode_returns), 1)}")
        print(f"actions rescaled to [-1, 1]: min {data.actions.min():.3f}, max {data.actions.max():.3f}")
        print(f"first Monte-Carlo returns-to-go (gamma {data.gamma}): {np.round(data.mc_returns[:3], 2)}")


if __name__ == "__main__":
    main()
