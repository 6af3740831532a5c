"""
Build Minari datasets of known quality for any Gymnasium env with continuous actions.

The qualities follow D4RL's definitions, with SB3 SAC as the data-generating agent:

- ``random``: a uniform random policy;
- ``medium``: the SAC checkpoint whose mean return is closest to ``ref_min + (ref_max - ref_min) / 3``
  (a normalised score of about 33), rolled out with stochastic actions;
- ``medium-replay``: every transition SAC collected up to that checkpoint, in order;
- ``medium-expert``: half medium rollouts, half expert rollouts;
- ``expert``: the final SAC policy, rolled out with stochastic actions.

``ref_min_score`` is the mean return of the uniform random policy and ``ref_max_score`` that of the
final SAC policy (deterministic actions). Training is the expensive part, so the trained policies,
their checkpoints and SAC's replay transitions are cached (see :func:`default_cache_dir`) and every
quality of one env, budget and seed reuses one training run.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec

if TYPE_CHECKING:
    import minari
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.sac.policies import SACPolicy

QUALITIES = ("random", "medium", "medium-replay", "medium-expert", "expert")
# Rollout qualities default to this many transitions; medium-replay keeps all of its replay by default.
DEFAULT_STEPS = 100_000
DEFAULT_TRAIN_STEPS = 150_000
# Envs whose SAC needs a longer run to reach a useful expert (keyed by the env name without its version).
DEFAULT_TRAIN_STEPS_BY_ENV = {"Hopper": 250_000}
DEFAULT_LEARNING_STARTS = 10_000
DEFAULT_CHECKPOINT_FREQ = 10_000
DEFAULT_CHECKPOINT_EPISODES = 5
DEFAULT_EVAL_EPISODES = 10
# Random-policy episodes are short and cheap; many of them make ref_min_score stable.
RANDOM_POLICY_EPISODES = 100
MEDIUM_FRACTION = 1.0 / 3.0
DATASET_NAMESPACE = "sb3_dare"
CACHE_ENV_VAR = "SB3_DARE_CACHE"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "sb3_dare")
# Bump when the layout of a cache entry changes: entries of another format are retrained.
CACHE_FORMAT = 1
_MANIFEST = "manifest.json"
_REPLAY = "replay.npz"
_FINAL_MODEL = "final_model.zip"
# Independent random streams derived from the user's seed, one per purpose.
_SEED_PURPOSES = {"evaluation": 1, "random": 2, "medium": 3, "expert": 4}
_DATASET_ID_RE = re.compile(r"^(?:[-_\w][-_\w/]*[-_\w]+/)?[-_\w]+?-v\d+$")


class Episode(NamedTuple):
    """One recorded episode: ``observations`` has one row more than the other arrays."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray


# ---------------------------------------------------------------------------------------------- defaults


def env_name(env_id: str) -> str:
    """
    The env's name without module prefix, namespace or version (``"Hopper-v5"`` -> ``"Hopper"``).

    :param env_id: a Gymnasium env id
    :return: the bare name
    """
    return re.sub(r"-v\d+$", "", env_id.split(":")[-1].split("/")[-1])


def default_train_steps(env_id: str) -> int:
    """
    SAC training steps used when ``train_steps`` is not given.

    :param env_id: a Gymnasium env id
    :return: ``DEFAULT_TRAIN_STEPS_BY_ENV`` for the env's name, else ``DEFAULT_TRAIN_STEPS``
    """
    return DEFAULT_TRAIN_STEPS_BY_ENV.get(env_name(env_id), DEFAULT_TRAIN_STEPS)


def default_dataset_id(env_id: str, quality: str) -> str:
    """
    The Minari id a dataset gets when none is given: ``sb3_dare/<env name lowercased>-v<N>/<quality>-v0``.

    The env's version is part of the id because datasets of ``Hopper-v4`` and ``Hopper-v5`` are not interchangeable.

    :param env_id: a Gymnasium env id, e.g. ``"Hopper-v5"`` (gives ``sb3_dare/hopper-v5/medium-v0``)
    :param quality: one of :data:`QUALITIES`
    :return: the dataset id
    """
    name = re.sub(r"[^-_\w]+", "_", env_id.split(":")[-1].split("/")[-1]).strip("_-").lower() or "env"
    return f"{DATASET_NAMESPACE}/{name}/{quality}-v0"


def default_cache_dir() -> Path:
    """
    Where trained policies are cached: ``$SB3_DARE_CACHE``, else ``~/.cache/sb3_dare``.

    Entries live in ``<cache>/policies/<env id>-<train steps>-<seed>[-<settings hash>]/``.

    :return: the cache root
    """
    return Path(os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_DIR).expanduser()


