"""
Everything RL Zoo (rl_zoo3 2.9.x) needs to know about sb3_dare: the algorithm registry, default hyperparameter files,
Optuna samplers and converters, and the offline-checkpoint cache shared by Optuna trials.

RL Zoo has no plug-in mechanism: it checks ``--algo`` against its own ``rl_zoo3.utils.ALGOS`` before it imports
``--gym-packages``. Two routes put our algorithms there:

- ``python -m sb3_dare.train | enjoy | record_video`` call :func:`register`, then RL Zoo's own code;
- the start-up hook (``sb3_dare_zoo.pth`` -> ``_sb3_dare_zoo_hook``, installed with the package) calls
  :func:`patch_module` right after RL Zoo imports ``rl_zoo3.utils``, ``rl_zoo3.hyperparams_opt`` or
  ``rl_zoo3.exp_manager``, so that ``python -m rl_zoo3.train --algo iql`` works as well.

What is registered under each name is a thin subclass of the algorithm (:func:`zoo_class`) that adds two things RL
Zoo needs: online-phase learning rates (``online_learning_rate``, ``online_actor_learning_rate``), so that Optuna trials
can share one offline pre-training, and that shared pre-training itself (a checkpoint per dataset and offline
hyperparameters under ``<log folder>/offline_cache/``). Models it saves load with the plain classes too.
See ``docs/zoo.md`` for the user's side.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import importlib
import inspect
import json
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from stable_baselines3.common.save_util import load_from_zip_file, recursive_setattr
from stable_baselines3.common.type_aliases import MaybeCallback
from stable_baselines3.common.vec_env import VecEnv

from sb3_dare.common.env_spec import env_id_of
from sb3_dare.common.o2o import O2OAlgorithm
from sb3_dare.data import OfflineData

if TYPE_CHECKING:
    import optuna

__all__ = [
    "ALGORITHMS",
    "MissingDatasetError",
    "available_algorithms",
    "convert_params",
    "default_config_path",
    "find_patched_spec",
    "patch_module",
    "register",
    "sample_calql_params",
    "sample_dare_calql_params",
    "sample_dare_iql_params",
    "sample_iql_params",
    "zoo_class",
]

#: RL Zoo name -> ``"module:Class"``, imported lazily; a name whose module or class does not exist is skipped
ALGORITHMS: dict[str, str] = {
    "iql": "sb3_dare.iql:IQL",
    "calql": "sb3_dare.calql:CalQL",
    "dare_iql": "sb3_dare.dare:DARE_IQL",
    "dare_calql": "sb3_dare.dare:DARE_CalQL",
}

#: the RL Zoo modules :func:`patch_module` knows (the start-up hook watches the same three)
ZOO_MODULES = ("rl_zoo3.utils", "rl_zoo3.hyperparams_opt", "rl_zoo3.exp_manager")

#: set to 1 to let the Optuna samplers also draw the offline hyperparameters (each trial then pre-trains its own model)
OPTUNA_OFFLINE_ENV_VAR = "SB3_DARE_OPTUNA_OFFLINE"
#: set to 0 to switch off the offline-checkpoint cache of Optuna trials (each trial then runs the offline phase)
OPTUNA_CACHE_ENV_VAR = "SB3_DARE_OPTUNA_CACHE"
#: folder of the offline checkpoints, under RL Zoo's log folder (``-f``, default ``logs``)
OFFLINE_CACHE_FOLDER = "offline_cache"

#: constructor arguments that act only after the offline phase: they are not part of the offline-checkpoint key.
#: Anything not listed here is part of the key (an unknown argument costs a cache miss, never a wrong hit).
ONLINE_ONLY_ARGUMENTS = frozenset(
    {
        "offline_ratio",
        "online_learning_rate",
        "online_actor_learning_rate",
        "cql_alpha_online",
        "buffer_size",
        "learning_starts",
        "train_freq",
        "gradient_steps",
        "stats_window_size",
        "offline_log_interval",
        "offline_eval_freq",
        "offline_eval_episodes",
        "eval_env",
        "tensorboard_log",
        "verbose",
        "seed",
        "device",
        # DARE: what acts between the phases (behaviour model, guidance, scores) and online (exchange, entropy)
        "behavior_model",
        "guidance_scale",
        "exchange",
        "online_ent_coef",
    }
)


#: modules of a model that act only after the offline phase: a trial keeps its own when it restores the cached one
POST_OFFLINE_MODULES = frozenset({"behavior"})


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value not in {"0", "false", "no", "off"}


# ---------------------------------------------------------------------------------------------- errors


class MissingDatasetError(FileNotFoundError):
    """
    The offline dataset of a run is not set, or cannot be found.

    A ``FileNotFoundError`` rather than a ``ValueError``: RL Zoo's Optuna objective prunes trials that raise
    ``ValueError``, and a missing dataset must stop the search, not prune every trial.
    """


def _without_sb3_progress_bar(callback: MaybeCallback) -> tuple[MaybeCallback, bool]:
    """
    ``callback`` without SB3's ``ProgressBarCallback`` (a list's or a single one), and whether there was one. The bar
    left out is silenced rather than only dropped: RL Zoo calls ``on_training_end()`` of its first callback itself
    after ``learn()`` (before it saves the model), and a bar that never started would raise there.
    """
    from stable_baselines3.common.callbacks import ProgressBarCallback

    bars = [callback] if type(callback) is ProgressBarCallback else []
    if isinstance(callback, list):
        bars = [item for item in callback if type(item) is ProgressBarCallback]
    for bar in bars:
        bar._on_training_start = bar._on_training_end = lambda: None  # type: ignore[method-assign]
        bar._on_step = lambda: True  # type: ignore[method-assign]
    if not bars:
        return callback, False
    if isinstance(callback, list):
        return [item for item in callback if type(item) is not ProgressBarCallback], True
    return None, True


def _suggested_dataset_id(env_id: str | None) -> str:
    name = re.sub(r"-v\d+$", "", (env_id or "<env>").split(":")[-1].split("/")[-1]).lower()
    return f"mujoco/{name}/medium-v0"


def _params_hint(dataset_id: str) -> str:
    return (
        f"pass it to RL Zoo with -params dataset:\"'{dataset_id}'\" (RL Zoo evaluates -params values: a string needs the "
        "inner quotes)"
    )


# ---------------------------------------------------------------------------------------------- Optuna trial context


@dataclasses.dataclass(frozen=True)
class _TrialContext:
    cache_dir: Path
    trial_number: int


# set by the patched ExperimentManager.objective around each trial (threads of --n-jobs get their own value)
_TRIAL_CONTEXT: contextvars.ContextVar[_TrialContext | None] = contextvars.ContextVar("sb3_dare_zoo_trial", default=None)


def _report(context: _TrialContext, message: str) -> None:
    # trials run with verbose=0: this line is what tells the user the cache works
    print(f"sb3_dare: trial {context.trial_number} {message}", flush=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``fcntl.flock`` on ``path`` (between processes and between threads); no lock where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # Windows: workers on one machine may then pre-train the same checkpoint twice (still correct)
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _canonical(value: Any) -> Any:
    """A JSON-serialisable, address-free form of a hyperparameter value (for the cache key)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {str(key): _canonical(item) for key, item in sorted(value.items(), key=lambda pair: str(pair[0]))}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        return _canonical(value.item())  # numpy / torch scalars
    if inspect.isfunction(value):
        cells = [_canonical(cell.cell_contents) for cell in (value.__closure__ or ())]
        return {
            "function": f"{value.__module__}.{value.__qualname__}",
            "closure": cells,
            "defaults": _canonical(value.__defaults__),
        }
    module = type(value).__module__.split(".")[0]
    if hasattr(value, "__dict__") and module in {"stable_baselines3", "sb3_contrib", "rl_zoo3", "sb3_dare"}:
        return {"class": _canonical(type(value)), "state": _canonical(vars(value))}  # schedules and the like
    return repr(value)


