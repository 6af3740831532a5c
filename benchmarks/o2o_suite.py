"""Offline-to-online quality suite: IQL, DARE_IQL, CalQL, DARE_CalQL (and a d3rlpy IQL peer row) on prepared datasets.

One process per run, a run being one (algorithm, task, seed, variant). Each run writes one result JSON under
``--results-dir`` (evaluations of both phases, the full configuration, package versions, wall-clock time and
updates/s of each phase, DARE's diagnostics); a run whose JSON exists is skipped, so the suite can stop, resume
and accumulate results over days. Base and DARE runs of one (task, seed) share the offline checkpoint
(``DARE_*.from_base``): the offline phase is trained once, and the comparison isolates the online phase.
Checkpoints live in a git-ignored cache (``--cache-dir``), are built under a file lock, written atomically and
rebuilt when missing. The protocol is ``BENCHMARKS.md`` (tiers S, M, L).

Examples::

    python benchmarks/o2o_suite.py --tier S --workers 2            # smoke run, IQL family, ~20-30 min on 2 cores
    python benchmarks/o2o_suite.py --tier M --workers 2 --dry-run  # the tier-M matrix and what is already done
    python benchmarks/o2o_suite.py --tier M --algorithms iql dare_iql --workers 2
    python benchmarks/report.py                                     # tables, figures, summary.md
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import fcntl
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from d3rlpy_env import d3rlpy_python, ensure_d3rlpy_environment

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_VERSION = 1
CHECKPOINT_FORMAT = 1  # bump when the way checkpoints are built changes: old ones are then rebuilt

BASE_ALGORITHMS = ("iql", "calql")
DARE_ALGORITHMS = ("dare_iql", "dare_calql")
PEER_ALGORITHMS = ("d3rlpy_iql",)
ALGORITHMS = ("iql", "dare_iql", "calql", "dare_calql", *PEER_ALGORITHMS)
FAMILY = {"iql": "iql", "dare_iql": "iql", "calql": "calql", "dare_calql": "calql", "d3rlpy_iql": "d3rlpy_iql"}

TASKS_M = ("o2o-cpu/hopper/medium-v0", "o2o-cpu/halfcheetah/medium-replay-v0", "o2o-cpu/walker2d/medium-v0")
HOPPER = TASKS_M[0]
# the guidance scales the paper reports for these dataset kinds (ALGORITHM.md); other tasks use DARE's default
PAPER_GUIDANCE = {"hopper/medium": 8.0, "halfcheetah/medium-replay": 8.0, "walker2d/medium": 10.0}
DEFAULT_GUIDANCE = 5.0

# variant name -> DARE options it changes; "default" is the paper's rule (base algorithms have only "default")
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "exchange-origin": {"exchange": "origin"},
    "exchange-threshold": {"exchange": "threshold"},
    "exchange-random": {"exchange": "random"},
    "exchange-none": {"exchange": "none"},
    "exchange-bayes": {"exchange": "bayes"},
    "gaussian": {"behavior_model": "gaussian", "guidance_scale": 0.0},
    "guidance0": {"guidance_scale": 0.0},
}
ABLATIONS = tuple(name for name in VARIANTS if name != "default")


@dataclasses.dataclass(frozen=True)
class Tier:
    """Budgets of one tier of BENCHMARKS.md."""

    name: str
    offline_steps: int
    online_steps: int
    offline_eval_freq: int
    online_eval_freq: int
    eval_episodes: int
    tasks: tuple[str, ...]
    iql_seeds: int
    calql_seeds: int
    net_arch: tuple[int, ...]
    calql_net_arch: tuple[int, ...]
    behavior_steps: int
    energy_steps: int
    max_support_states: int
    behavior_learning_rate: float


TIERS: dict[str, Tier] = {
    # smoke: one task, 2 seeds, 5k + 5k steps; evaluation every 500 steps (2.5k scaled by 5k / 25k)
    "S": Tier("S", 5_000, 5_000, 500, 500, 5, (HOPPER,), 2, 2, (256, 256), (64, 64), 2_000, 500, 10_000, 1e-3),
    # CPU scale: 25k offline gradient steps + 25k online env steps, evaluation every 2.5k steps
    "M": Tier("M", 25_000, 25_000, 2_500, 2_500, 5, TASKS_M, 5, 3, (256, 256), (256, 256), 10_000, 2_000, 20_000, 1e-3),
    # paper scale (a GPU): 1M offline + 200k online steps, DARE's default behaviour-model budgets
    "L": Tier(
        "L", 1_000_000, 200_000, 50_000, 5_000, 10, TASKS_M, 5, 3, (256, 256), (256, 256), 50_000, 20_000, 100_000, 3e-4
    ),
}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of the matrix and everything it needs; serialisable to JSON for the worker process."""

    algorithm: str
    task: str
    seed: int
    variant: str
    tier: str  # the tier's name, or "<tier>-custom-<hash>" when budgets were overridden
    offline_steps: int
    online_steps: int
    offline_eval_freq: int
    online_eval_freq: int
    eval_episodes: int
    net_arch: tuple[int, ...]
    batch_size: int
    behavior: dict[str, Any]  # behaviour-model budgets (DARE runs); recorded for every run, used by DARE only
    device: str = "cpu"

    @property
    def family(self) -> str:
        return FAMILY[self.algorithm]

    @property
    def name(self) -> str:
        return f"{self.algorithm}__{task_slug(self.task)}__{self.variant}__seed{self.seed}__{self.tier}"

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["net_arch"] = list(self.net_arch)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSpec:
        data = dict(data)
        data["net_arch"] = tuple(data["net_arch"])
        return cls(**data)