def select_medium_checkpoint(
    steps: Sequence[int],
    mean_returns: Sequence[float],
    ref_min_score: float,
    ref_max_score: float,
    fraction: float = MEDIUM_FRACTION,
) -> int:
    """
    The checkpoint whose mean return is closest to ``ref_min + fraction * (ref_max - ref_min)``.

    With the default fraction this is a normalised score of about 33, D4RL's "medium". It works for
    negative returns too; ties go to the earliest checkpoint.

    :param steps: the checkpoints' training steps
    :param mean_returns: their mean evaluation returns, same order
    :param ref_min_score: return of the random policy
    :param ref_max_score: return of the expert policy
    :param fraction: where between random and expert the medium policy should be
    :return: the step of the chosen checkpoint
    """
    if len(steps) != len(mean_returns) or len(steps) == 0:
        raise ValueError(
            f"Need one mean return per checkpoint and at least one checkpoint, got {len(steps)} steps and "
            f"{len(mean_returns)} returns."
        )
    target = ref_min_score + fraction * (ref_max_score - ref_min_score)
    distances = np.abs(np.asarray(mean_returns, dtype=np.float64) - target)
    order = np.lexsort((np.asarray(steps), distances))  # by distance, then by step
    return int(steps[int(order[0])])


# ---------------------------------------------------------------------------------------------- trained policies


@dataclass
class Checkpoint:
    """
    A SAC policy saved during training.

    :param step: environment steps SAC had taken when the policy was saved
    :param mean_return: its mean return over deterministic evaluation episodes
    :param path: the policy file (load with ``SACPolicy.load``)
    """

    step: int
    mean_return: float
    path: Path


@dataclass
class TrainedPolicies:
    """
    One cache entry: a SAC run on one env with its checkpoints, reference scores and replay transitions.

    :param directory: the cache entry's folder
    :param manifest: everything the entry records (settings, returns, versions)
    """

    directory: Path
    manifest: dict[str, Any]
    checkpoints: list[Checkpoint] = field(init=False)

    def __post_init__(self) -> None:
        self.checkpoints = [
            Checkpoint(int(entry["step"]), float(entry["mean_return"]), self.directory / entry["file"])
            for entry in self.manifest["checkpoints"]
        ]

    @property
    def ref_min_score(self) -> float:
        """Mean return of the uniform random policy."""
        return float(self.manifest["ref_min_score"])

    @property
    def ref_max_score(self) -> float:
        """Mean return of the final (expert) policy with deterministic actions."""
        return float(self.manifest["ref_max_score"])

    @property
    def expert(self) -> Checkpoint:
        """The final policy."""
        return self.checkpoints[-1]

    @property
    def medium(self) -> Checkpoint:
        """
        The medium checkpoint (see :func:`select_medium_checkpoint`).

        Only checkpoints taken after SAC's first gradient step are candidates: earlier ones are untrained networks.
        """
        learning_starts = int(self.manifest["learning_starts"])
        candidates = [checkpoint for checkpoint in self.checkpoints if checkpoint.step > learning_starts] or self.checkpoints
        step = select_medium_checkpoint(
            [checkpoint.step for checkpoint in candidates],
            [checkpoint.mean_return for checkpoint in candidates],
            self.ref_min_score,
            self.ref_max_score,
        )
        return next(checkpoint for checkpoint in candidates if checkpoint.step == step)

    def load_policy(self, checkpoint: Checkpoint) -> SACPolicy:
        """
        Load a checkpoint's SAC policy on the CPU (single observations run fastest there).

        :param checkpoint: one of :attr:`checkpoints`
        :return: the policy; ``policy.predict(obs)`` returns actions in env units
        """
        from stable_baselines3.sac.policies import SACPolicy

        return SACPolicy.load(str(checkpoint.path), device="cpu")

    def load_replay(self) -> dict[str, np.ndarray]:
        """
        SAC's replay transitions in the order they were collected, actions in env units.

        :return: arrays ``observations``, ``next_observations``, ``actions``, ``rewards``, ``terminations``, ``truncations``
        """
        with np.load(self.directory / _REPLAY) as replay:
            return {key: replay[key] for key in replay.files}


