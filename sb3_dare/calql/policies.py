"""Cal-QL's networks: a tanh-squashed Gaussian actor and twin Q-networks (one batched ensemble) with targets."""

from __future__ import annotations

import copy

from stable_baselines3.common.type_aliases import Schedule

from sb3_dare.common.networks import QEnsemble, SquashedGaussianActor
from sb3_dare.common.policies import O2OPolicy


class CalQLPolicy(O2OPolicy):
    """
    Policy and networks of Cal-QL (Nakamoto et al. 2023): SAC's tanh-Gaussian actor, a Q ensemble and its target,
    the actor and the ensemble each with its own optimizer. The learned temperature and the CQL Lagrange multiplier
    are scalars of the algorithm, not of the policy (as in SB3's SAC). Constructor arguments: see
    :class:`sb3_dare.common.policies.O2OPolicy` (``net_arch`` keys ``pi`` and ``qf`` are used).
    """

    actor: SquashedGaussianActor
    critic: QEnsemble
    critic_target: QEnsemble

    def _build(self, lr_schedule: Schedule) -> None:
        sizes = self.hidden_sizes
        self.actor = SquashedGaussianActor(self.observation_dim, self.action_dim, sizes["pi"], self.activation_fn)
        self.critic = QEnsemble(self.observation_dim, self.action_dim, sizes["qf"], self.n_critics, self.activation_fn)
        self.critic_target = copy.deepcopy(self.critic)
        self.critic_target.requires_grad_(False)
        self.actor.optimizer = self._make_optimizer(self.actor, lr_schedule)
        self.critic.optimizer = self._make_optimizer(self.critic, lr_schedule)

    def set_training_mode(self, mode: bool) -> None:
        self.actor.train(mode)
        self.critic.train(mode)
        self.training = mode


MlpPolicy = CalQLPolicy
