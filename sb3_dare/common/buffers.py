"""The offline + online replay buffer: the offline data held once, the online part as SB3's ring buffer."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.vec_env import VecNormalize

from sb3_dare.data.offline_data import OfflineData

# scores(observations, actions) -> alignment score per transition; numpy float32 in, numpy out
ScoreFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]


class OfflineOnlineSamples(NamedTuple):
    """
    A mixed batch. The first six fields are those of SB3's ``ReplayBufferSamples``, so SAC-style code keeps working.

    ``dones`` is 1 only for terminations (time-limit truncations keep bootstrapping).
    ``scores`` and ``mc_returns`` are NaN where unknown (not scored yet; online episode not finished yet).
    ``indices``: offline transitions carry their index ``i >= 0``, online ones ``-1 - (row * n_envs + env)``.
    """

    observations: th.Tensor
    actions: th.Tensor
    next_observations: th.Tensor
    dones: th.Tensor
    rewards: th.Tensor
    discounts: th.Tensor | None
    is_offline: th.Tensor
    scores: th.Tensor
    mc_returns: th.Tensor
    indices: th.Tensor


TRUNCATED_RETURNS = ("partial", "reward_floor")


# reward_scale="return_range": rewards scaled so that the dataset's episode returns span this much (IQL's locomotion
# setting: Kostrikov et al.'s 1000 / (max return - min return); d3rlpy's ReturnBasedRewardScaler(multiplier=1000))
RETURN_RANGE = "return_range"
RETURN_RANGE_SPAN = 1000.0


def check_reward_scale(value: float | str) -> None:
    """The ``reward_scale`` option's check (the buffer's and the algorithms' constructors)."""
    if isinstance(value, str):
        if value != RETURN_RANGE:
            raise ValueError(f"reward_scale must be a finite number or {RETURN_RANGE!r}, got {value!r}.")
    elif not np.isfinite(value):
        raise ValueError(f"reward_scale must be finite (or {RETURN_RANGE!r}), got {value}.")


def check_truncated_returns(value: str) -> None:
    """The ``truncated_returns`` option's check (the buffer's and Cal-QL's constructors)."""
    if value not in TRUNCATED_RETURNS:
        raise ValueError(f"truncated_returns must be one of {', '.join(TRUNCATED_RETURNS)}, got {value!r}.")