def train_policies(
    env_id: str,
    *,
    train_steps: int | None = None,
    seed: int = 0,
    sac_kwargs: dict[str, Any] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    checkpoint_freq: int | None = None,
    n_checkpoint_episodes: int = DEFAULT_CHECKPOINT_EPISODES,
    n_eval_episodes: int = DEFAULT_EVAL_EPISODES,
    cache_dir: str | os.PathLike | None = None,
    progress_bar: bool = True,
    verbose: int = 1,
) -> TrainedPolicies:
    """
    Train SB3 SAC on an env and cache its checkpoints, reference scores and replay; reuse the cache when present.

    :param env_id: a registered Gymnasium env id with a Box action space
    :param train_steps: SAC's environment steps (default: :func:`default_train_steps`)
    :param seed: seeds SAC, the evaluation episodes and the random policy
    :param sac_kwargs: extra ``SAC(...)`` arguments (e.g. ``policy_kwargs``); defaults are SB3's, except
        ``learning_starts=min(10000, train_steps // 10)`` and ``buffer_size=train_steps`` (the whole run is kept)
    :param env_kwargs: extra ``gym.make`` arguments (recorded in the dataset's env spec)
    :param checkpoint_freq: steps between checkpoints (default: ``min(10000, train_steps // 10)``)
    :param n_checkpoint_episodes: deterministic episodes evaluating each checkpoint
    :param n_eval_episodes: deterministic episodes of the final policy giving ``ref_max_score``
    :param cache_dir: cache root (default: :func:`default_cache_dir`)
    :param progress_bar: show SB3's progress bar while training
    :param verbose: 0 silent, 1 progress messages, 2 also every checkpoint's return
    :return: the cache entry
    """
    # Deep copies: SB3 writes into policy_kwargs, which would change the cache key of the caller's next build.
    env_kwargs = copy.deepcopy(dict(env_kwargs or {}))
    sac_kwargs = copy.deepcopy(dict(sac_kwargs or {}))
    train_steps = default_train_steps(env_id) if train_steps is None else int(train_steps)
    settings = _training_settings(
        env_id, train_steps, seed, sac_kwargs, env_kwargs, checkpoint_freq, n_checkpoint_episodes, n_eval_episodes
    )
    _check_env(env_id, env_kwargs)
    policies_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    policies_dir = policies_dir / "policies"
    entry = policies_dir / _cache_key(settings)

    cached = _open_cache_entry(entry)
    if cached is not None:
        if verbose >= 1:
            print(f"Using the SAC policies cached in {entry}")
        return cached
    if entry.exists():
        warnings.warn(f"Replacing the incomplete or outdated policy cache entry {entry}.", stacklevel=2)
        shutil.rmtree(entry)

    policies_dir.mkdir(parents=True, exist_ok=True)
    # Train into a hidden staging folder and rename it at the end: a killed build never leaves an entry that looks complete.
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.partial-", dir=policies_dir))
    try:
        manifest = _train(settings, staging, sac_kwargs, env_kwargs, progress_bar=progress_bar, verbose=verbose)
        _write_json_atomic(staging / _MANIFEST, manifest)
        try:
            os.rename(staging, entry)
        except OSError:
            # Another build of the same settings finished first: use its entry.
            cached = _open_cache_entry(entry)
            if cached is None:
                raise
            return cached
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if verbose >= 1:
        print(f"Cached the SAC policies in {entry}")
    result = _open_cache_entry(entry)
    assert result is not None
    return result