# ---------------------------------------------------------------------------------------------- the RL Zoo classes


SelfZooAlgorithm = TypeVar("SelfZooAlgorithm", bound="ZooAlgorithm")


class ZooAlgorithm(O2OAlgorithm):
    """
    What RL Zoo registers: an sb3_dare algorithm (the next class in the MRO, see :func:`zoo_class`) plus online-phase
    learning rates and the offline-checkpoint cache of Optuna trials.

    :param online_learning_rate: learning rate from the end of the offline phase on (replaces ``learning_rate``;
        None: keep it). The offline phase always uses ``learning_rate``.
    :param online_actor_learning_rate: the same for ``actor_learning_rate`` (None: keep it)
    :param args: the algorithm's positional arguments
    :param kwargs: the algorithm's keyword arguments
    """

    #: the name under which RL Zoo knows the class
    zoo_name: str = ""

    def __init__(
        self,
        *args: Any,
        online_learning_rate: float | None = None,
        online_actor_learning_rate: float | None = None,
        **kwargs: Any,
    ):
        for name, value in (
            ("online_learning_rate", online_learning_rate),
            ("online_actor_learning_rate", online_actor_learning_rate),
        ):
            if value is not None and not float(value) > 0:
                raise ValueError(f"{name} must be > 0 (or None), got {value}.")
        self.online_learning_rate = online_learning_rate
        self.online_actor_learning_rate = online_actor_learning_rate
        self._zoo_defer_phase_end = False
        # what the offline-checkpoint key is made of: the arguments as RL Zoo passed them (not saved with the model)
        self._zoo_arguments = {key: value for key, value in kwargs.items() if key not in {"env", "_init_setup_model"}}
        if args:
            self._zoo_arguments["policy"] = args[0]
        super().__init__(*args, **kwargs)
        if kwargs.get("_init_setup_model", True) and self.dataset is None and self._dataset_object is None:
            if self.offline_steps > 0:
                self._raise_no_dataset()

    @classmethod
    def saved_algorithm_name(cls) -> str:
        """
        The algorithm this class wraps (``IQL`` for ``ZooIQL``): models saved through RL Zoo load with the plain
        class, and RL Zoo loads models saved with it.

        :return: the name
        """
        wrapped = next(
            klass for klass in cls.__mro__ if issubclass(klass, O2OAlgorithm) and not issubclass(klass, ZooAlgorithm)
        )
        return wrapped.saved_algorithm_name()

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfZooAlgorithm],
        path: Any,
        env: Any = None,
        device: Any = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfZooAlgorithm:
        """
        ``load``, plus RL Zoo's route from a base model to DARE: a DARE class given the zip of its base algorithm
        (``python -m rl_zoo3.train --algo dare_iql -i logs/iql/<env>_1/<env>.zip``) starts from it with
        ``from_base``: the base's networks and offline phase are kept (the yml's ``offline_steps`` is ignored, the
        base's stands), and DARE fits its behaviour model before the online phase. A trained model keeps the
        ``reward_scale`` and ``reward_bias`` it was trained with when the hyperparameters give others (warning).

        :param path: the saved zip
        :param env: the env to continue in
        :param device: torch device
        :param custom_objects: see SB3
        :param print_system_info: see SB3
        :param force_reset: see SB3
        :param kwargs: attributes to change (RL Zoo passes the yml's hyperparameters)
        :return: the model
        """
        from sb3_dare.common.checkpoint import ALGORITHM_KEY, _same_algorithm, saved_data_of

        saved_data = saved_data_of(path) if isinstance(path, str | os.PathLike) else {}
        for key in ("reward_scale", "reward_bias"):
            # RL Zoo hands the yml's values to load(): a trained model keeps the reward scale its critics were fitted at
            if key in kwargs and key in saved_data and kwargs[key] != saved_data[key]:
                warnings.warn(
                    f"{os.fspath(path)!r} was trained with {key}={saved_data[key]!r}: the hyperparameters' {kwargs[key]!r} "
                    "is ignored (its critics were fitted at the saved scale).",
                    stacklevel=2,
                )
                kwargs.pop(key)
        base_class = getattr(cls, "base_algorithm", None)
        saved = saved_data.get(ALGORITHM_KEY)  # the zip is read once for both checks
        if base_class is not None and saved is not None and _same_algorithm(str(saved), base_class):
            kwargs.pop("offline_steps", None)  # the base's offline phase is the one this run fine-tunes from
            if kwargs.get("verbose", 0) >= 1:
                print(f"{os.fspath(path)!r} holds {base_class.__name__}: starting {cls.__name__} from it (from_base)")
            return cls.from_base(path, env=env, device=device, **kwargs)  # type: ignore[attr-defined]  # the DARE classes
        return super().load(
            path,
            env=env,
            device=device,
            custom_objects=custom_objects,
            print_system_info=print_system_info,
            force_reset=force_reset,
            **kwargs,
        )

    def _raise_no_dataset(self) -> NoReturn:
        env_id = env_id_of(self.env)
        dataset_id = _suggested_dataset_id(env_id)
        from sb3_dare.dare.dare import DAREMixin
        from sb3_dare.data.loading import build_command_hint

        config = default_config_path(self.zoo_name)
        if isinstance(self, DAREMixin):
            # DARE fits its behaviour model on the dataset, also when it trains online only
            why, online_only = "it fits its behaviour model on it", ""
        else:
            why = f"offline_steps={self.offline_steps}"
            online_only = " To train online only: -params offline_steps:0 offline_ratio:0.0."
        raise MissingDatasetError(
            f"{self.zoo_name} needs an offline dataset for {env_id or 'this env'} and none is set ({why}): the "
            f"hyperparameter file (-conf; default {config or f'{self.zoo_name}.yml'}) has no entry with a `dataset:` for "
            f"this env. Build one locally with `{build_command_hint(dataset_id, env_id)}`, then "
            f"{_params_hint(dataset_id)}, or pass a hyperparameter file with -conf.{online_only}"
        )

    def _load_offline_data(self, env: VecEnv | None) -> OfflineData:
        try:
            return super()._load_offline_data(env)
        except FileNotFoundError as error:
            if isinstance(error, MissingDatasetError):
                raise
            raise MissingDatasetError(
                f"{error} To use another dataset with RL Zoo, pass its id with -params dataset:\"'<dataset id>'\" (RL Zoo "
                "evaluates -params values: a string needs the inner quotes)."
            ) from error

    # ------------------------------------------------------------------ online-phase learning rates

    def _on_offline_phase_end(self) -> None:
        if self._zoo_defer_phase_end:
            return  # the checkpoint of an Optuna trial is written before the phase-end work (DARE's behaviour model)
        super()._on_offline_phase_end()
        self._apply_online_learning_rates()

    def _apply_online_learning_rates(self) -> None:
        if self.online_learning_rate is not None:
            self.learning_rate = self.online_learning_rate
            self._setup_lr_schedule()
        if self.online_actor_learning_rate is not None:
            if not hasattr(self, "actor_learning_rate"):
                raise ValueError(f"{type(self).__name__} has no actor_learning_rate: do not set online_actor_learning_rate.")
            self.actor_learning_rate = self.online_actor_learning_rate

    # ------------------------------------------------------------------ the offline checkpoint of Optuna trials

    def learn(
        self: SelfZooAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfZooAlgorithm:
        """
        Inside an RL Zoo Optuna trial, first restore the offline phase from the shared checkpoint (or run it once and
        write the checkpoint); then the algorithm's own ``learn()``.

        :param total_timesteps: environment steps of the online phase
        :param callback: SB3 callbacks
        :param log_interval: dump the online logs every this many episodes
        :param tb_log_name: TensorBoard run name (default: the algorithm's name)
        :param reset_num_timesteps: reset the env-step counter
        :param progress_bar: show a progress bar
        :return: the model
        """
        context = _TRIAL_CONTEXT.get()
        if context is not None and self.offline_updates == 0 and not self.offline_phase_done and self.offline_steps > 0:
            self._restore_or_create_offline_checkpoint(context)
        # RL Zoo's -P adds SB3's ProgressBarCallback, which counts env steps only and stands still through the offline
        # phase: the algorithm's own bar over both phases takes its place
        callback, replaced = _without_sb3_progress_bar(callback)
        progress_bar = progress_bar or replaced
        return super().learn(
            total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def offline_cache_key(self) -> tuple[str, dict[str, Any]]:
        """
        The key of this model's offline checkpoint: a hash of the algorithm, the env id, the package version, every
        constructor argument except those in :data:`ONLINE_ONLY_ARGUMENTS` (the dataset and the offline
        hyperparameters among them) and a fingerprint of the offline data's content.

        :return: the key and what it was computed from
        """
        from sb3_dare import __version__

        arguments = {key: value for key, value in self._zoo_arguments.items() if key not in ONLINE_ONLY_ARGUMENTS}
        material = {
            "algorithm": self.zoo_name,
            "sb3_dare": __version__,
            "env": env_id_of(self.env),
            "arguments": _canonical(arguments),
            # the data itself: one id can name other data (another MINARI_DATASETS_PATH, a dataset rebuilt with --overwrite)
            "data": None
            if self.dataset is None and self._dataset_object is None
            else self._load_offline_data(self.env).fingerprint(),
        }
        digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:20]
        return f"{self.zoo_name}_{digest}", material

    def _restore_or_create_offline_checkpoint(self, context: _TrialContext) -> None:
        key, material = self.offline_cache_key()
        context.cache_dir.mkdir(parents=True, exist_ok=True)
        path = context.cache_dir / f"{key}.zip"
        with _file_lock(context.cache_dir / f"{key}.lock"):
            if path.is_file():
                self._restore_offline_checkpoint(path)
                _report(context, f"restored the offline phase ({self.offline_updates} updates) from {path}")
                return
            self._zoo_defer_phase_end = True
            try:
                self.pretrain()
            finally:
                self._zoo_defer_phase_end = False
            # the phase-end work (and the online learning rates) come in learn(), per trial
            self.offline_phase_done = False
            _write_atomically(path.with_suffix(".json"), lambda name: Path(name).write_text(json.dumps(material, indent=2)))
            _write_atomically(path, self.save)
            _report(context, f"ran the offline phase ({self.offline_updates} updates) and cached it in {path}")

    def _restore_offline_checkpoint(self, path: Path) -> None:
        data, params, pytorch_variables = load_from_zip_file(path, device=self.device)
        # what acts only after the offline phase is the trial's own (not in the key): e.g. DARE's behaviour model,
        # which the cached run never fitted, and which may be another kind of model or a pre-fitted one here
        own = {name: getattr(self, name).state_dict() for name in POST_OFFLINE_MODULES if name in params}
        self.set_parameters({**params, **own}, exact_match=True, device=self.device)
        for name, tensor in (pytorch_variables or {}).items():
            recursive_setattr(self, f"{name}.data", tensor)
        assert data is not None
        self.offline_updates = int(data["offline_updates"])
        self._n_updates = int(data.get("_n_updates", self.offline_updates))
        self.offline_phase_done = False

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_zoo_arguments", "_zoo_defer_phase_end"]


def _write_atomically(path: Path, write: Callable[[str], Any]) -> None:
    """Write through a temporary file in the same folder, then ``os.replace`` it: readers never see a partial file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


_ZOO_CLASSES: dict[str, type[ZooAlgorithm]] = {}


def zoo_class(name: str, algorithm_class: type[O2OAlgorithm]) -> type[ZooAlgorithm]:
    """
    The class RL Zoo registers for an algorithm: ``Zoo<Class>(ZooAlgorithm, <Class>)``, created once and kept as an
    attribute of this module (so that it pickles by reference).

    :param name: the RL Zoo name (``"iql"``)
    :param algorithm_class: the algorithm (``IQL``)
    :return: the subclass
    """
    existing = _ZOO_CLASSES.get(name)
    if existing is not None and algorithm_class in existing.__mro__:
        return existing
    class_name = f"Zoo{algorithm_class.__name__}"
    namespace = {
        "__module__": __name__,
        "__qualname__": class_name,
        "__doc__": f"{algorithm_class.__name__} for RL Zoo.",
        "zoo_name": name,
    }
    new_class = type(class_name, (ZooAlgorithm, algorithm_class), namespace)
    _ZOO_CLASSES[name] = new_class
    setattr(sys.modules[__name__], class_name, new_class)
    return new_class


def __getattr__(name: str) -> Any:
    # the Zoo<Algorithm> classes are made on first use; a checkpoint manifest or a pickle may name one before that
    if name.startswith("Zoo"):
        for algorithm_class in available_algorithms().values():
            if algorithm_class.__name__ == name:
                return algorithm_class
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _import_algorithm(name: str) -> type[O2OAlgorithm] | None:
    module_name, class_name = ALGORITHMS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and module_name.startswith(error.name):
            return None  # the algorithm is not part of this version
        warnings.warn(f"sb3_dare: {name} is not available in RL Zoo: importing {module_name} failed ({error}).")
        return None
    except Exception as error:  # a broken module must not break RL Zoo's other algorithms
        warnings.warn(f"sb3_dare: {name} is not available in RL Zoo: importing {module_name} failed ({error!r}).")
        return None
    return getattr(module, class_name, None)


@functools.cache
def available_algorithms() -> dict[str, type[ZooAlgorithm]]:
    """
    The algorithms of :data:`ALGORITHMS` that exist in this installation, as their RL Zoo classes.

    :return: RL Zoo name -> class
    """
    found: dict[str, type[ZooAlgorithm]] = {}
    for name in ALGORITHMS:
        algorithm_class = _import_algorithm(name)
        if algorithm_class is not None:
            found[name] = zoo_class(name, algorithm_class)
    return found


def default_config_path(name: str) -> Path | None:
    """
    The RL Zoo hyperparameter file shipped for an algorithm: ``sb3_dare/hyperparams/<name>.yml`` in an installed wheel,
    ``<repository>/hyperparams/<name>.yml`` in a source checkout or an editable install.

    :param name: the RL Zoo name
    :return: the path, or None if there is none
    """
    package = Path(__file__).resolve().parent
    for folder in (package / "hyperparams", package.parent / "hyperparams"):
        path = folder / f"{name}.yml"
        if path.is_file():
            return path
    return None


# ---------------------------------------------------------------------------------------------- Optuna


def _search_offline() -> bool:
    return _flag(OPTUNA_OFFLINE_ENV_VAR, default=False)


def _accepted_arguments(name: str) -> set[str]:
    algorithm_class = available_algorithms().get(name)
    if algorithm_class is None:
        return set()
    accepted: set[str] = set()
    for klass in algorithm_class.__mro__:
        if "__init__" in vars(klass):
            accepted |= set(inspect.signature(vars(klass)["__init__"]).parameters)
    return accepted


def _sample_offline_ratio(trial: optuna.Trial) -> dict[str, Any]:
    return {"offline_ratio": trial.suggest_float("offline_ratio", 0.0, 0.9)}


def sample_iql_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """
    Optuna sampler for IQL. By default only what acts after the offline phase (so trials share one offline
    checkpoint): the online learning rate and the share of offline data in online batches. With
    ``SB3_DARE_OPTUNA_OFFLINE=1`` also the offline learning rate, ``expectile`` and ``beta``. Network sizes are not
    sampled.

    :param trial: the Optuna trial
    :param n_actions: action dimension (unused)
    :param n_envs: number of envs (unused)
    :param additional_args: RL Zoo's extra arguments (unused)
    :return: constructor keyword arguments (already in their final form: the converter is the identity)
    """
    params = {"online_learning_rate": trial.suggest_float("online_learning_rate", 1e-5, 1e-3, log=True)}
    params.update(_sample_offline_ratio(trial))
    if _search_offline():
        params["learning_rate"] = trial.suggest_float("learning_rate", 3e-5, 1e-3, log=True)
        params["expectile"] = trial.suggest_float("expectile", 0.5, 0.95, step=0.05)
        params["beta"] = trial.suggest_float("beta", 0.5, 10.0, log=True)
    return params


def sample_calql_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """
    Optuna sampler for Cal-QL. By default the online learning rates of the critics and of the actor (and entropy
    coefficient) and the share of offline data in online batches. With ``SB3_DARE_OPTUNA_OFFLINE=1`` also the offline
    learning rates and ``cql_alpha``. Network sizes are not sampled.

    :param trial: the Optuna trial
    :param n_actions: action dimension (unused)
    :param n_envs: number of envs (unused)
    :param additional_args: RL Zoo's extra arguments (unused)
    :return: constructor keyword arguments
    """
    params = {
        "online_learning_rate": trial.suggest_float("online_learning_rate", 1e-5, 1e-3, log=True),
        "online_actor_learning_rate": trial.suggest_float("online_actor_learning_rate", 1e-5, 1e-3, log=True),
    }
    params.update(_sample_offline_ratio(trial))
    if _search_offline():
        params["learning_rate"] = trial.suggest_float("learning_rate", 3e-5, 1e-3, log=True)
        params["actor_learning_rate"] = trial.suggest_float("actor_learning_rate", 1e-5, 1e-3, log=True)
        params["cql_alpha"] = trial.suggest_float("cql_alpha", 0.5, 20.0, log=True)
    return params


#: guidance scales to try: 0 (plain behaviour sampling) and the paper's per-dataset values
GUIDANCE_SCALES = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 10.0)


def _sample_dare(trial: optuna.Trial, name: str) -> dict[str, Any]:
    """DARE's post-offline knobs, each only if the class takes it (its API decides, not this module)."""
    accepted = _accepted_arguments(name)
    params: dict[str, Any] = {}
    if "guidance_scale" in accepted:
        params["guidance_scale"] = trial.suggest_categorical("guidance_scale", GUIDANCE_SCALES)
    if "exchange" in accepted:
        # imported here, in a trial, not when RL Zoo starts (the start-up hook imports this module in every process)
        from sb3_dare.dare import EXCHANGE_RULES

        params["exchange"] = trial.suggest_categorical("exchange", tuple(EXCHANGE_RULES))
    if "online_ent_coef" in accepted:
        params["online_ent_coef"] = trial.suggest_float("online_ent_coef", 1e-3, 0.5, log=True)
    return params


def sample_dare_iql_params(
    trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]
) -> dict[str, Any]:
    """
    Optuna sampler for DARE_IQL: :func:`sample_iql_params` plus the guidance scale, the exchange rule (from
    ``sb3_dare.dare.EXCHANGE_RULES``) and the online entropy coefficient, each where DARE_IQL takes it.

    :param trial: the Optuna trial
    :param n_actions: action dimension (unused)
    :param n_envs: number of envs (unused)
    :param additional_args: RL Zoo's extra arguments (unused)
    :return: constructor keyword arguments
    """
    return {**sample_iql_params(trial, n_actions, n_envs, additional_args), **_sample_dare(trial, "dare_iql")}


