"""State-conditioned diffusion behaviour model (VP-SDE), DPM-Solver sampling and energy guidance.

Forward process (VP-SDE, linear beta(t) = beta_min + t (beta_max - beta_min), t in [1e-3, 1]):
``a_t = alpha_t a_0 + sigma_t z`` with ``log alpha_t = -0.25 t^2 (beta_max - beta_min) - 0.5 t beta_min``
and ``sigma_t = sqrt(1 - alpha_t^2)``. A noise-prediction MLP eps(a_t, t, s) is fitted by denoising
score matching, ``||z - eps(a_t, t, s)||^2`` with ``t ~ U[1e-3, 1]``.

Sampling uses DPM-Solver++(2M): the multistep second-order solver of the diffusion ODE in its
data-prediction form (one network evaluation per step), on time steps uniform in log-SNR.
:meth:`DiffusionBehaviorModel.sample_reference` integrates the reverse SDE with Euler-Maruyama
on many small steps instead; it is slow and only serves to check the fast sampler.

Energy guidance replaces the noise prediction by ``eps - w sigma_t grad_{a_t} f(a_t, t, s)``, i.e.
adds ``w grad f`` to the score, with f the CEP energy network of :mod:`sb3_dare.dare.energy`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from sb3_dare.dare.behavior import (
    BehaviorModel,
    GaussianFourierTimeEmbedding,
    QFunction,
    TensorLike,
    TrainingLoop,
    build_mlp,
    check_hidden_sizes,
    register_behavior_model,
)
from sb3_dare.dare.energy import TimeDependentEnergy, train_energy_cep

#: Diffusion times are in [T_MIN, T_MAX]; stopping at 1e-3 rather than 0 avoids the score blowing up.
T_MIN = 1e-3
T_MAX = 1.0
SOLVER_STEPS_RANGE = (5, 50)
TIME_SPACINGS = ("logSNR", "time")
# With fewer solver steps than this, the last step is first order: a second-order step built on
# a large previous step is less stable near t = 0 than a plain DDIM step.
_LOWER_ORDER_FINAL_BELOW = 10
# Largest number of (state, action) pairs handed to q_fn at once when computing support Q-values.
_Q_CHUNK = 65_536


class VPSchedule:
    """
    Noise schedule of the VP-SDE with a linear beta(t).

    :param beta_min: beta(0).
    :param beta_max: beta(1).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if not 0 <= beta_min < beta_max:
            raise ValueError(f"Need 0 <= beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}")
        self.beta_min = beta_min
        self.beta_max = beta_max

    def beta(self, time: torch.Tensor) -> torch.Tensor:
        """:param time: diffusion times. :return: beta(t)."""
        return self.beta_min + time * (self.beta_max - self.beta_min)

    def log_alpha(self, time: torch.Tensor) -> torch.Tensor:
        """:param time: diffusion times. :return: log alpha_t."""
        return -0.25 * time**2 * (self.beta_max - self.beta_min) - 0.5 * time * self.beta_min

    def marginal(self, time: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        :param time: diffusion times.
        :return: ``(alpha_t, sigma_t)``; sigma uses expm1 so that it stays accurate near t = 0.
        """
        log_alpha = self.log_alpha(time)
        return torch.exp(log_alpha), torch.sqrt(-torch.expm1(2 * log_alpha))

    def log_snr(self, time: torch.Tensor) -> torch.Tensor:
        """:param time: diffusion times. :return: lambda_t = log(alpha_t / sigma_t)."""
        log_alpha = self.log_alpha(time)
        return log_alpha - 0.5 * torch.log(-torch.expm1(2 * log_alpha))

    def time_from_log_snr(self, log_snr: torch.Tensor) -> torch.Tensor:
        """
        Inverse of :meth:`log_snr`: alpha^2 = sigmoid(2 lambda) gives log alpha, then solve the
        quadratic ``0.25 (b1 - b0) t^2 + 0.5 b0 t + log alpha = 0`` for its positive root.

        :param log_snr: lambda values.
        :return: the times t with ``log_snr(t) = lambda``.
        """
        log_alpha = -0.5 * torch.nn.functional.softplus(-2 * log_snr)
        delta = self.beta_max - self.beta_min
        return (-0.5 * self.beta_min + torch.sqrt(0.25 * self.beta_min**2 - delta * log_alpha)) / (0.5 * delta)


@register_behavior_model("diffusion")
class DiffusionBehaviorModel(BehaviorModel):
    """
    Diffusion behaviour model (VP-SDE, noise prediction) with an optional CEP energy network.

    :param observation_dim: size of the (flat) observation vector.
    :param action_dim: size of the action vector (actions in [-1, 1]).
    :param hidden_sizes: hidden layers of the noise-prediction MLP (default ``[256, 256, 256]``).
    :param time_embedding_dim: number of Gaussian Fourier features of t (even).
    :param fourier_scale: standard deviation of the Fourier frequencies.
    :param learning_rate: Adam learning rate of the noise network.
    :param normalize_observations: normalise observations with the fitting data's mean and std.
    :param beta_min: beta(0) of the linear VP schedule.
    :param beta_max: beta(1) of the linear VP schedule.
    :param solver_steps: DPM-Solver steps (= network evaluations) per sample, 5 to 50.
    :param time_spacing: ``"logSNR"`` (default) spaces the solver's time steps uniformly in
        log-SNR, ``"time"`` uniformly in t.
    :param clip_denoised: clip the data prediction E[a_0 | a_t] to [-1, 1] in both samplers.
    :param guidance_scale: energy guidance scale w >= 0 used by :meth:`sample`; 0 = plain
        behaviour sampling; > 0 needs :meth:`fit_energy` first.
    :param energy_hidden_sizes: hidden layers of the energy network (default ``[256, 256, 256]``).
    :param energy_learning_rate: Adam learning rate of the energy network.
    """

    supports_guidance = True

    energy_fitted: torch.Tensor

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        hidden_sizes: list[int] | None = None,
        time_embedding_dim: int = 32,
        fourier_scale: float = 16.0,
        learning_rate: float = 3e-4,
        normalize_observations: bool = True,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        solver_steps: int = 15,
        time_spacing: str = "logSNR",
        clip_denoised: bool = True,
        guidance_scale: float = 0.0,
        energy_hidden_sizes: list[int] | None = None,
        energy_learning_rate: float = 3e-4,
    ) -> None:
        super().__init__(observation_dim, action_dim, learning_rate, normalize_observations)
        self.hidden_sizes = check_hidden_sizes([256, 256, 256] if hidden_sizes is None else hidden_sizes, "hidden_sizes")
        self.energy_hidden_sizes = check_hidden_sizes(
            [256, 256, 256] if energy_hidden_sizes is None else energy_hidden_sizes, "energy_hidden_sizes"
        )
        if time_spacing not in TIME_SPACINGS:
            raise ValueError(f"time_spacing must be one of {TIME_SPACINGS}, got {time_spacing!r}")
        if not energy_learning_rate > 0:
            raise ValueError(f"energy_learning_rate must be positive, got {energy_learning_rate}")
        self.time_embedding_dim = time_embedding_dim
        self.fourier_scale = float(fourier_scale)
        self.schedule = VPSchedule(float(beta_min), float(beta_max))
        self.solver_steps = solver_steps
        self.time_spacing = time_spacing
        self.clip_denoised = bool(clip_denoised)
        self.guidance_scale = guidance_scale
        self.energy_learning_rate = float(energy_learning_rate)

        self.time_embedding = GaussianFourierTimeEmbedding(time_embedding_dim, self.fourier_scale)
        self.noise_network = build_mlp(action_dim + time_embedding_dim + observation_dim, self.hidden_sizes, action_dim)
        # The energy network always exists (untrained until fit_energy), so that every model of a
        # given configuration has the same state_dict layout, trained energy or not.
        self.energy = TimeDependentEnergy(
            observation_dim, action_dim, self.energy_hidden_sizes, time_embedding_dim, self.fourier_scale
        )
        self.register_buffer("energy_fitted", torch.tensor(False))

    # ------------------------------------------------------------------ settings

    @property
    def solver_steps(self) -> int:
        """Default number of DPM-Solver steps (5 to 50)."""
        return self._solver_steps

    @solver_steps.setter
    def solver_steps(self, value: int) -> None:
        self._solver_steps = self._check_solver_steps(value)

    @property
    def guidance_scale(self) -> float:
        """Default energy guidance scale w (>= 0)."""
        return self._guidance_scale

    @guidance_scale.setter
    def guidance_scale(self, value: float) -> None:
        self._guidance_scale = self._check_guidance_scale(value)

    @property
    def has_energy(self) -> bool:
        """Whether :meth:`fit_energy` has trained the energy network."""
        return bool(self.energy_fitted.item())

    @staticmethod
    def _check_solver_steps(value: int) -> int:
        low, high = SOLVER_STEPS_RANGE
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"solver_steps must be an int in [{low}, {high}], got {value!r}")
        return value

    @staticmethod
    def _check_guidance_scale(value: float) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise ValueError(f"guidance_scale must be a finite number >= 0 (0 = no guidance), got {value!r}")
        return float(value)

    def get_constructor_parameters(self) -> dict[str, Any]:
        """:return: the constructor arguments, current ``solver_steps`` and ``guidance_scale`` included."""
        return {
            **super().get_constructor_parameters(),
            "hidden_sizes": list(self.hidden_sizes),
            "time_embedding_dim": self.time_embedding_dim,
            "fourier_scale": self.fourier_scale,
            "beta_min": self.schedule.beta_min,
            "beta_max": self.schedule.beta_max,
            "solver_steps": self.solver_steps,
            "time_spacing": self.time_spacing,
            "clip_denoised": self.clip_denoised,
            "guidance_scale": self.guidance_scale,
            "energy_hidden_sizes": list(self.energy_hidden_sizes),
            "energy_learning_rate": self.energy_learning_rate,
        }

    # ------------------------------------------------------------------ networks

    def predict_noise(self, noisy_actions: torch.Tensor, time: torch.Tensor, observations: torch.Tensor) -> torch.Tensor:
        """
        The noise prediction eps(a_t, t, s).

        :param noisy_actions: a_t, shape ``(batch, action_dim)``.
        :param time: diffusion times, shape ``(batch,)``.
        :param observations: normalised observations, shape ``(batch, observation_dim)``.
        :return: predicted noise, shape ``(batch, action_dim)``.
        """
        features = torch.cat([noisy_actions, self.time_embedding(time), observations], dim=-1)
        return self.noise_network(features)

    def _denoise(
        self, noisy_actions: torch.Tensor, time: float, observations: torch.Tensor, guidance_scale: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        The (guided) noise prediction at one time, and the data prediction a_0 = (a_t - sigma_t eps) / alpha_t
        consistent with it; both samplers integrate this one function, so they sample the same model.
        """
        time_batch = torch.full((noisy_actions.shape[0],), time, device=noisy_actions.device)
        alpha, sigma = (float(value) for value in self.schedule.marginal(torch.tensor(time, dtype=torch.float64)))
        noise = self.predict_noise(noisy_actions, time_batch, observations)
        if guidance_scale > 0:
            # Guidance: score_mu + w grad f, i.e. eps - w sigma_t grad_{a_t} f in noise-prediction form.
            # With w = 0 the energy network is not touched and no graph is built.
            with torch.enable_grad():
                actions = noisy_actions.detach().requires_grad_(True)
                energy = self.energy(actions, time_batch, observations).sum()
                (energy_gradient,) = torch.autograd.grad(energy, actions)
            noise = noise - guidance_scale * sigma * energy_gradient
        data = (noisy_actions - sigma * noise) / alpha
        if self.clip_denoised:
            # E[a_0 | a_t] lies in [-1, 1] because every action does: clipping only removes network
            # error, which 1 / alpha_t (~150 at t = 1) amplifies in the first, large solver steps.
            data = data.clamp(-1.0, 1.0)
            noise = (noisy_actions - alpha * data) / sigma
        return noise, data

    # ------------------------------------------------------------------ fitting

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
        Fit the noise network by denoising score matching, ``||z - eps(alpha_t a + sigma_t z, t, s)||^2``
        with ``t ~ U[1e-3, 1]``.

        :param observations: shape ``(n, observation_dim)``.
        :param actions: shape ``(n, action_dim)``, in [-1, 1].
        :param n_steps: number of gradient steps.
        :param batch_size: minibatch size.
        :param learning_rate: Adam learning rate; ``None`` uses the model's ``learning_rate``.
        :param progress_bar: show a progress bar with the running loss.
        :param seed: seed for minibatches and noise (and the initial weights on a model not fitted yet).
        :return: ``{"loss": ...}``, the mean loss over the last 100 steps.
        """
        observations_tensor = self._check_observations(observations)
        actions_tensor = self._check_actions(actions)
        self._check_fit_arguments(observations_tensor, actions_tensor, n_steps, batch_size)
        if seed is not None and not self.is_fitted:
            self._reinitialize(seed, [self])
        self._set_observation_statistics(observations_tensor)
        generator = self._make_generator(seed)
        normalized = self.normalize(observations_tensor)
        optimizer = torch.optim.Adam(
            self.noise_network.parameters(), lr=self.learning_rate if learning_rate is None else learning_rate
        )
        n_rows, device = normalized.shape[0], self.device

        loop = TrainingLoop(self.noise_network, n_steps, progress_bar, "diffusion behaviour model")
        for step in loop:
            indices = torch.randint(n_rows, (batch_size,), device=device, generator=generator)
            clean_actions = actions_tensor[indices]
            time = T_MIN + (T_MAX - T_MIN) * torch.rand(batch_size, device=device, generator=generator)
            noise = torch.randn(clean_actions.shape, device=device, generator=generator)
            alpha, sigma = self.schedule.marginal(time)
            noisy_actions = alpha[:, None] * clean_actions + sigma[:, None] * noise
            predicted = self.predict_noise(noisy_actions, time, normalized[indices])
            loss = (predicted - noise).pow(2).sum(dim=-1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loop.record(step, loss)
        self.fitted.fill_(True)
        self.eval()
        return {"loss": loop.mean_loss()}

    def fit_energy(
        self,
        observations: TensorLike,
        q_fn: QFunction,
        n_steps: int,
        batch_size: int = 256,
        energy_beta: float = 3.0,
        n_support_actions: int = 16,
        max_support_states: int = 100_000,
        learning_rate: float | None = None,
        progress_bar: bool = False,
        seed: int | None = None,
    ) -> dict[str, float]:
        """
        Train the energy network by Contrastive Energy Prediction against a frozen critic.

        The support actions (``n_support_actions`` per state, from the unguided behaviour model)
        and their Q-values are computed once, before training, on at most ``max_support_states``
        states (a random subset when there are more), and reused by every step.

        :param observations: raw observations, shape ``(n, observation_dim)``.
        :param q_fn: frozen critic: ``q_fn(observations, actions)`` with raw observations and actions
            in [-1, 1], both ``(batch, dim)`` float32 tensors on the model's device, returns Q-values of
            shape ``(batch,)`` (or ``(batch, 1)``). Called under ``torch.no_grad``.
        :param n_steps: number of gradient steps.
        :param batch_size: states per step (each with its ``n_support_actions`` actions).
        :param energy_beta: inverse temperature beta_e of the target ``softmax(beta_e Q)``.
        :param n_support_actions: support actions M per state (>= 2).
        :param max_support_states: at most this many states get support actions.
        :param learning_rate: Adam learning rate; ``None`` uses ``energy_learning_rate``.
        :param progress_bar: show a progress bar.
        :param seed: seed for the subset, the support actions and the noise (and the initial energy
            weights when the energy network has not been trained yet).
        :return: ``{"loss", "target_entropy", "support_states"}``; loss - target_entropy is the KL
            divergence between the target and predicted softmax.
        """
        if not self.is_fitted:
            raise ValueError("fit_energy needs a fitted behaviour model: call fit(observations, actions, n_steps) first")
        observations_tensor = self._check_observations(observations)
        self._check_steps_and_batch(n_steps, batch_size)
        if not (isinstance(energy_beta, int | float) and math.isfinite(energy_beta) and energy_beta > 0):
            raise ValueError(f"energy_beta must be a finite number > 0, got {energy_beta!r}")
        if not isinstance(n_support_actions, int) or n_support_actions < 2:
            raise ValueError(
                f"n_support_actions must be an int >= 2 (CEP contrasts actions of a state), got {n_support_actions!r}"
            )
        if not isinstance(max_support_states, int) or max_support_states < 1:
            raise ValueError(f"max_support_states must be a positive int, got {max_support_states!r}")
        if seed is not None and not self.has_energy:
            self._reinitialize(seed, [self.energy])
        generator = self._make_generator(seed)

        if observations_tensor.shape[0] > max_support_states:
            subset = torch.randperm(observations_tensor.shape[0], device=self.device, generator=generator)
            observations_tensor = observations_tensor[subset[:max_support_states]]
        n_states = observations_tensor.shape[0]
        support_actions = self.sample(observations_tensor, n_support_actions, generator=generator, guidance_scale=0.0)
        support_q_values = self._support_q_values(q_fn, observations_tensor, support_actions)

        metrics = train_energy_cep(
            self.energy,
            self.normalize(observations_tensor),
            support_actions,
            support_q_values,
            self.schedule.marginal,
            n_steps=n_steps,
            batch_size=batch_size,
            energy_beta=float(energy_beta),
            learning_rate=self.energy_learning_rate if learning_rate is None else learning_rate,
            time_range=(T_MIN, T_MAX),
            generator=generator,
            progress_bar=progress_bar,
        )
        self.energy_fitted.fill_(True)
        self.eval()
        return {**metrics, "support_states": float(n_states)}

    def _support_q_values(self, q_fn: QFunction, observations: torch.Tensor, support_actions: torch.Tensor) -> torch.Tensor:
        n_states, n_support_actions, action_dim = support_actions.shape
        flat_actions = support_actions.reshape(-1, action_dim)
        q_values = []
        with torch.no_grad():
            for chunk in self._chunks(n_states, n_support_actions, _Q_CHUNK):
                chunk_observations = observations[chunk].repeat_interleave(n_support_actions, dim=0)
                chunk_actions = flat_actions[chunk.start * n_support_actions : chunk.stop * n_support_actions]
                q_chunk = torch.as_tensor(q_fn(chunk_observations, chunk_actions))
                if q_chunk.numel() != chunk_actions.shape[0] or q_chunk.ndim > 2:
                    raise ValueError(
                        f"q_fn must return one Q-value per (observation, action) pair, shape ({chunk_actions.shape[0]},), "
                        f"got shape {tuple(q_chunk.shape)}: reduce critic ensembles (e.g. min over critics) inside q_fn"
                    )
                q_values.append(q_chunk.reshape(-1).to(device=self.device, dtype=torch.float32))
        support_q_values = torch.cat(q_values).view(n_states, n_support_actions)
        if not bool(torch.isfinite(support_q_values).all()):
            raise ValueError("q_fn returned NaN or infinite Q-values: check the critic before training the energy network")
        return support_q_values

    # ------------------------------------------------------------------ sampling

    def _resolve_guidance(self, guidance_scale: float | None) -> float:
        scale = self.guidance_scale if guidance_scale is None else self._check_guidance_scale(guidance_scale)
        if scale > 0 and not self.has_energy:
            raise ValueError(
                f"guidance_scale={scale} needs a trained energy network: call fit_energy(observations, q_fn, n_steps) "
                "first, or sample with guidance_scale=0"
            )
        return scale

    def _solver_times(self, steps: int) -> list[float]:
        # Computed in float64: the time grid is a handful of scalars, and lambda changes fast near t = 0.
        end_points = torch.tensor([T_MAX, T_MIN], dtype=torch.float64)
        if self.time_spacing == "time":
            return torch.linspace(T_MAX, T_MIN, steps + 1, dtype=torch.float64).tolist()
        log_snr_start, log_snr_end = self.schedule.log_snr(end_points).tolist()
        log_snrs = torch.linspace(log_snr_start, log_snr_end, steps + 1, dtype=torch.float64)
        times = self.schedule.time_from_log_snr(log_snrs)
        times[0], times[-1] = T_MAX, T_MIN  # remove round-off at the ends
        return times.tolist()

    @torch.no_grad()
    def _dpm_solver(
        self,
        observations: torch.Tensor,
        steps: int,
        guidance_scale: float,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """DPM-Solver++(2M) from t = 1 to t = 1e-3 for normalised ``observations`` (one row per sample)."""
        times = self._solver_times(steps)
        time_grid = torch.tensor(times, dtype=torch.float64)
        alphas, sigmas = (values.tolist() for values in self.schedule.marginal(time_grid))
        log_snrs = self.schedule.log_snr(time_grid).tolist()

        actions = torch.randn((observations.shape[0], self.action_dim), device=self.device, generator=generator)
        previous_data: torch.Tensor | None = None
        for i in range(1, steps + 1):
            # Data prediction a_0 = (a_t - sigma_t eps) / alpha_t at the current time t_{i-1}.
            _, data = self._denoise(actions, times[i - 1], observations, guidance_scale)
            step_size = log_snrs[i] - log_snrs[i - 1]
            first_order = previous_data is None or (i == steps and steps < _LOWER_ORDER_FINAL_BELOW)
            if first_order:
                # DPM-Solver++(1), i.e. DDIM.
                direction = data
            else:
                assert previous_data is not None
                # Second order: linear extrapolation of the data prediction in lambda.
                ratio = (log_snrs[i - 1] - log_snrs[i - 2]) / step_size
                direction = (1 + 0.5 / ratio) * data - (0.5 / ratio) * previous_data
            # Exact integration of the linear part: a_t = sigma_t/sigma_s a_s + alpha_t (1 - e^{-h}) D.
            actions = (sigmas[i] / sigmas[i - 1]) * actions - alphas[i] * math.expm1(-step_size) * direction
            previous_data = data
        return actions

    @torch.no_grad()
    def _euler_maruyama(
        self,
        observations: torch.Tensor,
        steps: int,
        guidance_scale: float,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Reverse SDE ``da = [-beta/2 a - beta score] dt + sqrt(beta) dw`` from t = 1 to 1e-3 on uniform steps."""
        times = torch.linspace(T_MAX, T_MIN, steps + 1, dtype=torch.float64)
        _, sigmas = self.schedule.marginal(times)
        betas = self.schedule.beta(times)
        actions = torch.randn((observations.shape[0], self.action_dim), device=self.device, generator=generator)
        for i in range(steps):
            step_size = float(times[i] - times[i + 1])
            beta, sigma = float(betas[i]), float(sigmas[i])
            noise, _ = self._denoise(actions, float(times[i]), observations, guidance_scale)
            # score = -eps / sigma_t; going backwards in time flips the sign of the drift.
            drift = beta * (0.5 * actions - noise / sigma)
            fresh_noise = torch.randn(actions.shape, device=self.device, generator=generator)
            actions = actions + drift * step_size + math.sqrt(beta * step_size) * fresh_noise
        return actions

    def _sample_with(
        self,
        sampler: str,
        observations: TensorLike,
        n_samples: int,
        batch_size: int,
        generator: torch.Generator | None,
        guidance_scale: float | None,
        steps: int,
    ) -> torch.Tensor:
        self._check_can_sample(n_samples, batch_size)
        observations_tensor = self._check_observations(observations)
        scale = self._resolve_guidance(guidance_scale)
        integrate = self._dpm_solver if sampler == "dpm_solver" else self._euler_maruyama
        normalized = self.normalize(observations_tensor)
        chunks = []
        for chunk in self._chunks(normalized.shape[0], n_samples, batch_size):
            repeated = normalized[chunk].repeat_interleave(n_samples, dim=0)
            chunks.append(integrate(repeated, steps, scale, generator).view(-1, n_samples, self.action_dim))
        return torch.cat(chunks).clamp_(-1.0, 1.0)

    def sample(
        self,
        observations: TensorLike,
        n_samples: int = 1,
        batch_size: int = 65_536,
        generator: torch.Generator | None = None,
        guidance_scale: float | None = None,
        solver_steps: int | None = None,
    ) -> torch.Tensor:
        """
        Draw actions with DPM-Solver++(2M), optionally energy-guided.

        :param observations: raw observations, shape ``(batch, observation_dim)``.
        :param n_samples: actions per state.
        :param batch_size: largest number of actions (states x ``n_samples``) integrated at once.
        :param generator: torch generator (on the model's device) for reproducible samples.
        :param guidance_scale: guidance scale w >= 0; ``None`` uses ``self.guidance_scale``.
        :param solver_steps: solver steps (5 to 50); ``None`` uses ``self.solver_steps``.
        :return: actions of shape ``(batch, n_samples, action_dim)`` on the model's device, in [-1, 1].
        """
        steps = self.solver_steps if solver_steps is None else self._check_solver_steps(solver_steps)
        return self._sample_with("dpm_solver", observations, n_samples, batch_size, generator, guidance_scale, steps)

    def sample_reference(
        self,
        observations: TensorLike,
        n_samples: int = 1,
        n_steps: int = 1000,
        batch_size: int = 65_536,
        generator: torch.Generator | None = None,
        guidance_scale: float | None = None,
    ) -> torch.Tensor:
        """
        Draw actions by Euler-Maruyama on the reverse SDE with ``n_steps`` uniform steps in t: slow
        (one network evaluation per step) but with no solver approximation beyond the small step
        size; used to check :meth:`sample`.

        :param observations: raw observations, shape ``(batch, observation_dim)``.
        :param n_samples: actions per state.
        :param n_steps: number of SDE steps.
        :param batch_size: largest number of actions (states x ``n_samples``) integrated at once.
        :param generator: torch generator (on the model's device).
        :param guidance_scale: guidance scale w >= 0; ``None`` uses ``self.guidance_scale``.
        :return: actions of shape ``(batch, n_samples, action_dim)``, in [-1, 1].
        """
        if not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
        return self._sample_with("euler_maruyama", observations, n_samples, batch_size, generator, guidance_scale, n_steps)