def _training_settings(
    env_id: str,
    train_steps: int,
    seed: int,
    sac_kwargs: dict[str, Any],
    env_kwargs: dict[str, Any],
    checkpoint_freq: int | None,
    n_checkpoint_episodes: int,
    n_eval_episodes: int,
) -> dict[str, Any]:
    if train_steps <= 0:
        raise ValueError(f"train_steps must be positive, got {train_steps}.")
    if n_checkpoint_episodes <= 0 or n_eval_episodes <= 0:
        raise ValueError(
            f"n_checkpoint_episodes and n_eval_episodes must be positive, got {n_checkpoint_episodes} and {n_eval_episodes}."
        )
    for reserved in ("env", "seed", "verbose"):
        if reserved in sac_kwargs:
            raise ValueError(f"sac_kwargs must not set {reserved!r}: the builder sets it.")
    learning_starts = int(sac_kwargs.get("learning_starts", min(DEFAULT_LEARNING_STARTS, train_steps // 10)))
    buffer_size = int(sac_kwargs.get("buffer_size", train_steps))
    if buffer_size < train_steps:
        raise ValueError(
            f"sac_kwargs buffer_size={buffer_size} is smaller than train_steps={train_steps}: the replay buffer must keep "
            "the whole run for medium-replay."
        )
    if checkpoint_freq is None:
        checkpoint_freq = max(1, min(DEFAULT_CHECKPOINT_FREQ, train_steps // 10))
    if checkpoint_freq <= 0:
        raise ValueError(f"checkpoint_freq must be positive, got {checkpoint_freq}.")
    return {
        "env_id": env_id,
        "env_kwargs": env_kwargs,
        "train_steps": train_steps,
        "seed": int(seed),
        "sac_kwargs": sac_kwargs,
        "learning_starts": learning_starts,
        "buffer_size": buffer_size,
        "checkpoint_freq": int(checkpoint_freq),
        "n_checkpoint_episodes": int(n_checkpoint_episodes),
        "n_eval_episodes": int(n_eval_episodes),
    }


def _cache_key(settings: dict[str, Any]) -> str:
    """``<env id>-<train steps>-<seed>``, plus a hash of the settings when any differ from the defaults."""
    env_part = re.sub(r"[^A-Za-z0-9_.-]+", "_", settings["env_id"])
    key = f"{env_part}-{settings['train_steps']}-{settings['seed']}"
    defaults = _training_settings(
        settings["env_id"],
        settings["train_steps"],
        settings["seed"],
        {},
        {},
        None,
        DEFAULT_CHECKPOINT_EPISODES,
        DEFAULT_EVAL_EPISODES,
    )
    if settings != defaults:
        text = json.dumps(settings, sort_keys=True, default=repr)
        key += "-" + hashlib.sha256(text.encode()).hexdigest()[:10]
    return key


def _open_cache_entry(entry: Path) -> TrainedPolicies | None:
    """The entry when it is complete and of the current format, else None."""
    manifest_path = entry / _MANIFEST
    if not entry.exists():
        return None
    try:
        with open(manifest_path) as file:
            manifest = json.load(file)
        policies = TrainedPolicies(entry, manifest)
        complete = manifest.get("format") == CACHE_FORMAT and (entry / _REPLAY).is_file()
        complete = complete and all(checkpoint.path.is_file() for checkpoint in policies.checkpoints)
    except (OSError, ValueError, KeyError, TypeError):
        complete = False
    return policies if complete else None


def _train(
    settings: dict[str, Any],
    directory: Path,
    sac_kwargs: dict[str, Any],
    env_kwargs: dict[str, Any],
    *,
    progress_bar: bool,
    verbose: int,
) -> dict[str, Any]:
    """Train SAC, saving checkpoints into ``directory``; returns the manifest."""
    from stable_baselines3 import SAC

    env_id, train_steps, seed = settings["env_id"], settings["train_steps"], settings["seed"]
    kwargs = {
        **copy.deepcopy(sac_kwargs),
        "learning_starts": settings["learning_starts"],
        "buffer_size": settings["buffer_size"],
    }
    policy = kwargs.pop("policy", "MlpPolicy")
    # The replay is exported with terminations and truncations kept apart, which needs SB3's timeout handling.
    kwargs["replay_buffer_kwargs"] = {**kwargs.get("replay_buffer_kwargs", {}), "handle_timeout_termination": True}
    (directory / "checkpoints").mkdir()
    eval_env = gym.make(env_id, **env_kwargs)
    evaluation_seed = _derived_seed(seed, "evaluation")
    checkpoints: list[dict[str, Any]] = []

    def save_checkpoint(model: SAC, step: int, n_episodes: int) -> float:
        returns = _evaluate(eval_env, _policy_actor(model.policy, deterministic=True), n_episodes, evaluation_seed)
        name = f"checkpoints/step_{step:09d}.pt"
        _save_atomic(directory / name, lambda path: model.policy.save(path))
        checkpoints.append(
            {"step": step, "mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)), "file": name}
        )
        if verbose >= 2:
            print(f"  checkpoint at step {step}: mean return {np.mean(returns):.1f} +/- {np.std(returns):.1f}")
        return float(np.mean(returns))

    if verbose >= 1:
        print(
            f"Training SB3 SAC on {env_id} for {train_steps} steps (seed {seed}); checkpoints every "
            f"{settings['checkpoint_freq']} steps"
        )
    start = time.perf_counter()
    model = SAC(policy, gym.make(env_id, **env_kwargs), seed=seed, verbose=0, **kwargs)
    callback = _checkpoint_callback(
        settings["checkpoint_freq"], train_steps, lambda step: save_checkpoint(model, step, settings["n_checkpoint_episodes"])
    )
    model.learn(train_steps, callback=callback, progress_bar=progress_bar)
    train_seconds = time.perf_counter() - start

    # The final policy is the expert: its return over n_eval_episodes is ref_max_score.
    ref_max_score = save_checkpoint(model, train_steps, settings["n_eval_episodes"])
    _save_atomic(directory / _FINAL_MODEL, lambda path: model.save(path))
    _save_atomic(directory / _REPLAY, lambda path: _save_replay(model, path), suffix=".npz")
    eval_env.action_space.seed(_derived_seed(seed, "random"))
    ref_min_score = float(
        np.mean(_evaluate(eval_env, lambda _: eval_env.action_space.sample(), RANDOM_POLICY_EPISODES, evaluation_seed))
    )
    eval_env.close()
    if model.env is not None:
        model.env.close()
    if verbose >= 1:
        print(
            f"Trained in {train_seconds / 60:.1f} min; ref_min_score (random policy) {ref_min_score:.1f}, "
            f"ref_max_score (final SAC policy) {ref_max_score:.1f}"
        )
    return {
        "format": CACHE_FORMAT,
        **_jsonable(settings),
        "ref_min_score": ref_min_score,
        "ref_max_score": ref_max_score,
        "random_policy_episodes": RANDOM_POLICY_EPISODES,
        "checkpoints": checkpoints,
        "train_seconds": train_seconds,
        "versions": package_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _checkpoint_callback(freq: int, total_steps: int, on_checkpoint: Callable[[int], Any]) -> BaseCallback:
    """Calls ``on_checkpoint(step)`` every ``freq`` env steps before the last (the final policy is saved after learn)."""
    # SB3 is imported here, not at module level, so that importing sb3_dare.data stays cheap.
    from stable_baselines3.common.callbacks import BaseCallback

    class CheckpointCallback(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % freq == 0 and self.num_timesteps < total_steps:
                on_checkpoint(self.num_timesteps)
            return True

    return CheckpointCallback()


def _save_replay(model: Any, path: str) -> None:
    """Export SAC's replay buffer in collection order, actions back in env units."""
    buffer = model.replay_buffer
    size = buffer.buffer_size if buffer.full else buffer.pos
    order = np.arange(size)
    if buffer.full:
        order = np.roll(order, -buffer.pos)
    dones = buffer.dones[order, 0].astype(bool)
    timeouts = buffer.timeouts[order, 0].astype(bool)
    # SAC's predict() unscales actions; the buffer keeps them in [-1, 1], so unscale them the same way here.
    actions = model.policy.unscale_action(buffer.actions[order, 0]).astype(model.action_space.dtype)
    np.savez(
        path,
        observations=buffer.observations[order, 0],
        next_observations=buffer.next_observations[order, 0],
        actions=actions,
        rewards=buffer.rewards[order, 0],
        terminations=dones & ~timeouts,
        truncations=dones & timeouts,
    )


# ---------------------------------------------------------------------------------------------- rollouts


def _policy_actor(policy: SACPolicy, deterministic: bool) -> Callable[[np.ndarray], np.ndarray]:
    def act(observation: np.ndarray) -> np.ndarray:
        return policy.predict(observation, deterministic=deterministic)[0]

    return act


def _evaluate(env: gym.Env, act: Callable[[np.ndarray], Any], n_episodes: int, seed: int) -> list[float]:
    """Undiscounted returns of ``n_episodes`` episodes, episode ``i`` reset with ``seed + i``."""
    returns = []
    for episode in range(n_episodes):
        observation, _ = env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            observation, reward, terminated, truncated, _ = env.step(act(observation))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def _rollout(
    env: gym.Env,
    act: Callable[[np.ndarray], Any],
    n_steps: int,
    seed: int,
    *,
    description: str,
    progress_bar: bool,
) -> list[Episode]:
    """Record ``n_steps`` transitions as whole episodes; the episode cut by the cap is marked truncated."""
    from tqdm import tqdm

    episodes: list[Episode] = []
    if n_steps <= 0:
        return episodes
    observation, _ = env.reset(seed=seed)
    observations, actions, rewards, terminations, truncations = [observation], [], [], [], []
    action_dtype = env.action_space.dtype
    with tqdm(total=n_steps, desc=description, unit="step", disable=not progress_bar, mininterval=0.5) as bar:
        for step in range(n_steps):
            action = np.asarray(act(observation), dtype=action_dtype)
            observation, reward, terminated, truncated, _ = env.step(action)
            observations.append(observation)
            actions.append(action)
            rewards.append(reward)
            terminations.append(terminated)
            truncations.append(truncated)
            bar.update()
            last = step == n_steps - 1
            if terminated or truncated or last:
                if last and not (terminated or truncated):
                    truncations[-1] = True
                episodes.append(
                    Episode(
                        np.asarray(observations),
                        np.asarray(actions),
                        np.asarray(rewards),
                        np.asarray(terminations, dtype=bool),
                        np.asarray(truncations, dtype=bool),
                    )
                )
                if not last:
                    observation, _ = env.reset()
                    observations, actions, rewards, terminations, truncations = [observation], [], [], [], []
    return episodes


def replay_episodes(replay: dict[str, np.ndarray], end: int, max_steps: int | None = None) -> list[Episode]:
    """
    Cut the first ``end`` replay transitions (the last ``max_steps`` of them when given) into episodes.

    The episode still running at ``end`` is marked truncated. With ``max_steps`` the first episode may
    start in the middle of an episode, as the oldest transitions fall off.

    :param replay: arrays as :meth:`TrainedPolicies.load_replay` returns them
    :param end: number of transitions collected up to the checkpoint
    :param max_steps: keep only the most recent transitions
    :return: the episodes in collection order
    """
    start = 0 if max_steps is None else max(0, end - max_steps)
    columns = {key: value[start:end] for key, value in replay.items()}
    if len(columns["rewards"]) == 0:
        return []
    terminations = columns["terminations"].astype(bool)
    truncations = columns["truncations"].astype(bool) & ~terminations
    truncations[-1] |= not terminations[-1]
    ends = np.flatnonzero(terminations | truncations) + 1
    episodes = []
    for first, stop in zip(np.concatenate([[0], ends[:-1]]), ends, strict=True):
        observations = np.concatenate([columns["observations"][first:stop], columns["next_observations"][stop - 1 : stop]])
        episodes.append(
            Episode(
                observations,
                columns["actions"][first:stop],
                columns["rewards"][first:stop],
                terminations[first:stop],
                truncations[first:stop],
            )
        )
    return episodes


# ---------------------------------------------------------------------------------------------- datasets


def build_dataset(
    env_id: str,
    quality: str,
    dataset_id: str | None = None,
    *,
    steps: int | None = None,
    train_steps: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    sac_kwargs: dict[str, Any] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    checkpoint_freq: int | None = None,
    n_checkpoint_episodes: int = DEFAULT_CHECKPOINT_EPISODES,
    n_eval_episodes: int = DEFAULT_EVAL_EPISODES,
    cache_dir: str | os.PathLike | None = None,
    author: str = "sb3_dare dataset builder",
    progress_bar: bool = True,
    verbose: int = 1,
) -> minari.MinariDataset:
    """
    Build a Minari dataset of a D4RL-style quality for a Gymnasium env, training SB3 SAC (or reusing its cache).

    The dataset is written under ``$MINARI_DATASETS_PATH`` (Minari's default: ``~/.minari/datasets``) with
    ``ref_min_score`` / ``ref_max_score``, the env spec (``dataset.recover_environment()`` works) and the
    package versions in its metadata.

    :param env_id: a registered Gymnasium env id with Box observations and a bounded Box action space
    :param quality: one of ``random``, ``medium``, ``medium-replay``, ``medium-expert``, ``expert``
    :param dataset_id: the Minari id (default: :func:`default_dataset_id`, e.g. ``sb3_dare/hopper-v5/medium-v0``)
    :param steps: number of transitions (default 100000; ``medium-replay``: all of the replay up to the medium
        checkpoint, or its last ``steps`` transitions; ``medium-expert``: half from each policy)
    :param train_steps: SAC's environment steps (default: :func:`default_train_steps`)
    :param seed: seeds training, evaluation and collection, so that a build is reproducible
    :param overwrite: replace an existing dataset with the same id (else a ``ValueError`` is raised)
    :param sac_kwargs: extra ``SAC(...)`` arguments, see :func:`train_policies` (they are part of the cache key)
    :param env_kwargs: extra ``gym.make`` arguments, recorded in the dataset's env spec
    :param checkpoint_freq: steps between evaluated SAC checkpoints (default: ``min(10000, train_steps // 10)``)
    :param n_checkpoint_episodes: deterministic episodes evaluating each checkpoint
    :param n_eval_episodes: deterministic episodes of the final policy giving ``ref_max_score``
    :param cache_dir: root of the policy cache (default: ``$SB3_DARE_CACHE``, else ``~/.cache/sb3_dare``)
    :param author: recorded in the dataset's metadata
    :param progress_bar: show progress bars for training and collection
    :param verbose: 0 silent, 1 progress messages, 2 also every checkpoint's return
    :return: the new dataset
    """
    if quality not in QUALITIES:
        raise ValueError(f"Unknown quality {quality!r}; choose one of {', '.join(QUALITIES)}.")
    if steps is not None and steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}.")
    dataset_id = dataset_id or default_dataset_id(env_id, quality)
    if not _DATASET_ID_RE.fullmatch(dataset_id):
        raise ValueError(
            f"Malformed dataset id {dataset_id!r}: Minari ids look like 'namespace/name-v0' or 'name-v0' (letters, digits, "
            "'-' and '_', ending with a version)."
        )
    env_kwargs = dict(env_kwargs or {})
    env_spec, requirements = _check_env(env_id, env_kwargs)
    if _dataset_path(dataset_id).exists() and not overwrite:
        raise ValueError(_exists_message(dataset_id))

    policies = train_policies(
        env_id,
        train_steps=train_steps,
        seed=seed,
        sac_kwargs=sac_kwargs,
        env_kwargs=env_kwargs,
        checkpoint_freq=checkpoint_freq,
        n_checkpoint_episodes=n_checkpoint_episodes,
        n_eval_episodes=n_eval_episodes,
        cache_dir=cache_dir,
        progress_bar=progress_bar,
        verbose=verbose,
    )
    if policies.ref_max_score <= policies.ref_min_score:
        warnings.warn(
            f"The final SAC policy on {env_id} (return {policies.ref_max_score:.1f}) is not better than a random policy "
            f"({policies.ref_min_score:.1f}): the qualities and normalised scores are meaningless. Train longer "
            "(train_steps) or tune sac_kwargs.",
            stacklevel=2,
        )
    start = time.perf_counter()
    episodes, made_from = _collect(quality, policies, env_id, env_kwargs, steps, seed, progress_bar=progress_bar)
    if not episodes:
        raise ValueError(f"No transitions to write for {quality!r} (steps={steps}).")
    manifest = policies.manifest
    description = (
        f"{quality} data for {env_id}: {made_from}. SB3 SAC trained {manifest['train_steps']} steps (seed {seed}). "
        f"ref_max_score: the final SAC policy, {manifest['n_eval_episodes']} deterministic episodes; ref_min_score: a "
        f"uniform random policy, {manifest['random_policy_episodes']} episodes."
    )
    extra_metadata: dict[str, Any] = {
        "quality": quality,
        "seed": int(seed),
        "sac_train_steps": int(manifest["train_steps"]),
        "policy_cache_key": policies.directory.name,
        "ref_min_episodes": int(manifest["random_policy_episodes"]),
        "builder": f"sb3_dare.data.builder {_sb3_dare_version()}",
        "build_versions": [f"{name}=={version}" for name, version in package_versions().items()],
        "policy_versions": [f"{name}=={version}" for name, version in manifest["versions"].items()],
    }
    if quality in ("medium", "medium-replay", "medium-expert"):
        extra_metadata["medium_checkpoint_step"] = policies.medium.step
        extra_metadata["medium_checkpoint_return"] = policies.medium.mean_return
    dataset = _write_dataset(
        dataset_id,
        episodes,
        env_spec,
        ref_min_score=policies.ref_min_score,
        ref_max_score=policies.ref_max_score,
        n_eval_episodes=int(manifest["n_eval_episodes"]),
        author=author,
        description=description,
        requirements=requirements,
        extra_metadata=extra_metadata,
        overwrite=overwrite,
    )
    if verbose >= 1:
        print(
            f"Wrote {dataset_id}: {dataset.total_steps} transitions in {dataset.total_episodes} episodes "
            f"({time.perf_counter() - start:.0f} s) to {_dataset_path(dataset_id)}"
        )
    return dataset


def _check_env(env_id: str, env_kwargs: dict[str, Any]) -> tuple[EnvSpec, list[str]]:
    """
    Fail early (before hours of training) on envs the builder cannot handle.

    :return: the env spec to record, and what ``recover_environment()`` needs to rebuild the same env
        (Gymnasium, and MuJoCo for MuJoCo envs)
    """
    env = gym.make(env_id, **env_kwargs)
    try:
        action_space, observation_space, spec = env.action_space, env.observation_space, env.spec
        uses_mujoco = any("mujoco" in cls.__module__ for cls in type(env.unwrapped).__mro__)
    finally:
        env.close()
    if not isinstance(action_space, spaces.Box):
        raise ValueError(
            f"{env_id} has action space {action_space}: the dataset builder (SAC) needs a continuous Box action space."
        )
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise ValueError(f"{env_id} has an unbounded action space {action_space}; wrap it so that its bounds are finite.")
    if not isinstance(observation_space, spaces.Box):
        raise ValueError(
            f"{env_id} has observation space {observation_space}: the dataset builder supports Box observations only "
            "(flatten Dict observations with a wrapper registered as a new env id)."
        )
    if spec is None or spec.max_episode_steps is None:
        raise ValueError(
            f"{env_id} has no time limit: episodes would never end. Pass env_kwargs={{'max_episode_steps': 1000}} "
            "(or register the env with one)."
        )
    versions = package_versions()
    requirements = [f"gymnasium=={versions['gymnasium']}"]
    if uses_mujoco and "mujoco" in versions:
        requirements.append(f"mujoco=={versions['mujoco']}")
    return spec, requirements


def _collect(
    quality: str,
    policies: TrainedPolicies,
    env_id: str,
    env_kwargs: dict[str, Any],
    steps: int | None,
    seed: int,
    *,
    progress_bar: bool,
) -> tuple[list[Episode], str]:
    """The episodes of one quality, and a sentence saying where they came from."""
    from stable_baselines3.common.utils import set_random_seed

    if quality == "medium-replay":
        medium = policies.medium
        episodes = replay_episodes(policies.load_replay(), medium.step, steps)
        kept = "all" if steps is None or steps >= medium.step else f"the last {steps}"
        return episodes, (
            f"{kept} of the {medium.step} transitions SAC collected up to its medium checkpoint "
            f"(step {medium.step}, mean return {medium.mean_return:.1f})"
        )

    n_steps = DEFAULT_STEPS if steps is None else steps
    env = gym.make(env_id, **env_kwargs)
    try:
        if quality == "random":
            env.action_space.seed(_derived_seed(seed, "random"))
            episodes = _rollout(
                env,
                lambda _: env.action_space.sample(),
                n_steps,
                _derived_seed(seed, "random"),
                description="Collecting random",
                progress_bar=progress_bar,
            )
            return episodes, "uniform random actions"

        parts = {"medium": [(policies.medium, "medium", n_steps)], "expert": [(policies.expert, "expert", n_steps)]}
        parts["medium-expert"] = [
            (policies.medium, "medium", n_steps // 2),
            (policies.expert, "expert", n_steps - n_steps // 2),
        ]
        episodes, sources = [], []
        for checkpoint, name, part_steps in parts[quality]:
            # One seed per policy: medium-expert's halves are the beginnings of the medium and expert datasets.
            part_seed = _derived_seed(seed, name)
            set_random_seed(part_seed)
            policy = policies.load_policy(checkpoint)
            episodes += _rollout(
                env,
                _policy_actor(policy, deterministic=False),
                part_steps,
                part_seed,
                description=f"Collecting {name}",
                progress_bar=progress_bar,
            )
            sources.append(
                f"{part_steps} steps of the SAC {'final policy' if name == 'expert' else 'checkpoint'} at step "
                f"{checkpoint.step} (mean return {checkpoint.mean_return:.1f})"
            )
        return episodes, "stochastic actions, " + " then ".join(sources)
    finally:
        env.close()


def _dataset_path(dataset_id: str) -> Path:
    from minari.storage.datasets_root_dir import get_dataset_path

    return Path(get_dataset_path(dataset_id))


def _exists_message(dataset_id: str) -> str:
    return (
        f"Dataset {dataset_id!r} already exists in {_dataset_path(dataset_id)}. Pass --overwrite (overwrite=True) to "
        "replace it, or choose another id (--id)."
    )


def _write_dataset(
    dataset_id: str,
    episodes: list[Episode],
    env_spec: EnvSpec,
    *,
    ref_min_score: float,
    ref_max_score: float,
    n_eval_episodes: int,
    author: str,
    description: str,
    requirements: list[str],
    extra_metadata: dict[str, Any],
    overwrite: bool,
) -> minari.MinariDataset:
    """
    Write the dataset into a hidden staging folder of the datasets root, then move it into place with one rename:
    readers never see a half-written dataset, a failed write leaves everything as it was, and a dataset that another
    process wrote under the same id meanwhile is never deleted (without ``overwrite`` this build then fails).
    """
    import minari
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.storage.datasets_root_dir import get_dataset_path

    path = _dataset_path(dataset_id)
    if path.exists() and not overwrite:
        raise ValueError(_exists_message(dataset_id))
    buffers = [
        EpisodeBuffer(
            id=index,
            observations=episode.observations,
            actions=episode.actions,
            rewards=episode.rewards,
            terminations=episode.terminations,
            truncations=episode.truncations,
        )
        for index, episode in enumerate(episodes)
    ]
    # hidden, so Minari's listings skip it; in the same root, so the final rename stays on one file system
    staging_root = Path(tempfile.mkdtemp(prefix=".sb3_dare-staging-", dir=get_dataset_path()))
    previous: Path | None = None
    try:
        with _datasets_root(staging_root), warnings.catch_warnings():
            # Optional fields this builder has no value for; everything that matters is passed.
            warnings.filterwarnings("ignore", message=r"`(code_permalink|author_email|eval_env)` is set to None")
            staged = minari.create_dataset_from_buffers(
                dataset_id,
                buffer=buffers,
                env=env_spec,
                algorithm_name="SB3 SAC",
                author=author,
                description=description,
                # Both given explicitly, so that Minari does not re-estimate ref_min_score with its own random episodes.
                ref_min_score=float(ref_min_score),
                ref_max_score=float(ref_max_score),
                num_episodes_average_score=n_eval_episodes,
                requirements=requirements,
            )
            staged.storage.update_metadata(extra_metadata)
            del staged
        namespace = parse_dataset_id(dataset_id)[0]
        if namespace is not None:
            _ensure_namespace(namespace)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            if not overwrite:
                raise ValueError(f"{_exists_message(dataset_id)} (It was written by another process during this build.)")
            # kept aside until the new dataset is in place: if the move fails, it is restored
            previous = path.with_name(f".{path.name}.previous-{os.getpid()}")
            shutil.rmtree(previous, ignore_errors=True)
            path.rename(previous)
        try:
            # one rename; it fails, instead of replacing anything, when another process has just put a dataset here
            os.rename(staging_root / dataset_id, path)
        except OSError as error:
            if previous is not None:
                if path.exists():  # overwrite was asked for, and another process's dataset is newer than this one
                    shutil.rmtree(previous, ignore_errors=True)
                else:
                    previous.rename(path)
                previous = None
            raise ValueError(
                f"Could not move the new dataset {dataset_id!r} into {path} ({error}); another process may have "
                "written the same id meanwhile, and the dataset there was kept."
            ) from error
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    return minari.load_dataset(dataset_id)


@contextlib.contextmanager
def _datasets_root(root: Path) -> Iterator[None]:
    """Point Minari (``$MINARI_DATASETS_PATH``) at another datasets root for the duration of a ``with`` block."""
    saved = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = saved


def _ensure_namespace(namespace: str) -> None:
    """Create the Minari namespace in the datasets root unless it exists (another process may create it concurrently)."""
    from minari.namespace import create_namespace, list_local_namespaces

    if namespace in list_local_namespaces():
        return
    try:
        create_namespace(namespace)
    except ValueError:
        if namespace not in list_local_namespaces():
            raise


# ---------------------------------------------------------------------------------------------- small helpers


def package_versions() -> dict[str, str]:
    """
    Versions of the packages that shape a dataset (the ones installed), for its metadata.

    :return: ``{distribution name: version}``
    """
    versions = {}
    for name in ("sb3_dare", "stable-baselines3", "torch", "gymnasium", "mujoco", "numpy", "minari"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            if name == "sb3_dare":
                versions[name] = _sb3_dare_version()
    return versions


def _sb3_dare_version() -> str:
    import sb3_dare

    return str(sb3_dare.__version__)


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON data; what JSON cannot hold (classes in policy_kwargs) becomes its repr."""
    return json.loads(json.dumps(value, default=repr))


def _derived_seed(seed: int, purpose: str) -> int:
    return int(np.random.SeedSequence([int(seed) % 2**32, _SEED_PURPOSES[purpose]]).generate_state(1)[0])


def _save_atomic(path: Path, save: Callable[[str], None], suffix: str = "") -> None:
    """Save through a temporary file in the same folder, then rename it: readers never see a half-written file."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(handle)
    try:
        save(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _write_json_atomic(path: Path, content: dict[str, Any]) -> None:
    def save(temporary: str) -> None:
        with open(temporary, "w") as file:
            json.dump(content, file, indent=1)

    _save_atomic(path, save)