def sample_dare_calql_params(
    trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]
) -> dict[str, Any]:
    """
    Optuna sampler for DARE_CalQL: :func:`sample_calql_params` plus DARE's knobs (see :func:`sample_dare_iql_params`).

    :param trial: the Optuna trial
    :param n_actions: action dimension (unused)
    :param n_envs: number of envs (unused)
    :param additional_args: RL Zoo's extra arguments (unused)
    :return: constructor keyword arguments
    """
    return {**sample_calql_params(trial, n_actions, n_envs, additional_args), **_sample_dare(trial, "dare_calql")}


def convert_params(params: dict[str, Any]) -> dict[str, Any]:
    """
    Converter of ``--trial-id``: the samplers suggest constructor arguments under their own names, so a trial's
    parameters are the keyword arguments.

    :param params: ``trial.params``
    :return: constructor keyword arguments
    """
    return dict(params)


Sampler = Callable[["optuna.Trial", int, int, dict[str, Any]], dict[str, Any]]

SAMPLERS: dict[str, Sampler] = {
    "iql": sample_iql_params,
    "calql": sample_calql_params,
    "dare_iql": sample_dare_iql_params,
    "dare_calql": sample_dare_calql_params,
}
CONVERTERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {name: convert_params for name in ALGORITHMS}