class OfflineOnlineReplayBuffer(ReplayBuffer):
    """
    Replay buffer for offline-to-online RL.

    The offline dataset is attached once (:meth:`attach_offline_data`) and never copied or overwritten; the
    online transitions go into SB3's ring buffer (``buffer_size`` is the online capacity, ``size()`` the online
    size, so ``learning_starts`` keeps its SB3 meaning). Every transition, offline and online, carries a
    Monte-Carlo return-to-go (online: computed when its episode ends) and an alignment score (written when
    the transition enters the buffer, through the scoring function an algorithm sets).

    Online observations are stored as float32 (SB3 would keep MuJoCo's float64), which halves the memory.

    :param buffer_size: capacity of the online part
    :param observation_space: observation space
    :param action_space: action space
    :param device: device of the sampled tensors
    :param n_envs: number of parallel envs
    :param optimize_memory_usage: not supported (must be False)
    :param handle_timeout_termination: time-limit truncations do not stop bootstrapping (must stay True)
    :param offline_ratio: fraction of each batch drawn from the offline data once online data exists
    :param gamma: discount for the Monte-Carlo returns-to-go
    :param reward_scale: sampled rewards (and returns-to-go) use ``reward * reward_scale + reward_bias``; ``"return_range"``:
        the scale that makes the offline dataset's episode returns span 1000 (``1000 / (max - min)``, IQL's setting
        for locomotion), computed when the data is attached and kept in ``reward_scale``
    :param reward_bias: see ``reward_scale``
    :param score_batch_size: online transitions are scored in batches of this many (a sampled transition
        that is not scored yet is scored at once)
    :param truncated_returns: the returns-to-go of an episode cut short (time limit, end of the data): ``"partial"``,
        the sum up to the cut (the Cal-QL reference's choice; a lower bound of the true return only when the rewards
        after the cut would not be negative); ``"reward_floor"``, that sum plus the discounted value of continuing
        with the lowest reward seen (of the offline data and of the episode) at every step, a lower bound whenever
        no later reward is lower (with AntMaze's all-failure episodes it gives the reference's ``r_neg / (1 - gamma)``)
    """

    observations: np.ndarray
    next_observations: np.ndarray
    # class defaults: a buffer pickled before these attributes existed reads them as the defaults
    truncated_returns: str = "partial"
    offline_reward_floor: float | None = None
    reward_scale_setting: float | str | None = None  # None: the pickle's reward_scale is the setting
    offline_data_fingerprint: str | None = None  # the content fingerprint of the attached data (and of its scores)

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        offline_ratio: float = 0.5,
        gamma: float = 0.99,
        reward_scale: float | str = 1.0,
        reward_bias: float = 0.0,
        score_batch_size: int = 1000,
        truncated_returns: str = "partial",
    ):
        check_reward_scale(reward_scale)
        check_truncated_returns(truncated_returns)
        if optimize_memory_usage:
            raise ValueError(
                "OfflineOnlineReplayBuffer does not support optimize_memory_usage=True: it stores next observations "
                "explicitly (offline data has no following row). Use optimize_memory_usage=False."
            )
        if not handle_timeout_termination:
            raise ValueError("OfflineOnlineReplayBuffer needs handle_timeout_termination=True (truncations must bootstrap).")
        if not 0.0 <= offline_ratio <= 1.0:
            raise ValueError(f"offline_ratio must be in [0, 1], got {offline_ratio}.")
        if not isinstance(observation_space, spaces.Box):
            raise ValueError(
                f"OfflineOnlineReplayBuffer supports Box observations, got {observation_space}. "
                "Wrap Dict observations with gymnasium.wrappers.FlattenObservation."
            )
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device=device,
            n_envs=n_envs,
            optimize_memory_usage=False,
            handle_timeout_termination=True,
        )
        # float32 storage for the online part (SB3 keeps the space's dtype, float64 for MuJoCo)
        self.observations = np.zeros((self.buffer_size, self.n_envs, *self.obs_shape), dtype=np.float32)
        self.next_observations = np.zeros((self.buffer_size, self.n_envs, *self.obs_shape), dtype=np.float32)
        self.online_mc_returns = np.full((self.buffer_size, self.n_envs), np.nan, dtype=np.float32)
        self.online_scores = np.full((self.buffer_size, self.n_envs), np.nan, dtype=np.float32)
        # how many transitions the current episode of each env column holds (for MC returns at its end)
        self.episode_lengths = np.zeros(self.n_envs, dtype=np.int64)
        self.offline_ratio = offline_ratio
        self.gamma = gamma
        # the setting, and the number used: "return_range" is resolved when the offline data is attached
        self.reward_scale_setting: float | str = reward_scale
        self.reward_scale = math.nan if isinstance(reward_scale, str) else float(reward_scale)
        self.reward_bias = reward_bias
        self.truncated_returns = truncated_returns
        # the lowest transformed offline reward, the floor of "reward_floor" returns (None: no offline data attached)
        self.offline_reward_floor: float | None = None
        self.score_batch_size = score_batch_size
        self.score_function: ScoreFunction | None = None
        self._pending_scores: list[int] = []  # flat online positions (row * n_envs + env) not scored yet
        self.offline_source: str | None = None
        self._clear_offline()

    # ------------------------------------------------------------------ offline part

    def _clear_offline(self) -> None:
        self.offline_data: OfflineData | None = None
        self.offline_observations: np.ndarray | None = None
        self.offline_next_observations: np.ndarray | None = None
        self.offline_actions: np.ndarray | None = None
        self.offline_rewards: np.ndarray | None = None
        self.offline_dones: np.ndarray | None = None
        self.offline_mc_returns: np.ndarray | None = None
        self.offline_scores: np.ndarray | None = None

    @property
    def n_offline(self) -> int:
        """Number of offline transitions attached (0 before :meth:`attach_offline_data`)."""
        return 0 if self.offline_rewards is None else len(self.offline_rewards)

    def attach_offline_data(self, data: OfflineData) -> None:
        """
        Hold the offline dataset (its arrays are shared, not copied).

        Offline scores already present (loaded with the buffer) are kept when they belong to the same data (its
        content fingerprint); otherwise they are discarded (with a warning if there were any), and, when a score
        function is set, the data is scored at once.

        :param data: the validated offline data
        """
        if data.observations.shape[1:] != self.obs_shape:
            raise ValueError(
                f"Offline data has observations of shape {data.observations.shape[1:]}, the buffer expects {self.obs_shape}."
            )
        if data.action_dim != self.action_dim:
            raise ValueError(f"Offline data has {data.action_dim}-dim actions, the buffer expects {self.action_dim}.")
        fingerprint = data.fingerprint()
        kept_scores = None
        if self.offline_scores is not None and len(self.offline_scores) == len(data):
            if self.offline_data_fingerprint in (None, fingerprint):  # None: pickled before fingerprints were kept
                kept_scores = self.offline_scores
            elif not np.isnan(self.offline_scores).all():
                warnings.warn(
                    f"The buffer's offline scores belong to another dataset of the same size (content fingerprint "
                    f"{self.offline_data_fingerprint}, this one {fingerprint}): they are discarded and the data is scored "
                    "again.",
                    stacklevel=2,
                )
        self.offline_data_fingerprint = fingerprint
        if self.reward_scale_setting == RETURN_RANGE:
            self.reward_scale = data.return_range_scale(RETURN_RANGE_SPAN)
        self.offline_data = data
        self.offline_source = data.reference  # None for arrays: re-attaching then needs the data itself
        self.offline_observations = data.observations
        self.offline_next_observations = data.next_observations
        self.offline_actions = data.actions
        self.offline_rewards = data.rewards
        self.offline_dones = data.terminations.astype(np.float32)
        if self.truncated_returns == "reward_floor":
            self.offline_reward_floor = data.min_reward(self.reward_scale, self.reward_bias)
            self.offline_mc_returns = data.discounted_returns(
                self.gamma, self.reward_scale, self.reward_bias, reward_floor=self.offline_reward_floor
            )
        elif np.isclose(data.gamma, self.gamma) and self.reward_scale == 1.0 and self.reward_bias == 0.0:
            self.offline_mc_returns = data.mc_returns
        else:
            self.offline_mc_returns = data.discounted_returns(self.gamma, self.reward_scale, self.reward_bias)
        self.offline_scores = kept_scores if kept_scores is not None else np.full(len(data), np.nan, dtype=np.float32)
        if kept_scores is None and self.score_function is not None:
            self.set_score_function(self.score_function)  # new data under a scoring algorithm: scored now

    def reattach_offline_data(self, data: OfflineData | None = None, **load_kwargs: Any) -> None:
        """
        Re-attach the offline part after :meth:`load_replay_buffer` (the pickle holds only its reference and scores).

        :param data: the offline data; default: loaded again from ``offline_source``
        :param load_kwargs: passed to :func:`sb3_dare.data.load_offline_data`
        """
        if data is None:
            if self.offline_source is None:
                raise ValueError("This buffer has no offline data reference; pass the OfflineData to re-attach.")
            from sb3_dare.data import load_offline_data

            data = load_offline_data(self.offline_source, gamma=self.gamma, **load_kwargs)
        self.attach_offline_data(data)

    # ------------------------------------------------------------------ scoring

    def set_score_function(self, score_function: ScoreFunction | None) -> None:
        """
        Set the function that gives each transition its alignment score when it enters the buffer, and score the
        offline transitions that have no score yet. Online transitions without a score (for example in a loaded
        buffer) are queued oldest first, as they were when they entered: they are scored, like new ones, when
        ``score_batch_size`` of them wait or one of them is sampled, so a resumed run scores them in the same batches
        and with the same random draws as the run it continues. Scores already present are kept.

        :param score_function: ``f(observations, actions) -> scores`` on float32 numpy batches, or None
        """
        self.score_function = score_function
        if score_function is None:
            return
        if self.offline_observations is not None and self.offline_scores is not None:
            assert self.offline_actions is not None
            missing = np.flatnonzero(np.isnan(self.offline_scores))
            if len(missing) == len(self.offline_scores):
                self.offline_scores = self._score(self.offline_observations, self.offline_actions)
            elif len(missing):
                self.offline_scores[missing] = self._score(self.offline_observations[missing], self.offline_actions[missing])
        unscored = np.flatnonzero(np.isnan(self.online_scores[: self.size()].reshape(-1)))
        rows, envs = np.divmod(unscored, self.n_envs)
        # the ring's oldest row is pos once it is full: queue by age, then env, the order in which add() queued them
        age = (rows - self.pos) % self.buffer_size if self.full else rows
        self._pending_scores = unscored[np.argsort(age * self.n_envs + envs, kind="stable")].tolist()
        if len(self._pending_scores) >= self.score_batch_size:
            self.flush_scores()

    def _score(self, observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        assert self.score_function is not None
        scores = np.asarray(self.score_function(observations, actions), dtype=np.float32).reshape(-1)
        if len(scores) != len(observations):
            raise ValueError(f"The score function returned {len(scores)} scores for {len(observations)} transitions.")
        bad = np.flatnonzero(~np.isfinite(scores))
        if len(bad):
            raise ValueError(
                f"The score function returned {len(bad)} non-finite scores for {len(observations)} transitions (the first "
                f"for observation {observations[bad[0]].tolist()} and action {actions[bad[0]].tolist()}): check the "
                "transitions for non-finite values, and the behaviour model for divergence."
            )
        return scores

    def flush_scores(self) -> None:
        """Score every online transition that is waiting for its score, in one batch."""
        if self.score_function is None or not self._pending_scores:
            return
        flat = np.asarray(self._pending_scores, dtype=np.int64)
        self._pending_scores = []
        rows, envs = np.divmod(flat, self.n_envs)
        self.online_scores[rows, envs] = self._score(self.observations[rows, envs], self.actions[rows, envs])

    # ------------------------------------------------------------------ online part

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Store one step of every env (SB3's signature); finish the MC returns of episodes that end here."""
        position = self.pos
        if self.full:
            # the transitions about to be overwritten lose their pending score
            if self._pending_scores:
                overwritten = set(range(position * self.n_envs, (position + 1) * self.n_envs))
                self._pending_scores = [flat for flat in self._pending_scores if flat not in overwritten]
        self.online_mc_returns[position] = np.nan
        self.online_scores[position] = np.nan
        super().add(obs, next_obs, action, reward, done, infos)
        self.episode_lengths += 1
        if self.score_function is not None:
            self._pending_scores.extend(range(position * self.n_envs, (position + 1) * self.n_envs))
            if len(self._pending_scores) >= self.score_batch_size:
                self.flush_scores()
        for env_index in np.flatnonzero(np.asarray(done).reshape(-1)):
            truncated = bool(infos[env_index].get("TimeLimit.truncated", False))  # SB3's VecEnv key: cut, not terminal
            self._finish_episode(int(env_index), position, truncated)

    def _finish_episode(self, env_index: int, last_position: int, truncated: bool = False) -> None:
        """Write the discounted return-to-go of the episode of ``env_index`` that ended (or was cut) at ``last_position``."""
        length = int(min(self.episode_lengths[env_index], self.buffer_size))
        self.episode_lengths[env_index] = 0
        rows = (last_position - np.arange(length)) % self.buffer_size  # newest first
        rewards = self.rewards[rows, env_index].astype(np.float64) * self.reward_scale + self.reward_bias
        returns = np.empty(length, dtype=np.float64)
        running = 0.0  # the value after the episode's end: 0 after a terminal state, and with "partial" returns
        if truncated and self.truncated_returns == "reward_floor" and length:
            floor = (
                float(rewards.min())
                if self.offline_reward_floor is None
                else min(float(rewards.min()), self.offline_reward_floor)
            )
            running = floor / (1.0 - self.gamma)
        for step, reward in enumerate(rewards.tolist()):  # one pass per finished episode, not per update
            running = reward + self.gamma * running
            returns[step] = running
        self.online_mc_returns[rows, env_index] = returns

    def start_new_episodes(self) -> None:
        """Forget the episodes in progress (call when the env is reset outside an episode end, e.g. a new ``learn()``)."""
        self.episode_lengths[:] = 0

    # ------------------------------------------------------------------ sampling

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> OfflineOnlineSamples:  # type: ignore[override]
        """
        Draw a mixed batch: ``round(batch_size * offline_ratio)`` offline transitions, the rest online.

        All samples are offline while the online part is empty, and all online when no offline data is attached.

        :param batch_size: number of transitions
        :param env: must be None (VecNormalize is not supported)
        :return: the batch as torch tensors on ``self.device``
        """
        if env is not None:
            raise ValueError(
                "OfflineOnlineReplayBuffer does not support VecNormalize: use the algorithm's normalize_observations=True, "
                "which normalises with the offline dataset's statistics inside the policy."
            )
        online_size = self.size()
        if math.isnan(self.reward_scale):
            raise ValueError(
                f"reward_scale={RETURN_RANGE!r} is computed from the offline data's episode returns: attach the offline "
                "data (attach_offline_data) before sampling, or give a number."
            )
        if self.n_offline == 0 and online_size == 0:
            raise ValueError("The replay buffer is empty: attach offline data or collect transitions before sampling.")
        if online_size == 0:
            n_offline = batch_size
        elif self.n_offline == 0:
            n_offline = 0
        else:
            n_offline = round(batch_size * self.offline_ratio)
        offline_indices = np.random.randint(0, self.n_offline, size=n_offline) if n_offline else np.empty(0, dtype=np.int64)
        n_online = batch_size - n_offline
        if n_online:
            # every stored row is valid, also once the ring has wrapped (next observations are stored explicitly)
            rows = np.random.randint(0, online_size, size=n_online)
            envs = np.random.randint(0, self.n_envs, size=n_online)
        else:
            rows = envs = np.empty(0, dtype=np.int64)
        return self._get_mixed_samples(offline_indices, rows, envs)

    def _get_mixed_samples(self, offline_indices: np.ndarray, rows: np.ndarray, envs: np.ndarray) -> OfflineOnlineSamples:
        if len(rows) and self.score_function is not None and self._pending_scores:
            # a score is never used before it exists: score what is waiting if any sampled transition needs it
            if np.isnan(self.online_scores[rows, envs]).any():
                self.flush_scores()
        parts_online: dict[str, np.ndarray] = {}
        if len(rows) or not len(offline_indices):
            parts_online = {
                "observations": self.observations[rows, envs],
                "actions": self.actions[rows, envs],
                "next_observations": self.next_observations[rows, envs],
                "dones": self.dones[rows, envs] * (1.0 - self.timeouts[rows, envs]),
                "rewards": self.rewards[rows, envs] * self.reward_scale + self.reward_bias,
                "mc_returns": self.online_mc_returns[rows, envs],
                "scores": self.online_scores[rows, envs],
            }
        if len(offline_indices):
            assert self.offline_observations is not None and self.offline_next_observations is not None
            assert self.offline_actions is not None and self.offline_rewards is not None and self.offline_dones is not None
            assert self.offline_mc_returns is not None and self.offline_scores is not None
            parts_offline = {
                "observations": self.offline_observations[offline_indices],
                "actions": self.offline_actions[offline_indices],
                "next_observations": self.offline_next_observations[offline_indices],
                "dones": self.offline_dones[offline_indices],
                "rewards": self.offline_rewards[offline_indices] * self.reward_scale + self.reward_bias,
                "mc_returns": self.offline_mc_returns[offline_indices],
                "scores": self.offline_scores[offline_indices],
            }
            # offline-only batches (the offline phase) are used as they are, without a concatenation
            batch = (
                {key: np.concatenate([value, parts_online[key]]) for key, value in parts_offline.items()}
                if parts_online
                else parts_offline
            )
        else:
            batch = parts_online
        if self.score_function is not None and np.isnan(batch["scores"]).any():
            # every stored transition is scored once a score function is set: a NaN here would silently stop DARE's
            # exchange (a NaN fit compares False everywhere) and surface much later as a NaN diagnostic
            raise RuntimeError(
                "A sampled transition has no alignment score although the buffer scores its transitions: its scores were "
                "changed outside the buffer (set to NaN). Score every transition again with "
                "replay_buffer.set_score_function(replay_buffer.score_function)."
            )
        n_offline = len(offline_indices)
        is_offline = np.zeros(n_offline + len(rows), dtype=bool)
        is_offline[:n_offline] = True
        indices = np.concatenate([offline_indices, -1 - (rows * self.n_envs + envs)]).astype(np.int64)

        def to_tensor(array: np.ndarray, dtype: th.dtype = th.float32) -> th.Tensor:
            return th.as_tensor(array, device=self.device).to(dtype)

        return OfflineOnlineSamples(
            observations=to_tensor(batch["observations"]),
            actions=to_tensor(batch["actions"]),
            next_observations=to_tensor(batch["next_observations"]),
            dones=to_tensor(batch["dones"]).reshape(-1, 1),
            rewards=to_tensor(batch["rewards"]).reshape(-1, 1),
            discounts=None,
            is_offline=to_tensor(is_offline, th.bool),
            scores=to_tensor(batch["scores"]),
            mc_returns=to_tensor(batch["mc_returns"]),
            indices=to_tensor(indices, th.int64),
        )

    # ------------------------------------------------------------------ pickling (save_replay_buffer)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the online part with its extra arrays; the offline part travels as its reference and scores only."""
        state = self.__dict__.copy()
        for key in (
            "offline_data",
            "offline_observations",
            "offline_next_observations",
            "offline_actions",
            "offline_rewards",
            "offline_dones",
            "offline_mc_returns",
        ):
            state[key] = None
        # the scoring function usually holds a model: the algorithm sets it again after loading
        state["score_function"] = None
        return state
