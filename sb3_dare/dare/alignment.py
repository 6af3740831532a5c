"""Alignment scores: how consistent a transition's action is with the (guided) behaviour model (ALGORITHM.md, piece 4)."""

from __future__ import annotations

import math

import numpy as np
import torch as th

from sb3_dare.dare.behavior import BehaviorModel

SCORE_REDUCTIONS = ("mean", "likelihood")


def alignment_scores(
    behavior_model: BehaviorModel,
    observations: np.ndarray | th.Tensor,
    actions: np.ndarray | th.Tensor,
    n_reference_samples: int = 1,
    reduction: str = "mean",
    sigma: float = 1.0,
    batch_size: int = 16_384,
    generator: th.Generator | None = None,
) -> th.Tensor:
    """
    Score transitions by the divergence between reference actions and their own action.

    The paper calls the score a KL divergence between the generated and the original action; we read it as
    the KL between two equal-variance Gaussians centred on the reference action ``â ~ mu(.|s)`` (guided when
    the model has a guidance scale) and the data action ``a``: ``d = ||â - a||^2 / (2 sigma^2)``.
    Small = behaviour-consistent. With several reference samples, ``reduction="mean"`` averages ``d`` and
    ``"likelihood"`` uses ``-log mean_k exp(-d_k)`` (a Gaussian-kernel likelihood of ``a`` under the samples).

    :param behavior_model: a fitted behaviour model
    :param observations: (n, obs_dim) raw observations (the model normalises them itself)
    :param actions: (n, action_dim) actions in [-1, 1]
    :param n_reference_samples: reference actions per transition
    :param reduction: ``"mean"`` or ``"likelihood"`` (only matters when ``n_reference_samples > 1``)
    :param sigma: the Gaussians' standard deviation (with ``reduction="mean"`` it only rescales the scores, and
        the exchange rules are invariant to that; the ``"likelihood"`` reduction of K > 1 samples depends on it)
    :param batch_size: transitions scored per chunk
    :param generator: random generator on the model's device, for reproducible scores
    :return: (n,) float32 scores on the model's device
    """
    if reduction not in SCORE_REDUCTIONS:
        raise ValueError(f"Unknown score reduction {reduction!r}; choose one of {SCORE_REDUCTIONS}.")
    if n_reference_samples < 1:
        raise ValueError(f"n_reference_samples must be >= 1, got {n_reference_samples}.")
    device = behavior_model.device
    observations = th.as_tensor(observations, dtype=th.float32, device=device)
    actions = th.as_tensor(actions, dtype=th.float32, device=device)
    chunks = []
    for start in range(0, len(observations), batch_size):
        chunk_obs = observations[start : start + batch_size]
        chunk_actions = actions[start : start + batch_size]
        references = behavior_model.sample(chunk_obs, n_samples=n_reference_samples, generator=generator)
        chunks.append(scores_from_references(references, chunk_actions, reduction=reduction, sigma=sigma))
    return th.cat(chunks) if chunks else th.zeros(0, device=device)


def scores_from_references(
    references: th.Tensor, actions: th.Tensor, reduction: str = "mean", sigma: float = 1.0
) -> th.Tensor:
    """
    The alignment scores of actions against reference actions already drawn (see :func:`alignment_scores`).

    :param references: (n, K, action_dim) reference actions, K per transition
    :param actions: (n, action_dim) the transitions' actions
    :param reduction: ``"mean"`` or ``"likelihood"`` over the K references (the same when K = 1)
    :param sigma: the Gaussians' standard deviation
    :return: (n,) scores
    """
    if reduction not in SCORE_REDUCTIONS:
        raise ValueError(f"Unknown score reduction {reduction!r}; choose one of {SCORE_REDUCTIONS}.")
    if references.ndim != 3 or actions.ndim != 2 or references.shape[::2] != actions.shape or references.shape[1] < 1:
        raise ValueError(
            f"references must be (n, K >= 1, action_dim) and actions (n, action_dim); got {tuple(references.shape)} and "
            f"{tuple(actions.shape)}."
        )
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}.")
    divergences = (references - actions.unsqueeze(1)).pow(2).sum(dim=-1) / (2.0 * sigma**2)
    n_references = references.shape[1]
    if reduction == "mean" or n_references == 1:
        return divergences.mean(dim=1)
    return -(th.logsumexp(-divergences, dim=1) - math.log(n_references))