# ---------------------------------------------------------------------------------------------- patching RL Zoo


def _is_ours(algos: dict[str, Any], name: str) -> bool:
    return getattr(algos.get(name), "zoo_name", None) == name


def _patch_utils(module: ModuleType) -> None:
    for name, algorithm_class in available_algorithms().items():
        # never replace an algorithm RL Zoo itself (or another plug-in) registered under the same name
        module.ALGOS.setdefault(name, algorithm_class)


def _patch_hyperparams_opt(module: ModuleType) -> None:
    for name in available_algorithms():
        module.HYPERPARAMS_SAMPLER.setdefault(name, SAMPLERS[name])
        module.HYPERPARAMS_CONVERTER.setdefault(name, CONVERTERS[name])


def _patch_exp_manager(module: ModuleType) -> None:
    manager = module.ExperimentManager
    if getattr(manager, "_sb3_dare_patched", False):
        return
    original_init = manager.__init__
    signature = inspect.signature(original_init)
    original_objective = manager.objective

    @functools.wraps(original_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        if _is_ours(module.ALGOS, self.algo) and not signature.bind(self, *args, **kwargs).arguments.get("config"):
            # RL Zoo looks for <rl_zoo3>/hyperparams/<algo>.yml: use the file shipped with sb3_dare
            path = default_config_path(self.algo)
            if path is not None:
                self.config = str(path)

    @functools.wraps(original_objective)
    def objective(self: Any, trial: optuna.Trial) -> float:
        if not (_is_ours(module.ALGOS, self.algo) and _flag(OPTUNA_CACHE_ENV_VAR, default=True)):
            return original_objective(self, trial)
        token = _TRIAL_CONTEXT.set(_TrialContext(Path(self.log_folder) / OFFLINE_CACHE_FOLDER, trial.number))
        try:
            return original_objective(self, trial)
        finally:
            _TRIAL_CONTEXT.reset(token)

    manager.__init__ = __init__
    manager.objective = objective
    manager._sb3_dare_patched = True


_PATCHES: dict[str, Callable[[ModuleType], None]] = {
    "rl_zoo3.utils": _patch_utils,
    "rl_zoo3.hyperparams_opt": _patch_hyperparams_opt,
    "rl_zoo3.exp_manager": _patch_exp_manager,
}


def patch_module(name: str, module: ModuleType) -> None:
    """
    Register sb3_dare in one RL Zoo module, right after it was imported (idempotent; unknown names are ignored):
    ``rl_zoo3.utils`` gets the algorithms in ``ALGOS``; ``rl_zoo3.hyperparams_opt`` the samplers and converters;
    ``rl_zoo3.exp_manager`` the default hyperparameter files and the offline-checkpoint cache of Optuna trials.

    :param name: the module's name
    :param module: the module
    """
    patch = _PATCHES.get(name)
    if patch is not None:
        patch(module)


class _PatchingLoader:
    """Runs an RL Zoo module with its real loader, then patches it; everything else is the real loader's."""

    def __init__(self, loader: Any):
        self._loader = loader

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        create_module = getattr(self._loader, "create_module", None)
        return None if create_module is None else create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        try:
            patch_module(module.__name__, module)
        except Exception as error:  # never break RL Zoo itself
            warnings.warn(
                f"sb3_dare could not register its algorithms in {module.__name__} ({error!r}): use python -m sb3_dare.train, "
                "or set SB3_DARE_NO_ZOO_HOOK=1 to silence this."
            )


def find_patched_spec(fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
    """
    What the start-up hook (``_sb3_dare_zoo_hook``) calls for the RL Zoo modules of :data:`ZOO_MODULES`: the spec the
    other finders give, with a loader that calls :func:`patch_module` right after the module has run.

    :param fullname: the module's name
    :param path: the parent package's ``__path__``
    :param target: see ``importlib.abc.MetaPathFinder.find_spec``
    :return: the spec, or None if no other finder knows the module
    """
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if getattr(finder, "_sb3_dare_zoo_hook", False) or find_spec is None:
            continue
        spec = find_spec(fullname, path, target)
        if spec is not None:
            break
    else:
        return None
    if spec.loader is not None and hasattr(spec.loader, "exec_module"):
        spec.loader = _PatchingLoader(spec.loader)  # type: ignore[assignment]
    return spec


def register() -> None:
    """Import RL Zoo's modules and register sb3_dare's algorithms in them (what the start-up hook does lazily)."""
    for name in ZOO_MODULES:
        patch_module(name, importlib.import_module(name))
