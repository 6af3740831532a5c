"""Implicit Q-Learning (Kostrikov et al. 2021) on the offline-to-online base."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, ClassVar

import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import FloatSchedule

from sb3_dare.common.buffers import OfflineOnlineSamples
from sb3_dare.common.networks import QEnsemble, TanhMeanGaussianActor, ValueNetwork, gaussian_log_prob, soft_update
from sb3_dare.common.o2o import O2OAlgorithm, _check_range, sample_weight_mean
from sb3_dare.data import OfflineData
from sb3_dare.iql.policies import IQLPolicy, MlpPolicy


def expectile_loss(difference: th.Tensor, expectile: float) -> th.Tensor:
    """
    Asymmetric squared loss ``|tau - 1(u < 0)| * u^2`` of IQL's value step, per sample.

    :param difference: ``u = min_k Q_target_k(s, a) - V(s)``
    :param expectile: tau in (0, 1); 0.5 is the mean, larger values approach the maximum
    """
    weight = th.where(difference < 0, 1.0 - expectile, expectile)
    return weight * difference.pow(2)


def awr_weights(advantage: th.Tensor, beta: float, max_weight: float) -> th.Tensor:
    """Advantage weights ``min(exp(beta * A), max_weight)`` of IQL's actor (advantage-weighted regression)."""
    return th.exp(beta * advantage).clamp(max=max_weight)


