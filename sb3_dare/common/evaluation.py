"""Evaluation with D4RL-style normalised scores."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv

from sb3_dare.data import OfflineData, load_offline_data


def _reference_data(model: BaseAlgorithm, dataset: OfflineData | str | None) -> OfflineData | None:
    if isinstance(dataset, OfflineData):
        return dataset
    if dataset is not None:
        return load_offline_data(dataset)
    return getattr(model, "offline_data", None)


def evaluate_normalized(
    model: BaseAlgorithm,
    env: gym.Env | VecEnv,
    dataset: OfflineData | str | None = None,
    n_eval_episodes: int = 10,
    deterministic: bool = True,
) -> dict[str, float]:
    """
    Evaluate any SB3 model and express its mean return as a normalised score.

    :param model: the model to evaluate
    :param env: the evaluation env
    :param dataset: the dataset whose ``ref_min_score``/``ref_max_score`` define the scale (an OfflineData or an
        id/folder); default: the model's own offline data
    :param n_eval_episodes: episodes
    :param deterministic: deterministic actions
    :return: ``mean_reward``, ``std_reward`` and, when the dataset has reference scores, ``normalized_score``
    """
    episode_rewards, _ = evaluate_policy(
        model, env, n_eval_episodes=n_eval_episodes, deterministic=deterministic, return_episode_rewards=True
    )
    rewards = np.asarray(episode_rewards, dtype=np.float64)
    result = {"mean_reward": float(rewards.mean()), "std_reward": float(rewards.std())}
    data = _reference_data(model, dataset)
    if data is not None and data.ref_min_score is not None and data.ref_max_score is not None:
        result["normalized_score"] = float(np.mean(data.normalized_score(rewards)))
    return result


class NormalizedEvalCallback(EvalCallback):
    """
    SB3's ``EvalCallback`` that also logs ``eval/normalized_score`` (D4RL-style, x100).

    :param eval_env: the evaluation env
    :param dataset: the reference dataset (OfflineData or id); default: the model's offline data
    :param kwargs: the arguments of ``EvalCallback``
    """

    def __init__(self, eval_env: gym.Env | VecEnv, dataset: OfflineData | str | None = None, **kwargs: Any):
        super().__init__(eval_env, **kwargs)
        self.dataset = dataset
        self.last_normalized_score: float | None = None
        self.normalized_scores: list[float] = []

    def _record_normalized_score(self) -> None:
        if isinstance(self.dataset, str):
            # an id or folder is loaded once (not at every evaluation, which could also try to download it)
            self.dataset = load_offline_data(self.dataset)
        data = _reference_data(self.model, self.dataset)
        if data is None or data.ref_min_score is None or data.ref_max_score is None:
            return
        # the score is affine in the return, so the score of the mean return is the mean score
        self.last_normalized_score = float(data.normalized_score(self.last_mean_reward))
        self.normalized_scores.append(self.last_normalized_score)
        self.logger.record("eval/normalized_score", self.last_normalized_score)

    def _on_step(self) -> bool:
        if not (self.eval_freq > 0 and self.n_calls % self.eval_freq == 0):
            return super()._on_step()
        # EvalCallback records its results and dumps the logger in one go: add our key just before that dump,
        # so that the evaluation stays one row of the log
        logger = self.logger
        original_dump = logger.dump

        def dump_with_normalized_score(step: int = 0) -> None:
            self._record_normalized_score()
            original_dump(step)

        logger.dump = dump_with_normalized_score  # type: ignore[method-assign]
        try:
            return super()._on_step()
        finally:
            del logger.dump