def task_slug(task: str) -> str:
    """``o2o-cpu/hopper/medium-v0`` -> ``o2o-cpu-hopper-medium-v0`` (file names)."""
    return task.replace("/", "-")


def short_task(task: str) -> str:
    """``o2o-cpu/hopper/medium-v0`` -> ``hopper/medium`` (the key of the paper's per-dataset settings)."""
    parts = task.split("/")
    name = parts[-1].rsplit("-v", 1)[0] if len(parts) >= 2 else task
    return f"{parts[-2]}/{name}" if len(parts) >= 2 else name


def guidance_for(task: str) -> float:
    """The paper's guidance scale for the task's dataset kind, or DARE's default."""
    return PAPER_GUIDANCE.get(short_task(task), DEFAULT_GUIDANCE)


def stable_hash(value: Any, length: int = 12) -> str:
    """Short SHA-256 of a JSON-serialisable value (sorted keys)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]


# ---------------------------------------------------------------------------------------------- the run matrix


def _seeds(count: int, override: Sequence[int] | None) -> list[int]:
    return list(override) if override is not None else list(range(count))


def build_matrix(
    tier: Tier,
    algorithms: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    variants: Sequence[str] | None = None,
) -> list[tuple[str, str, int, str]]:
    """
    The runs of a tier as ``(algorithm, task, seed, variant)``, in the order of work of the issue: the IQL family at
    its seeds on every task, then the CalQL family, then DARE_IQL's ablations on Hopper, then the rest (the d3rlpy
    peer row, DARE_IQL's ablations on the other tasks, DARE_CalQL's ablations). Within a task, every base run comes
    before the DARE runs that reuse its checkpoint, seed by seed, so parallel workers rarely wait for a checkpoint.
    Filters keep the order; a run is listed once.

    Tier S runs the IQL family's default variants unless ``algorithms`` or ``variants`` ask for others.
    """
    task_list = list(tasks) if tasks else list(tier.tasks)
    iql_seeds, calql_seeds = _seeds(tier.iql_seeds, seeds), _seeds(tier.calql_seeds, seeds)
    ordered: list[tuple[str, str, int, str]] = []
    for task in task_list:
        ordered += [(algorithm, task, seed, "default") for algorithm in ("iql", "dare_iql") for seed in iql_seeds]
    for task in task_list:
        ordered += [(algorithm, task, seed, "default") for algorithm in ("calql", "dare_calql") for seed in calql_seeds]
    ablation_tasks = [HOPPER] if HOPPER in task_list else task_list[:1]
    for task in ablation_tasks:
        ordered += [("dare_iql", task, seed, variant) for variant in ABLATIONS for seed in iql_seeds]
    for task in task_list:
        ordered += [("d3rlpy_iql", task, seed, "default") for seed in iql_seeds]
    for task in task_list:
        if task not in ablation_tasks:
            ordered += [("dare_iql", task, seed, variant) for variant in ABLATIONS for seed in iql_seeds]
    for task in task_list:
        ordered += [("dare_calql", task, seed, variant) for variant in ABLATIONS for seed in calql_seeds]

    if tier.name == "S":
        algorithms = ("iql", "dare_iql") if algorithms is None else algorithms
        variants = ("default",) if variants is None else variants
    selected, seen = [], set()
    for run in ordered:
        algorithm, _, _, variant = run
        if algorithms is not None and algorithm not in algorithms:
            continue
        if variants is not None and variant not in variants:
            continue
        if run not in seen:
            seen.add(run)
            selected.append(run)
    return selected


def custom_tier_label(tier: Tier, overrides: dict[str, Any]) -> str:
    """``tier.name`` when nothing is overridden, else ``<name>-custom-<hash of the overrides>``."""
    active = {key: value for key, value in overrides.items() if value is not None}
    return tier.name if not active else f"{tier.name}-custom-{stable_hash(active, 8)}"


def make_specs(
    tier: Tier,
    runs: Sequence[tuple[str, str, int, str]],
    overrides: dict[str, Any] | None = None,
    device: str = "cpu",
) -> list[RunSpec]:
    """Attach the tier's budgets (with ``overrides``: offline_steps, online_steps, eval_freq, ...) to each run."""
    overrides = {key: value for key, value in (overrides or {}).items() if value is not None}
    label = custom_tier_label(tier, overrides)
    eval_freq = overrides.get("eval_freq")
    specs = []
    for algorithm, task, seed, variant in runs:
        if variant not in VARIANTS:
            raise ValueError(f"Unknown variant {variant!r}; choose one of {list(VARIANTS)}.")
        if variant != "default" and algorithm not in DARE_ALGORITHMS:
            raise ValueError(f"Variant {variant!r} is a DARE ablation: {algorithm} has only the 'default' variant.")
        default_arch = tier.calql_net_arch if FAMILY[algorithm] == "calql" else tier.net_arch
        behavior = {
            "behavior_steps": overrides.get("behavior_steps", tier.behavior_steps),
            "energy_steps": overrides.get("energy_steps", tier.energy_steps),
            "max_support_states": overrides.get("max_support_states", tier.max_support_states),
            "learning_rate": tier.behavior_learning_rate,
            "hidden_sizes": list(overrides["behavior_net_arch"]) if overrides.get("behavior_net_arch") else None,
        }
        specs.append(
            RunSpec(
                algorithm=algorithm,
                task=task,
                seed=seed,
                variant=variant,
                tier=label,
                offline_steps=overrides.get("offline_steps", tier.offline_steps),
                online_steps=overrides.get("online_steps", tier.online_steps),
                offline_eval_freq=eval_freq or tier.offline_eval_freq,
                online_eval_freq=eval_freq or tier.online_eval_freq,
                eval_episodes=overrides.get("eval_episodes", tier.eval_episodes),
                net_arch=tuple(overrides.get("net_arch") or default_arch),
                batch_size=overrides.get("batch_size", 256),
                behavior=behavior,
                device=device,
            )
        )
    return specs


