"""
Bring your own (s, a, r, s') arrays: wrap them in OfflineData and pre-train / fine-tune any sb3_dare algorithm.

Run: ``python examples/own_arrays.py``. Here the arrays come from a noisy hand-written controller on
InvertedPendulum-v5 (needs ``pip install -e ".[mujoco]"``); replace them with yours.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from sb3_dare import IQL
from sb3_dare.data import OfflineData


def collect(n_steps: int = 5000, seed: int = 0) -> dict[str, np.ndarray]:
    env = gym.make("InvertedPendulum-v5")
    rng = np.random.default_rng(seed)
    gains = np.array([1.0, 10.0, 1.0, 1.0])
    columns: dict[str, list] = {key: [] for key in ("obs", "action", "reward", "next_obs", "terminated", "truncated")}
    obs, _ = env.reset(seed=seed)
    for _ in range(n_steps):
        action = np.clip([gains @ obs + rng.normal()], -3.0, 3.0).astype(np.float32)  # env units, [-3, 3]
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(columns, (obs, action, reward, next_obs, terminated, truncated), strict=True):
            columns[key].append(value)
        obs = env.reset()[0] if terminated or truncated else next_obs
    return {key: np.asarray(value) for key, value in columns.items()}


def main(n_collected: int = 5000, steps: int = 2000, save_path: str = "iql_own_arrays") -> IQL:
    arrays = collect(n_collected)
    env = gym.make("InvertedPendulum-v5")
    data = OfflineData.from_arrays(
        arrays["obs"], arrays["action"], arrays["reward"], arrays["next_obs"],
        terminations=arrays["terminated"], truncations=arrays["truncated"],
        action_space=env.action_space,  # actions are rescaled to [-1, 1] from these bounds, as SB3 does
        observation_space=env.observation_space, ref_min_score=5.0, ref_max_score=1000.0, source="my-controller",
    )  # fmt: skip
    print(data)
    model = IQL(
        "MlpPolicy",
        env,
        dataset=data,
        offline_steps=steps,
        offline_eval_freq=steps // 2,
        offline_eval_episodes=3,
        policy_kwargs=dict(net_arch=[64, 64]),
        verbose=1,
        seed=0,
    )
    model.learn(total_timesteps=steps)  # `steps` offline updates, then `steps` env steps
    model.save(save_path)
    # an in-memory dataset is not saved with the model: pass it again to continue training
    model = IQL.load(save_path, env=env, dataset=data)
    model.learn(steps // 4, reset_num_timesteps=False)
    return model


if __name__ == "__main__":
    main()
