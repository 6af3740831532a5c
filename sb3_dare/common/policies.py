"""The policy base shared by the O2O algorithms: network sizes, the observation normaliser, acting."""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from sb3_dare.common.networks import ObservationNormalizer

NET_ARCH_KEYS = ("pi", "qf", "vf")
# optimizers built with ``fused=True`` unless optimizer_kwargs choose otherwise (fused kernels exist on CPU and CUDA)
FUSED_OPTIMIZERS: tuple[type[th.optim.Optimizer], ...] = (th.optim.Adam, th.optim.AdamW)


def parse_net_arch(net_arch: list[int] | dict[str, list[int]] | None, default: list[int]) -> dict[str, list[int]]:
    """
    Hidden sizes per network: a list applies to the actor (``pi``), the critics (``qf``) and the value net (``vf``);
    a dict names them separately (missing keys take the default).

    :param net_arch: a list of hidden sizes, or a dict with keys among ``pi``, ``qf``, ``vf``
    :param default: hidden sizes used when nothing is given
    """
    if net_arch is None:
        return {key: list(default) for key in NET_ARCH_KEYS}
    if isinstance(net_arch, dict):
        unknown = set(net_arch) - set(NET_ARCH_KEYS)
        if unknown:
            raise ValueError(f"net_arch has unknown keys {sorted(unknown)}; use a list or a dict with keys {NET_ARCH_KEYS}.")
        return {key: list(net_arch.get(key, default)) for key in NET_ARCH_KEYS}
    if not all(isinstance(width, int) and width > 0 for width in net_arch):
        raise ValueError(f"net_arch must be a list of positive layer sizes (or a dict of them), got {net_arch}.")
    return {key: list(net_arch) for key in NET_ARCH_KEYS}


class O2OPolicy(BasePolicy):
    """
    Base of the O2O policies: holds the observation normaliser (dataset mean/std, inside the policy so that
    ``predict`` and a loaded model use it) and the actor; subclasses add critics and their optimizers.

    :param observation_space: observation space (Box)
    :param action_space: action space (Box)
    :param lr_schedule: learning-rate schedule (the algorithm sets the rates at every update)
    :param net_arch: hidden sizes, a list or a dict with ``pi``, ``qf``, ``vf``
    :param activation_fn: activation class
    :param n_critics: number of Q-networks
    :param optimizer_class: optimizer class
    :param optimizer_kwargs: optimizer keyword arguments
    :param use_sde: not supported; SB3 passes it to every policy
    """

    actor: nn.Module
    default_net_arch: tuple[int, ...] = (256, 256)

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
    ):
        if use_sde:
            raise ValueError("gSDE (use_sde=True) is not supported by the sb3_dare algorithms.")
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
            raise ValueError(
                f"The sb3_dare policies take flat Box observations, got {observation_space}. "
                "Wrap the env with gymnasium.wrappers.FlattenObservation."
            )
        if n_critics < 1:
            raise ValueError(f"n_critics must be >= 1, got {n_critics}.")
        super().__init__(
            observation_space,
            action_space,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            squash_output=True,
            normalize_images=False,
        )
        self.net_arch = net_arch
        self.hidden_sizes = parse_net_arch(net_arch, list(self.default_net_arch))
        self.activation_fn = activation_fn
        self.n_critics = n_critics
        self.observation_dim = int(observation_space.shape[0])
        self.action_dim = int(spaces.flatdim(action_space))
        self.observation_normalizer = ObservationNormalizer(self.observation_dim)
        self._build(lr_schedule)

    def _build(self, lr_schedule: Schedule) -> None:
        raise NotImplementedError

    def _make_optimizer(self, module: nn.Module, lr_schedule: Schedule) -> th.optim.Optimizer:
        kwargs = dict(self.optimizer_kwargs)
        if self.optimizer_class in FUSED_OPTIMIZERS and not {"fused", "foreach", "differentiable"} & set(kwargs):
            # one fused kernel per step instead of about ten operations per parameter tensor (same update rule);
            # an explicit fused / foreach choice in optimizer_kwargs is respected
            kwargs["fused"] = True
        return self.optimizer_class(module.parameters(), lr=lr_schedule(1), **kwargs)  # type: ignore[call-arg]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.pop("normalize_images", None)  # flat vector observations only: not a constructor argument here
        data.update(
            net_arch=self.net_arch,
            activation_fn=self.activation_fn,
            n_critics=self.n_critics,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
            lr_schedule=self._dummy_schedule,
        )
        return data

    def normalize_observations(self, observations: th.Tensor) -> th.Tensor:
        """Float32 observations normalised with the dataset's statistics (identity until they are set)."""
        return self.observation_normalizer(observations.float())

    def forward(self, obs: th.Tensor, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic=deterministic)

    def _predict(self, observation: th.Tensor, deterministic: bool = False) -> th.Tensor:  # type: ignore[override]
        return self.actor(self.normalize_observations(observation), deterministic=deterministic)
