"""Behaviour models mu(a|s) of an offline dataset: the interface, shared pieces and the registry.

DARE scores a transition (s, a) by how far a is from a reference action drawn from a behaviour
model of the offline data (optionally energy-guided towards high Q). Every behaviour model is a
``torch.nn.Module`` behind the small interface of :class:`BehaviorModel`, so that an algorithm can
hold one inside its SB3 zip: all state that must survive a ``state_dict`` round trip (observation
statistics, "is fitted" flags) is kept in tensor buffers, because SB3 reads its zips with
``torch.load(weights_only=True)``, and the constructor takes only plain values so that a model can
be rebuilt from :meth:`BehaviorModel.get_constructor_parameters`.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sb3_dare.common import networks

TensorLike = np.ndarray | torch.Tensor
#: A critic used for energy guidance: ``q_fn(observations, actions)`` returns Q-values of shape ``(batch,)``.
QFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Name -> class of every behaviour model :func:`make_behavior_model` can build.
BEHAVIOR_MODELS: dict[str, type[BehaviorModel]] = {}

_ModelClass = TypeVar("_ModelClass", bound="type[BehaviorModel]")

# How far past [-1, 1] a dataset action may be before we call it unscaled rather than float noise.
_ACTION_BOUND_TOLERANCE = 1e-3
# Observation dimensions whose std is below this are constant in the data: dividing by their std
# would blow up any later deviation, so they are only centred (std replaced by 1).
_MIN_OBSERVATION_STD = 1e-6
# Window over which fit() averages the loss it reports.
_METRIC_WINDOW = 100


def register_behavior_model(name: str) -> Callable[[_ModelClass], _ModelClass]:
    """
    Class decorator adding a behaviour model to :data:`BEHAVIOR_MODELS` under ``name``.

    :param name: the name :func:`make_behavior_model` and saved files refer to the class by.
    :return: the decorator, which returns the class unchanged.
    """

    def decorator(cls: _ModelClass) -> _ModelClass:
        registered = BEHAVIOR_MODELS.get(name)
        # The same class seen again (a module reload) may re-register; a different class may not.
        if registered is not None and (registered.__module__, registered.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"A behaviour model is already registered under the name {name!r}: {BEHAVIOR_MODELS[name]}")
        cls.name = name
        BEHAVIOR_MODELS[name] = cls
        return cls

    return decorator


def _import_builtin_models() -> None:
    # The built-in models register themselves when their modules are imported. The package
    # __init__ imports them, but the factory must not depend on how that file is ordered.
    from sb3_dare.dare import diffusion, gaussian  # noqa: F401


def registered_behavior_models() -> dict[str, type[BehaviorModel]]:
    """
    The behaviour model classes by name: the built-in ones and those added with :func:`register_behavior_model`.

    :return: :data:`BEHAVIOR_MODELS`, with the built-in models imported
    """
    _import_builtin_models()
    return BEHAVIOR_MODELS


def make_behavior_model(name: str, observation_dim: int, action_dim: int, **kwargs: Any) -> BehaviorModel:
    """
    Build an (unfitted) behaviour model by name.

    :param name: one of the keys of :data:`BEHAVIOR_MODELS` (``"diffusion"``, ``"gaussian"``).
    :param observation_dim: size of the (flat) observation vector.
    :param action_dim: size of the action vector (actions scaled to [-1, 1]).
    :param kwargs: constructor arguments of the chosen model class.
    :return: the model, on the CPU.
    """
    models = registered_behavior_models()
    if name not in models:
        raise ValueError(f"Unknown behaviour model {name!r}: choose one of {sorted(models)}")
    return models[name](observation_dim=observation_dim, action_dim=action_dim, **kwargs)


def load_behavior_model(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> BehaviorModel:
    """
    Load a behaviour model written by :meth:`BehaviorModel.save`.

    The file is read with ``torch.load(weights_only=True)``: it holds only the model name, its
    constructor arguments and its ``state_dict``, never pickled Python objects.

    :param path: file written by :meth:`BehaviorModel.save`.
    :param device: device to put the model on.
    :return: the model, in eval mode.
    """
    saved = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(saved, dict) or not {"name", "kwargs", "state_dict"} <= saved.keys():
        raise ValueError(f"{path} is not a behaviour model file: expected a dict with 'name', 'kwargs' and 'state_dict'")
    model = make_behavior_model(saved["name"], **saved["kwargs"])
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval()


def build_mlp(input_dim: int, hidden_sizes: list[int], output_dim: int) -> nn.Sequential:
    """
    A plain MLP with SiLU activations between its linear layers.

    :param input_dim: size of the input.
    :param hidden_sizes: sizes of the hidden layers.
    :param output_dim: size of the output (no activation on it).
    :return: the network.
    """
    # the actors' and critics' builder with SiLU: the same layers and state-dict layout
    return networks.build_mlp(input_dim, output_dim, hidden_sizes, nn.SiLU)


class GaussianFourierTimeEmbedding(nn.Module):
    """
    Random Fourier features of the diffusion time: ``[sin(2 pi t w), cos(2 pi t w)]`` with fixed
    frequencies ``w ~ N(0, scale^2)``.

    The frequencies are a buffer (not trained, but saved), so a loaded model embeds time exactly
    as the fitted one did.

    :param embedding_dim: number of features (even: half sines, half cosines).
    :param scale: standard deviation of the frequencies; larger values let the network resolve
        finer changes over t in [0, 1].
    """

    frequencies: torch.Tensor

    def __init__(self, embedding_dim: int, scale: float) -> None:
        super().__init__()
        if embedding_dim < 2 or embedding_dim % 2:
            raise ValueError(f"time_embedding_dim must be an even integer >= 2, got {embedding_dim}")
        self.scale = scale
        self.register_buffer("frequencies", torch.empty(embedding_dim // 2))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw new frequencies (from the global torch RNG)."""
        with torch.no_grad():
            self.frequencies.normal_(0.0, self.scale)

    def forward(self, time: torch.Tensor) -> torch.Tensor:
        """
        :param time: diffusion times, shape ``(batch,)`` or ``(batch, 1)``.
        :return: features of shape ``(batch, embedding_dim)``.
        """
        angles = 2 * math.pi * time.reshape(-1, 1) * self.frequencies
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def check_hidden_sizes(hidden_sizes: list[int], argument: str) -> list[int]:
    """
    Validate a list of hidden layer sizes.

    :param hidden_sizes: the sizes.
    :param argument: name of the constructor argument, for the error message.
    :return: the sizes as a new list of ints (a plain list, so it saves with ``weights_only=True``).
    """
    sizes = list(hidden_sizes)
    if not all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in sizes):
        raise ValueError(f"{argument} must be a list of positive ints, got {hidden_sizes!r}")
    return sizes


