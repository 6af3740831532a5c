"""The offline-to-online algorithm base: an offline phase of gradient steps, then SB3's online loop, in one learn()."""

from __future__ import annotations

import io
import os
import pathlib
import random
import time
import warnings
from collections.abc import Iterable
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ConvertCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.save_util import recursive_getattr
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import configure_logger
from stable_baselines3.common.vec_env import VecEnv, unwrap_vec_normalize

from sb3_dare.common.buffers import RETURN_RANGE, OfflineOnlineReplayBuffer, OfflineOnlineSamples, check_reward_scale
from sb3_dare.common.callbacks import O2OProgressBarCallback, offline_step_callbacks
from sb3_dare.common.checkpoint import (
    ALGORITHM_KEY,
    VERSION_KEY,
    atomic_write,
    check_saved_model,
    installed_version,
    sb3_save_path,
)
from sb3_dare.common.env_spec import recreatable_spec
from sb3_dare.common.evaluation import evaluate_normalized
from sb3_dare.common.logging import DivergenceError, MetricAccumulator
from sb3_dare.common.policies import O2OPolicy
from sb3_dare.data import OfflineData, load_offline_data

SelfO2OAlgorithm = TypeVar("SelfO2OAlgorithm", bound="O2OAlgorithm")


def _check_range(name: str, value: float, low: float, high: float, low_open: bool = False, high_open: bool = False) -> None:
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high or value != value:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value}.")


def _refuse_vec_normalize(env: GymEnv) -> None:
    if isinstance(env, VecEnv) and unwrap_vec_normalize(env) is not None:
        raise ValueError(
            "VecNormalize is not supported: offline and online data must share one observation scale. "
            "Use normalize_observations=True, which normalises with the dataset's statistics inside the policy."
        )


