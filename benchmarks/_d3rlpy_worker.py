"""The d3rlpy side of ``benchmarks/speed.py``: runs inside d3rlpy's own virtual environment.

It never imports sb3_dare (d3rlpy pins its own gymnasium). ``speed.py`` starts it once and sends it one JSON
request per line on stdin; it answers one JSON line per request on the original stdout (everything d3rlpy prints
goes to stderr). Requests:

- ``{"op": "setup", "key": K, "algo": "iql" | "calql", "data": NPZ, "threads": T, "seed": S, "warmup": W,
  "warmup_seconds": WS}``:
  build d3rlpy's ``IQLConfig`` / ``CalQLConfig`` with the settings of sb3_dare's defaults (batch 256, 2x256 networks,
  2 critics, the same learning rates, standardised observations, float32 on CPU) on the transitions of ``NPZ``, then
  run ``W`` warm-up updates (fewer if ``WS`` seconds pass first);
- ``{"op": "setup_online", ... the same ..., "env_id": E, "fill": F}``: the same model for the online phase on
  ``gymnasium.make(E)``: a FIFO online buffer mixed half and half with the dataset (``MixedReplayBuffer``, as the
  O2O peer row uses), ``F`` random env steps without updates, then the warm-up steps;
- ``{"op": "run", "key": K, "n": N}``: ``N`` training steps as d3rlpy's ``fit`` runs them (sample a batch from the
  replay buffer, ``update``), or for an online key ``N`` env steps as ``fit_online`` runs them (``sample_action``,
  ``env.step``, ``append``, one ``update`` on a mixed batch; without its per-step metric logging); answers the
  seconds they took, and the part of it spent in ``update`` alone;
- ``{"op": "flops", "key": K}``: floating-point operations of one ``update`` (``torch.utils.flop_counter``);
- ``{"op": "quit"}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np


def _load_dataset(path: str) -> Any:
    from d3rlpy.constants import ActionSpace
    from d3rlpy.dataset import MDPDataset

    arrays = np.load(path)
    return MDPDataset(
        observations=arrays["observations"].astype(np.float32),
        actions=arrays["actions"].astype(np.float32),
        rewards=arrays["rewards"].astype(np.float32),
        terminals=arrays["terminals"].astype(np.float32),
        timeouts=arrays["timeouts"].astype(np.float32),
        action_space=ActionSpace.CONTINUOUS,
        action_size=int(arrays["actions"].shape[1]),
    )


def _make_algorithm(algo: str) -> Any:
    import d3rlpy
    from d3rlpy.models.encoders import VectorEncoderFactory
    from d3rlpy.preprocessing import StandardObservationScaler

    def encoder() -> Any:
        return VectorEncoderFactory(hidden_units=[256, 256])

    if algo == "iql":
        config: Any = d3rlpy.algos.IQLConfig(
            batch_size=256,
            actor_learning_rate=3e-4,
            critic_learning_rate=3e-4,
            gamma=0.99,
            tau=0.005,
            n_critics=2,
            expectile=0.7,
            weight_temp=3.0,
            max_weight=100.0,
            actor_encoder_factory=encoder(),
            critic_encoder_factory=encoder(),
            value_encoder_factory=encoder(),
            observation_scaler=StandardObservationScaler(),
        )
    elif algo == "calql":
        # sb3_dare's CalQL defaults: actor and temperature at 1e-4, critics at 3e-4, cql_alpha 10 without the
        # Lagrange form (alpha_learning_rate=0 keeps d3rlpy's multiplier at its initial 1), 10 actions per proposal
        config = d3rlpy.algos.CalQLConfig(
            batch_size=256,
            actor_learning_rate=1e-4,
            critic_learning_rate=3e-4,
            temp_learning_rate=1e-4,
            alpha_learning_rate=0.0,
            initial_alpha=1.0,
            conservative_weight=10.0,
            n_action_samples=10,
            gamma=0.99,
            tau=0.005,
            n_critics=2,
            actor_encoder_factory=encoder(),
            critic_encoder_factory=encoder(),
            observation_scaler=StandardObservationScaler(),
        )
    else:
        raise ValueError(f"unknown algorithm {algo!r}")
    return config.create(device="cpu:0")


class OnlineState:
    """What the online loop of one key carries from block to block: the env, the mixed buffer, the observation."""

    def __init__(self, env: Any, buffer: Any, observation: np.ndarray) -> None:
        self.env = env
        self.buffer = buffer
        self.observation = observation
        self.steps = 0


class Worker:
    def __init__(self) -> None:
        self.models: dict[str, Any] = {}
        self.datasets: dict[str, Any] = {}
        self.online: dict[str, OnlineState] = {}

    def setup(
        self, key: str, algo: str, data: str, threads: int, seed: int, warmup: int, warmup_seconds: float
    ) -> dict[str, Any]:
        import d3rlpy
        import torch
        from d3rlpy.algos.utility import build_scalers_with_transition_picker

        torch.set_num_threads(threads)
        d3rlpy.seed(seed)
        start = time.perf_counter()
        if data not in self.datasets:
            self.datasets[data] = _load_dataset(data)
        dataset = self.datasets[data]
        model = _make_algorithm(algo)
        # as fit() does before building: the observation scaler's statistics, then the networks
        build_scalers_with_transition_picker(model, dataset)
        model.build_with_dataset(dataset)
        self.models[key] = (model, dataset)
        setup_seconds = time.perf_counter() - start
        # warm-up: ``warmup`` updates, or fewer if ``warmup_seconds`` pass first
        warm_start, done = time.perf_counter(), 0
        while done < warmup and time.perf_counter() - warm_start < warmup_seconds:
            chunk = min(max(1, warmup // 10), warmup - done)
            self.run(key, chunk)
            done += chunk
        return {
            "setup_s": setup_seconds,
            "warmup_updates": done,
            "torch": torch.__version__,
            "d3rlpy": d3rlpy.__version__,
            "threads": threads,
        }

    def setup_online(
        self,
        key: str,
        algo: str,
        data: str,
        threads: int,
        seed: int,
        warmup: int,
        warmup_seconds: float,
        env_id: str,
        fill: int,
    ) -> dict[str, Any]:
        """
        The model of ``setup`` for the online phase on ``gymnasium.make(env_id)``: a FIFO online buffer mixed half and
        half with the dataset, ``fill`` random env steps without updates, then up to ``warmup`` steps with updates.
        """
        import d3rlpy
        import gymnasium as gym

        answer = self.setup(key, algo, data, threads, seed, warmup=0, warmup_seconds=0.0)
        _, dataset = self.models[key]
        start = time.perf_counter()
        env = gym.make(env_id)
        env.action_space.seed(seed)
        online_buffer = d3rlpy.dataset.create_fifo_replay_buffer(limit=1_000_000, env=env)
        buffer = d3rlpy.dataset.MixedReplayBuffer(online_buffer, dataset, secondary_mix_ratio=0.5)
        self.online[key] = OnlineState(env, buffer, env.reset(seed=seed)[0])
        for _ in range(fill):
            self._env_step(key, random_action=True)
        answer["fill_s"] = time.perf_counter() - start
        warm_start, done = time.perf_counter(), 0
        while done < warmup and time.perf_counter() - warm_start < warmup_seconds:
            chunk = min(max(1, warmup // 10), warmup - done)
            self.run(key, chunk)
            done += chunk
        answer["warmup_updates"] = done
        return answer

    def _env_step(self, key: str, random_action: bool = False) -> None:
        model, _ = self.models[key]
        state = self.online[key]
        observation = state.observation
        if random_action:
            action = state.env.action_space.sample()
        else:
            action = model.sample_action(np.expand_dims(observation, axis=0))[0]
        next_observation, reward, terminated, truncated, _ = state.env.step(action)
        state.buffer.append(observation, action, float(reward))
        if terminated or truncated:
            state.buffer.clip_episode(bool(terminated))
            next_observation, _ = state.env.reset()
        state.observation = next_observation
        state.steps += 1

    def run(self, key: str, n: int) -> dict[str, Any]:
        if key in self.online:
            return self._run_online(key, n)
        model, dataset = self.models[key]
        batch_size = model.config.batch_size
        update_seconds = 0.0
        start = time.perf_counter()
        for _ in range(n):
            batch = dataset.sample_transition_batch(batch_size)
            update_start = time.perf_counter()
            model.update(batch)
            update_seconds += time.perf_counter() - update_start
        return {"seconds": time.perf_counter() - start, "update_seconds": update_seconds, "n": n}

    def _run_online(self, key: str, n: int) -> dict[str, Any]:
        model, _ = self.models[key]
        state = self.online[key]
        batch_size = model.config.batch_size
        update_seconds = 0.0
        start = time.perf_counter()
        for _ in range(n):
            self._env_step(key)
            batch = state.buffer.sample_transition_batch(batch_size)
            update_start = time.perf_counter()
            model.update(batch)
            update_seconds += time.perf_counter() - update_start
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "update_seconds": update_seconds, "n": n, "online_size": state.steps}

    def flops(self, key: str) -> dict[str, Any]:
        from torch.utils.flop_counter import FlopCounterMode

        model, dataset = self.models[key]
        batch = dataset.sample_transition_batch(model.config.batch_size)
        counter = FlopCounterMode(display=False)
        with counter:
            model.update(batch)
        return {"flops": int(counter.get_total_flops())}


def main() -> None:
    # answers go to the original stdout; anything else printed (d3rlpy's structured logs) goes to stderr
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    worker = Worker()
    for line in sys.stdin:
        request = json.loads(line)
        operation = request.pop("op")
        if operation == "quit":
            break
        try:
            answer = getattr(worker, operation)(**request)
        except Exception as error:  # report to the driver, which stops the run with the message
            answer = {"error": f"{type(error).__name__}: {error}"}
        protocol.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
