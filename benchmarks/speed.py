"""
Updates per second of sb3_dare, against d3rlpy 2.8.1 and against what the machine's arithmetic allows (issue 7).

The conditions are those of ``../shared/BENCHMARKS.md``: a Hopper-sized dataset (``o2o-cpu/hopper/medium-v0``
from ``$MINARI_DATASETS_PATH``, default ``../shared/datasets``; 100k random Hopper-shaped transitions when it is
missing), batch 256, 2x256 networks, 2 critics, Adam, float32, CPU, the same thread count on every side.

Every side runs in a worker process of its own, idle while another side is timed; the sides of one comparison are
timed in turns (A B A B ...), a block of updates each, for several rounds, and every figure is a median over the
rounds (ratios: the median of the per-round ratios, each from two adjacent blocks).

- Offline phase: updates/s of ``pretrain`` (sampling included) for ``iql`` and ``calql``, and of d3rlpy's ``fit``
  step (``sample_transition_batch`` + ``update``) for ``IQLConfig`` / ``CalQLConfig`` with matching settings,
  in d3rlpy's own virtual environment (``${SB3_DARE_CACHE:-~/.cache/sb3_dare}/d3rlpy-2.8.1``, created at the first
  run with ``pip install torch==<our torch> d3rlpy==2.8.1``). d3rlpy's ``update`` alone is reported beside it.
- Online phase: env steps + updates per second on Hopper-v5 (one update per step, ``learn``) for the base
  algorithms and DARE on top (cached scores, and per-batch scores). DARE's behaviour model is fitted briefly (its
  fit does not change the cost of a score) and the offline transitions get scores resampled from real scores of
  a subset (scoring all 100k is a one-off cost, reported per 100k transitions instead).
- Compute limit: floating-point operations of one update (``torch.utils.flop_counter``) times updates/s, divided
  by the float32 throughput of a 256x256x256 matrix product measured in the same run (same threads, best of 5,
  once per round, median over rounds).
- Also: the replay buffer's memory for 1M Hopper-sized transitions and the dataset's load time.

Usage::

    python benchmarks/speed.py --quick --out benchmarks/results/speed_quick.json
    python benchmarks/speed.py --out benchmarks/results/speed_full.json
    python benchmarks/speed.py --quick --against /tmp/old_tree   # also time an earlier sb3_dare source tree

``--quick`` (under 8 minutes on a quiet 2-core machine, the d3rlpy environment's creation included): 20 warm-up
updates (fewer if 8 seconds pass first), 9 rounds of 1.5-second blocks per side; online, 5000 random env steps fill the
online buffer first. The full run: 50 warm-up updates, 9 rounds of 5-second blocks and at least 500 timed updates per
side; online, 12,500 random steps first (the mean online buffer size of a 25k-step tier-M run). DARE's cached scores
are computed in batches when transitions are sampled before their batch is full, so their cost per step falls as the
online buffer grows: the buffer sizes are in the result.

The ``*_compiled`` sides are the same algorithms with ``torch_compile=True``. ``OMP_WAIT_POLICY`` is set to PASSIVE
for every side when the machine is busy at start (see ``--omp-wait-policy``): it is recorded with the result.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from d3rlpy_env import d3rlpy_python, ensure_d3rlpy_environment

REPO_ROOT = Path(__file__).resolve().parent.parent
DATASET_ID = "o2o-cpu/hopper/medium-v0"
ENV_ID = "Hopper-v5"
BATCH_SIZE = 256
GEMM_SIZE = 256
ALGORITHMS = ("iql", "calql", "dare_iql", "dare_calql")


# ====================================================================== the sb3_dare worker


def _import_sb3_dare(source: str | None) -> None:
    """Import sb3_dare from ``source`` (a source tree holding ``sb3_dare/``) instead of the installed package."""
    if source is not None:
        # the editable install's finder would win over sys.path: drop it
        sys.meta_path[:] = [entry for entry in sys.meta_path if not getattr(entry, "__module__", "").startswith("__editable")]
        sys.path.insert(0, os.path.abspath(source))
    import sb3_dare  # noqa: F401


def _synthetic_data(n_transitions: int = 100_000, episode_length: int = 1000) -> Any:
    import numpy as np

    from sb3_dare.data import OfflineData

    rng = np.random.default_rng(0)
    observations = rng.standard_normal((n_transitions + 1, 11)).astype(np.float32)
    terminations = np.zeros(n_transitions, dtype=bool)
    truncations = np.zeros(n_transitions, dtype=bool)
    truncations[episode_length - 1 :: episode_length] = True
    truncations[-1] = True
    return OfflineData.from_arrays(
        observations=observations[:-1],
        actions=rng.uniform(-1, 1, (n_transitions, 3)).astype(np.float32),
        rewards=rng.standard_normal(n_transitions).astype(np.float32),
        next_observations=observations[1:],
        terminations=terminations,
        truncations=truncations,
        env_id=ENV_ID,
        source="synthetic",
    )


class SB3DareWorker:
    """The sb3_dare side: holds the dataset and one model per key; every method answers a JSON-able dict."""

    def __init__(self) -> None:
        self.data: Any = None
        self.models: dict[str, Any] = {}
        self.phases: dict[str, str] = {}

    def load(self, dataset: str) -> dict[str, Any]:
        """Load the dataset (timed); a synthetic Hopper-shaped one if the dataset cannot be found."""
        from sb3_dare.data import load_offline_data

        start = time.perf_counter()
        try:
            self.data = load_offline_data(dataset, download=False)
            source = dataset
        except Exception as error:
            print(f"{dataset} could not be loaded ({error}); using synthetic Hopper-shaped data", file=sys.stderr)
            self.data = _synthetic_data()
            source = "synthetic (100k transitions, 11-dim observations, 3-dim actions)"
        seconds = time.perf_counter() - start
        return {"load_s": seconds, "source": source, "transitions": len(self.data)}

    def export(self, path: str) -> dict[str, Any]:
        """Write the transitions as d3rlpy's MDPDataset takes them (episodes end in a terminal or a timeout)."""
        import numpy as np

        data = self.data
        ends = np.zeros(len(data), dtype=bool)
        ends[data.episode_starts[1:] - 1] = True
        ends[-1] = True
        terminals = data.terminations.astype(bool)
        np.savez(
            path,
            observations=data.observations,
            actions=data.actions,
            rewards=data.rewards,
            terminals=terminals.astype(np.float32),
            timeouts=(ends & ~terminals).astype(np.float32),
        )
        return {"path": path}

    def memory(self, n_transitions: int = 1_000_000) -> dict[str, Any]:
        """Bytes held for ``n_transitions`` Hopper-sized transitions: the online ring, and the offline part."""
        import numpy as np
        from gymnasium import spaces

        from sb3_dare.common.buffers import OfflineOnlineReplayBuffer

        observation_space = spaces.Box(-np.inf, np.inf, (11,), np.float64)  # MuJoCo's dtype, as the env gives it
        action_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
        buffer = OfflineOnlineReplayBuffer(n_transitions, observation_space, action_space, device="cpu")
        online = sum(value.nbytes for value in vars(buffer).values() if isinstance(value, np.ndarray))
        buffer.attach_offline_data(self.data)
        offline_arrays = [
            buffer.offline_observations,
            buffer.offline_next_observations,
            buffer.offline_actions,
            buffer.offline_rewards,
            buffer.offline_dones,
            buffer.offline_mc_returns,
            buffer.offline_scores,
            self.data.terminations,
            self.data.truncations,
        ]
        per_offline_transition = sum(array.nbytes for array in offline_arrays if array is not None) / len(self.data)
        return {
            "online_ring_mb": online / 1e6,
            "offline_part_mb": per_offline_transition * n_transitions / 1e6,
            "transitions": n_transitions,
        }

    def gemm(self, threads: int, repeats: int = 5, n_products: int = 100) -> dict[str, Any]:
        """Float32 GFLOP/s of a 256x256x256 product: the best of ``repeats`` runs of ``n_products`` products."""
        import torch as th

        th.set_num_threads(threads)
        left, right = th.randn(GEMM_SIZE, GEMM_SIZE), th.randn(GEMM_SIZE, GEMM_SIZE)
        out = th.empty(GEMM_SIZE, GEMM_SIZE)
        for _ in range(10):
            th.mm(left, right, out=out)
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(n_products):
                th.mm(left, right, out=out)
            best = min(best, time.perf_counter() - start)
        return {"gflops": 2 * GEMM_SIZE**3 * n_products / best / 1e9}

    def setup(
        self,
        key: str,
        algo: str,
        phase: str,
        threads: int,
        seed: int,
        warmup: int,
        warmup_seconds: float,
        options: dict[str, Any],
        online_fill: int = 0,
    ) -> dict[str, Any]:
        """
        Build a model for ``phase`` ("offline": pretrain; "online": learn on Hopper-v5, after ``online_fill`` random
        env steps without updates) and warm it up: ``warmup`` updates, or fewer if ``warmup_seconds`` pass first.
        """
        import torch as th

        th.set_num_threads(threads)
        start = time.perf_counter()
        model, extra = self._build(algo, phase, seed, {**options, "learning_starts": online_fill} if online_fill else options)
        self.models[key], self.phases[key] = model, phase
        if phase == "online":
            model.learn(online_fill + 1)  # random actions, no update before learning_starts (SB3)
        extra["setup_s"] = time.perf_counter() - start
        warm_start, done = time.perf_counter(), 0
        while done < warmup and time.perf_counter() - warm_start < warmup_seconds:
            chunk = min(max(1, warmup // 10), warmup - done)
            self.run(key, chunk)
            done += chunk
        extra["warmup_updates"] = done
        return extra

    def _build(self, algo: str, phase: str, seed: int, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        from sb3_dare import DARE_IQL, IQL, CalQL, DARE_CalQL

        classes = {"iql": IQL, "calql": CalQL, "dare_iql": DARE_IQL, "dare_calql": DARE_CalQL}
        common = dict(
            dataset=self.data,
            batch_size=BATCH_SIZE,
            buffer_size=200_000,
            offline_eval_freq=0,
            offline_log_interval=10**9,
            seed=seed,
            device="cpu",
        )
        options = dict(options)
        behavior_from = options.pop("behavior_from", None)
        scored_subset = options.pop("scored_subset", 2048)
        if behavior_from is not None:
            # a second DARE model with another score mode shares the fitted behaviour model of the first
            options["behavior_model"] = self.models[behavior_from].behavior
        if phase == "offline":
            return classes[algo]("MlpPolicy", None, offline_steps=10**9, **common, **options), {}
        import gymnasium as gym

        model = classes[algo]("MlpPolicy", gym.make(ENV_ID), offline_steps=0, **common, **options)
        extra: dict[str, Any] = {}
        if algo.startswith("dare"):
            extra = self._prepare_dare(model, seed, scored_subset)
        return model, extra

    def _prepare_dare(self, model: Any, seed: int, n_scored: int = 2048) -> dict[str, Any]:
        """Fit the behaviour model now (timed), and give the offline data scores resampled from real ones."""
        import numpy as np

        model._prepare_offline_data()
        extra: dict[str, Any] = {}
        if not model.behavior.is_fitted:
            start = time.perf_counter()
            model.behavior.train()
            model.behavior.fit(
                self.data.observations, self.data.actions, n_steps=model.behavior_steps, batch_size=BATCH_SIZE, seed=seed
            )
            extra["behavior_fit_s_per_1000_steps"] = (time.perf_counter() - start) / model.behavior_steps * 1000
            start = time.perf_counter()
            model.fit_behavior_model()  # the energy network (CEP) against the critic; the behaviour model is fitted
            extra["energy_setup_s"] = time.perf_counter() - start
        model._freeze_behavior()
        rng = np.random.default_rng(seed)
        subset = rng.choice(len(self.data), size=n_scored, replace=False)
        start = time.perf_counter()
        scores = model.score_transitions(self.data.observations[subset], self.data.actions[subset]).cpu().numpy()
        extra["scoring_s_per_100k"] = (time.perf_counter() - start) * 100_000 / n_scored
        model.replay_buffer.offline_scores[:] = rng.choice(scores, size=len(self.data))
        return extra

    def run(self, key: str, n: int) -> dict[str, Any]:
        """``n`` offline updates, or ``n`` env steps with one update each."""
        model = self.models[key]
        start = time.perf_counter()
        if self.phases[key] == "offline":
            model.pretrain(n_steps=n)
        else:
            model.learn(n, reset_num_timesteps=model.num_timesteps == 0)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "n": n, "online_size": int(model.replay_buffer.size())}

    def flops(self, key: str) -> dict[str, Any]:
        """Floating-point operations of one update (sampling included, which has none)."""
        from torch.utils.flop_counter import FlopCounterMode

        model = self.models[key]
        counter = FlopCounterMode(display=False)
        with counter:
            model.train(gradient_steps=1, batch_size=BATCH_SIZE)
        return {"flops": int(counter.get_total_flops())}


def worker_main(source: str | None) -> None:
    """Serve JSON requests from stdin, one per line, answering on the original stdout."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _import_sb3_dare(source)
    worker = SB3DareWorker()
    for line in sys.stdin:
        request = json.loads(line)
        operation = request.pop("op")
        if operation == "quit":
            break
        try:
            answer = getattr(worker, operation)(**request)
        except Exception as error:  # reported to the driver, which stops with the message
            import traceback

            traceback.print_exc()
            answer = {"error": f"{type(error).__name__}: {error}"}
        protocol.write(json.dumps(answer) + "\n")


# ====================================================================== the driver


class Worker:
    """A worker process and its request/answer pipe."""

    def __init__(self, name: str, command: list[str], log_path: Path, env: dict[str, str]):
        self.name = name
        self.log_path = log_path
        self.log = open(log_path, "w")  # closed in close()
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1, env=env
        )

    def request(self, op: str, **kwargs: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"The {self.name} worker stopped; its log:\n{self.log_tail()}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"The {self.name} worker failed on {op}: {answer['error']}\n{self.log_tail()}")
        return answer

    def log_tail(self, n_characters: int = 3000) -> str:
        self.log.flush()
        return self.log_path.read_text()[-n_characters:]

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.flush()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
        self.log.close()


class Measurement:
    """Timed blocks of every side of a comparison, in turns, and the figures taken from them."""

    def __init__(self, sides: dict[str, tuple[Worker, str]], block_seconds: float, rounds: int, min_updates: int):
        self.sides = sides
        self.block_seconds = block_seconds
        self.rounds = rounds
        self.min_updates = min_updates
        self.blocks: dict[str, list[tuple[int, float]]] = {label: [] for label in sides}
        # d3rlpy's update() alone within the same blocks (its batch sampling left out)
        self.update_only: dict[str, list[tuple[int, float]]] = {label: [] for label in sides}
        self.online_sizes: dict[str, int] = {}

    def run(self, sb3_worker: Worker, threads: int, gemm: list[float]) -> None:
        block_sizes = {label: self._calibrate(label) for label in self.sides}
        labels = list(self.sides)
        for round_index in range(self.rounds):
            gemm.append(sb3_worker.request("gemm", threads=threads)["gflops"])
            # A B C, then C B A: a drift of the machine's speed within a round favours no side over the rounds
            for label in labels if round_index % 2 == 0 else labels[::-1]:
                worker, key = self.sides[label]
                answer = worker.request("run", key=key, n=block_sizes[label])
                self.blocks[label].append((answer["n"], answer["seconds"]))
                if "update_seconds" in answer:
                    self.update_only[label].append((answer["n"], answer["update_seconds"]))
                if "online_size" in answer:
                    self.online_sizes[label] = answer["online_size"]

    def _calibrate(self, label: str) -> int:
        """Block size from a short timed run: about ``block_seconds`` of work, and ``min_updates`` over the rounds."""
        worker, key = self.sides[label]
        answer = worker.request("run", key=key, n=3)
        rate = answer["n"] / max(answer["seconds"], 1e-9)
        return max(3, round(rate * self.block_seconds), math.ceil(self.min_updates / self.rounds))

    def rate(self, label: str) -> float:
        """Median of the blocks' rates."""
        return statistics.median(n / seconds for n, seconds in self.blocks[label])

    def pooled_rate(self, label: str) -> float:
        """All blocks' work over all their time (counts bursts such as score flushes at their average)."""
        blocks = self.blocks[label]
        return sum(n for n, _ in blocks) / sum(seconds for _, seconds in blocks)

    def ratio(self, numerator: str, denominator: str, denominator_update_only: bool = False) -> float:
        """Median over the rounds of the ratio of the two sides' rates in that round."""
        denominator_blocks = self.update_only[denominator] if denominator_update_only else self.blocks[denominator]
        pairs = zip(self.blocks[numerator], denominator_blocks, strict=True)
        return statistics.median((n_a / s_a) / (n_b / s_b) for (n_a, s_a), (n_b, s_b) in pairs)

    def update_only_rate(self, label: str) -> float:
        """Median over the rounds of d3rlpy's update() rate alone (its batch sampling left out)."""
        return statistics.median(n / seconds for n, seconds in self.update_only[label])

    def timed_updates(self, label: str) -> int:
        return sum(n for n, _ in self.blocks[label])

    def block_rates(self, label: str) -> list[float]:
        return [round(n / seconds, 2) for n, seconds in self.blocks[label]]


def _cpu_model() -> str | None:
    """The CPU's model name (Linux), which the GFLOP/s figures depend on; None where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _machine(threads: int, omp_wait_policy: str) -> dict[str, Any]:
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": threads,
        "omp_wait_policy": omp_wait_policy,
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
    }


def _settings(quick: bool) -> dict[str, Any]:
    if quick:
        return dict(
            warmup=20,
            warmup_seconds=8.0,
            rounds=9,
            block_seconds=1.5,
            min_updates=0,
            online_fill=5000,
            online_warmup=20,
            behavior_steps=100,
            energy_steps=50,
            max_support_states=1024,
            scored_subset=1024,
        )
    return dict(
        warmup=50,
        warmup_seconds=1e9,
        rounds=9,
        block_seconds=5.0,
        min_updates=500,
        online_fill=12_500,
        online_warmup=50,
        behavior_steps=1000,
        energy_steps=500,
        max_support_states=4096,
        scored_subset=4096,
    )


class Benchmark:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.settings = _settings(args.quick)
        self.algos = [name.strip() for name in args.algos.split(",") if name.strip()]
        unknown = set(self.algos) - set(ALGORITHMS)
        if unknown:
            raise SystemExit(f"Unknown algorithms {sorted(unknown)}; choose among {ALGORITHMS}.")
        self.workdir = Path(tempfile.mkdtemp(prefix="sb3_dare_speed_"))
        self.omp_wait_policy = args.omp_wait_policy
        if self.omp_wait_policy == "auto":
            busy = os.getloadavg()[0] >= (os.cpu_count() or 1)
            self.omp_wait_policy = "PASSIVE" if busy else "default"
        self.workers: list[Worker] = []
        self.gemm: list[float] = []
        self.result: dict[str, Any] = {
            "ratios": {},
            "roofline_fraction": {},
            "updates_per_s": {},
            "online_steps_per_s": {},
        }

    # ------------------------------------------------------------------ workers

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if "MINARI_DATASETS_PATH" not in env and (REPO_ROOT.parent / "shared" / "datasets").is_dir():
            env["MINARI_DATASETS_PATH"] = str(REPO_ROOT.parent / "shared" / "datasets")
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[variable] = str(self.args.threads)
        if self.omp_wait_policy != "default":
            env["OMP_WAIT_POLICY"] = self.omp_wait_policy
        return env

    def _start(self, name: str, command: list[str]) -> Worker:
        worker = Worker(name, command, self.workdir / f"{name}.log", self._env())
        self.workers.append(worker)
        return worker

    def start_workers(self) -> None:
        script = str(Path(__file__).resolve())
        self.sb3 = self._start("sb3_dare", [sys.executable, script, "--worker"])
        self.against = None
        if self.args.against:
            self.against = self._start("against", [sys.executable, script, "--worker", "--source", self.args.against])
        self.d3rlpy = None
        if not self.args.no_d3rlpy:
            worker_script = str(Path(__file__).resolve().parent / "_d3rlpy_worker.py")
            self.d3rlpy = self._start("d3rlpy", [str(d3rlpy_python()), worker_script])

    def close(self, keep_logs: bool = False) -> None:
        for worker in self.workers:
            worker.close()
        if keep_logs:
            print(f"Worker logs: {self.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ------------------------------------------------------------------ phases

    def prepare(self) -> None:
        args = self.args
        self.result["machine"] = _machine(args.threads, self.omp_wait_policy)
        if not args.no_d3rlpy:
            self.result["d3rlpy_environment_created_s"] = round(ensure_d3rlpy_environment(), 1)
        self.start_workers()
        loaded = self.sb3.request("load", dataset=args.dataset)
        if self.against is not None:
            self.against.request("load", dataset=args.dataset)
        self.result["dataset"] = {"id": loaded["source"], "transitions": loaded["transitions"], "load_s": loaded["load_s"]}
        self.result["buffer_memory"] = self.sb3.request("memory")
        self.npz = str(self.workdir / "transitions.npz")
        self.sb3.request("export", path=self.npz)

    def _sb3_sides(self, algo: str, phase: str, options: dict[str, Any], key: str | None = None) -> dict:
        """Set up ``algo`` in the sb3_dare worker (and in the ``--against`` one); return the sides to time."""
        settings = self.settings
        key = key or f"{algo}:{phase}"
        label = key.split(":")[0]
        setup = dict(
            algo=algo,
            phase=phase,
            threads=self.args.threads,
            seed=0,
            warmup=settings["warmup"] if phase == "offline" else settings["online_warmup"],
            warmup_seconds=settings["warmup_seconds"],
            options=options,
            online_fill=settings["online_fill"] if phase == "online" else 0,
        )
        self.result.setdefault("setup", {})[label] = self.sb3.request("setup", key=key, **setup)
        sides = {label: (self.sb3, key)}
        if self.against is not None and "torch_compile" not in options:  # an earlier tree may not have the option
            self.against.request("setup", key=key, **setup)
            sides[f"{label}@against"] = (self.against, key)
        return sides

    def _measurement(self, sides: dict[str, tuple[Worker, str]]) -> Measurement:
        settings = self.settings
        measurement = Measurement(sides, settings["block_seconds"], settings["rounds"], settings["min_updates"])
        measurement.run(self.sb3, self.args.threads, self.gemm)
        return measurement

    def offline(self, algo: str) -> None:
        settings = self.settings
        sides = self._sb3_sides(algo, "offline", {})
        peer = f"d3rlpy_{algo}"
        if self.d3rlpy is not None:
            answer = self.d3rlpy.request(
                "setup",
                key=peer,
                algo=algo,
                data=self.npz,
                threads=self.args.threads,
                seed=0,
                warmup=settings["warmup"],
                warmup_seconds=settings["warmup_seconds"],
            )
            self.result.setdefault("setup", {})[peer] = answer
            sides[peer] = (self.d3rlpy, peer)
        compiled = f"{algo}_compiled"
        if not self.args.no_compile:
            sides.update(self._sb3_sides(algo, "offline", {"torch_compile": True}, key=f"{compiled}:offline"))
        measurement = self._measurement(sides)
        flops = self.result.setdefault("flops_per_update", {})
        for label, (worker, key) in sides.items():
            self.result["updates_per_s"][label] = measurement.rate(label)
            self.result.setdefault("timed_updates", {})[label] = measurement.timed_updates(label)
            self.result.setdefault("block_rates", {})[label] = measurement.block_rates(label)
            if not label.startswith(compiled):  # the flop counter does not see inside compiled code: same arithmetic
                flops[label] = worker.request("flops", key=key)["flops"]
        if compiled in sides:
            flops[compiled] = flops[algo]
        if self.d3rlpy is not None:
            self.result["ratios"][f"{algo}/{peer}"] = measurement.ratio(algo, peer)
            if compiled in sides:
                self.result["ratios"][f"{compiled}/{peer}"] = measurement.ratio(compiled, peer)
            # the stricter comparison: ours with its sampling against d3rlpy's update() without its sampling
            update_only = self.result.setdefault("ratios_vs_d3rlpy_update_only", {})
            update_only[f"{algo}/{peer}_update"] = measurement.ratio(algo, peer, denominator_update_only=True)
            self.result.setdefault("d3rlpy_update_only_per_s", {})[peer] = measurement.update_only_rate(peer)
        if self.against is not None:
            self.result["ratios"][f"{algo}/{algo}@against"] = measurement.ratio(algo, f"{algo}@against")

    def online(self, base: str) -> None:
        settings = self.settings
        sides = self._sb3_sides(base, "online", {})
        peer = f"d3rlpy_{base}"
        if self.d3rlpy is not None:
            answer = self.d3rlpy.request(
                "setup_online",
                key=f"{peer}:online",
                algo=base,
                data=self.npz,
                threads=self.args.threads,
                seed=0,
                warmup=settings["online_warmup"],
                warmup_seconds=settings["warmup_seconds"],
                env_id=ENV_ID,
                fill=settings["online_fill"],
            )
            self.result.setdefault("setup", {})[f"{peer}:online"] = answer
            sides[peer] = (self.d3rlpy, f"{peer}:online")
        dare = f"dare_{base}"
        if dare in self.algos:
            dare_options = dict(
                behavior_steps=settings["behavior_steps"],
                energy_steps=settings["energy_steps"],
                # CEP samples its support actions once, for this many states: a one-off cost, kept small here
                max_support_states=settings["max_support_states"],
                scored_subset=settings["scored_subset"],
            )
            sides.update(self._sb3_sides(dare, "online", {**dare_options, "score_mode": "cached"}))
            per_batch = {**dare_options, "score_mode": "per_batch", "behavior_from": f"{dare}:online"}
            sides.update(self._sb3_sides(dare, "online", per_batch, key=f"{dare}_per_batch:online"))
        measurement = self._measurement(sides)
        for label in sides:
            self.result["online_steps_per_s"][label] = measurement.rate(label)
            self.result.setdefault("online_steps_per_s_pooled", {})[label] = measurement.pooled_rate(label)
            self.result.setdefault("online_buffer_size_at_end", {})[label] = measurement.online_sizes.get(label)
            self.result.setdefault("block_rates", {})[f"{label}:online"] = measurement.block_rates(label)
        if self.d3rlpy is not None:
            self.result["ratios"][f"{base}_online/{peer}_online"] = measurement.ratio(base, peer)
        if dare in self.algos:
            self.result["ratios"][f"{dare}/{base}"] = measurement.ratio(dare, base)
            self.result["ratios"][f"{dare}_per_batch/{base}"] = measurement.ratio(f"{dare}_per_batch", base)
        if self.against is not None:
            self.result["ratios"][f"{base}_online/{base}@against"] = measurement.ratio(base, f"{base}@against")

    def finish(self) -> dict[str, Any]:
        self.result["gemm_gflops"] = {
            "median_of_rounds": statistics.median(self.gemm),
            "max": max(self.gemm),
            "rounds": len(self.gemm),
        }
        flops = self.result.get("flops_per_update", {})
        rates = {label: self.result["updates_per_s"][label] for label in flops}
        self.result["roofline_fraction"].update(roofline_fractions(flops, rates, self.gemm))
        self.result["roofline_fraction_vs_median_gemm"] = roofline_fractions(flops, rates, self.gemm, reference="median")
        self.result["machine"]["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
        settings = dict(self.settings)
        self.result["conditions"] = {
            "mode": "quick" if self.args.quick else "full",
            "batch_size": BATCH_SIZE,
            "networks": "2x256 actor, critics and value net; 2 critics; Adam; float32; CPU",
            "offline": "updates/s of pretrain (sampling included) / of d3rlpy's fit step (sample_transition_batch + update)",
            "online": f"env steps + one update each per second on {ENV_ID}: ours through learn(), d3rlpy's as its "
            "fit_online loop runs them (sample_action, env.step, append, update on a batch mixed half and half with the "
            "dataset), without fit_online's per-step metric logging; both after the same number of random steps",
            "figures": "medians over rounds of alternating blocks (A B, then B A); ratios: median of per-round ratios",
            **settings,
            "wall_s": round(time.perf_counter() - self.start_time, 1),
        }
        return self.result

    def run(self) -> dict[str, Any]:
        self.start_time = time.perf_counter()
        try:
            self.prepare()
            for algo in ("iql", "calql"):
                if algo in self.algos:
                    self.offline(algo)
            for base in ("iql", "calql"):
                if base in self.algos:
                    self.online(base)
            result = self.finish()
        except BaseException:
            self.close(keep_logs=True)  # the workers' logs say why
            raise
        self.close()
        return result


def roofline_fractions(
    flops_per_update: dict[str, float], updates_per_s: dict[str, float], gemm_gflops: list[float], reference: str = "best"
) -> dict[str, float]:
    """
    The fraction of the compute limit each side reaches: FLOPs per update x updates/s over the GEMM throughput.

    :param flops_per_update: FLOPs of one update per side
    :param updates_per_s: updates/s per side (the same keys)
    :param gemm_gflops: the rounds' GEMM throughputs (each the best of 5)
    :param reference: ``"best"``: the fastest round, the machine's limit in this run (a round of slow GEMMs never lowers
        it); ``"median"``: the rounds' median
    """
    gemm = max(gemm_gflops) if reference == "best" else statistics.median(gemm_gflops)
    return {label: flops * updates_per_s[label] / (gemm * 1e9) for label, flops in flops_per_update.items()}


def markdown(result: dict[str, Any]) -> str:
    """A Markdown summary of a result."""
    machine = result["machine"]
    lines = [
        f"Machine: {machine['cpu_count']} CPU cores ({machine.get('cpu_model') or machine['processor']}), "
        f"torch {machine['torch']}, "
        f"{machine['torch_threads']} threads, load average {machine['load_average_at_start'][0]} at start and "
        f"{machine['load_average_at_end'][0]} at end; GEMM 256^3 float32 {result['gemm_gflops']['max']:.0f} GFLOP/s at "
        f"best, the roofline's reference ({result['gemm_gflops']['median_of_rounds']:.0f} median of the rounds' best of "
        f"5); {result['conditions']['mode']} mode.",
        "",
        "| side | offline updates/s | GFLOP/update | roofline fraction | online steps/s (median; pooled) |",
        "|---|---|---|---|---|",
    ]
    labels = list(dict.fromkeys([*result["updates_per_s"], *result["online_steps_per_s"]]))
    for label in labels:
        offline = result["updates_per_s"].get(label)
        flops = result.get("flops_per_update", {}).get(label)
        roofline = result["roofline_fraction"].get(label)
        online = result["online_steps_per_s"].get(label)
        pooled = result.get("online_steps_per_s_pooled", {}).get(label)
        lines.append(
            f"| {label} | {_fmt(offline)} | {_fmt(flops / 1e9 if flops else None, 2)} | {_fmt(roofline, 2)} | "
            f"{_fmt(online)}{'; ' + _fmt(pooled) if pooled is not None else ''} |"
        )
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in result["ratios"].items()]
    lines += [f"| {name} | {value:.2f} |" for name, value in result.get("ratios_vs_d3rlpy_update_only", {}).items()]
    memory, dataset = result["buffer_memory"], result["dataset"]
    lines += [
        "",
        f"Replay buffer for {memory['transitions']:,} Hopper-sized transitions: online ring "
        f"{memory['online_ring_mb']:.0f} MB, offline part {memory['offline_part_mb']:.0f} MB. "
        f"Dataset `{dataset['id']}` ({dataset['transitions']:,} transitions) loaded in {dataset['load_s']:.2f} s.",
    ]
    for label, setup in result.get("setup", {}).items():
        if "scoring_s_per_100k" in setup:
            fit = setup.get("behavior_fit_s_per_1000_steps")
            fit_text = f"; behaviour model fit {fit:.1f} s per 1000 steps" if fit is not None else ""
            lines.append(f"{label}: scoring {setup['scoring_s_per_100k']:.1f} s per 100k transitions{fit_text}.")
    return "\n".join(lines)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short measurement (under 8 minutes on 2 cores)")
    parser.add_argument("--out", type=str, default=None, help="write the result as JSON to this file")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on every side")
    parser.add_argument("--algos", type=str, default=",".join(ALGORITHMS), help="comma-separated subset of " + str(ALGORITHMS))
    parser.add_argument("--dataset", type=str, default=DATASET_ID, help="Minari dataset id or folder")
    parser.add_argument("--no-d3rlpy", action="store_true", help="skip the d3rlpy side")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch_compile=True sides")
    parser.add_argument("--against", type=str, default=None, help="another sb3_dare source tree to time alternately")
    parser.add_argument(
        "--omp-wait-policy",
        choices=("auto", "PASSIVE", "ACTIVE", "default"),
        default="auto",
        help="OMP_WAIT_POLICY of every side. PASSIVE: idle OpenMP threads sleep instead of spinning, which keeps a "
        "2-thread pool usable on a machine busy with other work (spinning threads then wait for descheduled partners: "
        "10-50x slower updates), at about a third of the GEMM throughput on a quiet machine; default: leave it unset; "
        "auto: PASSIVE when the load average at start is at least the number of cores, else unset",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.source)
        return
    result = Benchmark(args).run()
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    print()
    print(markdown(result))


if __name__ == "__main__":
    main()