class O2OAlgorithm(OffPolicyAlgorithm):
    """
    Base class of the offline-to-online algorithms.

    ``learn()`` first runs the offline phase (``offline_steps`` gradient steps on the dataset, unless already
    done), then SB3's online loop: environment steps with ``gradient_steps`` updates per ``train_freq``,
    on batches that mix offline and online data (``offline_ratio``). ``total_timesteps`` counts environment
    steps, as everywhere in SB3; ``num_timesteps`` stays 0 during the offline phase.

    Subclasses implement :meth:`_train_step` (one gradient update on a batch, returning detached scalar
    metrics) and :meth:`_optimizer_schedules`; DARE layers a per-sample mask over them through
    :meth:`_offline_like_mask`.

    :param policy: the policy model to use (``"MlpPolicy"`` or a class)
    :param env: the environment (or its id); ``None`` for offline-only use (spaces from the dataset)
    :param dataset: a Minari dataset id, a dataset folder, a ``minari.MinariDataset`` or an ``OfflineData``.
        Loaded lazily at the first ``learn()``/``pretrain()``; saved as its id or path.
    :param offline_steps: gradient steps of the offline phase (once the phase has ended, a larger value, e.g. given to
        ``load()``, starts no new offline updates: ``learn()`` continues online)
    :param learning_rate: learning rate (critics; the actor's too unless the algorithm has its own)
    :param buffer_size: capacity of the online part of the replay buffer
    :param learning_starts: env steps before online updates start (0: pre-training replaces warm-up)
    :param batch_size: minibatch size
    :param tau: soft update coefficient of the target networks
    :param gamma: discount factor
    :param train_freq: update the model every ``train_freq`` steps (int or ``(n, "step"|"episode")``)
    :param gradient_steps: gradient steps per rollout (-1: as many as env steps collected)
    :param offline_ratio: fraction of each online-phase batch drawn from the offline data
    :param normalize_observations: normalise observations with the offline dataset's mean and std (kept inside
        the policy, so ``predict`` and a loaded model use it)
    :param reward_scale: rewards are used as ``reward * reward_scale + reward_bias`` (also in MC returns);
        ``"return_range"``: the scale that makes the dataset's episode returns span 1000 (IQL's setting for locomotion)
    :param reward_bias: see ``reward_scale``
    :param offline_log_interval: dump the ``offline/*`` logs every this many offline updates
    :param offline_eval_freq: evaluate every this many offline updates (0: never)
    :param offline_eval_episodes: deterministic episodes per offline evaluation
    :param eval_env: env for offline evaluations; default: a new env from the training env's spec
    :param replay_buffer_class: replay buffer class (an ``OfflineOnlineReplayBuffer`` subclass)
    :param replay_buffer_kwargs: extra keyword arguments of the replay buffer
    :param policy_kwargs: keyword arguments of the policy
    :param stats_window_size: window of the rollout statistics
    :param tensorboard_log: TensorBoard log folder
    :param verbose: verbosity level (0 none, 1 info, 2 debug)
    :param seed: random seed
    :param device: torch device
    :param _init_setup_model: build the networks at construction (SB3's load sets False)
    """

    policy: O2OPolicy
    replay_buffer: OfflineOnlineReplayBuffer

    def __init__(
        self,
        policy: str | type[O2OPolicy],
        env: GymEnv | str | None,
        dataset: str | os.PathLike | OfflineData | Any | None = None,
        offline_steps: int = 1_000_000,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 0,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        offline_ratio: float = 0.5,
        normalize_observations: bool = True,
        reward_scale: float | str = 1.0,
        reward_bias: float = 0.0,
        offline_log_interval: int = 1000,
        offline_eval_freq: int = 10_000,
        offline_eval_episodes: int = 10,
        eval_env: GymEnv | str | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        super().__init__(
            policy,
            env,  # type: ignore[arg-type]  # None is allowed for offline-only use (spaces from the dataset)
            learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            support_multi_env=True,
            sde_support=False,
        )
        self.dataset = dataset
        self.offline_steps = offline_steps
        self.offline_ratio = offline_ratio
        self.normalize_observations = normalize_observations
        self.reward_scale = reward_scale
        self.reward_bias = reward_bias
        self.offline_log_interval = offline_log_interval
        self.offline_eval_freq = offline_eval_freq
        self.offline_eval_episodes = offline_eval_episodes
        self.eval_env = eval_env
        # progress of the offline phase (saved with the model)
        self.offline_updates = 0
        self.offline_phase_done = False
        # the content fingerprint of the offline data it trains on (saved: training on other data later is reported)
        self.offline_data_fingerprint: str | None = None
        # not saved: objects and runtime state
        self._offline_data: OfflineData | None = None
        self._dataset_object: Any = None
        self._offline_eval_env: VecEnv | gym.Env | None = None
        # whether the current learn()/pretrain() shows progress bars (read by what runs between the phases)
        self._show_progress = False
        self._metrics = MetricAccumulator()
        self._checkpoint_total_timesteps = 0  # the interrupted learn()'s target, set by load_checkpoint
        if _init_setup_model:
            self._validate_hyperparameters()
            if self.env is not None:
                self._check_env(self.env)
            elif self.dataset is not None:
                self._spaces_from_dataset()
            else:
                raise ValueError(
                    "Pass an env, or a dataset for offline-only use (env=None takes the spaces from the dataset)."
                )
            self._setup_model()

    # ------------------------------------------------------------------ construction

    def _validate_hyperparameters(self) -> None:
        """Raise ValueError naming the parameter and its valid range."""
        _check_range("offline_ratio", self.offline_ratio, 0.0, 1.0)
        _check_range("tau", self.tau, 0.0, 1.0, low_open=True)
        _check_range("gamma", self.gamma, 0.0, 1.0)
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {self.batch_size}.")
        for name in ("offline_steps", "learning_starts"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        for name in ("buffer_size", "offline_log_interval", "offline_eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.offline_eval_freq < 0:
            raise ValueError(f"offline_eval_freq must be >= 0 (0 disables offline evaluation), got {self.offline_eval_freq}.")
        check_reward_scale(self.reward_scale)
        if not np.isfinite(self.reward_bias):
            raise ValueError(f"reward_bias must be finite, got {self.reward_bias}.")
        if self.reward_scale == RETURN_RANGE and self.dataset is None and self._dataset_object is None:
            raise ValueError(
                f"reward_scale={RETURN_RANGE!r} computes the scale from the offline dataset's episode returns, and "
                f"{type(self).__name__} has no dataset: pass dataset=..., or give reward_scale as a number."
            )
        if not callable(self.learning_rate) and not float(self.learning_rate) > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}.")
        if self.replay_buffer_class is not None and not issubclass(self.replay_buffer_class, OfflineOnlineReplayBuffer):
            raise ValueError(
                "replay_buffer_class must be OfflineOnlineReplayBuffer or a subclass, "
                f"got {self.replay_buffer_class.__name__}."
            )
        self._check_policy_kwargs()

    def _check_policy_kwargs(self) -> None:
        import inspect

        accepted = set(inspect.signature(self.policy_class.__init__).parameters) - {
            "self",
            "observation_space",
            "action_space",
        }
        unknown = set(self.policy_kwargs) - accepted
        if unknown:
            raise ValueError(
                f"Unknown policy_kwargs {sorted(unknown)} for {self.policy_class.__name__}; accepted: {sorted(accepted)}."
            )

    def _check_env(self, env: GymEnv) -> None:
        if not isinstance(env.action_space, spaces.Box):
            raise ValueError(f"{type(self).__name__} supports continuous (Box) action spaces only, got {env.action_space}.")
        _refuse_vec_normalize(env)

    def _spaces_from_dataset(self) -> None:
        """Offline-only use (env=None): take the spaces from the dataset."""
        self._split_dataset_reference()
        data = self._load_offline_data(env=None)
        self.observation_space = data.observation_space
        self.action_space = data.action_space
        self.n_envs = 1

    def _split_dataset_reference(self) -> None:
        """Keep a saveable reference (id or path) in ``dataset``; objects go to an attribute that is not saved."""
        if self.dataset is None or isinstance(self.dataset, str | os.PathLike):
            if isinstance(self.dataset, os.PathLike):
                self.dataset = os.fspath(self.dataset)
            if isinstance(self.dataset, str) and os.path.isdir(self.dataset):
                self.dataset = os.path.abspath(self.dataset)  # found again after a change of working directory
            return
        self._dataset_object = self.dataset
        self._offline_data = None
        if isinstance(self.dataset, OfflineData):
            # arrays and replay buffers have no reference: a loaded model asks for the data again, it never looks up a label
            self.dataset = self.dataset.reference
        else:
            spec = getattr(self.dataset, "spec", None)
            self.dataset = getattr(spec, "dataset_id", None)

    def _setup_model(self) -> None:
        self._split_dataset_reference()
        if self.replay_buffer_class is None:
            self.replay_buffer_class = OfflineOnlineReplayBuffer
        self.replay_buffer_kwargs = {
            **self.replay_buffer_kwargs,
            "offline_ratio": self.offline_ratio,
            "gamma": self.gamma,
            "reward_scale": self.reward_scale,
            "reward_bias": self.reward_bias,
        }
        super()._setup_model()
        self._create_aliases()
        self._metrics = MetricAccumulator()

    def _create_aliases(self) -> None:
        """Point attributes such as ``self.actor`` at the policy's networks (subclasses)."""

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """
        Set a new env (same spaces and number of envs); VecNormalize is refused, and the model keeps its env then.

        :param env: the new env
        :param force_reset: reset it before the next ``learn()`` (SB3 semantics)
        """
        self._check_env(env)  # before SB3 installs it
        super().set_env(env, force_reset=force_reset)
        assert self.env is not None
        self._check_env(self.env)
        self._offline_eval_env = None

    # ------------------------------------------------------------------ offline data

    @property
    def offline_data(self) -> OfflineData | None:
        """The offline dataset once loaded (at the first ``learn()``/``pretrain()``)."""
        return self._offline_data

    def _load_offline_data(self, env: VecEnv | None) -> OfflineData:
        if self._offline_data is None:
            source = self._dataset_object if self._dataset_object is not None else self.dataset
            self._offline_data = load_offline_data(source, env=env, gamma=self.gamma)
        return self._offline_data

    def _prepare_offline_data(self) -> None:
        """Load the dataset (once), attach it to the replay buffer and set the observation statistics."""
        if self._dataset_object is None and self.dataset is None:
            if not self.offline_phase_done and self.offline_updates < self.offline_steps:
                raise ValueError(
                    f"{type(self).__name__} has offline_steps={self.offline_steps} but no dataset. Pass dataset=<Minari id, "
                    "folder or OfflineData>, or offline_steps=0 to train online only."
                )
            if self.offline_phase_done and self.offline_ratio > 0 and self.offline_steps > 0:
                raise ValueError(
                    f"This {type(self).__name__} was pre-trained on an in-memory dataset, which is not saved with the model. "
                    f"Pass it again: {type(self).__name__}.load(path, env=env, dataset=data)."
                )
            return
        data = self._load_offline_data(self.env)
        if self.replay_buffer.offline_data is not data:
            self.replay_buffer.attach_offline_data(data)
            fingerprint = self.replay_buffer.offline_data_fingerprint
            if self.offline_data_fingerprint not in (None, fingerprint):
                warnings.warn(
                    f"This {type(self).__name__} was trained on other offline data than {data.source!r} holds now "
                    f"(content fingerprint {self.offline_data_fingerprint}, now {fingerprint}: another "
                    "MINARI_DATASETS_PATH, a rebuilt dataset or another dataset=...). Training continues on the new data, "
                    "so a resumed run is not the run it continues.",
                    stacklevel=3,
                )
            self.offline_data_fingerprint = fingerprint
        normalizer = self.policy.observation_normalizer
        if self.normalize_observations and not bool(normalizer.initialized):
            mean, std = data.observation_statistics()
            normalizer.set_statistics(th.as_tensor(mean), th.as_tensor(std))

    # ------------------------------------------------------------------ training

    def _train_step(self, replay_data: OfflineOnlineSamples) -> dict[str, th.Tensor]:
        """One gradient update on a batch; returns detached 0-dim metric tensors (no host sync)."""
        raise NotImplementedError

    def _optimizer_schedules(self) -> list[tuple[th.optim.Optimizer, Schedule]]:
        """Every optimizer with the learning-rate schedule it follows."""
        raise NotImplementedError

    def _offline_like_mask(self, replay_data: OfflineOnlineSamples) -> th.Tensor | None:
        """
        Which samples keep the conservative offline objective. ``None`` means all of them (the base algorithm);
        DARE returns a per-sample boolean mask.
        """
        return None

    def _update_learning_rates(self) -> None:
        for optimizer, schedule in self._optimizer_schedules():
            learning_rate = schedule(self._current_progress_remaining)
            for param_group in optimizer.param_groups:
                param_group["lr"] = learning_rate
        # the offline phase logs against offline updates: its keys stay apart from the online phase's train/*
        prefix = "train" if self.offline_phase_done else "offline"
        self.logger.record(f"{prefix}/learning_rate", self.lr_schedule(self._current_progress_remaining))

    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        """Run ``gradient_steps`` updates on mixed batches (both phases use it)."""
        self.policy.set_training_mode(True)
        self._update_learning_rates()
        for _ in range(gradient_steps):
            replay_data = self.replay_buffer.sample(batch_size)
            try:
                self._metrics.add(self._train_step(replay_data))
            except (ValueError, RuntimeError):
                # NaN parameters make torch.distributions refuse their arguments before any log dump:
                # report the divergence (loss and window) rather than the symptom, chained to it
                self._raise_if_diverged()
                raise
        self._n_updates += gradient_steps
        if self.offline_phase_done:  # offline: offline/updates counts them
            self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    def dump_logs(self) -> None:
        """Write the online metrics (means over the window, finiteness checked) with SB3's rollout statistics."""
        self._metrics.flush(self.logger, "train", self._n_updates)
        super().dump_logs()

    # ------------------------------------------------------------------ the offline phase

    def _remaining_offline_updates(self) -> int:
        """
        What remains of ``offline_steps``; nothing once the offline phase has ended: a model past the switch that is
        given a larger ``offline_steps`` (e.g. by RL Zoo's ``--trained-agent``, with the yml's 1M) continues online,
        since offline updates after fine-tuning began would undo the switch.
        """
        remaining = max(self.offline_steps - self.offline_updates, 0)
        if self.offline_phase_done and remaining > 0:
            warnings.warn(
                f"The offline phase ended at {self.offline_updates} updates: offline_steps={self.offline_steps} is ignored "
                "(pretrain(n_steps=...) runs more offline updates explicitly).",
                stacklevel=3,
            )
            return 0
        return remaining

    def _setup_offline_logger(self, tb_log_name: str) -> None:
        if not self._custom_logger and getattr(self, "_logger", None) is None:
            self._logger = configure_logger(self.verbose, self.tensorboard_log, tb_log_name, reset_num_timesteps=True)

    def pretrain(
        self: SelfO2OAlgorithm,
        n_steps: int | None = None,
        callback: MaybeCallback = None,
        progress_bar: bool = False,
        tb_log_name: str | None = None,
    ) -> SelfO2OAlgorithm:
        """
        Run offline gradient steps without touching the env (SB3 creates its logger only in ``learn()``: this
        method sets it up itself).

        :param n_steps: updates to run; default: what remains of ``offline_steps`` (nothing once the offline phase has
            ended, even if ``offline_steps`` was raised since)
        :param callback: callbacks; those defining ``on_offline_step()`` are called after every update
        :param progress_bar: show a progress bar
        :param tb_log_name: TensorBoard run name
        :return: the model
        """
        if n_steps is not None and n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}.")
        self._setup_offline_logger(tb_log_name or self.saved_algorithm_name())
        self._show_progress = progress_bar
        remaining = self._remaining_offline_updates() if n_steps is None else n_steps
        if progress_bar:
            callback = _with_callback(callback, O2OProgressBarCallback(offline_steps=remaining, online_steps=0))
        callbacks = self._init_callback(callback, progress_bar=False)
        self._prepare_offline_data()
        callbacks.on_training_start(locals(), globals())
        self._run_offline_phase(remaining, callbacks)
        callbacks.on_training_end()
        return self

    def _run_offline_phase(self, n_steps: int, callback: BaseCallback) -> bool:
        """
        Run ``n_steps`` offline updates; the offline phase ends when all ``offline_steps`` are done.

        :return: False when a callback's ``on_offline_step()`` stopped training, else True
        """
        if n_steps > 0 and self.replay_buffer.n_offline == 0:
            raise ValueError("The offline phase needs a dataset: pass dataset=... to the constructor or to load().")
        step_callbacks = offline_step_callbacks(callback)
        self._metrics.window_start = self.offline_updates
        target = self.offline_updates + n_steps
        start_time, start_updates = time.time(), self.offline_updates
        stop = False
        while self.offline_updates < target and not stop:
            self.train(gradient_steps=1, batch_size=self.batch_size)
            self.offline_updates += 1
            for step_callback in step_callbacks:
                if step_callback.on_offline_step() is False:  # type: ignore[attr-defined]
                    stop = True
            done = self.offline_updates == target or stop
            if self.offline_eval_freq > 0 and self.offline_updates % self.offline_eval_freq == 0:
                self._offline_evaluate()
            if self.offline_updates % self.offline_log_interval == 0 or done:
                elapsed = max(time.time() - start_time, 1e-9)
                self.logger.record("offline/updates", self.offline_updates)
                self.logger.record("offline/updates_per_second", (self.offline_updates - start_updates) / elapsed)
                self._metrics.flush(self.logger, "offline", self.offline_updates)
                self.logger.dump(step=self.offline_updates)
        if self.offline_updates >= self.offline_steps:
            self._finish_offline_phase()
        return not stop

    def _finish_offline_phase(self) -> None:
        """Called once, when the offline phase is complete (also with offline_steps=0)."""
        if self.offline_phase_done:
            return
        self._metrics.flush(self.logger, "offline", self.offline_updates)
        self._on_offline_phase_end()
        self.offline_phase_done = True

    def _on_offline_phase_end(self) -> None:
        """Hook for what happens between the phases (DARE fits its behaviour model and scores the dataset)."""

    def _make_offline_eval_env(self) -> gym.Env | VecEnv | None:
        if self._offline_eval_env is not None:
            return self._offline_eval_env
        reason = "the model has no env, and the dataset names none"
        if self.eval_env is not None:
            self._offline_eval_env = gym.make(self.eval_env) if isinstance(self.eval_env, str) else self.eval_env
        elif self.env is not None:
            # the training env's own spec: its id, arguments, time limit and wrappers (SB3's Monitor is added below)
            spec, problem = recreatable_spec(self.env)
            if spec is not None:
                self._offline_eval_env = gym.make(spec)
            reason = f"the training env cannot be re-created ({problem})"
        elif self._offline_data is not None and self._offline_data.env_id is not None:
            self._offline_eval_env = gym.make(self._offline_data.env_id)
        if isinstance(self._offline_eval_env, gym.Env) and not isinstance(self._offline_eval_env, Monitor):
            self._offline_eval_env = Monitor(self._offline_eval_env)
        if self._offline_eval_env is None:
            warnings.warn(
                f"No env to evaluate the offline phase with ({reason}): pass eval_env=... (offline evaluations are skipped)."
            )
            self.offline_eval_freq = 0
        return self._offline_eval_env

    def _offline_evaluate(self) -> None:
        eval_env = self._make_offline_eval_env()
        if eval_env is None:
            return
        result = evaluate_normalized(self, eval_env, self._offline_data, n_eval_episodes=self.offline_eval_episodes)
        self.policy.set_training_mode(True)
        for key, value in result.items():
            self.logger.record(f"offline/{key}", value)
        if self.verbose >= 1:
            score = f", normalized score {result['normalized_score']:.1f}" if "normalized_score" in result else ""
            print(f"Offline update {self.offline_updates}: mean reward {result['mean_reward']:.1f}{score}")

    # ------------------------------------------------------------------ learn

    def learn(
        self: SelfO2OAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfO2OAlgorithm:
        """
        The offline phase (what remains of ``offline_steps``), then ``total_timesteps`` environment steps online.

        :param total_timesteps: environment steps of the online phase (0: offline phase only)
        :param callback: SB3 callbacks (they see env steps); those defining ``on_offline_step()`` also see offline updates
        :param log_interval: dump the online logs every this many episodes
        :param tb_log_name: TensorBoard run name (default: the algorithm's name, as in SB3)
        :param reset_num_timesteps: reset the env-step counter (SB3 semantics)
        :param progress_bar: one progress bar over both phases (needs tqdm and rich)
        :return: the model
        """
        if total_timesteps < 0:
            raise ValueError(f"total_timesteps must be >= 0, got {total_timesteps}.")
        self._show_progress = progress_bar
        if self.env is None:
            if total_timesteps > 0:
                raise ValueError("This model has no env (env=None): only the offline phase can run. Use set_env(env) first.")
            return self.pretrain(callback=callback, progress_bar=progress_bar, tb_log_name=tb_log_name)
        offline_remaining = self._remaining_offline_updates()
        if progress_bar:
            progress = O2OProgressBarCallback(offline_steps=offline_remaining, online_steps=total_timesteps)
            callback = _with_callback(callback, progress)
        run_name = tb_log_name or self.saved_algorithm_name()
        # SB3 resets the env only on these conditions; otherwise the episodes in progress go on, and so must the
        # buffer's record of them (their Monte-Carlo returns are written when they end)
        env_reset = reset_num_timesteps or self._last_obs is None
        total_timesteps, callback = self._setup_learn(total_timesteps, callback, reset_num_timesteps, run_name, False)
        if env_reset:
            self.replay_buffer.start_new_episodes()
        self._prepare_offline_data()
        callback.on_training_start(locals(), globals())
        if not self._run_offline_phase(offline_remaining, callback):
            # a callback stopped training: the rest of the offline phase comes at the next learn()/pretrain()
            callback.on_training_end()
            return self
        self._finish_offline_phase()
        if offline_remaining > 0:
            # SB3's time/fps and time/time_elapsed count from start_time: from here they describe the online phase, not
            # the offline updates before it (those have offline/updates_per_second)
            self.start_time = time.time_ns()

        assert self.env is not None
        while self.num_timesteps < total_timesteps:
            rollout = self.collect_rollouts(
                self.env,
                train_freq=self.train_freq,  # type: ignore[arg-type]  # a TrainFreq once _setup_model ran
                action_noise=self.action_noise,
                callback=callback,
                learning_starts=self.learning_starts,
                replay_buffer=self.replay_buffer,
                log_interval=log_interval,
            )
            if not rollout.continue_training:
                break
            if self.num_timesteps > 0 and self.num_timesteps > self.learning_starts:
                gradient_steps = self.gradient_steps if self.gradient_steps >= 0 else rollout.episode_timesteps
                if gradient_steps > 0:
                    self.train(batch_size=self.batch_size, gradient_steps=gradient_steps)
        callback.on_training_end()
        return self

    # ------------------------------------------------------------------ saving

    @classmethod
    def saved_algorithm_name(cls) -> str:
        """
        The algorithm name this class records in saved zips and checkpoints, and that ``load`` checks: the class's
        name (RL Zoo's subclasses in :mod:`sb3_dare.zoo` record the algorithm they wrap).

        :return: the name
        """
        return cls.__name__

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "_offline_data",
            "_dataset_object",
            "eval_env",
            "_offline_eval_env",
            "_metrics",
            "_show_progress",
            "_checkpoint_total_timesteps",
        ]

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """
        SB3's ``save``, plus the sb3_dare version and the algorithm's name in the zip's data (checked by
        :meth:`load`). A path is written atomically (a temporary file in the same folder, renamed over it), so a
        kill during the save leaves the previous file intact.

        :param path: the file (``.zip`` is added without a suffix, as in SB3) or an open binary file
        :param exclude: attributes not to save, besides the default ones
        :param include: attributes to save even if excluded by default
        """
        setattr(self, VERSION_KEY, installed_version())
        setattr(self, ALGORITHM_KEY, self.saved_algorithm_name())
        base_save = super().save
        if isinstance(path, str | os.PathLike):
            target = sb3_save_path(path)
            if not target.is_dir():  # SB3 handles a folder path itself (it saves next to it)
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(target, lambda file: base_save(file, exclude=exclude, include=include))  # type: ignore[arg-type]
                return
        base_save(path, exclude=exclude, include=include)

    @classmethod
    def load(
        cls: type[SelfO2OAlgorithm],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | str | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfO2OAlgorithm:
        """
        SB3's ``load``, after checks that name the problem and its fix: a missing file (FileNotFoundError); a corrupt
        or truncated zip, a zip not saved by sb3_dare or by an incompatible version, a zip of another algorithm,
        an env with other spaces (ValueError).

        :param path: the saved zip (a path, with or without ``.zip``, or an open binary file)
        :param env: the env to continue in (an env id is made with ``gym.make``); None to only predict
        :param device: torch device
        :param custom_objects: see SB3
        :param print_system_info: see SB3
        :param force_reset: reset the env before training (SB3's default)
        :param kwargs: attributes to change, e.g. ``dataset=`` for a model trained on an in-memory dataset
        :return: the model
        """
        if isinstance(env, str):
            env = gym.make(env)
        check_saved_model(path, cls, env, custom_objects)  # type: ignore[arg-type]
        if env is not None:
            _refuse_vec_normalize(env)
        return super().load(
            path,
            env=env,
            device=device,
            custom_objects=custom_objects,
            print_system_info=print_system_info,
            force_reset=force_reset,
            **kwargs,
        )

    @classmethod
    def load_checkpoint(
        cls: type[SelfO2OAlgorithm],
        path: str | os.PathLike,
        env: GymEnv | None = None,
        device: str = "auto",
        sequence: int | None = None,
        **kwargs: Any,
    ) -> SelfO2OAlgorithm:
        """
        Load the latest checkpoint written by :class:`sb3_dare.common.checkpoint.O2OCheckpointCallback` (model,
        online replay buffer, counters, optimizers, RNG states). Continue with
        ``model.learn(remaining, reset_num_timesteps=False)``, or use :func:`sb3_dare.common.checkpoint.resume`,
        which computes ``remaining``.

        :param path: the checkpoint folder or its manifest ``<name_prefix>_latest.json``
        :param env: the env (default: made from the env id recorded in the manifest); it starts a new episode
        :param device: torch device
        :param sequence: an older kept checkpoint instead of the latest
        :param kwargs: passed to :meth:`load`
        :return: the model
        """
        from sb3_dare.common.checkpoint import load_checkpoint

        return load_checkpoint(path, env=env, device=device, algorithm=cls, sequence=sequence, **kwargs)  # type: ignore[return-value]

    def _get_rng_states(self) -> dict[str, Any]:
        """
        The states of the random number generators training draws from, saved with checkpoints: Python's, NumPy's
        and torch's global generators (CUDA's too), the action space's (warm-up actions) and every
        ``torch.Generator`` attribute of the model (e.g. DARE's score generator). Extend it for other generators.
        """
        states: dict[str, Any] = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": th.get_rng_state(),
            "action_space": self.action_space.np_random.bit_generator.state,
            "generators": {name: value.get_state() for name, value in vars(self).items() if isinstance(value, th.Generator)},
        }
        if th.cuda.is_available():
            states["torch_cuda"] = th.cuda.get_rng_state_all()
        return states

    def _set_rng_states(self, states: dict[str, Any]) -> None:
        """Restore what :meth:`_get_rng_states` returned (after ``load``, which re-seeds every generator)."""
        random.setstate(states["python"])
        np.random.set_state(states["numpy"])
        th.set_rng_state(states["torch"])
        if "torch_cuda" in states and th.cuda.is_available() and len(states["torch_cuda"]) == th.cuda.device_count():
            th.cuda.set_rng_state_all(states["torch_cuda"])
        self.action_space.np_random.bit_generator.state = states["action_space"]
        for name, state in states["generators"].items():
            generator = getattr(self, name, None)
            if isinstance(generator, th.Generator):
                generator.set_state(state)

    def _get_checkpoint_extra_state(self) -> dict[str, Any]:
        """Runtime state that neither the zip nor the replay buffer holds but a resumed run needs (for subclasses)."""
        return {}

    def _set_checkpoint_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`_get_checkpoint_extra_state` returned."""

    def _raise_if_diverged(self) -> None:
        """
        Raise :class:`DivergenceError` if a parameter of the policy (or a saved tensor such as log(alpha)) is NaN or
        infinite. Checkpoints call it before writing, so a diverged model never replaces the last good checkpoint;
        the error names the losses of the current log window that are not finite, and the window.
        """
        tensors = [*self.policy.state_dict().values()]
        tensors += [recursive_getattr(self, name) for name in self._get_torch_save_params()[1]]
        floating = [tensor.detach() for tensor in tensors if isinstance(tensor, th.Tensor) and tensor.is_floating_point()]
        if not floating or bool(th.stack([th.isfinite(tensor).all() for tensor in floating]).all()):
            return
        prefix, window_end = ("train", self._n_updates) if self.offline_phase_done else ("offline", self.offline_updates)
        window_start = self._metrics.window_start
        logger = getattr(self, "_logger", None) or Logger(folder=None, output_formats=[])
        self._metrics.flush(logger, prefix, window_end)  # raises naming the losses when they are not finite
        raise DivergenceError(
            f"Training diverged: the model's parameters became NaN or infinite in the updates {window_start}..{window_end}. "
            "Lower the learning rate, check the rewards' scale (reward_scale) and the dataset for outliers; "
            "the last checkpoint is still usable."
        )

    def load_replay_buffer(self, path: Any, truncate_last_traj: bool = True) -> None:
        """
        Load the online part of a saved replay buffer; the offline part is re-attached at the next learn().

        :param path: the file written by ``save_replay_buffer()`` (a path or an open file)
        :param truncate_last_traj: see SB3 (it concerns ``HerReplayBuffer`` only)
        """
        previous = self.replay_buffer
        super().load_replay_buffer(path, truncate_last_traj=truncate_last_traj)
        loaded = self.replay_buffer
        if not isinstance(loaded, OfflineOnlineReplayBuffer):
            self.replay_buffer = previous  # the model stays as it was
            raise ValueError(
                f"{path} does not hold an OfflineOnlineReplayBuffer (it holds a {type(loaded).__name__}): "
                "pass a file written by save_replay_buffer() of an sb3_dare model."
            )
        # the episodes that were in progress when the buffer was saved cannot go on in this env: without this, a live
        # model's current episode would end them and chain its rewards onto theirs in the Monte-Carlo returns
        loaded.start_new_episodes()
        if self._offline_data is not None:
            self.replay_buffer.attach_offline_data(self._offline_data)


def _with_callback(callback: MaybeCallback, extra: BaseCallback) -> CallbackList:
    """``callback`` (None, one, or a list) followed by ``extra``."""
    if callback is None:
        return CallbackList([extra])
    if isinstance(callback, list):
        return CallbackList([*callback, extra])
    return CallbackList([callback if isinstance(callback, BaseCallback) else ConvertCallback(callback), extra])


def sample_weight_mean(values: th.Tensor, mask: th.Tensor | None) -> th.Tensor:
    """Sum of per-sample ``values`` over the samples in ``mask``, divided by the full batch size (the stratified mean)."""
    if mask is None:
        return values.mean()
    return th.where(mask, values, th.zeros_like(values)).sum() / values.shape[0]
