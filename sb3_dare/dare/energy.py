"""Time-dependent energy network and its training by Contrastive Energy Prediction (CEP).

Energy-guided sampling targets pi(a|s) ∝ mu(a|s) exp(beta_e Q(s, a)). For a diffusion model of mu,
the guided score at diffusion time t is ``score_mu(a_t, t, s) + grad_{a_t} E_t(a_t, s)`` with the
intermediate energy ``E_t(a_t, s) = log E_{a_0 ~ mu(a_0|a_t, s)}[exp(beta_e Q(s, a_0))]``.
CEP (Lu et al. 2023) learns a network f(a_t, t, s) whose gradient matches that of E_t without
ever sampling from mu(a_0|a_t, s): for each state take M actions a_j ~ mu(.|s) (the support
actions), noise them all to one shared t, and train softmax_j f(a_j_t, t, s) to predict
softmax_j beta_e Q(s, a_j) with a cross-entropy. At the optimum f equals E_t up to a function of
(t, s), which the gradient in a_t does not see.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sb3_dare.dare.behavior import GaussianFourierTimeEmbedding, TrainingLoop, build_mlp

#: ``marginal(t) -> (alpha_t, sigma_t)`` of the forward diffusion, ``a_t = alpha_t a_0 + sigma_t z``.
MarginalFunction = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class TimeDependentEnergy(nn.Module):
    """
    Energy network f(a_t, t, s) -> scalar, an MLP on ``[a_t, fourier(t), s]``.

    :param observation_dim: size of the (normalised) observation vector.
    :param action_dim: size of the action vector.
    :param hidden_sizes: hidden layer sizes of the MLP.
    :param time_embedding_dim: number of Gaussian Fourier features of t.
    :param fourier_scale: standard deviation of the Fourier frequencies.
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        hidden_sizes: list[int],
        time_embedding_dim: int = 32,
        fourier_scale: float = 16.0,
    ) -> None:
        super().__init__()
        self.time_embedding = GaussianFourierTimeEmbedding(time_embedding_dim, fourier_scale)
        self.network = build_mlp(action_dim + time_embedding_dim + observation_dim, hidden_sizes, 1)

    def forward(self, noisy_actions: torch.Tensor, time: torch.Tensor, observations: torch.Tensor) -> torch.Tensor:
        """
        :param noisy_actions: a_t, shape ``(batch, action_dim)``.
        :param time: diffusion times, shape ``(batch,)``.
        :param observations: normalised observations, shape ``(batch, observation_dim)``.
        :return: energies, shape ``(batch,)``.
        """
        features = torch.cat([noisy_actions, self.time_embedding(time), observations], dim=-1)
        return self.network(features).squeeze(-1)


def contrastive_energy_loss(energies: torch.Tensor, q_values: torch.Tensor, energy_beta: float) -> torch.Tensor:
    """
    CEP loss: cross-entropy between ``softmax_j(energy_beta * Q_j)`` (the target) and ``softmax_j(f_j)``,
    averaged over states.

    :param energies: f(a_j_t, t, s), shape ``(n_states, n_support_actions)``.
    :param q_values: Q(s, a_j) of the clean support actions, same shape.
    :param energy_beta: inverse temperature of the target.
    :return: scalar loss.
    """
    target = torch.softmax(energy_beta * q_values, dim=-1)
    return -(target * torch.log_softmax(energies, dim=-1)).sum(dim=-1).mean()


def train_energy_cep(
    energy: TimeDependentEnergy,
    observations: torch.Tensor,
    support_actions: torch.Tensor,
    support_q_values: torch.Tensor,
    marginal: MarginalFunction,
    n_steps: int,
    batch_size: int = 256,
    energy_beta: float = 3.0,
    learning_rate: float = 3e-4,
    time_range: tuple[float, float] = (1e-3, 1.0),
    generator: torch.Generator | None = None,
    progress_bar: bool = False,
) -> dict[str, float]:
    """
    Train ``energy`` with the CEP loss on cached support actions and their Q-values.

    Each step draws ``batch_size`` states, one diffusion time per state (shared by its M support
    actions: the contrast is between actions at the same noise level), noises the support actions
    to that time, and takes one Adam step on :func:`contrastive_energy_loss`.

    :param energy: the network to train (in place).
    :param observations: normalised observations, shape ``(n_states, observation_dim)``.
    :param support_actions: clean actions sampled from the behaviour model, ``(n_states, M, action_dim)``.
    :param support_q_values: Q-values of the support actions, ``(n_states, M)``.
    :param marginal: ``marginal(t) -> (alpha_t, sigma_t)`` of the diffusion the energy guides.
    :param n_steps: number of gradient steps.
    :param batch_size: states per step.
    :param energy_beta: inverse temperature of the target softmax.
    :param learning_rate: Adam learning rate.
    :param time_range: t is drawn uniformly from this interval.
    :param generator: torch generator for minibatches, times and noise.
    :param progress_bar: show a progress bar.
    :return: ``{"loss": ..., "target_entropy": ...}``: the mean loss over the last 100 steps and the
        mean entropy of the targets, a lower bound of the loss (the difference is a KL divergence; at t > 0 the
        noised actions cannot tell the targets apart perfectly, so the loss stays above it).
    """
    n_states, n_support_actions, action_dim = support_actions.shape
    device = support_actions.device
    optimizer = torch.optim.Adam(energy.parameters(), lr=learning_rate)
    t_min, t_max = time_range
    loop = TrainingLoop(energy, n_steps, progress_bar, "CEP energy")
    for step in loop:
        indices = torch.randint(n_states, (batch_size,), device=device, generator=generator)
        clean_actions = support_actions[indices]
        time = t_min + (t_max - t_min) * torch.rand(batch_size, device=device, generator=generator)
        alpha, sigma = marginal(time)
        noise = torch.randn(clean_actions.shape, device=device, generator=generator)
        noisy_actions = alpha.view(-1, 1, 1) * clean_actions + sigma.view(-1, 1, 1) * noise
        # Flatten the M support actions of each state into one batch for a single network call.
        energies = energy(
            noisy_actions.reshape(-1, action_dim),
            time.repeat_interleave(n_support_actions),
            observations[indices].repeat_interleave(n_support_actions, dim=0),
        ).view(batch_size, n_support_actions)
        loss = contrastive_energy_loss(energies, support_q_values[indices], energy_beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loop.record(step, loss)
    with torch.no_grad():
        target = torch.softmax(energy_beta * support_q_values, dim=-1)
        target_entropy = float(-(target * torch.log(target.clamp_min(1e-30))).sum(dim=-1).mean())
    return {"loss": loop.mean_loss(), "target_entropy": target_entropy}
