"""Cal-QL's networks: a tanh-squashed Gaussian actor and twin Q-networks (one batched ensemble) with targets."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from sb3_dare.common.networks import QEnsemble, SquashedGaussianActor, orthogonal_init_
from sb3_dare.common.policies import O2OPolicy


class CalQLPolicy(O2OPolicy):
    """
    Policy and networks of Cal-QL (Nakamoto et al. 2023): SAC's tanh-Gaussian actor, a Q ensemble and its target,
    the actor and the ensemble each with its own optimizer. The learned temperature and the CQL Lagrange multiplier
    are scalars of the algorithm, not of the policy (as in SB3's SAC).

    :param observation_space: observation space (Box)
    :param action_space: action space (Box)
    :param lr_schedule: learning-rate schedule
    :param net_arch: hidden sizes, a list or a dict with ``pi`` and ``qf``
    :param activation_fn: activation class
    :param n_critics: number of Q-networks
    :param optimizer_class: optimizer class
    :param optimizer_kwargs: optimizer keyword arguments
    :param use_sde: not supported; SB3 passes it to every policy
    :param orthogonal_init: initialise the actor and the critics orthogonally as the Cal-QL authors' code does by
        default (hidden layers gain sqrt(2), output layers 1e-2, zero biases; CORL's port uses sqrt(2) on every
        layer); False: PyTorch's default initialisation
    :param log_std_offset: None: the actor's log-std is its network's output; a float: ``m * output + b`` with
        learned scalars starting at ``m = 1``, ``b = log_std_offset`` (the Cal-QL authors' actor uses -1)
    """

    actor: SquashedGaussianActor
    critic: QEnsemble
    critic_target: QEnsemble

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        n_critics: int = 2,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        use_sde: bool = False,
        orthogonal_init: bool = False,
        log_std_offset: float | None = None,
    ):
        if log_std_offset is not None and not math.isfinite(log_std_offset):
            raise ValueError(f"log_std_offset must be a finite float (or None), got {log_std_offset}.")
        self.orthogonal_init = orthogonal_init
        self.log_std_offset = log_std_offset
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch,
            activation_fn=activation_fn,
            n_critics=n_critics,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            use_sde=use_sde,
        )

    def _build(self, lr_schedule: Schedule) -> None:
        sizes = self.hidden_sizes
        self.actor = SquashedGaussianActor(
            self.observation_dim, self.action_dim, sizes["pi"], self.activation_fn, log_std_offset=self.log_std_offset
        )
        self.critic = QEnsemble(self.observation_dim, self.action_dim, sizes["qf"], self.n_critics, self.activation_fn)
        if self.orthogonal_init:
            orthogonal_init_(self.actor.trunk)
            orthogonal_init_(self.critic)
        self.critic_target = copy.deepcopy(self.critic)
        self.critic_target.requires_grad_(False)
        self.actor.optimizer = self._make_optimizer(self.actor, lr_schedule)
        self.critic.optimizer = self._make_optimizer(self.critic, lr_schedule)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(orthogonal_init=self.orthogonal_init, log_std_offset=self.log_std_offset)
        return data

    def set_training_mode(self, mode: bool) -> None:
        self.actor.train(mode)
        self.critic.train(mode)
        self.training = mode


MlpPolicy = CalQLPolicy