def result_path(results_dir: Path, spec: RunSpec) -> Path:
    """Where a run's JSON goes."""
    return results_dir / f"{spec.name}.json"


def is_done(results_dir: Path, spec: RunSpec) -> bool:
    """A run is done when its JSON exists, parses and says so (JSONs are written atomically, only at the end)."""
    path = result_path(results_dir, spec)
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("status") == "done"
    except (OSError, ValueError):
        return False


def pending(results_dir: Path, specs: Sequence[RunSpec]) -> list[RunSpec]:
    """The runs whose JSON is missing, in matrix order."""
    return [spec for spec in specs if not is_done(results_dir, spec)]


def spec_differences(results_dir: Path, spec: RunSpec) -> list[str]:
    """
    The settings in which a done run differs from what the matrix now asks for: its stored spec and, for DARE, its
    options (keys both have: a key added later is not a difference; the device is not one either, the scores do not
    depend on it). A run that counts as done must have run what the matrix asks for.

    :param results_dir: the results folder
    :param spec: the run as the matrix has it (its JSON must exist)
    :return: one ``"key: stored -> now"`` line per difference
    """
    config = json.loads(result_path(results_dir, spec).read_text())["config"]
    pairs = [(config["spec"], spec.to_json())]
    if spec.algorithm in DARE_ALGORITHMS and config.get("dare"):
        pairs.append((config["dare"], json.loads(json.dumps(dare_kwargs(spec)))))
    return [
        f"{key}: {stored[key]!r} -> {current[key]!r}"
        for stored, current in pairs
        for key in sorted(set(stored) & set(current) - {"device"})
        if stored[key] != current[key]
    ]


# ---------------------------------------------------------------------------------------------- configurations


def base_kwargs(spec: RunSpec) -> dict[str, Any]:
    """Constructor arguments of the base algorithm (everything the protocol fixes; the rest keeps the defaults)."""
    return {
        "offline_steps": spec.offline_steps,
        "batch_size": spec.batch_size,
        "learning_rate": 3e-4,
        "offline_ratio": 0.5,
        "gamma": 0.99,
        "tau": 0.005,
        "train_freq": 1,
        "gradient_steps": 1,
        "learning_starts": 0,
        "policy_kwargs": {"net_arch": list(spec.net_arch)},
        "offline_eval_freq": 0,  # the suite evaluates itself (see EvalRecorder), on its own schedule
        "offline_log_interval": max(1, min(1000, spec.offline_steps)),
    }


def offline_config(spec: RunSpec) -> dict[str, Any]:
    """Everything that determines an offline checkpoint (and its recorded offline evaluations)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "family": spec.family,
        "task": spec.task,
        "seed": spec.seed,
        "base_kwargs": base_kwargs(spec),
        "offline_eval_freq": spec.offline_eval_freq,
        "eval_episodes": spec.eval_episodes,
        "device": spec.device,
    }


def checkpoint_dir(cache_dir: Path, spec: RunSpec) -> Path:
    """The cache folder of the run's offline checkpoint: per (family, task, seed, offline config hash)."""
    return (
        cache_dir / "checkpoints" / spec.family / task_slug(spec.task) / f"seed{spec.seed}-{stable_hash(offline_config(spec))}"
    )


