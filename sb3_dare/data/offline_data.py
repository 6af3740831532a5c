"""The in-memory form of an offline dataset: flat float32 transition arrays plus episode structure."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces

if TYPE_CHECKING:
    from stable_baselines3.common.buffers import ReplayBuffer

# Dataset actions exactly on the bounds are legal; anything further out than this is reported and clipped.
ACTION_BOUND_TOLERANCE = 1e-5


@dataclass
class OfflineData:
    """
    A validated offline dataset as flat transition arrays, the form every algorithm of sb3_dare trains on.

    Build it with :func:`sb3_dare.data.load_offline_data` (Minari ids, folders and datasets),
    :meth:`from_arrays` (your own (s, a, r, s') arrays) or :meth:`from_replay_buffer` (an SB3 replay buffer).

    Actions are stored rescaled to [-1, 1] from the action space's bounds, exactly as SB3 stores
    actions in its replay buffers, so that policies trained on them act in the env like SB3 policies.

    :param observations: (N, obs_dim) float32 observations
    :param actions: (N, action_dim) float32 actions, rescaled to [-1, 1]
    :param rewards: (N,) float32 rewards
    :param next_observations: (N, obs_dim) float32 next observations
    :param terminations: (N,) bool, True where the episode ended in a terminal state (no bootstrapping)
    :param truncations: (N,) bool, True where the episode was cut (time limit): bootstrapping continues
    :param episode_starts: (n_episodes,) int64 index of the first transition of each episode, ascending, starting at 0
    :param gamma: discount used for ``mc_returns``
    :param mc_returns: (N,) float32 discounted return-to-go of each transition within its episode
    :param observation_space: Box of the (flattened) observations
    :param action_space: the environment's original action Box (its bounds were used for rescaling)
    :param ref_min_score: return of a random policy, for normalised scores (``None`` if the dataset has none)
    :param ref_max_score: return of an expert policy, for normalised scores (``None`` if the dataset has none)
    :param source: where the data came from (a Minari id, a folder, or a label given to arrays), for messages
    :param env_id: the Gymnasium id of the environment the data was recorded in, when known
    :param metadata: the dataset's scalar metadata (Minari datasets)
    :param reference: what :func:`sb3_dare.data.load_offline_data` can load the same data from again (a Minari id or an
        absolute folder path), saved with a model trained on it; None for arrays and replay buffers, which a loaded
        model must be given again (``load(path, dataset=data)``)
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    episode_starts: np.ndarray
    gamma: float
    mc_returns: np.ndarray
    observation_space: spaces.Box
    action_space: spaces.Box
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    source: str | None = None
    env_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None

    def __len__(self) -> int:
        return len(self.rewards)

    def __repr__(self) -> str:
        return (
            f"OfflineData(source={self.source!r}, transitions={len(self)}, episodes={self.n_episodes}, "
            f"obs_dim={self.observation_dim}, action_dim={self.action_dim}, "
            f"ref_min_score={self.ref_min_score}, ref_max_score={self.ref_max_score})"
        )

    @property
    def n_episodes(self) -> int:
        return len(self.episode_starts)

    @property
    def observation_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def episode_lengths(self) -> np.ndarray:
        """Number of transitions in each episode."""
        return np.diff(np.append(self.episode_starts, len(self)))

    @property
    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each episode (as stored, without reward scaling)."""
        return np.add.reduceat(self.rewards.astype(np.float64), self.episode_starts)

    def return_range_scale(self, span: float = 1000.0) -> float:
        """
        The reward scale that makes the episodes' undiscounted returns span ``span``: ``span / (max - min)`` (IQL's
        normalisation for locomotion datasets, Kostrikov et al. 2021, with ``span`` 1000).

        :param span: the range the scaled returns cover
        :return: the scale
        """
        returns = self.episode_returns
        spread = float(returns.max() - returns.min())
        if not spread > 0:
            raise ValueError(
                f"Dataset {self.source!r}: reward_scale='return_range' needs episodes with different "
                f"returns (its {self.n_episodes} episodes all return {float(returns[0]):g}); give reward_scale as a number."
            )
        return span / spread

    def normalized_score(self, returns: float | np.ndarray) -> float | np.ndarray:
        """
        D4RL-style normalised score: ``100 * (R - ref_min_score) / (ref_max_score - ref_min_score)``.

        :param returns: one undiscounted episode return or an array of them
        :return: the normalised score(s), same shape as ``returns``
        """
        missing = [name for name in ("ref_min_score", "ref_max_score") if getattr(self, name) is None]
        if missing:
            raise ValueError(
                f"Dataset {self.source!r} has no {' and no '.join(missing)} in its metadata, so normalised scores "
                "cannot be computed. Build it with `python -m sb3_dare.data build`, which stores both, or pass "
                "ref_min_score=... and ref_max_score=... to OfflineData.from_arrays."
            )
        assert self.ref_min_score is not None and self.ref_max_score is not None
        if self.ref_max_score == self.ref_min_score:
            raise ValueError(f"Dataset {self.source!r} has ref_max_score == ref_min_score == {self.ref_min_score}.")
        scores = (
            100.0 * (np.asarray(returns, dtype=np.float64) - self.ref_min_score) / (self.ref_max_score - self.ref_min_score)
        )
        return float(scores) if np.ndim(scores) == 0 else scores

    def discounted_returns(
        self, gamma: float, reward_scale: float = 1.0, reward_bias: float = 0.0, reward_floor: float | None = None
    ) -> np.ndarray:
        """
        Discounted return-to-go of every transition within its episode, for transformed rewards.

        :param gamma: discount factor
        :param reward_scale: rewards are transformed as ``reward * reward_scale + reward_bias`` first
        :param reward_bias: see ``reward_scale``
        :param reward_floor: None: an episode cut short (by a time limit, or by the end of the data) ends where it
            was cut. A (transformed) reward: it is assumed to continue with this reward at every step, so its returns
            get ``gamma^k * reward_floor / (1 - gamma)`` added (``k`` steps from the transition to the cut), a lower
            bound of the true return whenever no later reward is below the floor. Episodes that end in a terminal
            state are exact either way.
        :return: (N,) float32 returns-to-go
        """
        rewards = self.transformed_rewards(reward_scale, reward_bias)
        if reward_floor is not None:
            last = np.append(self.episode_starts[1:], len(self)) - 1
            cut = last[~self.terminations[last]]
            # the continuation after the cut enters as one more discounted step of the last transition
            rewards[cut] += gamma * reward_floor / (1.0 - gamma)
        return discounted_returns_to_go(rewards, self.episode_starts, gamma)

    def transformed_rewards(self, reward_scale: float = 1.0, reward_bias: float = 0.0) -> np.ndarray:
        """:return: (N,) float64 rewards as the algorithms use them, ``reward * reward_scale + reward_bias``"""
        return self.rewards.astype(np.float64) * reward_scale + reward_bias

    def min_reward(self, reward_scale: float = 1.0, reward_bias: float = 0.0) -> float:
        """
        The lowest transformed reward of the data (the default floor of Cal-QL's ``truncated_returns="reward_floor"``).

        :param reward_scale: rewards are transformed as ``reward * reward_scale + reward_bias``
        :param reward_bias: see ``reward_scale``
        """
        if len(self) == 0:
            return 0.0
        return float(self.transformed_rewards(reward_scale, reward_bias).min())

    def fingerprint(self) -> str:
        """
        A short hash of the content (sizes, every reward, flag and action, every 97th observation, the reference
        scores): two datasets with the same id but other data (another MINARI_DATASETS_PATH, a rebuilt dataset) differ.
        """
        digest = hashlib.sha256()
        digest.update(np.array([len(self), self.observations.shape[1], self.actions.shape[1]], dtype=np.int64).tobytes())
        for array in (self.rewards, self.terminations, self.truncations, self.actions, self.observations[::97]):
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(repr((self.ref_min_score, self.ref_max_score, self.env_id)).encode())
        return digest.hexdigest()[:16]

    def observation_statistics(self, epsilon: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
        """
        Mean and standard deviation of the observations, for state normalisation.

        :param epsilon: floor added to the standard deviation so that constant features do not divide by zero
        :return: (mean, std) as float32 arrays of shape (obs_dim,)
        """
        mean = self.observations.mean(axis=0, dtype=np.float64)
        std = self.observations.std(axis=0, dtype=np.float64) + epsilon
        return mean.astype(np.float32), std.astype(np.float32)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_arrays(
        cls,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_observations: np.ndarray,
        terminations: np.ndarray,
        truncations: np.ndarray | None = None,
        *,
        episode_starts: np.ndarray | None = None,
        action_space: spaces.Box | None = None,
        observation_space: spaces.Box | None = None,
        gamma: float = 0.99,
        ref_min_score: float | None = None,
        ref_max_score: float | None = None,
        source: str | None = None,
        env_id: str | None = None,
        actions_are_scaled: bool = False,
    ) -> OfflineData:
        """
        Build offline data from your own transition arrays.

        Episode boundaries are taken from ``episode_starts`` when given; otherwise an episode ends at
        every termination or truncation, and also wherever ``next_observations[t]`` differs from
        ``observations[t + 1]`` (datasets that forgot to mark time limits).

        :param observations: (N, obs_dim) observations
        :param actions: (N, action_dim) actions in the units of ``action_space`` (rescaled to [-1, 1] here); without
            ``action_space``, actions already in [-1, 1] (values outside are clipped, with a warning)
        :param rewards: (N,) rewards
        :param next_observations: (N, obs_dim) observations after each action
        :param terminations: (N,) True where the episode reached a terminal state
        :param truncations: (N,) True where the episode was cut by a time limit (default: none)
        :param episode_starts: optional index of the first transition of each episode
        :param action_space: the env's action Box; default: the Box spanned by [-1, 1] (actions already scaled)
        :param observation_space: the observation Box; default: unbounded
        :param gamma: discount for the Monte-Carlo returns-to-go
        :param ref_min_score: random-policy return, for normalised scores
        :param ref_max_score: expert-policy return, for normalised scores
        :param source: a name for the data (shown in messages)
        :param env_id: the Gymnasium id of the env the data comes from
        :param actions_are_scaled: True if ``actions`` are already in [-1, 1] (SB3 replay buffer convention)
        :return: validated offline data
        """
        observations = _as_2d("observations", observations)
        next_observations = _as_2d("next_observations", next_observations)
        actions = _as_2d("actions", actions)
        n_transitions = len(observations)
        if n_transitions == 0:
            raise ValueError(
                f"Dataset {source!r} is empty: it holds no transitions. Check the dataset id or the arrays passed."
            )
        rewards = np.asarray(rewards)
        terminations = _flags(source, "terminations", terminations)
        truncations = (
            np.zeros(n_transitions, dtype=bool) if truncations is None else _flags(source, "truncations", truncations)
        )
        for name, array in (
            ("actions", actions),
            ("rewards", rewards),
            ("next_observations", next_observations),
            ("terminations", terminations),
            ("truncations", truncations),
        ):
            if len(array) != n_transitions:
                raise ValueError(
                    f"Dataset {source!r}: '{name}' has {len(array)} entries but 'observations' has {n_transitions}; "
                    "all transition arrays must have the same length."
                )
        if next_observations.shape[1:] != observations.shape[1:]:
            raise ValueError(
                f"Dataset {source!r}: next_observations have shape {next_observations.shape[1:]} per transition, "
                f"observations {observations.shape[1:]}; they must match."
            )
        if rewards.ndim != 1:
            raise ValueError(f"Dataset {source!r}: rewards must be one scalar per transition, got shape {rewards.shape}.")
        _check_finite(source, observations=observations, next_observations=next_observations, actions=actions, rewards=rewards)
        if not np.issubdtype(rewards.dtype, np.floating):
            # Some Minari datasets (InvertedPendulum) store integer rewards.
            rewards = rewards.astype(np.float32)

        if action_space is None:
            action_space = spaces.Box(-1.0, 1.0, shape=actions.shape[1:], dtype=np.float32)
            actions_are_scaled = True
        scaled_actions = _validated_scaled_actions(source, actions, action_space, actions_are_scaled)

        if observation_space is None:
            observation_space = spaces.Box(-np.inf, np.inf, shape=observations.shape[1:], dtype=np.float32)
        elif observation_space.shape != observations.shape[1:]:
            raise ValueError(
                f"Dataset {source!r}: observations have shape {observations.shape[1:]} "
                f"but the observation space is {observation_space}."
            )
        else:
            _warn_outside_box(source, observations, observation_space)

        terminations = terminations.astype(bool)
        truncations = truncations.astype(bool) & ~terminations
        if episode_starts is None:
            episode_starts = infer_episode_starts(observations, next_observations, terminations, truncations)
        else:
            episode_starts = np.asarray(episode_starts, dtype=np.int64)
            if len(episode_starts) == 0 or episode_starts[0] != 0 or np.any(np.diff(episode_starts) <= 0):
                raise ValueError(
                    f"Dataset {source!r}: episode_starts must be strictly increasing indices starting at 0, got "
                    f"{episode_starts[:5]}..."
                )
            if episode_starts[-1] >= n_transitions:
                raise ValueError(f"Dataset {source!r}: episode_starts go past the last transition ({n_transitions}).")

        rewards32 = rewards.astype(np.float32)
        return cls(
            observations=observations.astype(np.float32),
            actions=scaled_actions.astype(np.float32),
            rewards=rewards32,
            next_observations=next_observations.astype(np.float32),
            terminations=terminations,
            truncations=truncations,
            episode_starts=episode_starts,
            gamma=float(gamma),
            mc_returns=discounted_returns_to_go(rewards32.astype(np.float64), episode_starts, gamma),
            observation_space=spaces.Box(
                low=np.asarray(observation_space.low, dtype=np.float32),
                high=np.asarray(observation_space.high, dtype=np.float32),
                dtype=np.float32,
            ),
            action_space=action_space,
            ref_min_score=None if ref_min_score is None else float(ref_min_score),
            ref_max_score=None if ref_max_score is None else float(ref_max_score),
            source=source,
            env_id=env_id,
        )

    @classmethod
    def from_replay_buffer(
        cls,
        buffer: ReplayBuffer,
        *,
        gamma: float = 0.99,
        ref_min_score: float | None = None,
        ref_max_score: float | None = None,
        source: str | None = "replay_buffer",
        env_id: str | None = None,
    ) -> OfflineData:
        """
        Turn the transitions of an SB3 replay buffer into offline data (for example SAC's buffer after training).

        SB3 stores actions already rescaled to [-1, 1] and marks time-limit ends in ``timeouts``.
        Each env column is read in chronological order (oldest first when the ring buffer has wrapped).

        :param buffer: an SB3 ``ReplayBuffer`` (not a ``DictReplayBuffer``)
        :param gamma: discount for the Monte-Carlo returns-to-go
        :param ref_min_score: random-policy return, for normalised scores
        :param ref_max_score: expert-policy return, for normalised scores
        :param source: a name for the data
        :param env_id: the Gymnasium id of the env the data comes from
        :return: validated offline data
        """
        if isinstance(buffer.observations, dict):
            raise ValueError("from_replay_buffer supports ReplayBuffer with array observations, not DictReplayBuffer.")
        if not isinstance(buffer.action_space, spaces.Box):
            raise ValueError(f"Replay buffer has action space {buffer.action_space}: only Box actions are supported.")
        size = buffer.buffer_size if buffer.full else buffer.pos
        order = np.arange(size)
        if buffer.full:
            order = np.roll(order, -buffer.pos)
        next_observations = getattr(buffer, "next_observations", None)
        if next_observations is None:  # optimize_memory_usage=True keeps only one array
            if buffer.full:
                # the oldest row's observation was overwritten by its predecessor's next observation (SB3's own
                # sample() skips that row too)
                order, size = order[1:], size - 1
            if not np.asarray(buffer.timeouts).any():
                warnings.warn(
                    "The replay buffer uses optimize_memory_usage=True, with which SB3 records no time-limit ends: "
                    "every episode end is read as a termination. Collect with optimize_memory_usage=False to keep "
                    "truncations apart.",
                    stacklevel=2,
                )
            next_observations = buffer.observations[(order + 1) % buffer.buffer_size]
        else:
            next_observations = next_observations[order]
        columns = range(buffer.n_envs)
        obs = np.concatenate([buffer.observations[order, env].reshape(size, -1) for env in columns])
        next_obs = np.concatenate([next_observations[:, env].reshape(size, -1) for env in columns])
        actions = np.concatenate([buffer.actions[order, env].reshape(size, -1) for env in columns])
        rewards = np.concatenate([buffer.rewards[order, env] for env in columns])
        dones = np.concatenate([buffer.dones[order, env] for env in columns]).astype(bool)
        timeouts = np.concatenate([buffer.timeouts[order, env] for env in columns]).astype(bool)
        # Each env column is its own sequence of episodes: a new column starts a new episode.
        column_starts = np.arange(buffer.n_envs) * size
        episode_starts = np.union1d(column_starts, infer_episode_starts(obs, next_obs, dones & ~timeouts, dones & timeouts))
        return cls.from_arrays(
            obs,
            actions,
            rewards,
            next_obs,
            terminations=dones & ~timeouts,
            truncations=dones & timeouts,
            episode_starts=episode_starts,
            action_space=buffer.action_space,
            gamma=gamma,
            ref_min_score=ref_min_score,
            ref_max_score=ref_max_score,
            source=source,
            env_id=env_id,
            actions_are_scaled=True,
        )


# ---------------------------------------------------------------------- array helpers


def scale_actions(actions: np.ndarray, action_space: spaces.Box) -> np.ndarray:
    """
    Rescale actions from the Box bounds to [-1, 1], as SB3's ``policy.scale_action`` does.

    :param actions: (N, action_dim) actions in env units
    :param action_space: the env's action Box (finite bounds)
    :return: float32 actions in [-1, 1] (values outside the bounds map outside [-1, 1])
    """
    low = np.asarray(action_space.low, dtype=np.float64)
    high = np.asarray(action_space.high, dtype=np.float64)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ValueError(
            f"Action space {action_space} has infinite bounds; sb3_dare needs finite bounds to rescale actions to [-1, 1] "
            "(wrap the env with gymnasium.wrappers.RescaleAction or ClipAction)."
        )
    return (2.0 * (actions.astype(np.float64) - low) / (high - low) - 1.0).astype(np.float32)


def infer_episode_starts(
    observations: np.ndarray, next_observations: np.ndarray, terminations: np.ndarray, truncations: np.ndarray
) -> np.ndarray:
    """
    Index of the first transition of each episode.

    An episode ends at a termination or truncation, or where the next transition does not start from
    this transition's next observation (a boundary the dataset forgot to mark).

    :return: (n_episodes,) int64 ascending indices, starting at 0
    """
    ends = terminations | truncations
    ends[:-1] |= np.any(next_observations[:-1] != observations[1:], axis=tuple(range(1, observations.ndim)))
    return np.concatenate([[0], np.flatnonzero(ends[:-1]) + 1]).astype(np.int64)


def _flags(source: str | None, name: str, values: Any) -> np.ndarray:
    """One flag per transition: (N,), or (N, 1) as SB3's buffers store ``dones`` for one env."""
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(
            f"Dataset {source!r}: {name} must hold one flag per transition, shape (N,) or (N, 1), got shape {array.shape} "
            "(for an SB3 buffer with several envs, use OfflineData.from_replay_buffer)."
        )
    return array


def discounted_returns_to_go(rewards: np.ndarray, episode_starts: np.ndarray, gamma: float) -> np.ndarray:
    """
    Discounted return-to-go within each episode, vectorised over episodes.

    Transitions are grouped by their distance to the end of their episode; the loop runs once per
    step of the longest episode, each iteration updating every episode at once.

    :param rewards: (N,) rewards
    :param episode_starts: (n_episodes,) index of each episode's first transition
    :param gamma: discount factor
    :return: (N,) float32 returns-to-go
    """
    n_transitions = len(rewards)
    returns = np.asarray(rewards, dtype=np.float64).copy()
    if n_transitions == 0:
        return returns.astype(np.float32)
    episode_ends = np.append(episode_starts[1:], n_transitions)  # exclusive
    lengths = episode_ends - episode_starts
    # distance of each transition to the last transition of its episode (0 for the last one)
    steps_to_end = np.repeat(episode_ends, lengths) - 1 - np.arange(n_transitions)
    order = np.argsort(steps_to_end, kind="stable")
    boundaries = np.searchsorted(steps_to_end[order], np.arange(1, lengths.max() + 1))
    for distance in range(1, int(lengths.max())):
        indices = order[boundaries[distance - 1] : boundaries[distance]]
        returns[indices] += gamma * returns[indices + 1]
    return returns.astype(np.float32)


def _validated_scaled_actions(
    source: str | None, actions: np.ndarray, action_space: spaces.Space, actions_are_scaled: bool
) -> np.ndarray:
    """Check the action space, rescale to [-1, 1] and clip what lies outside, with one warning."""
    if not isinstance(action_space, spaces.Box):
        raise ValueError(
            f"Dataset {source!r} has action space {action_space}: sb3_dare supports continuous (Box) actions only."
        )
    if action_space.shape != actions.shape[1:]:
        raise ValueError(f"Dataset {source!r}: actions have shape {actions.shape[1:]} but the action space is {action_space}.")
    scaled_actions = actions.astype(np.float32) if actions_are_scaled else scale_actions(actions, action_space)
    out_of_bounds = (np.abs(scaled_actions) > 1.0 + ACTION_BOUND_TOLERANCE).any(axis=1)
    if out_of_bounds.any():
        warnings.warn(
            f"Dataset {source!r}: {int(out_of_bounds.sum())} actions lie outside the action space bounds "
            f"(first at transition {int(np.argmax(out_of_bounds))}); they are clipped to the bounds.",
            stacklevel=3,
        )
    return np.clip(scaled_actions, -1.0, 1.0)


def _as_2d(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(
            f"'{name}' must have shape (N, dim), got {array.shape}. Flatten image or dict observations before passing them."
        )
    if not np.issubdtype(array.dtype, np.number) and array.dtype != bool:
        raise ValueError(f"'{name}' must be numeric, got dtype {array.dtype}.")
    return array


def _check_finite(source: str | None, **arrays: np.ndarray) -> None:
    for name, array in arrays.items():
        if not np.issubdtype(array.dtype, np.floating):
            continue
        bad = ~np.isfinite(array)
        if bad.any():
            rows = bad.reshape(len(array), -1).any(axis=1)
            raise ValueError(
                f"Dataset {source!r}: field '{name}' has {int(bad.sum())} NaN/Inf values in {int(rows.sum())} transitions "
                f"(first at transition {int(np.argmax(rows))}). Remove or repair those transitions before loading."
            )


def _warn_outside_box(source: str | None, observations: np.ndarray, observation_space: spaces.Box) -> None:
    low = np.asarray(observation_space.low)
    high = np.asarray(observation_space.high)
    if np.all(np.isinf(low)) and np.all(np.isinf(high)):
        return
    outside = np.any((observations < low) | (observations > high), axis=1)
    if outside.any():
        warnings.warn(
            f"Dataset {source!r}: {int(outside.sum())} observations lie outside the observation space "
            f"(first at transition {int(np.argmax(outside))}); they are kept as they are.",
            stacklevel=3,
        )
