"""Soak run: a long online phase with a small network, to check that memory stays flat.

Not part of CI (1M steps take hours on a CPU). The run pre-trains briefly on a dataset of random rollouts
(in memory, no Minari needed), then trains online for ``--steps`` env steps with the whole stack of a real run:
mixed offline/online batches, log dumps every episode, and checkpoints (model, replay buffer, RNG states) every
``--checkpoint-freq`` steps. The resident set size (RSS, from /proc) is sampled every ``--sample-every`` steps.

The replay buffer's pages are touched as it fills, so RSS grows by about ``56 bytes x buffer_size`` for a
4-dimensional observation until the ring buffer is full; ``buffer_size`` is therefore smaller than the run by
default, and the verdict is the RSS slope after the buffer is full (least squares, MB per 100k steps).

Usage: ``python benchmarks/soak.py [--steps 1000000] [--algorithm IQL] [--buffer-size 100000] [--threads 1]``.
Prints one JSON line per sample and a JSON summary at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

import sb3_dare
from sb3_dare.common.checkpoint import O2OCheckpointCallback
from sb3_dare.data import OfflineData


def rss_megabytes() -> float:
    """Resident set size of this process (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def random_rollouts(env_id: str, n_transitions: int, seed: int) -> OfflineData:
    """Offline data from a uniformly random policy (only its cost matters here, not its quality)."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    observations: list[np.ndarray] = []
    actions: list[np.ndarray] = []
    rewards: list[float] = []
    next_observations: list[np.ndarray] = []
    terminations: list[bool] = []
    truncations: list[bool] = []
    observation, _ = env.reset(seed=seed)
    while len(rewards) < n_transitions:
        action = env.action_space.sample()
        next_observation, reward, terminated, truncated, _ = env.step(action)
        observations.append(observation)
        actions.append(action)
        rewards.append(float(reward))
        next_observations.append(next_observation)
        terminations.append(terminated)
        truncations.append(truncated)
        observation = env.reset()[0] if terminated or truncated else next_observation
    env.close()
    return OfflineData.from_arrays(
        np.asarray(observations),
        np.asarray(actions),
        np.asarray(rewards),
        np.asarray(next_observations),
        np.asarray(terminations),
        np.asarray(truncations),
        action_space=env.action_space,  # type: ignore[arg-type]
        source="soak-random",
        env_id=env_id,
    )


class MemorySampler(BaseCallback):
    """Sample RSS every ``every`` env steps and print it as a JSON line."""

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every = every
        self.samples: list[dict[str, float]] = []
        self.start = time.perf_counter()

    def sample(self) -> None:
        record = {
            "step": int(self.model.num_timesteps),
            "seconds": round(time.perf_counter() - self.start, 1),
            "rss_mb": round(rss_megabytes(), 1),
        }
        self.samples.append(record)
        print(json.dumps(record), flush=True)

    def _on_training_start(self) -> None:
        self.start = time.perf_counter()

    def _on_step(self) -> bool:
        if self.model.num_timesteps % self.every == 0:
            self.sample()
        return True


def slope_per_100k(samples: list[dict[str, float]], from_step: int) -> float | None:
    """Least-squares RSS slope (MB per 100k steps) over the samples from ``from_step`` on."""
    points = [(sample["step"], sample["rss_mb"]) for sample in samples if sample["step"] >= from_step]
    if len(points) < 3:
        return None
    steps, rss = np.asarray(points, dtype=np.float64).T
    return float(np.polyfit(steps, rss, 1)[0] * 100_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithm", default="IQL", choices=["IQL", "CalQL", "DARE_IQL", "DARE_CalQL"])
    parser.add_argument("--env", default="InvertedPendulum-v5")
    parser.add_argument("--steps", type=int, default=1_000_000, help="online env steps")
    parser.add_argument("--offline-steps", type=int, default=1000)
    parser.add_argument("--dataset-size", type=int, default=20_000)
    parser.add_argument("--buffer-size", type=int, default=100_000)
    parser.add_argument("--net-arch", type=int, nargs="+", default=[32, 32])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sample-every", type=int, default=10_000)
    parser.add_argument("--checkpoint-freq", type=int, default=100_000, help="0: no checkpoints")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = random_rollouts(args.env, args.dataset_size, args.seed)
    algorithm = getattr(sb3_dare, args.algorithm)
    kwargs: dict[str, Any] = dict(
        dataset=data,
        offline_steps=args.offline_steps,
        buffer_size=args.buffer_size,
        batch_size=args.batch_size,
        policy_kwargs=dict(net_arch=args.net_arch),
        offline_eval_freq=0,
        seed=args.seed,
    )
    if args.algorithm.startswith("DARE"):
        kwargs.update(
            behavior_model="gaussian", guidance_scale=0.0, behavior_steps=500, behavior_kwargs=dict(hidden_sizes=[32])
        )
    model = algorithm("MlpPolicy", args.env, **kwargs)
    sampler = MemorySampler(args.sample_every)
    callbacks: list[BaseCallback] = [sampler]
    with tempfile.TemporaryDirectory(prefix="sb3_dare_soak_") as folder:
        if args.checkpoint_freq > 0:
            callbacks.append(O2OCheckpointCallback(args.checkpoint_freq, folder))
        start = time.perf_counter()
        rss_before = rss_megabytes()
        model.learn(args.steps, callback=callbacks)
        elapsed = time.perf_counter() - start
    rows_per_step = 1 if model.n_envs == 1 else model.n_envs
    full_at = args.buffer_size * rows_per_step
    samples = sampler.samples
    after_full = [sample for sample in samples if sample["step"] >= full_at]
    summary = {
        "algorithm": args.algorithm,
        "env": args.env,
        "online_steps": int(model.num_timesteps),
        "offline_steps": args.offline_steps,
        "buffer_size": args.buffer_size,
        "net_arch": args.net_arch,
        "batch_size": args.batch_size,
        "checkpoint_freq": args.checkpoint_freq,
        "threads": args.threads,
        "seconds": round(elapsed, 1),
        "steps_per_second": round(args.steps / elapsed, 1),
        "rss_before_learn_mb": round(rss_before, 1),
        "rss_first_sample_mb": samples[0]["rss_mb"] if samples else None,
        "rss_when_buffer_full_mb": after_full[0]["rss_mb"] if after_full else None,
        "rss_final_mb": samples[-1]["rss_mb"] if samples else None,
        "rss_max_mb": max((sample["rss_mb"] for sample in samples), default=None),
        "slope_after_buffer_full_mb_per_100k_steps": slope_per_100k(samples, full_at),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sb3_dare": sb3_dare.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
