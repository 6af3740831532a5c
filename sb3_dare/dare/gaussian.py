"""Gaussian MLP behaviour-cloning model: the cheap ablation of the diffusion behaviour model.

An MLP maps the (normalised) state to the mean and log-std of a diagonal Gaussian, fitted by
maximum likelihood. By default the Gaussian lives in pre-tanh space and actions are tanh(u), so that
samples respect the [-1, 1] bounds without piling up on them; ``distribution="plain"`` uses the
Gaussian on the actions directly and clips samples. The model is unimodal: it cannot represent
multimodal behaviour (that is what the diffusion model is for), and it has no energy guidance.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from sb3_dare.dare.behavior import (
    BehaviorModel,
    TensorLike,
    TrainingLoop,
    build_mlp,
    check_hidden_sizes,
    register_behavior_model,
)

DISTRIBUTIONS = ("tanh", "plain")
# Dataset actions are clipped this far inside (-1, 1) before atanh, so that actions on the bounds
# keep a finite pre-tanh value (atanh(1 - 1e-4) ~ 4.95) and a finite log-probability.
ACTION_CLIP_EPSILON = 1e-4
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@register_behavior_model("gaussian")
class GaussianBehaviorModel(BehaviorModel):
    """
    Gaussian MLP behaviour model with state-dependent mean and log-std.

    :param observation_dim: size of the (flat) observation vector.
    :param action_dim: size of the action vector (actions in [-1, 1]).
    :param hidden_sizes: hidden layers of the MLP (default ``[256, 256]``).
    :param distribution: ``"tanh"`` (tanh-squashed Gaussian, default) or ``"plain"`` (Gaussian on
        the actions, samples clipped to [-1, 1]).
    :param log_std_min: lower bound of the log-std (keeps the likelihood finite on repeated actions).
    :param log_std_max: upper bound of the log-std.
    :param learning_rate: Adam learning rate.
    :param normalize_observations: normalise observations with the fitting data's mean and std.
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        hidden_sizes: list[int] | None = None,
        distribution: str = "tanh",
        log_std_min: float = -5.0,
        log_std_max: float = 2.0,
        learning_rate: float = 3e-4,
        normalize_observations: bool = True,
    ) -> None:
        super().__init__(observation_dim, action_dim, learning_rate, normalize_observations)
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
        if not log_std_min < log_std_max:
            raise ValueError(f"Need log_std_min < log_std_max, got {log_std_min} and {log_std_max}")
        self.hidden_sizes = check_hidden_sizes([256, 256] if hidden_sizes is None else hidden_sizes, "hidden_sizes")
        self.distribution = distribution
        self.log_std_min = float(log_std_min)
        self.log_std_max = float(log_std_max)
        # One network, two heads in one output: [mean, log_std].
        self.network = build_mlp(observation_dim, self.hidden_sizes, 2 * action_dim)

    def get_constructor_parameters(self) -> dict[str, Any]:
        """:return: the constructor arguments."""
        return {
            **super().get_constructor_parameters(),
            "hidden_sizes": list(self.hidden_sizes),
            "distribution": self.distribution,
            "log_std_min": self.log_std_min,
            "log_std_max": self.log_std_max,
        }

    def distribution_parameters(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        :param observations: normalised observations, shape ``(batch, observation_dim)``.
        :return: mean and log-std of the Gaussian (in pre-tanh space for ``"tanh"``), each ``(batch, action_dim)``.
        """
        mean, log_std = self.network(observations).chunk(2, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def _log_prob(self, normalized_observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        mean, log_std = self.distribution_parameters(normalized_observations)
        if self.distribution == "tanh":
            actions = actions.clamp(-1 + ACTION_CLIP_EPSILON, 1 - ACTION_CLIP_EPSILON)
            values = torch.atanh(actions)
            # Change of variables a = tanh(u): log p(a) = log N(u) - sum log(1 - a^2).
            jacobian = torch.log1p(-actions.pow(2)).sum(dim=-1)
        else:
            values, jacobian = actions, torch.zeros((), device=actions.device)
        gaussian = -0.5 * ((values - mean) / log_std.exp()).pow(2) - log_std - _LOG_SQRT_2PI
        return gaussian.sum(dim=-1) - jacobian

    def log_prob(self, observations: TensorLike, actions: TensorLike) -> torch.Tensor:
        """
        Log-likelihood of actions under the model (actions on the bounds are clipped slightly inside for ``"tanh"``).

        :param observations: raw observations, shape ``(batch, observation_dim)``.
        :param actions: actions in [-1, 1], shape ``(batch, action_dim)``.
        :return: log-probabilities, shape ``(batch,)``.
        """
        self._check_can_sample(1, 1)
        observations_tensor = self._check_observations(observations)
        actions_tensor = self._check_actions(actions)
        if observations_tensor.shape[0] != actions_tensor.shape[0]:
            raise ValueError("observations and actions must have the same number of rows")
        with torch.no_grad():
            return self._log_prob(self.normalize(observations_tensor), actions_tensor)

    def fit(
        self,
        observations: TensorLike,
        actions: TensorLike,
        n_steps: int,
        batch_size: int = 256,
        learning_rate: float | None = None,
        progress_bar: bool = False,
        seed: int | None = None,
    ) -> dict[str, float]:
        """
        Fit by maximum likelihood (minimise the negative log-likelihood of the dataset actions).

        :param observations: shape ``(n, observation_dim)``.
        :param actions: shape ``(n, action_dim)``, in [-1, 1].
        :param n_steps: number of gradient steps.
        :param batch_size: minibatch size.
        :param learning_rate: Adam learning rate; ``None`` uses the model's ``learning_rate``.
        :param progress_bar: show a progress bar with the running loss.
        :param seed: seed for the minibatches (and the initial weights on a model not fitted yet).
        :return: ``{"loss": ...}``, the mean negative log-likelihood over the last 100 steps.
        """
        observations_tensor = self._check_observations(observations)
        actions_tensor = self._check_actions(actions)
        self._check_fit_arguments(observations_tensor, actions_tensor, n_steps, batch_size)
        if seed is not None and not self.is_fitted:
            self._reinitialize(seed, [self])
        self._set_observation_statistics(observations_tensor)
        generator = self._make_generator(seed)
        normalized = self.normalize(observations_tensor)
        lr = self.learning_rate if learning_rate is None else learning_rate
        optimizer = torch.optim.Adam(self.network.parameters(), lr=lr)
        n_rows, device = normalized.shape[0], self.device

        loop = TrainingLoop(self.network, n_steps, progress_bar, "gaussian behaviour model")
        for step in loop:
            indices = torch.randint(n_rows, (batch_size,), device=device, generator=generator)
            loss = -self._log_prob(normalized[indices], actions_tensor[indices]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loop.record(step, loss)
        self.fitted.fill_(True)
        self.eval()
        return {"loss": loop.mean_loss()}

    @torch.no_grad()
    def sample(
        self,
        observations: TensorLike,
        n_samples: int = 1,
        batch_size: int = 65_536,
        generator: torch.Generator | None = None,
        guidance_scale: float | None = None,
    ) -> torch.Tensor:
        """
        Draw actions from the fitted Gaussian.

        :param observations: raw observations, shape ``(batch, observation_dim)``.
        :param n_samples: actions per state.
        :param batch_size: largest number of actions (states x ``n_samples``) drawn at once.
        :param generator: torch generator (on the model's device) for reproducible samples.
        :param guidance_scale: only ``None`` or 0 are accepted: this model has no energy guidance.
        :return: actions of shape ``(batch, n_samples, action_dim)`` on the model's device, in [-1, 1].
        """
        if guidance_scale is not None and guidance_scale != 0:
            raise ValueError(
                f"The 'gaussian' behaviour model has no energy guidance (got guidance_scale={guidance_scale!r}): "
                "use guidance_scale=0, or the 'diffusion' behaviour model for guided sampling"
            )
        self._check_can_sample(n_samples, batch_size)
        observations_tensor = self._check_observations(observations)
        normalized = self.normalize(observations_tensor)
        chunks = []
        for chunk in self._chunks(normalized.shape[0], n_samples, batch_size):
            mean, log_std = self.distribution_parameters(normalized[chunk])
            noise = torch.randn((mean.shape[0], n_samples, self.action_dim), device=self.device, generator=generator)
            values = mean.unsqueeze(1) + log_std.exp().unsqueeze(1) * noise
            chunks.append(torch.tanh(values) if self.distribution == "tanh" else values)
        return torch.cat(chunks).clamp_(-1.0, 1.0)
