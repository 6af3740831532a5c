"""
DARE (arXiv 2511.03828): sample-level constraint release for offline-to-online RL, layered on IQL and Cal-QL.

A frozen behaviour model of the dataset (a diffusion model with energy guidance by default) scores every
transition by how consistent its action is with the dataset. Each online-phase batch is split per sample
(not by data origin) into offline-like samples, which keep the base algorithm's conservative objective,
and online-like samples, whose constraint is released.
"""

from __future__ import annotations

import inspect
import math
import os
import warnings
from typing import Any, ClassVar, NoReturn, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.type_aliases import GymEnv, TensorDict
from stable_baselines3.common.utils import get_device

from sb3_dare.calql.calql import CalQL
from sb3_dare.common.buffers import OfflineOnlineSamples
from sb3_dare.common.o2o import O2OAlgorithm
from sb3_dare.dare.alignment import SCORE_REDUCTIONS, alignment_scores
from sb3_dare.dare.behavior import BehaviorModel, load_behavior_model, make_behavior_model, registered_behavior_models
from sb3_dare.dare.exchange import EXCHANGE_RULES, ScoreMomentsEMA, exchange
from sb3_dare.iql.iql import IQL

SCORE_MODES = ("cached", "per_batch")

SelfDARE = TypeVar("SelfDARE", bound="DAREMixin")