class IQL(O2OAlgorithm):
    """
    Implicit Q-Learning, pre-trained offline then fine-tuned online.

    Per sample (each loss next to its equation in :meth:`_train_step`):
    ``L_V = |tau - 1(u < 0)| u^2`` with ``u = min_k Qbar_k(s, a) - V(s)``;
    ``L_Q = mean_k (Q_k(s, a) - r - gamma (1 - d) V(s'))^2``;
    ``L_pi = -min(exp(beta (min_k Qbar_k(s, a) - V(s))), max_weight) log pi(a | s)``.

    :param policy: ``"MlpPolicy"`` or a policy class
    :param env: the environment, its id, or None (offline-only use)
    :param dataset: the offline dataset (see :class:`sb3_dare.common.o2o.O2OAlgorithm`)
    :param offline_steps: gradient steps of the offline phase
    :param learning_rate: learning rate of the critics and the value net
    :param actor_learning_rate: learning rate of the actor (None: ``learning_rate``)
    :param expectile: tau of the value loss (0.7; 0.9 for AntMaze)
    :param beta: inverse temperature of the advantage weights (3.0; 10.0 for AntMaze)
    :param max_weight: clip of the advantage weights
    :param torch_compile: compute the losses through ``torch.compile`` (on CPU it needs a C++ compiler; the first
        updates take longer while it compiles; see ``docs/speed.md``)
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
        ``"return_range"``: the scale that makes the dataset's episode returns span 1000, the IQL reference's setting
        for locomotion datasets (``model.replay_buffer.reward_scale`` holds the number once the data is attached)
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

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy}
    policy: IQLPolicy
    actor: TanhMeanGaussianActor
    critic: QEnsemble
    critic_target: QEnsemble
    value_net: ValueNetwork

    def __init__(
        self,
        policy: str | type[IQLPolicy],
        env: GymEnv | str | None,
        dataset: str | os.PathLike | OfflineData | Any | None = None,
        offline_steps: int = 1_000_000,
        learning_rate: float | Schedule = 3e-4,
        actor_learning_rate: float | Schedule | None = None,
        expectile: float = 0.7,
        beta: float = 3.0,
        max_weight: float = 100.0,
        torch_compile: bool = False,
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
        self.actor_learning_rate = actor_learning_rate
        self.expectile = expectile
        self.beta = beta
        self.max_weight = max_weight
        self.torch_compile = torch_compile
        self._compiled_losses: Callable[..., tuple[th.Tensor, dict[str, th.Tensor]]] | None = None
        super().__init__(
            policy,
            env,
            dataset=dataset,
            offline_steps=offline_steps,
            learning_rate=learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            offline_ratio=offline_ratio,
            normalize_observations=normalize_observations,
            reward_scale=reward_scale,
            reward_bias=reward_bias,
            offline_log_interval=offline_log_interval,
            offline_eval_freq=offline_eval_freq,
            offline_eval_episodes=offline_eval_episodes,
            eval_env=eval_env,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        _check_range("expectile", self.expectile, 0.0, 1.0, low_open=True, high_open=True)
        if not self.beta >= 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}.")
        if not self.max_weight > 0:
            raise ValueError(f"max_weight must be > 0, got {self.max_weight}.")
        if (
            self.actor_learning_rate is not None
            and not callable(self.actor_learning_rate)
            and not self.actor_learning_rate > 0
        ):
            raise ValueError(f"actor_learning_rate must be > 0 (or None), got {self.actor_learning_rate}.")

    def _create_aliases(self) -> None:
        self.actor = self.policy.actor
        self.critic = self.policy.critic
        self.critic_target = self.policy.critic_target
        self.value_net = self.policy.value_net

    def _optimizer_schedules(self) -> list[tuple[th.optim.Optimizer, Schedule]]:
        actor_schedule = self.lr_schedule if self.actor_learning_rate is None else FloatSchedule(self.actor_learning_rate)
        return [
            (self.actor.optimizer, actor_schedule),
            (self.critic.optimizer, self.lr_schedule),
            (self.value_net.optimizer, self.lr_schedule),
        ]

    def _train_step(self, replay_data: OfflineOnlineSamples) -> dict[str, th.Tensor]:
        offline_like = self._offline_like_mask(replay_data)
        losses = self._losses
        if self.torch_compile and offline_like is None:
            # the compiled losses serve the base algorithm; DARE's split batches (data-dependent sizes) run eagerly
            if self._compiled_losses is None:
                self._compiled_losses = th.compile(self._losses, dynamic=False)
            losses = self._compiled_losses
        total_loss, metrics = losses(replay_data, offline_like)

        for optimizer in (self.actor.optimizer, self.critic.optimizer, self.value_net.optimizer):
            optimizer.zero_grad(set_to_none=True)
        # the three networks share no parameters and each loss only sees the others' outputs detached,
        # so one backward pass gives each network the gradient of its own loss
        total_loss.backward()
        for optimizer in (self.actor.optimizer, self.critic.optimizer, self.value_net.optimizer):
            optimizer.step()
        soft_update(self.critic, self.critic_target, self.tau)
        return metrics

    def _losses(
        self, replay_data: OfflineOnlineSamples, offline_like: th.Tensor | None
    ) -> tuple[th.Tensor, dict[str, th.Tensor]]:
        """
        IQL's three losses on a batch.

        :param replay_data: the batch
        :param offline_like: the samples that keep IQL's objective (None: all)
        :return: the sum of the losses (each network's gradient is that of its own loss) and the metrics
        """
        observations = self.policy.normalize_observations(replay_data.observations)
        next_observations = self.policy.normalize_observations(replay_data.next_observations)
        actions = replay_data.actions
        rewards = replay_data.rewards.squeeze(-1)
        not_done = 1.0 - replay_data.dones.squeeze(-1)

        with th.no_grad():
            # Qbar(s, a) = min_k Q_target_k(s, a)
            target_q = self.critic_target(observations, actions).min(dim=0).values
            # y = r + gamma (1 - d) V(s')
            q_targets = rewards + self.gamma * not_done * self.value_net(next_observations)

        # L_V = |tau - 1(u < 0)| u^2, u = Qbar(s, a) - V(s)   (all samples)
        values = self.value_net(observations)
        value_loss = expectile_loss(target_q - values, self.expectile).mean()

        # L_pi = -min(exp(beta (Qbar(s, a) - V(s))), max_weight) log pi(a | s)   (offline-like samples)
        weights = awr_weights(target_q - values.detach(), self.beta, self.max_weight)
        # the actor's Gaussian on the whole batch, evaluated once (DARE's online-like term samples from its rows)
        actor_mean, actor_log_std = self.actor.mean_log_std(observations)
        actor_losses = -weights * gaussian_log_prob(actions, actor_mean, actor_log_std)
        actor_loss = sample_weight_mean(actor_losses, offline_like)

        metrics: dict[str, th.Tensor] = {}
        if offline_like is not None:
            # DARE: online-like samples get a released objective (their own Q targets and actor term)
            online_index = th.nonzero(~offline_like).squeeze(-1)
            online_targets, online_actor_loss_sum, metrics = self._online_like_objective(
                observations, next_observations, replay_data, online_index, actor_mean[online_index], actor_log_std
            )
            q_targets = q_targets.index_put((online_index,), online_targets)
            actor_loss = actor_loss + online_actor_loss_sum / observations.shape[0]

        # L_Q = mean_k (Q_k(s, a) - y)^2   (all samples)
        current_q = self.critic(observations, actions)
        critic_loss = (current_q - q_targets.unsqueeze(0)).pow(2).mean(dim=0).mean()

        metrics.update(
            critic_loss=critic_loss.detach(),
            value_loss=value_loss.detach(),
            actor_loss=actor_loss.detach(),
            q_value=current_q.detach().mean(),
            value=values.detach().mean(),
            advantage_weight=weights.detach().mean(),
            # the state-independent log-std, mean over action dimensions: its floor is LOG_STD_MIN (-20, as CORL; the IQL
            # reference and d3rlpy use -5), so a collapse towards it shows here
            actor_log_std=actor_log_std.detach().mean(),
        )
        return actor_loss + critic_loss + value_loss, metrics

    def _online_like_objective(
        self,
        observations: th.Tensor,
        next_observations: th.Tensor,
        replay_data: OfflineOnlineSamples,
        online_index: th.Tensor,
        actor_mean: th.Tensor,
        actor_log_std: th.Tensor,
    ) -> tuple[th.Tensor, th.Tensor, dict[str, th.Tensor]]:
        """
        The released objective of the online-like samples (DARE_IQL overrides this).

        :param observations: the batch's normalised observations
        :param next_observations: the batch's normalised next observations
        :param replay_data: the batch
        :param online_index: positions of the online-like samples in the batch
        :param actor_mean: the actor's Gaussian means at those samples (with their graph)
        :param actor_log_std: the actor's log-stds
        :return: their Q targets, the sum of their actor losses, extra metrics
        """
        raise NotImplementedError(f"{type(self).__name__} has no online-like objective; only DARE_IQL splits the batch.")

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "actor", "critic", "critic_target", "value_net", "_compiled_losses"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "actor.optimizer", "critic.optimizer", "value_net.optimizer"], []
