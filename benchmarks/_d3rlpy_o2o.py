"""The peer row of the O2O suite: d3rlpy's IQL pre-trained (``fit``) then fine-tuned (``fit_online``).

Runs inside d3rlpy's own virtual environment (``${SB3_DARE_CACHE:-~/.cache/sb3_dare}/d3rlpy-2.8.1``, with torch 2.13.0,
d3rlpy 2.8.1, h5py and mujoco) and never imports sb3_dare: ``benchmarks/o2o_suite.py`` resolves everything into a
spec JSON (dataset folder, budgets, output path) and starts this script with that interpreter. It writes one result
JSON with the same fields as the suite's runs.

Matched with the suite's IQL: the same Minari data (read from its HDF5 file), batch 256, 2x256 networks for actor,
critics and value net, 2 critics, Adam at 3e-4, gamma 0.99, target rate 0.005, expectile 0.7, inverse temperature
3.0, weight clip 100, observations standardised with the dataset's statistics; the same offline and online budgets;
online batches mixing offline and online data half and half (``MixedReplayBuffer``); one update per env step, no
random warm-up; evaluation by this script on the suite's schedule (deterministic actions, same episode count,
normalised with the dataset's reference scores). What differs is d3rlpy's own: its networks' initialisation, its
actor parameterisation and exploration (``sample_action``), and its per-transition sampling of mixed batches.

Usage (normally started by the suite): ``<d3rlpy venv>/bin/python benchmarks/_d3rlpy_o2o.py --spec spec.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np


def read_minari_hdf5(dataset_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """
    The transitions of a Minari dataset folder (``data/main_data.hdf5`` and ``data/metadata.json``), flattened in
    episode order, with per-step terminal and timeout flags (an episode's last step is a timeout unless terminated).
    """
    import h5py

    metadata_json = json.loads((dataset_dir / "data" / "metadata.json").read_text())
    columns: dict[str, list[np.ndarray]] = {"observations": [], "actions": [], "rewards": [], "terminals": [], "timeouts": []}
    with h5py.File(dataset_dir / "data" / "main_data.hdf5", "r") as file:
        names = sorted(file.keys(), key=lambda name: int(name.split("_")[-1]))
        for name in names:
            episode = file[name]
            actions = np.asarray(episode["actions"], dtype=np.float32)
            length = len(actions)
            terminations = np.asarray(episode["terminations"], dtype=bool)
            timeouts = np.zeros(length, dtype=bool)
            if not terminations[-1]:
                timeouts[-1] = True
            columns["observations"].append(np.asarray(episode["observations"], dtype=np.float32)[:length])
            columns["actions"].append(actions)
            columns["rewards"].append(np.asarray(episode["rewards"], dtype=np.float32))
            columns["terminals"].append(terminations.astype(np.float32))
            columns["timeouts"].append(timeouts.astype(np.float32))
    return {key: np.concatenate(values) for key, values in columns.items()}, metadata_json


class Evaluator:
    """Deterministic evaluation episodes on the suite's schedule, timed (the time is kept out of the rates)."""

    def __init__(self, env_id: str, seed: int, episodes: int, ref_min: float, ref_max: float, phase: str):
        import gymnasium as gym

        self.env = gym.make(env_id)
        self.env.reset(seed=10_000 + seed + (0 if phase == "offline" else 1))
        self.episodes, self.ref_min, self.ref_max, self.phase = episodes, ref_min, ref_max, phase
        self.evaluations: list[dict[str, Any]] = []
        self.seconds = 0.0

    def __call__(self, algo: Any, step: int) -> None:
        start = time.perf_counter()
        returns = []
        for _ in range(self.episodes):
            observation, _ = self.env.reset()
            total, done = 0.0, False
            while not done:
                action = algo.predict(np.expand_dims(observation, 0).astype(np.float32))[0]
                observation, reward, terminated, truncated, _ = self.env.step(action)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
        mean = float(np.mean(returns))
        self.evaluations.append(
            {
                "step": int(step),
                "phase": self.phase,
                "normalized_score": 100.0 * (mean - self.ref_min) / (self.ref_max - self.ref_min),
                "mean_reward": mean,
                "std_reward": float(np.std(returns)),
            }
        )
        self.seconds += time.perf_counter() - start


def make_iql(spec: dict[str, Any]) -> Any:
    """d3rlpy's IQL with the suite's settings."""
    import d3rlpy

    encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=list(spec["net_arch"]))
    config = d3rlpy.algos.IQLConfig(
        batch_size=spec["batch_size"],
        actor_learning_rate=3e-4,
        critic_learning_rate=3e-4,
        actor_encoder_factory=encoder,
        critic_encoder_factory=encoder,
        value_encoder_factory=encoder,
        gamma=0.99,
        tau=0.005,
        n_critics=2,
        expectile=0.7,
        weight_temp=3.0,
        max_weight=100.0,
        observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(),
    )
    return config.create(device="cuda:0" if spec.get("device", "cpu").startswith("cuda") else "cpu:0")


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("d3rlpy", "torch", "gymnasium", "mujoco", "numpy", "h5py"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _machine() -> dict[str, Any]:
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "system": platform.system(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temporary file in the same folder, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(_finite(data), file, indent=1, allow_nan=False)
            file.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Pre-train and fine-tune d3rlpy's IQL as the spec says; write and return the result."""
    import d3rlpy
    import gymnasium as gym
    import torch

    torch.set_num_threads(1)
    started, machine_start = time.strftime("%Y-%m-%dT%H:%M:%S%z"), _machine()
    seed = int(spec["seed"])
    d3rlpy.seed(seed)
    arrays, meta = read_minari_hdf5(Path(spec["dataset_dir"]))
    env_id = json.loads(meta["env_spec"])["id"]
    ref_min, ref_max = float(meta["ref_min_score"]), float(meta["ref_max_score"])
    dataset = d3rlpy.dataset.MDPDataset(
        observations=arrays["observations"],
        actions=arrays["actions"],
        rewards=arrays["rewards"],
        terminals=arrays["terminals"],
        timeouts=arrays["timeouts"],
        action_space=d3rlpy.constants.ActionSpace.CONTINUOUS,
    )
    algo = make_iql(spec)
    quiet = {"logger_adapter": d3rlpy.logging.NoopAdapterFactory(), "show_progress": False}

    offline_eval = Evaluator(env_id, seed, spec["eval_episodes"], ref_min, ref_max, "offline")
    offline_load = os.getloadavg()[0]
    first_update: dict[str, float] = {}
    start = time.perf_counter()
    algo.fit(
        dataset,
        n_steps=spec["offline_steps"],
        n_steps_per_epoch=spec["offline_eval_freq"],
        callback=lambda algo, epoch, step: first_update.setdefault("end", time.perf_counter()),
        epoch_callback=lambda algo, epoch, step: offline_eval(algo, step),
        **quiet,
    )
    offline_seconds = time.perf_counter() - start
    # the rate counts the updates after the first one (d3rlpy builds its networks and scalers before it)
    offline_setup = first_update["end"] - start
    offline_train = max(offline_seconds - offline_setup - offline_eval.seconds, 1e-9)
    offline_updates = int(algo.grad_step)  # d3rlpy's own count of update() calls
    offline_timed_updates = max(offline_updates - 1, 1)

    env = gym.make(env_id)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    online_buffer = d3rlpy.dataset.create_fifo_replay_buffer(limit=max(spec["online_steps"], 1), env=env)
    buffer = d3rlpy.dataset.MixedReplayBuffer(online_buffer, dataset, secondary_mix_ratio=0.5)
    online_eval = Evaluator(env_id, seed, spec["eval_episodes"], ref_min, ref_max, "online")

    def every_step(algo: Any, epoch: int, step: int) -> None:
        if step % spec["online_eval_freq"] == 0:
            online_eval(algo, step)

    online_load = os.getloadavg()[0]
    start = time.perf_counter()
    # updates start once the online part holds one full step (d3rlpy cannot sample from an empty episode)
    algo.fit_online(
        env,
        buffer,
        n_steps=spec["online_steps"],
        n_steps_per_epoch=spec["online_eval_freq"],
        update_start_step=1,
        random_steps=0,
        eval_env=None,
        callback=every_step,
        **quiet,
    )
    online_seconds = time.perf_counter() - start
    online_train = max(online_seconds - online_eval.seconds, 1e-9)
    online_updates = int(algo.grad_step) - offline_updates

    result = {
        "schema_version": spec["schema_version"],
        "status": "done",
        "algorithm": spec["algorithm"],
        "task": spec["task"],
        "seed": seed,
        "variant": spec["variant"],
        "tier": spec["tier"],
        "env_id": env_id,
        "evaluations": offline_eval.evaluations + online_eval.evaluations,
        "config": {
            "spec": {key: value for key, value in spec.items() if key not in ("git", "output", "schema_version")},
            "d3rlpy_config": json.loads(algo.config.serialize()) if hasattr(algo.config, "serialize") else repr(algo.config),
            "online": {"buffer": "MixedReplayBuffer(fifo online, offline dataset)", "secondary_mix_ratio": 0.5},
            "update_start_step": 1,
            "evaluation": {
                "offline_every": spec["offline_eval_freq"],
                "online_every": spec["online_eval_freq"],
                "episodes": spec["eval_episodes"],
                "deterministic": True,
                "score": "100 * (return - ref_min) / (ref_max - ref_min)",
            },
            "dataset": {"ref_min_score": ref_min, "ref_max_score": ref_max, "transitions": len(arrays["actions"])},
        },
        "compute": {
            "offline": {
                "updates": offline_updates,
                "wall_clock_s": offline_seconds,
                "eval_s": offline_eval.seconds,
                "train_s": offline_train,
                "updates_per_second": offline_timed_updates / offline_train,
                "setup_s": offline_setup,
                "load_average_at_start": round(offline_load, 2),
            },
            "switch": {"behavior_fit_s": 0.0, "behavior_fit_reused": None, "scoring_and_setup_s": 0.0},
            "online": {
                "env_steps": spec["online_steps"],
                "updates": online_updates,
                "wall_clock_s": online_seconds,
                "eval_s": online_eval.seconds,
                "train_s": online_train,
                "steps_per_second": spec["online_steps"] / online_train,
                "updates_per_second": online_updates / online_train,
                "load_average_at_start": round(online_load, 2),
            },
            "total_wall_clock_s": offline_seconds + online_seconds,
            "note": "its own offline phase (no shared checkpoint); eval time is excluded from the rates",
        },
        "dare_diagnostics": None,
        "versions": _versions(),
        "git": spec.get("git"),
        "machine": {"at_start": machine_start, "at_end": _machine()},
        "started_at": started,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(Path(spec["output"]), result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, required=True, help="the run's spec JSON, written by o2o_suite.py")
    args = parser.parse_args()
    run(json.loads(args.spec.read_text()))


if __name__ == "__main__":
    main()