def guidance_q_values(model: O2OAlgorithm, observations: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """
    The critic DARE fits its energy network against: ``min_k Q_target_k(s, a)`` of an IQL or Cal-QL model.

    :param model: the (pre-trained) model
    :param observations: (n, obs_dim) raw observations (normalised here as the model does)
    :param actions: (n, action_dim) actions in [-1, 1]
    :return: (n,) Q-values on the model's device
    """
    normalized = model.policy.normalize_observations(observations.to(model.device))
    critic_target = model.critic_target  # type: ignore[attr-defined]  # IQL's and Cal-QL's, not O2OAlgorithm's
    return critic_target(normalized, actions.to(model.device)).min(dim=0).values


class DAREMixin(O2OAlgorithm):
    """
    What DARE adds to a base algorithm: the behaviour model, the alignment scores, the exchange rule and the
    ``dare/*`` diagnostics. The base algorithm's losses see only the per-sample mask
    (:meth:`_offline_like_mask`); nothing of the base is copied.
    """

    base_algorithm: ClassVar[type[O2OAlgorithm]]
    behavior: BehaviorModel

    def _set_dare_options(
        self,
        behavior_model: str | BehaviorModel | os.PathLike,
        behavior_steps: int,
        energy_steps: int,
        behavior_batch_size: int,
        behavior_kwargs: dict[str, Any] | None,
        guidance_scale: float,
        energy_beta: float,
        n_support_actions: int,
        max_support_states: int,
        exchange: str,
        exchange_quantile: float,
        sigma_floor: float,
        score_ema: float | None,
        exchange_warmup: bool,
        score_mode: str,
        n_reference_samples: int,
        score_reduction: str,
        score_sigma: float,
    ) -> None:
        self._behavior_object: BehaviorModel | None = None
        # the built-in names and any added with register_behavior_model
        names = tuple(sorted(registered_behavior_models()))
        if isinstance(behavior_model, BehaviorModel):
            self._behavior_object = behavior_model
        elif isinstance(behavior_model, os.PathLike) or (
            isinstance(behavior_model, str) and behavior_model not in names and os.path.isfile(behavior_model)
        ):
            self._behavior_object = load_behavior_model(behavior_model)
        elif behavior_model not in names:
            raise ValueError(
                f"Unknown behavior_model {behavior_model!r}; choose one of {names} (or a name added with "
                "register_behavior_model), a fitted behaviour model object, or the path of a file written by its save()."
            )
        if self._behavior_object is not None:
            parameters = self._behavior_object.get_constructor_parameters()
            behavior_kwargs = {key: value for key, value in parameters.items() if key not in ("observation_dim", "action_dim")}
            behavior_model = self._behavior_object.name
        self.behavior_model = behavior_model
        self.behavior_kwargs = dict(behavior_kwargs or {})
        self.behavior_steps = behavior_steps
        self.energy_steps = energy_steps
        self.behavior_batch_size = behavior_batch_size
        self.guidance_scale = guidance_scale
        self.energy_beta = energy_beta
        self.n_support_actions = n_support_actions
        self.max_support_states = max_support_states
        self.exchange = exchange
        self.exchange_quantile = exchange_quantile
        self.sigma_floor = sigma_floor
        self.score_ema = score_ema
        self.exchange_warmup = exchange_warmup
        self.score_mode = score_mode
        self.n_reference_samples = n_reference_samples
        self.score_reduction = score_reduction
        self.score_sigma = score_sigma
        # where the cached scores come from (saved with the model)
        self.score_provenance: dict[str, Any] = {}
        self._exchange_metrics: dict[str, th.Tensor] = {}

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        if self.exchange not in EXCHANGE_RULES:
            raise ValueError(f"Unknown exchange rule {self.exchange!r}; choose one of {EXCHANGE_RULES}.")
        if self.score_mode not in SCORE_MODES:
            raise ValueError(f"Unknown score_mode {self.score_mode!r}; choose one of {SCORE_MODES}.")
        if self.score_reduction not in SCORE_REDUCTIONS:
            raise ValueError(f"Unknown score_reduction {self.score_reduction!r}; choose one of {SCORE_REDUCTIONS}.")
        if not (self.score_sigma > 0 and math.isfinite(self.score_sigma)):
            raise ValueError(f"score_sigma must be a finite number > 0, got {self.score_sigma}.")
        if not (self.energy_beta > 0 and math.isfinite(self.energy_beta)):
            raise ValueError(f"energy_beta must be a finite number > 0, got {self.energy_beta}.")
        if not self.guidance_scale >= 0:
            raise ValueError(f"guidance_scale must be >= 0 (0 = plain behaviour sampling), got {self.guidance_scale}.")
        if not 0.0 < self.exchange_quantile < 1.0:
            raise ValueError(f"exchange_quantile must be in (0, 1), got {self.exchange_quantile}.")
        if not self.sigma_floor > 0:
            raise ValueError(f"sigma_floor must be > 0 (relative to the batch's score std), got {self.sigma_floor}.")
        if self.score_ema is not None and not 0.0 < self.score_ema < 1.0:
            raise ValueError(f"score_ema must be in (0, 1) or None, got {self.score_ema}.")
        for name in ("behavior_steps", "energy_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        for name in ("behavior_batch_size", "n_support_actions", "max_support_states", "n_reference_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        self._validate_behavior_fit_settings()
        if not self._behavior_supports_guidance() and self.guidance_scale > 0:
            warnings.warn(
                f"guidance_scale={self.guidance_scale} is ignored with the {self.behavior_model!r} behaviour model: it has "
                "no energy guidance (the 'diffusion' model has).",
                stacklevel=3,
            )

    def _behavior_supports_guidance(self) -> bool:
        given = self._behavior_object
        if given is not None:
            return given.supports_guidance
        return registered_behavior_models()[str(self.behavior_model)].supports_guidance

    def _raise_no_dataset(self) -> NoReturn:
        raise ValueError(
            f"{type(self).__name__} fits its behaviour model on the offline dataset (also to train online only, "
            f"offline_steps=0): pass dataset=<Minari id, folder or OfflineData>. Without a dataset, use "
            f"{self.base_algorithm.__name__}."
        )

    def _validate_behavior_fit_settings(self) -> None:
        # checked at construction rather than when the offline phase ends, possibly a million updates later
        if self.dataset is None:
            self._raise_no_dataset()
        given = self._behavior_object
        if (given is None or not given.is_fitted) and self.behavior_steps < 1:
            raise ValueError(
                f"behavior_steps must be >= 1 to fit the behaviour model, got {self.behavior_steps}; pass a fitted "
                "behaviour model (object or saved file) as behavior_model to skip the fit."
            )
        if self._behavior_supports_guidance() and self.guidance_scale > 0 and (given is None or not given.has_energy):
            if self.energy_steps < 1:
                raise ValueError(
                    f"energy_steps must be >= 1 to fit the energy network of guidance_scale={self.guidance_scale}, got "
                    f"{self.energy_steps}; set guidance_scale=0 for plain behaviour sampling."
                )
            if self.n_support_actions < 2:
                raise ValueError(
                    f"n_support_actions must be >= 2 (CEP contrasts the support actions of a state), got "
                    f"{self.n_support_actions}."
                )

    @property
    def effective_guidance_scale(self) -> float:
        """The guidance scale in use: 0 for models without guidance."""
        return self.guidance_scale if self.behavior.supports_guidance else 0.0

    def _setup_model(self) -> None:
        super()._setup_model()
        if self._behavior_object is not None:
            self.behavior = self._behavior_object.to(self.device)
        else:
            assert isinstance(self.behavior_model, str)
            # built on the side of the global torch generator (its initial weights are drawn from a forked one and
            # overwritten by the fit anyway), so that a seeded DARE run draws the same online noise as its base run
            with th.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                self.behavior = make_behavior_model(
                    self.behavior_model,
                    int(self.policy.observation_dim),
                    int(self.policy.action_dim),
                    **self.behavior_kwargs,
                ).to(self.device)
        self._moments_ema = ScoreMomentsEMA(self.score_ema, self.device) if self.score_ema is not None else None
        saved_moments = getattr(self, "score_moments_ema_state", None)  # from a loaded zip (see save())
        if self._moments_ema is not None and saved_moments is not None:
            self._moments_ema.state = th.tensor(saved_moments, dtype=th.float32, device=self.device)
        self._score_generator = th.Generator(device=self.device)
        self._score_generator.manual_seed(0 if self.seed is None else int(self.seed))

    # ------------------------------------------------------------------ between the phases

    def _q_function(self, observations: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """The frozen pre-trained critic for energy guidance (see :func:`guidance_q_values`)."""
        return guidance_q_values(self, observations, actions)

    def fit_behavior_model(self, progress_bar: bool = False) -> None:
        """
        Fit the behaviour model on the offline data (unless it is fitted already), then its energy network
        against the current critic when guidance is on. Called automatically when the offline phase ends.

        :param progress_bar: show progress bars
        """
        data = self._load_offline_data(self.env)
        seed = None if self.seed is None else int(self.seed)
        self.behavior.train()
        if not self.behavior.is_fitted:
            if self.verbose >= 1:
                print(f"Fitting the {self.behavior_model} behaviour model ({self.behavior_steps} steps)")
            self.behavior.fit(
                data.observations,
                data.actions,
                n_steps=self.behavior_steps,
                batch_size=self.behavior_batch_size,
                progress_bar=progress_bar,
                seed=seed,
            )
        if self.effective_guidance_scale > 0 and not self.behavior.has_energy:
            if self.verbose >= 1:
                print(f"Fitting the energy network by contrastive energy prediction ({self.energy_steps} steps)")
            self.policy.set_training_mode(False)
            self.behavior.fit_energy(
                data.observations,
                self._q_function,
                n_steps=self.energy_steps,
                batch_size=self.behavior_batch_size,
                energy_beta=self.energy_beta,
                n_support_actions=self.n_support_actions,
                max_support_states=self.max_support_states,
                progress_bar=progress_bar,
                seed=seed,
            )
        self._freeze_behavior()

    def _freeze_behavior(self) -> None:
        if self.behavior.supports_guidance:
            self.behavior.guidance_scale = self.effective_guidance_scale  # type: ignore[assignment]
        self.behavior.eval()
        self.behavior.requires_grad_(False)

    def set_parameters(
        self,
        load_path_or_dict: str | TensorDict,
        exact_match: bool = True,
        device: th.device | str = "auto",
    ) -> None:
        """
        Load parameters (see SB3's ``set_parameters``); a fitted behaviour model is frozen again with its guidance
        scale, which is a setting of the algorithm and not part of the model's state dict.

        :param load_path_or_dict: a saved zip or a dict of state dicts
        :param exact_match: require every state dict of the model to be given
        :param device: the device to load onto
        """
        super().set_parameters(load_path_or_dict, exact_match=exact_match, device=device)
        if self.behavior.is_fitted:
            self._freeze_behavior()

    def _on_offline_phase_end(self) -> None:
        super()._on_offline_phase_end()
        self.fit_behavior_model(progress_bar=self._show_progress)
        self.score_provenance = {**self._score_settings(), "offline_updates_when_fitted": self.offline_updates}
        self._attach_score_function()

    def _score_settings(self) -> dict[str, Any]:
        """The settings that determine a transition's score, given the (frozen) behaviour model."""
        return {
            "behavior_model": self.behavior_model,
            "guidance_scale": self.effective_guidance_scale,
            "n_reference_samples": self.n_reference_samples,
            "score_reduction": self.score_reduction,
            "score_sigma": self.score_sigma,
        }

    def _discard_scores_of_other_settings(self) -> None:
        """
        After ``load()`` with other scoring settings (e.g. ``load(path, guidance_scale=3.0)``), the scores cached in a
        loaded replay buffer came from the old ones: they are discarded and computed again, so that one buffer never
        mixes two score scales in the exchange's Gaussian fits.
        """
        settings = self._score_settings()
        changed = {
            key: (self.score_provenance[key], value)
            for key, value in settings.items()
            if key in self.score_provenance and self.score_provenance[key] != value
        }
        if not changed:
            return
        buffer = self.replay_buffer
        stored = (buffer.offline_scores is not None and not np.isnan(buffer.offline_scores).all()) or not np.isnan(
            buffer.online_scores[: buffer.size()]
        ).all()
        if stored:
            described = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items())
            warnings.warn(
                f"The cached alignment scores were computed with other settings ({described}); they are discarded and "
                "every transition is scored again with the current ones.",
                stacklevel=3,
            )
            if buffer.offline_scores is not None:
                buffer.offline_scores[:] = np.nan
            buffer.online_scores[:] = np.nan
            if buffer.score_function is not None:  # settings changed in place: score everything again now
                buffer.set_score_function(buffer.score_function)
        self.score_provenance = {**self.score_provenance, **settings}

    def _attach_score_function(self) -> None:
        if self.score_mode == "cached" and self.replay_buffer.score_function is None:
            self.replay_buffer.set_score_function(self._score_numpy)

    def _prepare_offline_data(self) -> None:
        super()._prepare_offline_data()
        if self.offline_phase_done:
            # after load(): the behaviour model is restored; scores missing from the buffer are computed now
            self._freeze_behavior()
            self._discard_scores_of_other_settings()
            self._attach_score_function()

    # ------------------------------------------------------------------ scores and exchange

    def score_transitions(self, observations: np.ndarray | th.Tensor, actions: np.ndarray | th.Tensor) -> th.Tensor:
        """
        Alignment scores of transitions under the frozen behaviour model (small = consistent with the dataset).

        :param observations: (n, obs_dim) raw observations
        :param actions: (n, action_dim) actions in [-1, 1]
        :return: (n,) scores on the model's device
        """
        if not self.behavior.is_fitted:
            raise ValueError("The behaviour model is not fitted yet: it is fitted when the offline phase ends.")
        return alignment_scores(
            self.behavior,
            observations,
            actions,
            n_reference_samples=self.n_reference_samples,
            reduction=self.score_reduction,
            sigma=self.score_sigma,
            generator=self._score_generator,
        )

    def _score_numpy(self, observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return self.score_transitions(observations, actions).cpu().numpy()

    def _offline_like_mask(self, replay_data: OfflineOnlineSamples) -> th.Tensor | None:
        if not self.offline_phase_done or self.exchange == "none":
            return None  # the offline phase, and the "none" rule, run the base algorithm unchanged
        if self.score_mode == "cached":
            scores = replay_data.scores
        else:
            scores = self.score_transitions(replay_data.observations, replay_data.actions)
        rule, moments_ema = self.exchange, self._moments_ema
        if self.exchange_warmup and self.replay_buffer.size() * self.replay_buffer.n_envs < self.batch_size:
            # the first online transitions, drawn again and again, make poor fits: the origin rule decides, and the
            # moving averages start from the first batch with a full online part
            rule, moments_ema = "origin", None
        result = exchange(
            scores,
            replay_data.is_offline,
            rule=rule,
            sigma_floor=self.sigma_floor,
            quantile=self.exchange_quantile,
            moments_ema=moments_ema,
        )
        self._exchange_metrics = result.metrics()
        return result.offline_like

    def _train_step(self, replay_data: OfflineOnlineSamples) -> dict[str, th.Tensor]:
        self._exchange_metrics = {}
        metrics = super()._train_step(replay_data)
        metrics.update(self._exchange_metrics)
        return metrics

    # ------------------------------------------------------------------ learn, saving, from_base

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_behavior_object", "_moments_ema", "_score_generator", "_exchange_metrics"]

    def _get_checkpoint_extra_state(self) -> dict[str, Any]:
        state = super()._get_checkpoint_extra_state()
        if self._moments_ema is not None:
            # on the CPU: the checkpoint's pickle must load on a machine without the training device
            state["score_moments_ema"] = self._moments_ema.state.detach().cpu().clone()
        return state

    def _set_checkpoint_extra_state(self, state: dict[str, Any]) -> None:
        super()._set_checkpoint_extra_state(state)
        if self._moments_ema is not None and "score_moments_ema" in state:
            self._moments_ema.state = state["score_moments_ema"].to(self.device)

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        return [*state_dicts, "behavior"], variables

    def save(self, path: Any, exclude: Any = None, include: Any = None) -> None:
        """
        Save as :meth:`O2OAlgorithm.save <sb3_dare.common.o2o.O2OAlgorithm.save>`, with the ``score_ema`` moving averages
        (a plain list in the zip's data, restored by ``load``; a model loaded with ``score_ema=None`` ignores it).

        :param path: the file (``.zip`` is added without a suffix, as in SB3) or an open binary file
        :param exclude: attributes not to save, besides the default ones
        :param include: attributes to save even if excluded by default
        """
        moments = self._moments_ema
        self.score_moments_ema_state = None if moments is None else moments.state.detach().cpu().tolist()
        super().save(path, exclude=exclude, include=include)

    @classmethod
    def from_base(
        cls: type[SelfDARE],
        base: O2OAlgorithm | str | os.PathLike,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        **kwargs: Any,
    ) -> SelfDARE:
        """
        Start DARE from a trained base model (its networks, optimizers and offline progress), so that a base run
        and its DARE run share one offline phase. The behaviour model is fitted at the next ``learn()``.

        :param base: a trained base model (IQL for DARE_IQL, CalQL for DARE_CalQL) or the path of its saved zip
        :param env: the env (default: the base model's)
        :param device: device of the new model
        :param kwargs: DARE options (``behavior_model``, ``guidance_scale``, ``exchange``...) and overrides of the
            base's hyperparameters (``dataset=`` is needed when the base was trained on an in-memory dataset)
        :return: the DARE model
        """
        base_class = cls.base_algorithm
        if isinstance(base, str | os.PathLike):
            base = base_class.load(
                os.fspath(base), env=env, device=device, **({"dataset": kwargs["dataset"]} if "dataset" in kwargs else {})
            )
        if not isinstance(base, base_class) or isinstance(base, DAREMixin):
            raise ValueError(f"{cls.__name__}.from_base needs a trained {base_class.__name__}, got {type(base).__name__}.")
        excluded = {"self", "policy", "env", "device", "_init_setup_model", "dataset"}
        init_kwargs: dict[str, Any] = {
            name: getattr(base, name)
            for name in inspect.signature(base_class.__init__).parameters
            if name not in excluded and hasattr(base, name)
        }
        init_kwargs["dataset"] = base._dataset_object if base._dataset_object is not None else base.dataset
        init_kwargs["replay_buffer_kwargs"] = {
            key: value
            for key, value in (base.replay_buffer_kwargs or {}).items()
            if key not in ("offline_ratio", "gamma", "reward_scale", "reward_bias")
        }
        init_kwargs.update(kwargs)
        if init_kwargs["dataset"] is None:
            # a zip keeps a dataset's id or folder, not an in-memory OfflineData; DARE fits its behaviour model on it
            raise ValueError(
                f"The {base_class.__name__} model was pre-trained on an in-memory dataset (or none), which is not saved with "
                f"it, and {cls.__name__} fits its behaviour model on that dataset. Pass it again: "
                f"{cls.__name__}.from_base(base, env, dataset=data)."
            )
        policy_class: Any = base.policy_class
        model = cls(policy_class, env if env is not None else base.env, device=get_device(device), **init_kwargs)
        model.set_parameters(base.get_parameters(), exact_match=False, device=model.device)  # type: ignore[arg-type]
        for name in base._get_torch_save_params()[1]:
            getattr(model, name).data.copy_(getattr(base, name).data)
        model.offline_updates = base.offline_updates
        model._n_updates = base._n_updates
        model.offline_phase_done = False  # DARE's own step between the phases still has to run
        if base._offline_data is not None and "dataset" not in kwargs:
            model._offline_data = base._offline_data
        return model


class DARE_IQL(DAREMixin, IQL):
    """
    DARE on IQL. Offline-like samples (mask O) keep IQL's losses: expectile V, Q regressed on
    ``r + gamma V(s')``, advantage-weighted actor. Online-like samples (N) get an online actor-critic objective
    with a fixed entropy coefficient alpha (``online_ent_coef``): Q regressed on
    ``r + gamma (min_k Qbar_k(s', a') - alpha log pi(a'|s'))`` and the actor loss ``alpha log pi(ã|s) - min_k Q_k(s, ã)``.
    V is trained on all samples. The N terms are computed on the gathered online-like subset only.

    The actor is IQL's Gaussian with a tanh-squashed mean: the reparameterised samples ``ã`` come from that
    Gaussian, their log-probabilities are the Gaussian's, and the critic sees them clipped to [-1, 1], as the env
    does (see :class:`sb3_dare.common.networks.TanhMeanGaussianActor`).

    :param policy: ``"MlpPolicy"`` or a policy class
    :param env: the env (or its id)
    :param behavior_model: ``"diffusion"``, ``"gaussian"``, a name added with
        :func:`~sb3_dare.dare.register_behavior_model`, a fitted behaviour model object, or the path of a saved one
    :param behavior_steps: gradient steps to fit the behaviour model
    :param energy_steps: gradient steps to fit the energy network (diffusion with guidance only)
    :param behavior_batch_size: minibatch size of both fits
    :param behavior_kwargs: constructor arguments of the behaviour model (e.g. ``hidden_sizes``, ``solver_steps``)
    :param guidance_scale: energy guidance scale w of the reference sampler (0 = plain behaviour sampling;
        ignored with a warning for the Gaussian model)
    :param energy_beta: inverse temperature beta_e of the CEP target ``softmax(beta_e Q)``
    :param n_support_actions: CEP support actions per state (sampled once and cached)
    :param max_support_states: CEP uses at most this many states (a random subset of the dataset)
    :param exchange: ``"posterior"`` (DARE), ``"bayes"`` (its posterior without the side conditions), ``"origin"``,
        ``"threshold"``, ``"random"`` or ``"none"``
    :param exchange_quantile: the threshold rule's score quantile
    :param sigma_floor: floor of each fitted score std, relative to the batch's score std
    :param score_ema: None (fit each batch on its own) or the decay of moving averages of the Gaussians' moments
    :param exchange_warmup: use the origin rule until the online part holds ``batch_size`` transitions
    :param score_mode: ``"cached"`` (scores computed once, when transitions enter the buffer) or ``"per_batch"``
    :param n_reference_samples: reference actions per transition
    :param score_reduction: ``"mean"`` or ``"likelihood"`` over several reference actions
    :param score_sigma: sigma of the score ``||a_ref - a||^2 / (2 sigma^2)`` (1; it only rescales the scores, and the
        exchange is invariant to it, except with ``score_reduction="likelihood"`` and several reference actions)
    :param online_ent_coef: the fixed entropy coefficient alpha of the online-like objective
    :param kwargs: IQL's arguments (``dataset``, ``offline_steps``, ``learning_rate``, ``expectile``, ...)
    """

    base_algorithm = IQL

    def __init__(
        self,
        policy: str | type[Any] = "MlpPolicy",
        env: GymEnv | str | None = None,
        behavior_model: str | BehaviorModel | os.PathLike = "diffusion",
        behavior_steps: int = 50_000,
        energy_steps: int = 20_000,
        behavior_batch_size: int = 256,
        behavior_kwargs: dict[str, Any] | None = None,
        guidance_scale: float = 5.0,
        energy_beta: float = 3.0,
        n_support_actions: int = 16,
        max_support_states: int = 100_000,
        exchange: str = "posterior",
        exchange_quantile: float = 0.5,
        sigma_floor: float = 0.05,
        score_ema: float | None = None,
        exchange_warmup: bool = True,
        score_mode: str = "cached",
        n_reference_samples: int = 1,
        score_reduction: str = "mean",
        score_sigma: float = 1.0,
        online_ent_coef: float = 0.01,
        **kwargs: Any,
    ):
        self.online_ent_coef = online_ent_coef
        self._set_dare_options(
            behavior_model, behavior_steps, energy_steps, behavior_batch_size, behavior_kwargs, guidance_scale,
            energy_beta, n_support_actions, max_support_states, exchange, exchange_quantile, sigma_floor, score_ema,
            exchange_warmup, score_mode, n_reference_samples, score_reduction, score_sigma,
        )  # fmt: skip
        super().__init__(policy, env, **kwargs)

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        if not self.online_ent_coef >= 0:
            raise ValueError(f"online_ent_coef must be >= 0, got {self.online_ent_coef}.")

    def _online_like_objective(
        self,
        observations: th.Tensor,
        next_observations: th.Tensor,
        replay_data: OfflineOnlineSamples,
        online_index: th.Tensor,
        actor_mean: th.Tensor,
        actor_log_std: th.Tensor,
    ) -> tuple[th.Tensor, th.Tensor, dict[str, th.Tensor]]:
        alpha = self.online_ent_coef
        online_observations = observations[online_index]
        online_next_observations = next_observations[online_index]
        rewards = replay_data.rewards.squeeze(-1)[online_index]
        not_done = 1.0 - replay_data.dones.squeeze(-1)[online_index]
        with th.no_grad():
            # y = r + gamma (1 - d) (min_k Qbar_k(s', a') - alpha log pi(a'|s')),  a' ~ pi(.|s')
            next_actions, next_log_prob = self.actor.action_log_prob(online_next_observations)
            next_q = self.critic_target(online_next_observations, next_actions).min(dim=0).values
            targets = rewards + self.gamma * not_done * (next_q - alpha * next_log_prob)
        # L_pi = alpha log pi(ã|s) - min_k Q_k(s, ã),  ã ~ pi(.|s) reparameterised (from the Gaussian the base's
        # actor loss already computed on these states: one actor forward and backward pass serves both terms)
        actions, log_prob = self.actor.sample_with_log_prob(actor_mean, actor_log_std)
        # the critic's parameters take no gradient from the actor's loss (one backward pass serves all losses)
        self.critic.requires_grad_(False)
        q_policy = self.critic(online_observations, actions).min(dim=0).values
        self.critic.requires_grad_(True)
        actor_loss_sum = (alpha * log_prob - q_policy).sum()
        metrics = {"dare/online_like_log_prob": log_prob.detach().mean()} if len(log_prob) else {}
        return targets, actor_loss_sum, metrics


class DARE_CalQL(DAREMixin, CalQL):
    """
    DARE on Cal-QL: the TD loss on all samples, the calibrated conservative regulariser only on offline-like
    samples, actor and temperature as in Cal-QL on all samples.

    :param policy: ``"MlpPolicy"`` or a policy class
    :param env: the env (or its id)
    :param behavior_model: ``"diffusion"``, ``"gaussian"``, a name added with
        :func:`~sb3_dare.dare.register_behavior_model`, a fitted behaviour model object, or the path of a saved one
    :param behavior_steps: gradient steps to fit the behaviour model
    :param energy_steps: gradient steps to fit the energy network (diffusion with guidance only)
    :param behavior_batch_size: minibatch size of both fits
    :param behavior_kwargs: constructor arguments of the behaviour model
    :param guidance_scale: energy guidance scale w (0 = plain behaviour sampling; ignored for the Gaussian model)
    :param energy_beta: inverse temperature beta_e of the CEP target
    :param n_support_actions: CEP support actions per state
    :param max_support_states: CEP uses at most this many states
    :param exchange: ``"posterior"`` (DARE), ``"bayes"`` (its posterior without the side conditions), ``"origin"``,
        ``"threshold"``, ``"random"`` or ``"none"``
    :param exchange_quantile: the threshold rule's score quantile
    :param sigma_floor: floor of each fitted score std, relative to the batch's score std
    :param score_ema: None or the decay of moving averages of the Gaussians' moments
    :param exchange_warmup: use the origin rule until the online part holds ``batch_size`` transitions
    :param score_mode: ``"cached"`` or ``"per_batch"``
    :param n_reference_samples: reference actions per transition
    :param score_reduction: ``"mean"`` or ``"likelihood"``
    :param score_sigma: sigma of the score ``||a_ref - a||^2 / (2 sigma^2)`` (1; it only rescales the scores, and the
        exchange is invariant to it, except with ``score_reduction="likelihood"`` and several reference actions)
    :param kwargs: CalQL's arguments (``dataset``, ``offline_steps``, ``cql_alpha``, ...)
    """

    base_algorithm = CalQL

    def __init__(
        self,
        policy: str | type[Any] = "MlpPolicy",
        env: GymEnv | str | None = None,
        behavior_model: str | BehaviorModel | os.PathLike = "diffusion",
        behavior_steps: int = 50_000,
        energy_steps: int = 20_000,
        behavior_batch_size: int = 256,
        behavior_kwargs: dict[str, Any] | None = None,
        guidance_scale: float = 5.0,
        energy_beta: float = 3.0,
        n_support_actions: int = 16,
        max_support_states: int = 100_000,
        exchange: str = "posterior",
        exchange_quantile: float = 0.5,
        sigma_floor: float = 0.05,
        score_ema: float | None = None,
        exchange_warmup: bool = True,
        score_mode: str = "cached",
        n_reference_samples: int = 1,
        score_reduction: str = "mean",
        score_sigma: float = 1.0,
        **kwargs: Any,
    ):
        self._set_dare_options(
            behavior_model, behavior_steps, energy_steps, behavior_batch_size, behavior_kwargs, guidance_scale,
            energy_beta, n_support_actions, max_support_states, exchange, exchange_quantile, sigma_floor, score_ema,
            exchange_warmup, score_mode, n_reference_samples, score_reduction, score_sigma,
        )  # fmt: skip
        super().__init__(policy, env, **kwargs)