class BehaviorModel(nn.Module, ABC):
    """
    Interface of a behaviour model mu(a|s) of an offline dataset.

    ``fit`` it once on the offline data, then ``sample`` reference actions for many states at once.
    Observations are normalised inside the model with the mean and std of the fitting data;
    actions are assumed to be already scaled to [-1, 1] (as SB3 scales them).

    :param observation_dim: size of the (flat) observation vector.
    :param action_dim: size of the action vector.
    :param learning_rate: Adam learning rate used by :meth:`fit`.
    :param normalize_observations: normalise observations with the fitting data's mean and std.
    """

    #: Name under which the class is registered (set by :func:`register_behavior_model`).
    name: ClassVar[str] = ""
    #: Whether the model can be guided by a trained energy network (``guidance_scale > 0``).
    supports_guidance: ClassVar[bool] = False

    observation_mean: torch.Tensor
    observation_std: torch.Tensor
    fitted: torch.Tensor

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        learning_rate: float = 3e-4,
        normalize_observations: bool = True,
    ) -> None:
        super().__init__()
        for argument, value in (("observation_dim", observation_dim), ("action_dim", action_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{argument} must be a positive int, got {value!r}")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate}")
        self.observation_dim = observation_dim
        self.action_dim = action_dim
        self.learning_rate = float(learning_rate)
        self.normalize_observations = bool(normalize_observations)
        # Buffers, not attributes: they are part of the state_dict, so they survive SB3's
        # weights_only loading and follow the model across devices.
        self.register_buffer("observation_mean", torch.zeros(observation_dim))
        self.register_buffer("observation_std", torch.ones(observation_dim))
        self.register_buffer("fitted", torch.tensor(False))

    # ------------------------------------------------------------------ construction and saving

    def get_constructor_parameters(self) -> dict[str, Any]:
        """
        :return: the constructor arguments (plain ints, floats, strings, bools and lists), so that
            ``type(model)(**model.get_constructor_parameters())`` builds a model with the same
            ``state_dict`` layout.
        """
        return {
            "observation_dim": self.observation_dim,
            "action_dim": self.action_dim,
            "learning_rate": self.learning_rate,
            "normalize_observations": self.normalize_observations,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """
        Write the model to ``path`` as ``{"name", "kwargs", "state_dict"}`` with ``torch.save``;
        read it back with :func:`load_behavior_model`.

        :param path: destination file.
        """
        state_dict = {key: value.detach().cpu() for key, value in self.state_dict().items()}
        torch.save({"name": self.name, "kwargs": self.get_constructor_parameters(), "state_dict": state_dict}, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: torch.device | str = "cpu") -> BehaviorModel:
        """
        Load a model written by :meth:`save` (see :func:`load_behavior_model`).

        :param path: file written by :meth:`save`.
        :param device: device to put the model on.
        :return: the model; it must be an instance of ``cls``.
        """
        model = load_behavior_model(path, device=device)
        if not isinstance(model, cls):
            raise ValueError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    # ------------------------------------------------------------------ properties

    @property
    def device(self) -> torch.device:
        """Device of the model's buffers and parameters."""
        return self.observation_mean.device

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` has been called (read from a buffer, so it survives saving)."""
        return bool(self.fitted.item())

    @property
    def has_energy(self) -> bool:
        """Whether a trained energy network is available for guided sampling."""
        return False

    # ------------------------------------------------------------------ the interface

    @abstractmethod
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
        Fit the model to (observation, action) pairs by ``n_steps`` minibatch gradient steps.

        The first call sets the observation statistics; later calls continue training with them.

        :param observations: shape ``(n, observation_dim)``.
        :param actions: shape ``(n, action_dim)``, in [-1, 1].
        :param n_steps: number of gradient steps.
        :param batch_size: minibatch size.
        :param learning_rate: Adam learning rate; ``None`` uses the model's ``learning_rate``.
        :param progress_bar: show a tqdm progress bar with the running loss.
        :param seed: seed for the minibatches and noise; on a model not fitted yet it also
            re-initialises the weights, so that the fit does not depend on the global RNG.
        :return: final metrics, e.g. ``{"loss": ...}`` (mean over the last 100 steps).
        """

    @abstractmethod
    def sample(
        self,
        observations: TensorLike,
        n_samples: int = 1,
        batch_size: int = 65_536,
        generator: torch.Generator | None = None,
        guidance_scale: float | None = None,
    ) -> torch.Tensor:
        """
        Draw actions from the model for many states at once.

        :param observations: shape ``(batch, observation_dim)``.
        :param n_samples: actions per state.
        :param batch_size: largest number of actions (states x ``n_samples``) computed at once;
            bounds the memory used when scoring a whole dataset.
        :param generator: torch generator (on the model's device) for reproducible samples.
        :param guidance_scale: energy guidance scale; ``None`` uses the model's own setting.
        :return: actions of shape ``(batch, n_samples, action_dim)`` on the model's device, in [-1, 1].
        """

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
        Train an energy network for guided sampling. Only models with ``supports_guidance`` implement it.

        :param observations: states to train on, shape ``(n, observation_dim)``.
        :param q_fn: frozen critic ``q_fn(observations, actions) -> (batch,)``.
        :param n_steps: number of gradient steps.
        :param batch_size: states per minibatch.
        :param energy_beta: inverse temperature of the target ``softmax(energy_beta * Q)``.
        :param n_support_actions: support actions sampled per state.
        :param max_support_states: at most this many states (a random subset) get support actions.
        :param learning_rate: Adam learning rate; ``None`` uses the model's energy learning rate.
        :param progress_bar: show a progress bar.
        :param seed: seed for the subset, the support actions and the noise.
        :return: final metrics.
        """
        raise NotImplementedError(
            f"The {self.name!r} behaviour model has no energy network and cannot be guided: "
            "use the 'diffusion' behaviour model for energy guidance, or sample with guidance_scale=0."
        )

    # ------------------------------------------------------------------ helpers for subclasses

    def _as_tensor(self, values: TensorLike, argument: str) -> torch.Tensor:
        if isinstance(values, np.ndarray):
            if not np.issubdtype(values.dtype, np.number) and values.dtype != np.bool_:
                raise ValueError(f"{argument} must be numeric, got dtype {values.dtype}")
            tensor = torch.as_tensor(values, dtype=torch.float32, device=self.device)
        elif isinstance(values, torch.Tensor):
            tensor = values.detach().to(device=self.device, dtype=torch.float32)
        else:
            raise ValueError(f"{argument} must be a numpy array or a torch tensor, got {type(values).__name__}")
        return tensor

    def _check_2d(self, values: TensorLike, dim: int, argument: str, dim_name: str) -> torch.Tensor:
        tensor = self._as_tensor(values, argument)
        if tensor.ndim != 2 or tensor.shape[1] != dim:
            raise ValueError(
                f"{argument} must have shape (batch, {dim_name}) = (batch, {dim}), got {tuple(tensor.shape)}: "
                f"pass a 2-D array with one row per sample (e.g. {argument}.reshape(-1, {dim})), "
                f"or build the model with the {dim_name} of your data"
            )
        if tensor.shape[0] == 0:
            raise ValueError(f"{argument} is empty: pass at least one row")
        if not bool(torch.isfinite(tensor).all()):
            bad_rows = (~torch.isfinite(tensor)).any(dim=1).nonzero().flatten()
            raise ValueError(
                f"{argument} contain NaN or infinite values ({len(bad_rows)} rows, first at row {int(bad_rows[0])}): "
                "remove or impute these rows first"
            )
        return tensor

    def _check_observations(self, observations: TensorLike) -> torch.Tensor:
        return self._check_2d(observations, self.observation_dim, "observations", "observation_dim")

    def _check_actions(self, actions: TensorLike) -> torch.Tensor:
        tensor = self._check_2d(actions, self.action_dim, "actions", "action_dim")
        largest = float(tensor.abs().max())
        if largest > 1 + _ACTION_BOUND_TOLERANCE:
            raise ValueError(
                f"actions must lie in [-1, 1] (largest magnitude found: {largest:.4g}): "
                "rescale them from the action space bounds first, as SB3 does (policy.scale_action)"
            )
        return tensor.clamp(-1.0, 1.0)

    def _check_fit_arguments(self, observations: torch.Tensor, actions: torch.Tensor, n_steps: int, batch_size: int) -> None:
        if observations.shape[0] != actions.shape[0]:
            raise ValueError(
                f"observations and actions must have the same number of rows, got {observations.shape[0]} "
                f"and {actions.shape[0]}: pass one action per observation"
            )
        self._check_steps_and_batch(n_steps, batch_size)

    @staticmethod
    def _check_steps_and_batch(n_steps: int, batch_size: int) -> None:
        if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 1:
            raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")

    def _check_can_sample(self, n_samples: int, batch_size: int) -> None:
        if not self.is_fitted:
            raise ValueError(
                f"The {self.name!r} behaviour model is not fitted: call fit(observations, actions, n_steps) first"
            )
        if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")

    def _set_observation_statistics(self, observations: torch.Tensor) -> None:
        # Only the first fit sets the statistics: changing them later would silently invalidate
        # what the networks have learnt.
        if self.is_fitted or not self.normalize_observations:
            return
        with torch.no_grad():
            mean = observations.mean(dim=0)
            std = observations.std(dim=0, unbiased=False) if observations.shape[0] > 1 else torch.ones_like(mean)
            self.observation_mean.copy_(mean)
            self.observation_std.copy_(torch.where(std < _MIN_OBSERVATION_STD, torch.ones_like(std), std))

    def normalize(self, observations: torch.Tensor) -> torch.Tensor:
        """
        :param observations: raw observations on the model's device.
        :return: observations normalised with the fitting data's statistics.
        """
        return (observations - self.observation_mean) / self.observation_std

    def _make_generator(self, seed: int | None) -> torch.Generator | None:
        if seed is None:
            return None
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed)
        return generator

    def _reinitialize(self, seed: int, modules: list[nn.Module]) -> None:
        # Seeded re-initialisation without touching the caller's global RNG state.
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for module in modules:
                for submodule in module.modules():
                    reset = getattr(submodule, "reset_parameters", None)
                    if callable(reset):
                        reset()

    @staticmethod
    def _chunks(n_rows: int, n_samples: int, batch_size: int) -> Iterator[slice]:
        rows_per_chunk = max(1, batch_size // n_samples)
        for start in range(0, n_rows, rows_per_chunk):
            yield slice(start, min(start + rows_per_chunk, n_rows))


class TrainingLoop:
    """
    Minibatch loop shared by the models' ``fit`` methods: progress bar and loss bookkeeping
    without a host synchronisation per step (the loss is only read every ``_METRIC_WINDOW`` steps
    when the progress bar is shown, and once at the end).

    While it runs, the trained module is in train mode with gradients enabled: an algorithm may have
    frozen a fitted model with ``requires_grad_(False)``, and fitting it again must still work. The
    ``requires_grad`` flags are restored afterwards, and the module is left in eval mode.

    :param module: the module whose parameters the loop trains.
    :param n_steps: number of steps.
    :param progress_bar: show a tqdm progress bar.
    :param description: label of the progress bar.
    """

    def __init__(self, module: nn.Module, n_steps: int, progress_bar: bool, description: str) -> None:
        self.module = module
        self.n_steps = n_steps
        self.progress_bar = progress_bar
        self.description = description
        device = next(module.parameters()).device
        self.recent_losses = torch.zeros(min(_METRIC_WINDOW, n_steps), device=device)

    def __iter__(self) -> Iterator[int]:
        parameters = list(self.module.parameters())
        requires_grad = [parameter.requires_grad for parameter in parameters]
        self.module.requires_grad_(True)
        self.module.train()
        bar = tqdm(total=self.n_steps, desc=self.description, disable=not self.progress_bar, leave=False)
        try:
            for step in range(self.n_steps):
                yield step
                bar.update(1)
                if self.progress_bar and (step + 1) % _METRIC_WINDOW == 0:
                    bar.set_postfix(loss=f"{self.mean_loss():.4g}")
        finally:
            bar.close()
            for parameter, flag in zip(parameters, requires_grad, strict=True):
                parameter.requires_grad_(flag)
            self.module.eval()

    def record(self, step: int, loss: torch.Tensor) -> None:
        """
        :param step: current step.
        :param loss: scalar loss of that step.
        """
        self.recent_losses[step % len(self.recent_losses)] = loss.detach()

    def mean_loss(self) -> float:
        """:return: mean loss over the last (up to) 100 steps."""
        return float(self.recent_losses.mean())