def dare_kwargs(spec: RunSpec) -> dict[str, Any]:
    """DARE options of a run: the paper's rule with the tier's behaviour-model budgets, changed by the variant."""
    behavior_kwargs: dict[str, Any] = {"learning_rate": spec.behavior["learning_rate"]}
    if spec.behavior.get("hidden_sizes"):
        behavior_kwargs["hidden_sizes"] = list(spec.behavior["hidden_sizes"])
    kwargs: dict[str, Any] = {
        "behavior_model": "diffusion",
        "behavior_steps": spec.behavior["behavior_steps"],
        "energy_steps": spec.behavior["energy_steps"],
        "max_support_states": spec.behavior["max_support_states"],
        "behavior_kwargs": behavior_kwargs,
        "guidance_scale": guidance_for(spec.task),
        "exchange": "posterior",
    }
    kwargs.update(copy.deepcopy(VARIANTS[spec.variant]))
    if kwargs["behavior_model"] == "diffusion" and spec.behavior.get("hidden_sizes"):
        behavior_kwargs["energy_hidden_sizes"] = list(spec.behavior["hidden_sizes"])
    return kwargs


def behavior_cache_key(spec: RunSpec, kwargs: dict[str, Any]) -> str:
    """Runs of one checkpoint whose behaviour model would be fitted identically share the fitted model."""
    guided = kwargs["behavior_model"] == "diffusion" and kwargs["guidance_scale"] > 0
    key = {
        "model": kwargs["behavior_model"],
        "kwargs": kwargs["behavior_kwargs"],
        "behavior_steps": kwargs["behavior_steps"],
        "guided": guided,
        "energy": {"steps": kwargs["energy_steps"], "max_support_states": kwargs["max_support_states"]} if guided else None,
    }
    return stable_hash(key)


# ---------------------------------------------------------------------------------------------- files and locks


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``fcntl`` lock held on ``path`` (created if needed) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file in the same folder, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(data, file, indent=1, allow_nan=False)
            file.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _json_safe(value: Any) -> Any:
    """Floats that are not finite become None; numpy scalars and tuples become plain JSON values."""
    import math

    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return _json_safe(value.tolist())  # numpy arrays and scalars, torch tensors
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


# ---------------------------------------------------------------------------------------------- provenance


