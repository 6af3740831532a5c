"""IQL's networks: a tanh-mean Gaussian actor, twin Q-networks (one batched ensemble) with targets, a value net."""

from __future__ import annotations

import copy

from stable_baselines3.common.type_aliases import Schedule

from sb3_dare.common.networks import QEnsemble, TanhMeanGaussianActor, ValueNetwork
from sb3_dare.common.policies import O2OPolicy


class IQLPolicy(O2OPolicy):
    """
    Policy and networks of IQL (Kostrikov et al. 2021): actor, Q ensemble (+ target), value network,
    each with its own optimizer. Constructor arguments: see :class:`sb3_dare.common.policies.O2OPolicy`.
    """

    actor: TanhMeanGaussianActor
    critic: QEnsemble
    critic_target: QEnsemble
    value_net: ValueNetwork

    def _build(self, lr_schedule: Schedule) -> None:
        sizes = self.hidden_sizes
        self.actor = TanhMeanGaussianActor(self.observation_dim, self.action_dim, sizes["pi"], self.activation_fn)
        self.critic = QEnsemble(self.observation_dim, self.action_dim, sizes["qf"], self.n_critics, self.activation_fn)
        self.critic_target = copy.deepcopy(self.critic)
        self.critic_target.requires_grad_(False)
        self.value_net = ValueNetwork(self.observation_dim, sizes["vf"], self.activation_fn)
        self.actor.optimizer = self._make_optimizer(self.actor, lr_schedule)
        self.critic.optimizer = self._make_optimizer(self.critic, lr_schedule)
        self.value_net.optimizer = self._make_optimizer(self.value_net, lr_schedule)

    def set_training_mode(self, mode: bool) -> None:
        self.actor.train(mode)
        self.critic.train(mode)
        self.value_net.train(mode)
        self.training = mode


MlpPolicy = IQLPolicy
