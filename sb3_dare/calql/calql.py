"""Calibrated Q-Learning (Cal-QL, Nakamoto et al. 2023) on the offline-to-online base."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import FloatSchedule

from sb3_dare.calql.policies import CalQLPolicy, MlpPolicy
from sb3_dare.common.buffers import OfflineOnlineSamples, check_truncated_returns
from sb3_dare.common.networks import QEnsemble, SquashedGaussianActor, soft_update
from sb3_dare.common.o2o import O2OAlgorithm, _check_range
from sb3_dare.common.policies import O2OPolicy
from sb3_dare.data import OfflineData

# the Lagrange multiplier alpha' is clipped to [0, MAX_ALPHA_PRIME], as in the reference implementations
MAX_ALPHA_PRIME = 1e6
# the critic loss is computed and back-propagated in chunks of about this many state-action rows (see _train_step):
# a chunk's activations (2 critics x rows x 256 floats, 4 MB) stay in the cache between its forward and backward passes
CRITIC_CHUNK_ROWS = 2048


def calibrate(policy_q_values: th.Tensor, mc_returns: th.Tensor) -> th.Tensor:
    """
    Cal-QL's calibration: ``max(Q(s, a_pi), G)``, the Q-values of policy actions bounded below by the Monte-Carlo
    return-to-go ``G`` of the sampled transition. Where ``G`` is NaN (an online episode that has not ended yet)
    there is no bound.

    :param policy_q_values: (n_critics, batch, n_actions) Q-values of policy actions at the batch's states
    :param mc_returns: (batch,) returns-to-go, NaN where unknown
    :return: the bounded Q-values, same shape
    """
    lower_bounds = th.where(th.isnan(mc_returns), th.full_like(mc_returns, -math.inf), mc_returns)
    return th.maximum(policy_q_values, lower_bounds.unsqueeze(-1))


def cql_gap(
    q_data: th.Tensor,
    q_uniform: th.Tensor,
    q_current: th.Tensor,
    q_next: th.Tensor,
    log_prob_current: th.Tensor,
    log_prob_next: th.Tensor,
    mc_returns: th.Tensor | None,
    action_dim: int,
    temperature: float = 1.0,
    importance_sample: bool = True,
) -> th.Tensor:
    """
    The (calibrated) CQL gap of every critic and sample: a soft maximum of Q over sampled actions minus Q of the
    data action, ``tau logsumexp_j(q_j / tau) - Q_k(s, a)``.

    With importance sampling the candidates ``q_j`` are ``Q(s, a_u) - log(0.5^d)`` for uniform actions,
    ``Qc(s, a_pi) - log pi(a_pi | s)`` for actions of the current policy at ``s`` and
    ``Qc(s, a'_pi) - log pi(a'_pi | s')`` for actions of the policy at ``s'`` (evaluated at ``s``), where ``Qc`` is
    the calibrated Q (:func:`calibrate`); without it, the plain (calibrated) Q-values of all of them and of the data
    action, as in the reference implementation.

    :param q_data: (n_critics, batch) ``Q_k(s, a)`` of the data actions
    :param q_uniform: (n_critics, batch, n) ``Q_k(s, a_u)``, ``a_u ~ U([-1, 1]^d)``
    :param q_current: (n_critics, batch, n) ``Q_k(s, a_pi)``, ``a_pi ~ pi(. | s)``
    :param q_next: (n_critics, batch, n) ``Q_k(s, a'_pi)``, ``a'_pi ~ pi(. | s')``
    :param log_prob_current: (batch, n) ``log pi(a_pi | s)``
    :param log_prob_next: (batch, n) ``log pi(a'_pi | s')``
    :param mc_returns: (batch,) Monte-Carlo returns-to-go (NaN: unknown, no bound); None: no calibration (CQL)
    :param action_dim: d, for the density ``0.5^d`` of the uniform actions on [-1, 1]^d
    :param temperature: tau of the log-sum-exp
    :param importance_sample: subtract the log-densities of the proposal distributions (the reference default)
    :return: (n_critics, batch) gaps
    """
    if mc_returns is not None:
        q_current, q_next = calibrate(q_current, mc_returns), calibrate(q_next, mc_returns)
    if importance_sample:
        uniform_log_density = action_dim * math.log(0.5)
        candidates = th.cat([q_uniform - uniform_log_density, q_current - log_prob_current, q_next - log_prob_next], dim=-1)
    else:
        candidates = th.cat([q_uniform, q_data.unsqueeze(-1), q_current, q_next], dim=-1)
    return temperature * th.logsumexp(candidates / temperature, dim=-1) - q_data


class CalQL(O2OAlgorithm):
    """
    Calibrated Q-Learning: SAC with twin critics and a CQL regulariser whose policy-action Q-values are bounded below
    by the Monte-Carlo return-to-go, pre-trained offline then fine-tuned online.

    Per sample (each loss next to its equation in :meth:`_train_step`), with ``a' ~ pi(. | s')`` and
    ``a~ ~ pi(. | s)`` reparameterised:
    ``L_TD = sum_k (Q_k(s, a) - r - gamma (1 - d) min_k Qbar_k(s', a'))^2``;
    ``L_CQL = cql_alpha sum_k gap_k(s, a)`` (:func:`cql_gap`; with the Lagrange form ``alpha' (gap_k - target_gap)``);
    ``L_pi = alpha log pi(a~ | s) - min_k Q_k(s, a~)``;
    ``L_alpha = -log(alpha) (log pi(a~ | s) + target_entropy)``.

    :param policy: ``"MlpPolicy"`` or a policy class
    :param env: the environment, its id, or None (offline-only use)
    :param dataset: the offline dataset (see :class:`sb3_dare.common.o2o.O2OAlgorithm`)
    :param offline_steps: gradient steps of the offline phase
    :param learning_rate: learning rate of the critics (and of the Lagrange multiplier)
    :param actor_learning_rate: learning rate of the actor and of the entropy coefficient (None: ``learning_rate``)
    :param cql_alpha: weight of the conservative regulariser (the authors use 5, and 1 on Adroit; 10 default)
    :param cql_alpha_online: the regulariser's weight from the end of the offline phase on (None: keep ``cql_alpha``;
        0 switches the regulariser off online); the authors' ``cql_min_q_weight_online``, CORL's ``cql_alpha_online``.
        ``cql_alpha`` keeps the offline weight; :attr:`current_cql_alpha` is the one in use
    :param cql_n_actions: actions sampled per state from each of the three proposals (uniform, pi(.|s), pi(.|s'))
    :param cql_temperature: temperature of the log-sum-exp over the sampled actions
    :param cql_importance_sample: subtract the proposals' log-densities inside the log-sum-exp (the reference default)
    :param calibration: bound the policy-action Q-values below by the MC return-to-go (False: plain CQL)
    :param truncated_returns: the returns-to-go of episodes cut by a time limit: ``"partial"``, the sum up to the cut
        (the reference's choice, too high when the rewards after the cut would be negative); ``"reward_floor"``, plus
        continuing with the lowest reward seen, a lower bound whenever no later reward is lower (use it with negative
        rewards, e.g. AntMaze's ``reward_bias=-5``, where it gives the reference's ``r_neg / (1 - gamma)`` for
        all-failure episodes). See ``docs/calql.md``
    :param cql_lagrange: learn a multiplier alpha' so that the CQL gap stays at or below ``cql_target_gap``
    :param cql_target_gap: the gap allowed when ``cql_lagrange=True``
    :param ent_coef: entropy coefficient alpha: ``"auto"`` (learned, starting at 1), ``"auto_<x>"`` (learned, starting
        at x) or a fixed float
    :param target_entropy: entropy target of the learned coefficient (``"auto"``: ``-action_dim``)
    :param backup_entropy: subtract ``alpha log pi(a' | s')`` in the TD target (off, as in the Cal-QL reference)
    :param cql_max_target_backup: the TD target backs up the best of ``cql_n_actions`` actions sampled from
        ``pi(. | s')`` (each scored by the minimum over the target critics) instead of one sample: on in the Cal-QL
        authors' code (their sparse-reward tasks) and CORL's configurations, off in CQL's MuJoCo configuration and by
        default here (see ``docs/calql.md``)
    :param torch_compile: compute the critic's losses through ``torch.compile`` (on CPU it needs a C++ compiler; the
        first updates take longer while it compiles; see ``docs/speed.md``)
    :param buffer_size: capacity of the online part of the replay buffer
    :param learning_starts: env steps before online updates start
    :param batch_size: minibatch size
    :param tau: soft update coefficient of the target critics
    :param gamma: discount factor (also of the MC returns-to-go)
    :param train_freq: update the model every ``train_freq`` steps
    :param gradient_steps: gradient steps per rollout
    :param offline_ratio: fraction of each online-phase batch drawn from the offline data
    :param normalize_observations: normalise observations with the offline dataset's mean and std
    :param reward_scale: rewards (and MC returns) use ``reward * reward_scale + reward_bias`` (AntMaze in the
        reference: scale 10, bias -5); ``"return_range"``: the scale that makes the dataset's episode returns span 1000
    :param reward_bias: see ``reward_scale``
    :param offline_log_interval: dump the ``offline/*`` logs every this many offline updates
    :param offline_eval_freq: evaluate every this many offline updates (0: never)
    :param offline_eval_episodes: deterministic episodes per offline evaluation
    :param eval_env: env for offline evaluations
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

    policy_aliases: ClassVar[dict[str, type[O2OPolicy]]] = {"MlpPolicy": MlpPolicy}  # type: ignore[assignment]
    policy: CalQLPolicy
    actor: SquashedGaussianActor
    critic: QEnsemble
    critic_target: QEnsemble
    log_ent_coef: th.Tensor | None
    ent_coef_optimizer: th.optim.Optimizer | None
    log_cql_alpha_prime: th.Tensor | None
    cql_alpha_prime_optimizer: th.optim.Optimizer | None

    def __init__(
        self,
        policy: str | type[CalQLPolicy],
        env: GymEnv | str | None,
        dataset: str | os.PathLike | OfflineData | Any | None = None,
        offline_steps: int = 1_000_000,
        learning_rate: float | Schedule = 3e-4,
        actor_learning_rate: float | Schedule | None = 1e-4,
        cql_alpha: float = 10.0,
        cql_alpha_online: float | None = None,
        cql_n_actions: int = 10,
        cql_temperature: float = 1.0,
        cql_importance_sample: bool = True,
        calibration: bool = True,
        truncated_returns: str = "partial",
        cql_lagrange: bool = False,
        cql_target_gap: float = 0.8,
        ent_coef: str | float = "auto",
        target_entropy: str | float = "auto",
        backup_entropy: bool = False,
        cql_max_target_backup: bool = False,
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
        self.cql_alpha = cql_alpha
        self.cql_alpha_online = cql_alpha_online
        self.cql_n_actions = cql_n_actions
        self.cql_temperature = cql_temperature
        self.cql_importance_sample = cql_importance_sample
        self.calibration = calibration
        self.truncated_returns = truncated_returns
        self.cql_lagrange = cql_lagrange
        self.cql_target_gap = cql_target_gap
        self.ent_coef = ent_coef
        self.target_entropy = target_entropy
        self.backup_entropy = backup_entropy
        self.cql_max_target_backup = cql_max_target_backup
        self.torch_compile = torch_compile
        self._compiled_critic_losses: Callable[..., tuple[th.Tensor, ...]] | None = None
        self.log_ent_coef = None
        self.ent_coef_optimizer = None
        self.log_cql_alpha_prime = None
        self.cql_alpha_prime_optimizer = None
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

    # ------------------------------------------------------------------ construction

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        _check_range("cql_alpha", self.cql_alpha, 0.0, math.inf, high_open=True)
        if self.cql_alpha_online is not None:
            _check_range("cql_alpha_online", self.cql_alpha_online, 0.0, math.inf, high_open=True)
        if isinstance(self.cql_n_actions, bool) or not isinstance(self.cql_n_actions, int) or self.cql_n_actions < 1:
            raise ValueError(f"cql_n_actions must be an integer in [1, inf), got {self.cql_n_actions}.")
        _check_range("cql_temperature", self.cql_temperature, 0.0, math.inf, low_open=True, high_open=True)
        _check_range("cql_target_gap", self.cql_target_gap, -math.inf, math.inf, low_open=True, high_open=True)
        check_truncated_returns(self.truncated_returns)
        actor_learning_rate = self.actor_learning_rate
        if actor_learning_rate is not None and not callable(actor_learning_rate) and not actor_learning_rate > 0:
            raise ValueError(f"actor_learning_rate must be > 0 (or None), got {actor_learning_rate}.")
        self._initial_ent_coef()  # raises on a malformed ent_coef
        if not (self.target_entropy == "auto" or _is_finite_number(self.target_entropy)):
            raise ValueError(f"target_entropy must be 'auto' or a finite float, got {self.target_entropy!r}.")

    def _initial_ent_coef(self) -> tuple[float, bool]:
        """:return: the initial entropy coefficient and whether it is learned (from ``ent_coef``)"""
        error = ValueError(f"ent_coef must be 'auto', 'auto_<initial value > 0>' or a float >= 0, got {self.ent_coef!r}.")
        if isinstance(self.ent_coef, str):
            if self.ent_coef == "auto":
                return 1.0, True
            if not self.ent_coef.startswith("auto_"):
                raise error
            try:
                initial_value = float(self.ent_coef[len("auto_") :])
            except ValueError:
                raise error from None
            if not (initial_value > 0 and math.isfinite(initial_value)):
                raise error
            return initial_value, True
        if not _is_finite_number(self.ent_coef) or not float(self.ent_coef) >= 0:
            raise error
        return float(self.ent_coef), False

    def _setup_model(self) -> None:
        # the buffer computes the MC returns-to-go (offline when the data is attached, online when episodes end)
        self.replay_buffer_kwargs = {**(self.replay_buffer_kwargs or {}), "truncated_returns": self.truncated_returns}
        super()._setup_model()
        if self.target_entropy == "auto":
            self.target_entropy = -float(np.prod(self.action_space.shape))  # type: ignore[arg-type]
        self.target_entropy = float(self.target_entropy)
        initial_value, learned = self._initial_ent_coef()
        # log(alpha) as a plain tensor with its own optimizer (SB3's SAC); the reference uses the actor's rate for it
        if learned:
            self.log_ent_coef = th.full((), math.log(initial_value), device=self.device, requires_grad=True)
            self.ent_coef_optimizer = th.optim.Adam([self.log_ent_coef], lr=self._actor_schedule()(1))
        else:
            self.log_ent_coef, self.ent_coef_optimizer = None, None
        self.ent_coef_tensor = th.tensor(initial_value, device=self.device)  # the coefficient when it is fixed
        # log(alpha') of the Lagrange form, starting at log(alpha') = 1, with the critics' rate (both as the reference)
        if self.cql_lagrange:
            self.log_cql_alpha_prime = th.ones((), device=self.device, requires_grad=True)
            self.cql_alpha_prime_optimizer = th.optim.Adam([self.log_cql_alpha_prime], lr=self.lr_schedule(1))
        else:
            self.log_cql_alpha_prime, self.cql_alpha_prime_optimizer = None, None

    def _create_aliases(self) -> None:
        self.actor = self.policy.actor
        self.critic = self.policy.critic
        self.critic_target = self.policy.critic_target

    def _actor_schedule(self) -> Schedule:
        return self.lr_schedule if self.actor_learning_rate is None else FloatSchedule(self.actor_learning_rate)

    def _optimizer_schedules(self) -> list[tuple[th.optim.Optimizer, Schedule]]:
        schedules = [(self.actor.optimizer, self._actor_schedule()), (self.critic.optimizer, self.lr_schedule)]
        if self.ent_coef_optimizer is not None:
            schedules.append((self.ent_coef_optimizer, self._actor_schedule()))
        if self.cql_alpha_prime_optimizer is not None:
            schedules.append((self.cql_alpha_prime_optimizer, self.lr_schedule))
        return schedules

    @property
    def current_cql_alpha(self) -> float:
        """
        The regulariser's weight the updates use now: ``cql_alpha_online`` once the offline phase is done (when it is
        set), else ``cql_alpha``. Both stay as given, so a saved model, ``load(..., cql_alpha_online=...)`` and
        ``from_base`` see the offline weight and the online one apart.
        """
        if self.offline_phase_done and self.cql_alpha_online is not None:
            return self.cql_alpha_online
        return self.cql_alpha

    def _optimizers(self) -> list[th.optim.Optimizer]:
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        for optional in (self.ent_coef_optimizer, self.cql_alpha_prime_optimizer):
            if optional is not None:
                optimizers.append(optional)
        return optimizers

    # ------------------------------------------------------------------ training

    def _train_step(self, replay_data: OfflineOnlineSamples) -> dict[str, th.Tensor]:
        observations = self.policy.normalize_observations(replay_data.observations)
        next_observations = self.policy.normalize_observations(replay_data.next_observations)
        actions = replay_data.actions
        rewards = replay_data.rewards.squeeze(-1)
        not_done = 1.0 - replay_data.dones.squeeze(-1)
        offline_like = self._offline_like_mask(replay_data)
        n_actions = self.cql_n_actions
        ent_coef = self.log_ent_coef.detach().exp() if self.log_ent_coef is not None else self.ent_coef_tensor

        # a~ ~ pi(. | s), reparameterised, for the actor and temperature losses
        mean, log_std = self.actor.mean_log_std(observations)
        new_actions, new_log_prob = self.actor.sample_with_log_prob(mean, log_std)

        with th.no_grad():
            # one draw: n actions from pi(. | s), n from pi(. | s') for the regulariser, and from pi(. | s') the TD
            # target's own samples (one, or n with the max-target backup: independent of the regulariser's); the actor
            # network runs once per state (pi(. | s) is the one above), not once per action
            n_target = n_actions if self.cql_max_target_backup else 1
            next_mean, next_log_std = self.actor.mean_log_std(next_observations)
            policy_mean = th.cat(
                [
                    mean.detach().unsqueeze(1).expand(-1, n_actions, -1),
                    next_mean.unsqueeze(1).expand(-1, n_actions + n_target, -1),
                ],
                dim=1,
            )
            policy_log_std = th.cat(
                [
                    log_std.detach().unsqueeze(1).expand(-1, n_actions, -1),
                    next_log_std.unsqueeze(1).expand(-1, n_actions + n_target, -1),
                ],
                dim=1,
            )
            policy_actions, policy_log_probs = self.actor.sample_with_log_prob(policy_mean, policy_log_std)
            split = [n_actions, n_actions, n_target]
            current_actions, next_actions, target_actions = policy_actions.split(split, dim=1)
            log_prob_current, log_prob_next, target_log_probs = policy_log_probs.split(split, dim=1)
            uniform_actions = th.rand_like(current_actions) * 2.0 - 1.0

            # y = r + gamma (1 - d) max_j min_k Qbar_k(s', a'_j)   [- alpha log pi(a'_j* | s') with backup_entropy],
            # j over the target's samples (one without the max-target backup)
            target_states = next_observations.unsqueeze(1).expand(-1, n_target, -1)
            sampled_next_q = self.critic_target(target_states, target_actions).min(dim=0).values  # (batch, n_target)
            next_q, best = sampled_next_q.max(dim=1)
            if self.backup_entropy:
                next_q = next_q - ent_coef * target_log_probs.gather(1, best.unsqueeze(1)).squeeze(1)
            q_targets = rewards + self.gamma * not_done * next_q

        mc_returns = replay_data.mc_returns if self.calibration else None
        candidate_actions = th.cat([actions.unsqueeze(1), uniform_actions, current_actions, next_actions], dim=1)

        optimizers = self._optimizers()
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        # The critic loss is a mean of per-sample terms: it is computed and back-propagated chunk of states by chunk of
        # states (about CRITIC_CHUNK_ROWS state-action rows each), while a chunk's activations are still in the cache.
        # The gradients add up to those of the whole batch; on a CPU the update takes about a quarter less time.
        batch_size = observations.shape[0]
        critic_losses = self._critic_losses
        if self.torch_compile:
            if self._compiled_critic_losses is None:
                self._compiled_critic_losses = th.compile(self._critic_losses, dynamic=False)
            critic_losses = self._compiled_critic_losses
        loss_sums = th.zeros(3, device=observations.device)
        parts: dict[str, list[th.Tensor]] = {"q_data": [], "gaps": [], "q_policy": []}
        for chunk in state_chunks(batch_size, candidate_actions.shape[1]):
            terms = critic_losses(
                observations[chunk],
                candidate_actions[chunk],
                q_targets[chunk],
                log_prob_current[chunk],
                log_prob_next[chunk],
                None if mc_returns is None else mc_returns[chunk],
                None if offline_like is None else offline_like[chunk],
            )
            # the losses are sums over the chunk's samples: divided by the batch size, the chunks add up to batch means
            chunk_losses = th.stack(terms[:3])
            (chunk_losses.sum() / batch_size).backward()
            loss_sums += chunk_losses.detach()
            for key, value in zip(parts, terms[3:], strict=True):
                parts[key].append(value)
        td_loss, conservative_loss, alpha_prime_loss = (loss_sums / batch_size).unbind()
        critic_loss = td_loss + conservative_loss

        # L_pi = alpha log pi(a~ | s) - min_k Q_k(s, a~)   (all samples; the critics' parameters get no gradient from it)
        self.critic.requires_grad_(False)
        q_new_actions = self.critic(observations, new_actions).min(dim=0).values
        self.critic.requires_grad_(True)
        actor_loss = (ent_coef * new_log_prob - q_new_actions).mean()

        metrics: dict[str, th.Tensor] = {}
        policy_loss = actor_loss
        if self.log_ent_coef is not None:
            # L_alpha = -log(alpha) (log pi(a~ | s) + target_entropy)   (all samples)
            ent_coef_loss = -(self.log_ent_coef * (new_log_prob.detach() + float(self.target_entropy))).mean()
            policy_loss = policy_loss + ent_coef_loss
            metrics["ent_coef_loss"] = ent_coef_loss.detach()
        # each loss sees the other networks' outputs detached (the actor's Q through frozen critic parameters), so these
        # backward passes give each parameter the gradient of its own loss; all use the pre-update networks
        policy_loss.backward()
        if self.log_cql_alpha_prime is not None:
            # the multiplier the losses used (before this update's step)
            metrics["cql_alpha_prime"] = self.log_cql_alpha_prime.detach().exp().clamp(0.0, MAX_ALPHA_PRIME)
            metrics["cql_alpha_prime_loss"] = alpha_prime_loss
        for optimizer in optimizers:
            optimizer.step()
        soft_update(self.critic, self.critic_target, self.tau)

        metrics.update(
            critic_loss=critic_loss,
            td_loss=td_loss,
            conservative_loss=conservative_loss,
            cql_gap=th.cat(parts["gaps"], dim=1).mean(),
            actor_loss=actor_loss.detach(),
            ent_coef=ent_coef,
            entropy=-new_log_prob.detach().mean(),
            q_value=th.cat(parts["q_data"], dim=1).mean(),
            calibration_rate=self._calibration_rate(th.cat(parts["q_policy"], dim=1), mc_returns),
            mc_return_known=(~th.isnan(replay_data.mc_returns)).float().mean(),
        )
        return metrics

    def _critic_losses(
        self,
        observations: th.Tensor,
        candidate_actions: th.Tensor,
        q_targets: th.Tensor,
        log_prob_current: th.Tensor,
        log_prob_next: th.Tensor,
        mc_returns: th.Tensor | None,
        offline_like: th.Tensor | None,
    ) -> tuple[th.Tensor, ...]:
        """
        The critic's losses summed over some samples (a chunk of the batch), and what the metrics need.

        :param observations: (n, obs_dim) normalised states
        :param candidate_actions: (n, 1 + 3 cql_n_actions, action_dim): the data action, the uniform actions, the
            actions of pi(. | s) and those of pi(. | s')
        :param q_targets: (n,) TD targets
        :param log_prob_current: (n, cql_n_actions) log-probabilities of the actions of pi(. | s)
        :param log_prob_next: (n, cql_n_actions) log-probabilities of the actions of pi(. | s')
        :param mc_returns: (n,) returns-to-go for the calibration (None: no calibration)
        :param offline_like: (n,) the samples that keep the regulariser (None: all)
        :return: sums over the samples of the TD loss, the conservative loss and the Lagrange multiplier's loss (0
            without it); then,
            detached, the data actions' Q-values (n_critics, n), the gaps (n_critics, n) and the policy actions' Q-values
            (n_critics, n, 2 cql_n_actions)
        """
        n_actions = self.cql_n_actions
        # Q_k(s, .) of the data action and the 3n sampled actions: both critics, all 1 + 3n actions in one call
        candidate_states = observations.unsqueeze(1).expand(-1, candidate_actions.shape[1], -1)
        q_values = self.critic(candidate_states, candidate_actions)  # (n_critics, n, 1 + 3n)
        q_data, q_uniform, q_current, q_next = q_values.split([1, n_actions, n_actions, n_actions], dim=-1)
        q_data = q_data.squeeze(-1)

        # L_TD = sum_k (Q_k(s, a) - y)^2   (all samples)
        td_losses = (q_data - q_targets.unsqueeze(0)).pow(2).sum(dim=0)

        # gap_k = tau logsumexp_j(q_j / tau) - Q_k(s, a), policy-action Q bounded below by the MC return-to-go
        gaps = cql_gap(
            q_data,
            q_uniform,
            q_current,
            q_next,
            log_prob_current,
            log_prob_next,
            mc_returns,
            action_dim=candidate_actions.shape[-1],
            temperature=self.cql_temperature,
            importance_sample=self.cql_importance_sample,
        )
        # L_CQL = cql_alpha sum_k gap_k   or   cql_alpha alpha' sum_k (gap_k - target_gap)   (offline-like samples)
        conservative_losses, alpha_prime_losses = self._conservative_losses(gaps, offline_like)

        return (
            td_losses.sum(),
            conservative_losses.sum(),
            alpha_prime_losses.sum(),
            q_data.detach(),
            gaps.detach(),
            q_values.detach()[..., 1 + n_actions :],
        )

    @staticmethod
    def _calibration_rate(q_policy: th.Tensor, mc_returns: th.Tensor | None) -> th.Tensor:
        """Fraction of the policy actions' Q-values raised to the return-to-go (0 without calibration)."""
        if mc_returns is None:
            return th.zeros((), device=q_policy.device)
        return (q_policy < mc_returns.unsqueeze(-1)).float().mean()  # NaN compares False: unknown never raised

    def _conservative_losses(self, gaps: th.Tensor, offline_like: th.Tensor | None) -> tuple[th.Tensor, th.Tensor]:
        """
        The conservative term of the critic loss per sample (0 where masked out) and, in the Lagrange form, the loss of
        alpha' per sample; their batch means are the losses.

        :param gaps: (n_critics, n) CQL gaps
        :param offline_like: (n,) the samples that keep the regulariser (None: all)
        :return: the critic's conservative losses (n,), the Lagrange multiplier's losses (n,; 0 without it)
        """
        cql_alpha = self.current_cql_alpha
        if self.log_cql_alpha_prime is None:
            # L_CQL = cql_alpha sum_k gap_k
            conservative_losses = cql_alpha * _masked(gaps.sum(dim=0), offline_like)
            return conservative_losses, th.zeros_like(conservative_losses)
        alpha_prime = self.log_cql_alpha_prime.exp().clamp(0.0, MAX_ALPHA_PRIME)
        constraint = gaps - self.cql_target_gap
        # L_CQL = cql_alpha alpha' sum_k (gap_k - target_gap)
        conservative_losses = cql_alpha * alpha_prime.detach() * _masked(constraint.sum(dim=0), offline_like)
        # L_alpha' = -cql_alpha alpha' mean_k (gap_k - target_gap): alpha' grows while the gap exceeds the target
        alpha_prime_losses = -cql_alpha * alpha_prime * _masked(constraint.detach().mean(dim=0), offline_like)
        return conservative_losses, alpha_prime_losses

    # ------------------------------------------------------------------ saving

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "actor",
            "critic",
            "critic_target",
            "ent_coef_tensor",
            "_compiled_critic_losses",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "actor.optimizer", "critic.optimizer"]
        tensors = []
        if self.ent_coef_optimizer is not None:
            state_dicts.append("ent_coef_optimizer")
            tensors.append("log_ent_coef")
        if self.cql_alpha_prime_optimizer is not None:
            state_dicts.append("cql_alpha_prime_optimizer")
            tensors.append("log_cql_alpha_prime")
        return state_dicts, tensors


def state_chunks(batch_size: int, actions_per_state: int, max_rows: int | None = None) -> list[slice]:
    """
    Split a batch of states into contiguous chunks of about ``max_rows`` state-action rows each.

    :param batch_size: number of states
    :param actions_per_state: actions evaluated per state
    :param max_rows: rows per chunk (default: ``CRITIC_CHUNK_ROWS``)
    :return: slices covering ``range(batch_size)``
    """
    max_rows = CRITIC_CHUNK_ROWS if max_rows is None else max_rows
    n_chunks = max(1, math.ceil(batch_size * actions_per_state / max_rows))
    size = math.ceil(batch_size / n_chunks)
    return [slice(start, min(start + size, batch_size)) for start in range(0, batch_size, size)]


def _masked(values: th.Tensor, mask: th.Tensor | None) -> th.Tensor:
    """``values`` where ``mask`` holds and 0 elsewhere (all of them without a mask)."""
    return values if mask is None else th.where(mask, values, th.zeros_like(values))


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool) and math.isfinite(value)