def package_versions() -> dict[str, str | None]:
    """Versions of the packages that decide the results."""
    from importlib import metadata

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("sb3_dare", "torch", "stable_baselines3", "gymnasium", "mujoco", "minari", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision(root: Path = REPO_ROOT) -> dict[str, Any]:
    """
    The repository's commit and whether tracked files had changes (read-only git calls); with changes, the changed
    files and a SHA-256 of ``git diff --binary HEAD`` and of the untracked Python files, so that two runs on the same
    commit can be told to have run the same code or not (other untracked files, such as result JSONs, are not code).

    :param root: the repository
    :return: ``{"commit", "dirty", "changed_files", "diff_sha256"}`` (None where git is unavailable)
    """

    def git(*arguments: str) -> str:
        return subprocess.run(["git", *arguments], cwd=root, capture_output=True, text=True, timeout=10, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        status = git("status", "--porcelain", "-z", "--untracked-files=no")
        untracked = git("ls-files", "-z", "--others", "--exclude-standard", "--", "*.py")
        new_sources = sorted(name for name in untracked.split("\0") if name)
        diff = git("diff", "--binary", "--no-ext-diff", "--no-color", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "changed_files": None, "diff_sha256": None}
    # -z: NUL-separated "XY path" entries (a rename adds its old path as the next entry), names with spaces intact
    entries = status.split("\0")
    changed, index = [], 0
    while index < len(entries):
        entry = entries[index]
        if entry:
            changed.append(entry[3:])
            index += 1 if entry[0] not in "RC" else 2
        else:
            index += 1
    changed += [f"{name} (untracked)" for name in new_sources]
    diff_sha256 = None
    if changed:
        digest = hashlib.sha256(diff.encode())
        for name in new_sources:
            try:
                digest.update(name.encode() + b"\0" + (root / name).read_bytes())
            except OSError:  # removed or unreadable meanwhile: its name still counts
                digest.update(name.encode() + b"\0")
        diff_sha256 = digest.hexdigest()
    return {"commit": commit, "dirty": bool(changed), "changed_files": changed, "diff_sha256": diff_sha256}


def machine_info() -> dict[str, Any]:
    """CPU count, processor, the load average now, and the torch threads of this process."""
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "system": platform.system(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }


# ---------------------------------------------------------------------------------------------- the worker process


class _Recorder:
    """Evaluations on the suite's schedule in both phases, and the time they take (kept out of the rates)."""

    def __init__(self, spec: RunSpec, env_id: str, data: Any, phase: str):
        import gymnasium as gym
        from stable_baselines3.common.monitor import Monitor

        self.spec = spec
        self.data = data
        self.phase = phase
        self.eval_env = Monitor(gym.make(env_id))
        # reproducible evaluation episodes, different from the training env's
        self.eval_env.reset(seed=10_000 + spec.seed + (0 if phase == "offline" else 1))
        self.evaluations: list[dict[str, Any]] = []
        self.eval_seconds = 0.0

    def evaluate(self, model: Any, step: int) -> None:
        from sb3_dare.common.evaluation import evaluate_normalized

        start = time.perf_counter()
        result = evaluate_normalized(model, self.eval_env, self.data, n_eval_episodes=self.spec.eval_episodes)
        model.policy.set_training_mode(True)
        self.eval_seconds += time.perf_counter() - start
        self.evaluations.append(
            {
                "step": int(step),
                "phase": self.phase,
                "normalized_score": result["normalized_score"],
                "mean_reward": result["mean_reward"],
                "std_reward": result["std_reward"],
            }
        )


def _make_callback(recorder: _Recorder) -> Any:
    from stable_baselines3.common.callbacks import BaseCallback

    class SuiteCallback(BaseCallback):
        """Evaluates every ``eval_freq`` offline updates / env steps, and times the stretches of ``learn()``."""

        def __init__(self) -> None:
            super().__init__()
            self.times: dict[str, float] = {}

        def _on_training_start(self) -> None:
            self.times["start"] = time.perf_counter()

        def on_offline_step(self) -> bool:
            model: Any = self.model  # an O2O algorithm (SB3 types the attribute as BaseAlgorithm)
            if model.offline_updates % recorder.spec.offline_eval_freq == 0:
                recorder.evaluate(model, model.offline_updates)
            return True

        def _on_step(self) -> bool:
            self.times.setdefault("first_step", time.perf_counter())
            if self.num_timesteps % recorder.spec.online_eval_freq == 0:
                recorder.evaluate(self.model, self.num_timesteps)
            return True

        def _on_training_end(self) -> None:
            self.times["end"] = time.perf_counter()

    return SuiteCallback()


def _algorithm_classes() -> dict[str, Any]:
    from sb3_dare import DARE_IQL, IQL, CalQL, DARE_CalQL

    return {"iql": IQL, "calql": CalQL, "dare_iql": DARE_IQL, "dare_calql": DARE_CalQL}


def _hyperparameters(model: Any) -> dict[str, Any]:
    """The model's constructor arguments as it holds them (the full configuration of the run)."""
    import inspect

    skipped = {"self", "policy", "env", "eval_env", "_init_setup_model", "replay_buffer_class", "tensorboard_log"}
    values: dict[str, Any] = {}
    for cls in type(model).__mro__:
        if "__init__" not in cls.__dict__:
            continue
        for name in inspect.signature(cls.__dict__["__init__"]).parameters:
            if name not in skipped and name not in values and hasattr(model, name) and not name.startswith("_"):
                value = getattr(model, name)
                values[name] = value if not callable(value) else repr(value)
    return _json_safe(values)


def ensure_checkpoint(spec: RunSpec, cache_dir: Path, env_id: str, data: Any) -> tuple[Path, dict[str, Any]]:
    """
    The offline checkpoint of the run's (family, task, seed, offline config): built under a file lock when missing
    (model zip and metadata written atomically), otherwise read. Returns its folder and metadata (the offline
    evaluations and the offline phase's timings, measured when it was built).
    """
    from stable_baselines3.common.logger import configure

    folder = checkpoint_dir(cache_dir, spec)
    meta_path, model_path = folder / "meta.json", folder / "model.zip"
    with file_lock(folder.with_name(folder.name + ".lock")):
        if meta_path.is_file() and model_path.is_file():
            meta = json.loads(meta_path.read_text())
            meta["reused"] = True
            return folder, meta
        folder.mkdir(parents=True, exist_ok=True)
        import gymnasium as gym

        base_class = _algorithm_classes()[spec.family]
        model = base_class(
            "MlpPolicy",
            gym.make(env_id),
            dataset=spec.task,
            seed=spec.seed,
            device=spec.device,
            buffer_size=max(spec.online_steps, 1),
            **base_kwargs(spec),
        )
        model.set_logger(configure(str(folder / "offline_log"), ["csv"]))
        recorder = _Recorder(spec, env_id, data, "offline")
        callback = _make_callback(recorder)
        load_average = os.getloadavg()[0]
        model.pretrain(callback=callback)
        end = time.perf_counter()
        phase_seconds = end - callback.times["start"]
        train_seconds = max(phase_seconds - recorder.eval_seconds, 1e-9)
        meta = {
            "offline_config": offline_config(spec),
            "hyperparameters": _hyperparameters(model),
            "evaluations": recorder.evaluations,
            "offline": {
                "updates": int(model.offline_updates),
                "wall_clock_s": phase_seconds,
                "eval_s": recorder.eval_seconds,
                "train_s": train_seconds,
                "updates_per_second": model.offline_updates / train_seconds,
                "load_average_at_start": round(load_average, 2),
            },
            "versions": package_versions(),
            "machine": machine_info(),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        tmp_model = folder / f".model.tmp-{os.getpid()}.zip"
        model.save(tmp_model)
        os.replace(tmp_model, model_path)
        write_json_atomic(meta_path, _json_safe(meta))
        meta["reused"] = False
        return folder, meta


def _fit_or_load_behavior(spec: RunSpec, folder: Path, env: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """
    Build the DARE model from the checkpoint, with the behaviour model of the cache when one was fitted for the same
    checkpoint and budgets, else fit it now (timed) and store it for the other variants.
    """
    dare_class = _algorithm_classes()[spec.algorithm]
    key = behavior_cache_key(spec, kwargs)
    model_path, meta_path = folder / f"behavior-{key}.pt", folder / f"behavior-{key}.json"
    common = {"env": env, "device": spec.device, "seed": spec.seed, "buffer_size": max(spec.online_steps, 1)}
    with file_lock(folder / f"behavior-{key}.lock"):
        if model_path.is_file() and meta_path.is_file():
            model = dare_class.from_base(str(folder / "model.zip"), **common, **{**kwargs, "behavior_model": str(model_path)})
            meta = json.loads(meta_path.read_text())
            meta["reused"] = True
            return model, meta
        model = dare_class.from_base(str(folder / "model.zip"), **common, **kwargs)
        start = time.perf_counter()
        model.fit_behavior_model()
        meta = {"fit_s": time.perf_counter() - start, "cache_key": key, "load_average_at_start": os.getloadavg()[0]}
        tmp = folder / f".behavior.tmp-{os.getpid()}.pt"
        model.behavior.save(str(tmp))
        os.replace(tmp, model_path)
        write_json_atomic(meta_path, _json_safe(meta))
        meta["reused"] = False
        return model, meta


def _dare_series(log_dir: Path) -> dict[str, list[float | None]]:
    from sb3_dare.plots import read_dare_log

    try:
        series = read_dare_log(str(log_dir))
    except FileNotFoundError:
        return {}
    renamed = {("step" if key == "time/total_timesteps" else key.split("/", 1)[1]): values for key, values in series.items()}
    return _json_safe({key: [float(value) for value in values] for key, values in renamed.items()})


def execute_run(spec: RunSpec, results_dir: Path, cache_dir: Path) -> dict[str, Any]:
    """Run one (algorithm, task, seed, variant) in this process and write its JSON; returns the result."""
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    import gymnasium as gym
    from stable_baselines3.common.logger import configure

    from sb3_dare.data import load_offline_data

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    machine_start = machine_info()
    data = load_offline_data(spec.task)
    env_id = data.env_id
    if env_id is None:
        raise ValueError(f"Dataset {spec.task!r} names no environment: the suite needs one to fine-tune online.")
    folder, checkpoint = ensure_checkpoint(spec, cache_dir, env_id, data)

    env = gym.make(env_id)
    log_dir = cache_dir / "logs" / spec.name
    behavior_meta: dict[str, Any] | None = None
    if spec.algorithm in DARE_ALGORITHMS:
        kwargs = dare_kwargs(spec)
        model, behavior_meta = _fit_or_load_behavior(spec, folder, env, kwargs)
    else:
        kwargs = {}
        model = _algorithm_classes()[spec.algorithm].load(
            str(folder / "model.zip"), env=env, device=spec.device, buffer_size=max(spec.online_steps, 1)
        )
        model.set_random_seed(spec.seed)  # as DARE's constructor does in from_base: same online seeding
    model.set_logger(configure(str(log_dir), ["csv"]))
    recorder = _Recorder(spec, env_id, data, "online")
    callback = _make_callback(recorder)
    updates_before = int(model._n_updates)
    model.learn(spec.online_steps, callback=callback, log_interval=1)
    times = callback.times
    first_step = times.get("first_step", times["end"])
    switch_seconds = first_step - times["start"]
    online_seconds = times["end"] - first_step
    online_train = max(online_seconds - recorder.eval_seconds, 1e-9)
    online_updates = int(model._n_updates) - updates_before

    behavior_fit = 0.0 if behavior_meta is None else float(behavior_meta["fit_s"])
    result = {
        "schema_version": SCHEMA_VERSION,
        "status": "done",
        "algorithm": spec.algorithm,
        "task": spec.task,
        "seed": spec.seed,
        "variant": spec.variant,
        "tier": spec.tier,
        "env_id": env_id,
        "evaluations": checkpoint["evaluations"] + recorder.evaluations,
        "config": {
            "spec": spec.to_json(),
            "offline_checkpoint": {"key": folder.name, "config": checkpoint["offline_config"], "reused": checkpoint["reused"]},
            "offline_hyperparameters": checkpoint["hyperparameters"],
            "hyperparameters": _hyperparameters(model),
            "dare": kwargs or None,
            "evaluation": {
                "offline_every": spec.offline_eval_freq,
                "online_every": spec.online_eval_freq,
                "episodes": spec.eval_episodes,
                "deterministic": True,
                "score": "100 * (return - ref_min) / (ref_max - ref_min)",
            },
            "dataset": {"ref_min_score": data.ref_min_score, "ref_max_score": data.ref_max_score, "transitions": len(data)},
        },
        "compute": {
            "offline": checkpoint["offline"],  # measured once, when the shared checkpoint was built
            "switch": {
                "behavior_fit_s": behavior_fit,
                "behavior_fit_reused": None if behavior_meta is None else behavior_meta["reused"],
                "scoring_and_setup_s": switch_seconds,  # from learn() start to the first env step (DARE scores the data)
            },
            "online": {
                "env_steps": int(model.num_timesteps),
                "updates": online_updates,
                "wall_clock_s": online_seconds,
                "eval_s": recorder.eval_seconds,
                "train_s": online_train,
                "steps_per_second": model.num_timesteps / online_train,
                "updates_per_second": online_updates / online_train,
            },
            "total_wall_clock_s": checkpoint["offline"]["wall_clock_s"] + behavior_fit + switch_seconds + online_seconds,
            "note": "offline timings belong to the shared checkpoint; eval time is excluded from the rates",
        },
        "dare_diagnostics": _dare_series(log_dir) if spec.algorithm in DARE_ALGORITHMS else None,
        "versions": package_versions(),
        "git": git_revision(),
        "machine": {"at_start": machine_start, "at_end": machine_info()},
        "started_at": started,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    result = _json_safe(result)
    write_json_atomic(result_path(results_dir, spec), result)
    return result


# ---------------------------------------------------------------------------------------------- the d3rlpy peer


def minari_dataset_dir(task: str) -> Path:
    """The folder of a Minari dataset (``MINARI_DATASETS_PATH`` or Minari's default root)."""
    root = Path(os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets"))
    return root / task


def peer_spec(spec: RunSpec, results_dir: Path) -> dict[str, Any]:
    """What the d3rlpy script needs: no sb3_dare import on its side, so everything is resolved here."""
    return {
        **spec.to_json(),
        "dataset_dir": str(minari_dataset_dir(spec.task)),
        "output": str(result_path(results_dir, spec)),
        "schema_version": SCHEMA_VERSION,
        "git": git_revision(),
    }


# ---------------------------------------------------------------------------------------------- the scheduler


def _worker_command(spec: RunSpec, spec_file: Path, results_dir: Path, cache_dir: Path) -> list[str]:
    if spec.algorithm in PEER_ALGORITHMS:
        return [str(d3rlpy_python()), str(REPO_ROOT / "benchmarks" / "_d3rlpy_o2o.py"), "--spec", str(spec_file)]
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--run-one",
        str(spec_file),
        "--results-dir",
        str(results_dir),
        "--cache-dir",
        str(cache_dir),
    ]


def run_parallel(specs: Sequence[RunSpec], workers: int, results_dir: Path, cache_dir: Path) -> list[str]:
    """Run ``specs`` in up to ``workers`` processes (one torch thread each), in order; returns the failed runs."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    queue, failed = list(specs), []
    running: list[tuple[RunSpec, subprocess.Popen[bytes], IO[str], float]] = []
    start = time.time()
    while queue or running:
        while queue and len(running) < workers:
            spec = queue.pop(0)
            log_dir = cache_dir / "logs" / spec.name
            log_dir.mkdir(parents=True, exist_ok=True)
            spec_file = log_dir / "spec.json"
            payload = peer_spec(spec, results_dir) if spec.algorithm in PEER_ALGORITHMS else spec.to_json()
            write_json_atomic(spec_file, payload)
            stdout = open(log_dir / "stdout.log", "w")  # closed when the process ends
            process = subprocess.Popen(
                _worker_command(spec, spec_file, results_dir, cache_dir), stdout=stdout, stderr=subprocess.STDOUT, env=env
            )
            running.append((spec, process, stdout, time.time()))
            print(f"[{(time.time() - start) / 60:6.1f} min] start {spec.name}", flush=True)
        time.sleep(0.5)
        for item in list(running):
            spec, process, log_file, started = item
            if process.poll() is None:
                continue
            log_file.close()
            running.remove(item)
            status = "done" if process.returncode == 0 and is_done(results_dir, spec) else f"FAILED ({process.returncode})"
            if status != "done":
                failed.append(spec.name)
            minutes = (time.time() - started) / 60
            print(f"[{(time.time() - start) / 60:6.1f} min] {status} {spec.name} in {minutes:.1f} min", flush=True)
            if status != "done":
                print(f"    log: {cache_dir / 'logs' / spec.name / 'stdout.log'}", flush=True)
    return failed


def unavailable_datasets(tasks: Sequence[str]) -> list[str]:
    """
    Load each task's dataset once, in the parent, before any run starts.

    A mistyped id then fails at once with the loader's message instead of in every run; a dataset that must be
    downloaded is downloaded once here, not by parallel runs into the same folder at the same time.

    :param tasks: dataset ids or folders
    :return: one message per dataset that could not be loaded
    """
    from sb3_dare.data import load_offline_data

    messages = []
    for task in tasks:
        try:
            load_offline_data(task)
        except (FileNotFoundError, ValueError) as error:
            messages.append(f"Task {task!r}: {error}")
    return messages


def _int_list(text: str) -> list[int]:
    return [int(value) for value in text.replace(" ", "").split(",") if value]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tier", choices=sorted(TIERS), default="M", help="budgets and matrix of BENCHMARKS.md")
    parser.add_argument("--algorithms", nargs="+", choices=ALGORITHMS, help="only these algorithms")
    parser.add_argument("--tasks", nargs="+", help="dataset ids (default: the tier's)")
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default: 0..n-1, n per family and tier)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="only these variants")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes, one torch thread each")
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "o2o")
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "benchmarks" / "cache")
    parser.add_argument("--device", default="cpu", help="torch device of the runs")
    parser.add_argument("--dry-run", action="store_true", help="list the matrix and what is done, run nothing")
    overrides = parser.add_argument_group("overrides of the tier's budgets (results are labelled <tier>-custom-<hash>)")
    overrides.add_argument("--offline-steps", type=int)
    overrides.add_argument("--online-steps", type=int)
    overrides.add_argument("--eval-freq", type=int, help="evaluation period of both phases")
    overrides.add_argument("--eval-episodes", type=int)
    overrides.add_argument("--batch-size", type=int)
    overrides.add_argument("--net-arch", type=_int_list, help="hidden sizes of every network, e.g. 64,64")
    overrides.add_argument("--behavior-steps", type=int)
    overrides.add_argument("--energy-steps", type=int)
    overrides.add_argument("--max-support-states", type=int)
    overrides.add_argument("--behavior-net-arch", type=_int_list, help="hidden sizes of the behaviour and energy nets")
    parser.add_argument("--run-one", type=Path, help=argparse.SUPPRESS)  # worker mode: a spec JSON
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = parse_args(argv)
    results_dir, cache_dir = args.results_dir.resolve(), args.cache_dir.resolve()
    if args.run_one is not None:
        execute_run(RunSpec.from_json(json.loads(args.run_one.read_text())), results_dir, cache_dir)
        return 0
    if args.workers < 1:
        raise SystemExit("--workers must be >= 1")
    tier = TIERS[args.tier]
    override_names: tuple[str, ...] = ("offline_steps", "online_steps", "eval_freq", "eval_episodes", "batch_size", "net_arch")
    override_names += ("behavior_steps", "energy_steps", "max_support_states", "behavior_net_arch")
    overrides = {name: getattr(args, name) for name in override_names}
    runs = build_matrix(tier, args.algorithms, args.tasks, args.seeds, args.variants)
    specs = make_specs(tier, runs, overrides, device=args.device)
    todo = pending(results_dir, specs)
    changed = {spec.name: spec_differences(results_dir, spec) for spec in specs if spec not in todo}
    changed = {name: differences for name, differences in changed.items() if differences}
    if changed:
        listing = "\n".join(f"  {name}: {'; '.join(differences)}" for name, differences in changed.items())
        print(
            f"{len(changed)} done runs were made with other settings than the matrix now has:\n{listing}\n"
            "Their results would be mixed with new ones. Move those JSONs out of the results folder (or use another "
            "--results-dir) to run them again.",
            file=sys.stderr,
        )
        return 2
    print(
        f"tier {specs[0].tier if specs else tier.name}: {len(specs)} runs, {len(specs) - len(todo)} done, {len(todo)} to run"
    )
    if args.dry_run:
        for spec in specs:
            state = "todo" if spec in todo else "done"
            shared = checkpoint_dir(cache_dir, spec) if spec.family in BASE_ALGORITHMS else "(own offline phase)"
            print(f"  {state:4s}  {spec.name}  checkpoint: {shared}")
        return 0
    unavailable = unavailable_datasets(sorted({spec.task for spec in todo}))
    if unavailable:
        print("\n".join(unavailable) + "\nNo run was started.", file=sys.stderr)
        return 2
    if any(spec.algorithm in PEER_ALGORITHMS for spec in todo):
        ensure_d3rlpy_environment()
    results_dir.mkdir(parents=True, exist_ok=True)
    failed = run_parallel(todo, args.workers, results_dir, cache_dir)
    if failed:
        print(f"{len(failed)} runs failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
