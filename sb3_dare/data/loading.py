"""Load offline datasets (Minari ids, Minari folders, MinariDataset objects) into :class:`OfflineData`."""

from __future__ import annotations

import collections
import os
import warnings
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sb3_dare.common.env_spec import env_id_of
from sb3_dare.data.offline_data import OfflineData

if TYPE_CHECKING:
    import minari
    from stable_baselines3.common.vec_env import VecEnv

DatasetLike = str | os.PathLike | OfflineData | Any  # Any: minari.MinariDataset (imported lazily)
FLATTENED_KEYS = "sb3_dare_flattened_keys"  # metadata of data flattened from Dict observations: the key order used


def build_command_hint(dataset_id: str | None = None, env_id: str | None = None) -> str:
    """The command that builds a dataset locally, for error messages."""
    from sb3_dare.data.builder import QUALITIES

    env_part = env_id or "<EnvId>"
    quality = "medium"
    if dataset_id is not None:
        parts = dataset_id.split("/")
        if len(parts) >= 2 and parts[-1].rsplit("-v", 1)[0] in QUALITIES:  # the builder's qualities only
            quality = parts[-1].rsplit("-v", 1)[0]
    id_part = f" --id {dataset_id}" if dataset_id else ""
    return f"python -m sb3_dare.data build --env {env_part} --quality {quality}{id_part}"


def load_offline_data(
    dataset: DatasetLike,
    env: gym.Env | VecEnv | str | None = None,
    *,
    gamma: float = 0.99,
    flatten_observations: bool = False,
    download: bool = True,
) -> OfflineData:
    """
    Load and validate an offline dataset.

    :param dataset: an existing folder (a Minari dataset folder, or its ``data`` subfolder), else a Minari
        dataset id (looked up under ``$MINARI_DATASETS_PATH``, downloaded when missing and ``download``),
        a ``minari.MinariDataset``, or an :class:`OfflineData` (returned after the env check)
    :param env: the environment (or its id) the data will be used with: its spaces are checked against the
        dataset and its action bounds are used to rescale actions to [-1, 1]. Default: the dataset's own spaces.
    :param gamma: discount factor for the Monte-Carlo returns-to-go
    :param flatten_observations: flatten Dict observations (Box sub-spaces, in the Dict's key order) into one vector
    :param download: try to download a dataset id that is not available locally
    :return: the validated data
    """
    probe = gym.make(env) if isinstance(env, str) else None  # an env id is made once, for its spaces and spec
    try:
        resolved = probe if probe is not None else env
        assert not isinstance(resolved, str)
        return _load(dataset, resolved, gamma, flatten_observations, download)
    finally:
        if probe is not None:
            probe.close()


def _load(
    dataset: DatasetLike, env: gym.Env | VecEnv | None, gamma: float, flatten_observations: bool, download: bool
) -> OfflineData:
    if isinstance(dataset, OfflineData):
        if env is not None:
            observation_space, action_space = _env_spaces(env)
            _check_spaces(dataset.source, dataset.observation_space, dataset.action_space, observation_space, action_space)
            _check_env_id(dataset.source, dataset.env_id, env)
            _check_key_order(dataset, env)
        if not np.isclose(dataset.gamma, gamma):
            dataset.mc_returns = dataset.discounted_returns(gamma)
            dataset.gamma = float(gamma)
        return dataset

    minari_dataset = _open_minari_dataset(dataset, download=download, env_id=env_id_of(env))
    data = _from_minari(
        minari_dataset, env, gamma=gamma, flatten_observations=flatten_observations, source=_source_name(dataset)
    )
    data.reference = data.source  # an id or a folder: it can be loaded again
    return data


def _source_name(dataset: Any) -> str:
    if isinstance(dataset, str | os.PathLike):
        path = os.fspath(dataset)
        # a folder is kept as an absolute path: a model saved with it finds it again from another working directory
        return os.path.abspath(path) if os.path.isdir(path) else path
    spec = getattr(dataset, "spec", None)
    return str(getattr(spec, "dataset_id", None) or getattr(dataset, "id", "minari_dataset"))


def _open_minari_dataset(dataset: Any, *, download: bool, env_id: str | None = None) -> minari.MinariDataset:
    """
    :param env_id: the env's id, for the build command in messages (a placeholder without it)
    """
    import minari

    if isinstance(dataset, minari.MinariDataset):
        return dataset
    if not isinstance(dataset, str | os.PathLike):
        raise ValueError(
            f"dataset must be a Minari dataset id, a folder, a minari.MinariDataset or an OfflineData, got {type(dataset)}."
        )
    path = os.fspath(dataset)
    if os.path.isdir(path):
        data_path = os.path.join(path, "data") if os.path.isdir(os.path.join(path, "data")) else path
        if not os.path.isfile(os.path.join(data_path, "metadata.json")):
            raise FileNotFoundError(
                f"Folder {path!r} is not a Minari dataset: it has no metadata.json (expected <folder>/data/metadata.json). "
                f"Build one with `{build_command_hint(env_id=env_id)}`."
            )
        return minari.MinariDataset(data_path)

    if os.path.isabs(path) or path.startswith((".", "~")):
        # a path, not an id: trying it as a Minari id would only produce a download error about a malformed id
        raise FileNotFoundError(
            f"Dataset folder {path!r} does not exist. Pass an existing Minari dataset folder, or a Minari dataset id "
            f"(like 'sb3_dare/hopper-v5/medium-v0'); build one with `{build_command_hint(env_id=env_id)}`."
        )
    try:
        return minari.load_dataset(path, download=False)
    except FileNotFoundError:
        pass
    local_root = os.environ.get("MINARI_DATASETS_PATH", os.path.join("~", ".minari", "datasets"))

    def not_found(reason: str) -> str:  # no str.format on the message: the id or the error may contain braces
        return (
            f"Dataset {path!r} was not found under {local_root} (MINARI_DATASETS_PATH){reason}. Build a dataset locally "
            f"with `{build_command_hint(path, env_id)}`, point MINARI_DATASETS_PATH at a folder that holds it, or pass a "
            "dataset folder path."
        )

    if not download:
        raise FileNotFoundError(not_found(" and download=False"))
    try:
        return minari.load_dataset(path, download=True)
    except Exception as error:  # network errors come from several clients (httpx, huggingface_hub, OSError)
        raise FileNotFoundError(not_found(f" and could not be downloaded ({type(error).__name__}: {error})")) from error


def _env_spaces(env: gym.Env | VecEnv) -> tuple[spaces.Space, spaces.Space]:
    return env.observation_space, env.action_space


def _check_spaces(
    source: str | None,
    data_observation_space: spaces.Space,
    data_action_space: spaces.Space,
    env_observation_space: spaces.Space,
    env_action_space: spaces.Space,
) -> None:
    if not isinstance(env_action_space, spaces.Box):
        raise ValueError(f"The env has action space {env_action_space}: sb3_dare supports continuous (Box) actions only.")
    env_obs_shape = getattr(env_observation_space, "shape", None)
    if isinstance(env_observation_space, spaces.Dict) or env_obs_shape != data_observation_space.shape:
        flatten_hint = ""
        if (
            env_obs_shape is not None
            and len(env_obs_shape) > 1
            and (int(np.prod(env_obs_shape)),) == data_observation_space.shape
        ):
            flatten_hint = (
                " The dataset's observations are flattened: wrap the env with gymnasium.wrappers.FlattenObservation."
            )
        raise ValueError(
            f"Observation space mismatch between dataset {source!r} and the env:\n  dataset: {data_observation_space}\n"
            f"  env:     {env_observation_space}\nUse the env the dataset was recorded in (or a dataset built for this env)."
            + flatten_hint
        )
    if env_action_space.shape != data_action_space.shape:
        raise ValueError(
            f"Action space mismatch between dataset {source!r} and the env:\n  dataset: {data_action_space}\n"
            f"  env:     {env_action_space}\nUse the env the dataset was recorded in (or a dataset built for this env)."
        )


def _unwrapped_observation_space(env: gym.Env | VecEnv) -> spaces.Space | None:
    """The observation space of the env under its wrappers (a Dict that FlattenObservation turns into a Box)."""
    try:
        if hasattr(env, "get_attr"):  # a VecEnv
            return env.get_attr("unwrapped", indices=[0])[0].observation_space
        return env.unwrapped.observation_space
    except Exception:  # an env that hides its inner env: its own space is all there is to go by
        return None


def _check_key_order(data: OfflineData, env: gym.Env | VecEnv) -> None:
    """Data flattened from Dict observations must have the env's key order (FlattenObservation's)."""
    flattened = data.metadata.get(FLATTENED_KEYS)
    raw_space = _unwrapped_observation_space(env)
    if not isinstance(flattened, str) or not isinstance(raw_space, spaces.Dict):
        return
    if flattened.split(",") != list(raw_space.spaces):
        raise ValueError(
            f"Dataset {data.source!r} was flattened in the key order {flattened.split(',')}, but the env flattens its "
            f"observations in the order {list(raw_space.spaces)}: the features would be permuted. Load it with "
            "load_offline_data(dataset, env=env, flatten_observations=True)."
        )


def _check_env_id(source: str | None, data_env_id: str | None, env: gym.Env | VecEnv) -> None:
    """Warn when the dataset was recorded in another env than the one it is used with (same spaces or not)."""
    env_id = env_id_of(env)
    if data_env_id is None or env_id is None or data_env_id == env_id:
        return
    warnings.warn(
        f"Dataset {source!r} was recorded in {data_env_id}, but the env is {env_id}: their dynamics or rewards can differ "
        "even where the spaces match (Hopper-v4 and Hopper-v5 data are not interchangeable), and normalised scores use "
        f"the dataset's reference returns. Use data of {env_id} (`{build_command_hint(None, env_id)}`) unless this is "
        "intended.",
        stacklevel=3,
    )


def _flat_observation_space(space: spaces.Space, flatten: bool, source: str) -> spaces.Box:
    if isinstance(space, spaces.Box):
        # row-major, as gymnasium's FlattenObservation flattens the env's observations
        flat = space if len(space.shape) <= 1 else spaces.flatten_space(space)
        assert isinstance(flat, spaces.Box)
        return flat
    if isinstance(space, spaces.Dict):
        if not flatten:
            raise ValueError(
                f"Dataset {source!r} has Dict observations ({list(space.spaces)}). Load it with "
                "sb3_dare.data.load_offline_data(dataset, env=env, flatten_observations=True), which concatenates them "
                "into one vector in the env's key order, and pass the result as dataset= (wrap the env with "
                "gymnasium.wrappers.FlattenObservation)."
            )
        if not all(isinstance(sub, spaces.Box) for sub in space.spaces.values()):
            raise ValueError(
                f"Dataset {source!r}: only Dict observations made of Box sub-spaces can be flattened, got {space}."
            )
        flat = spaces.flatten_space(space)
        assert isinstance(flat, spaces.Box)
        return flat
    raise ValueError(
        f"Dataset {source!r} has observation space {space}: only Box (or flattened Dict) observations are supported."
    )


def _flatten_episode_observations(observations: Any, space: spaces.Space, keys: list[str] | None = None) -> np.ndarray:
    if isinstance(space, spaces.Dict):
        # in the env's key order when given (what FlattenObservation uses), else the Dict's own (gymnasium.spaces.flatten)
        order = list(space.spaces) if keys is None else keys
        return np.concatenate([np.asarray(observations[key]).reshape(len(observations[key]), -1) for key in order], axis=1)
    observations = np.asarray(observations)
    return observations.reshape(len(observations), -1)


def _from_minari(
    minari_dataset: minari.MinariDataset,
    env: gym.Env | VecEnv | None,
    *,
    gamma: float,
    flatten_observations: bool,
    source: str,
) -> OfflineData:
    data_observation_space = minari_dataset.observation_space
    data_action_space = minari_dataset.action_space
    if not isinstance(data_action_space, spaces.Box):
        raise ValueError(
            f"Dataset {source!r} has action space {data_action_space}: sb3_dare supports continuous (Box) actions only."
        )
    flat_observation_space = _flat_observation_space(data_observation_space, flatten_observations, source)
    action_space = data_action_space
    key_order: list[str] | None = None
    if env is not None:
        env_observation_space, env_action_space = _env_spaces(env)
        raw_space = _unwrapped_observation_space(env)
        if flatten_observations and isinstance(data_observation_space, spaces.Dict) and isinstance(raw_space, spaces.Dict):
            # Minari reads a Dict space back with sorted keys; the env's FlattenObservation keeps the env's own order
            key_order = list(raw_space.spaces)
            if sorted(key_order) != sorted(data_observation_space.spaces):
                raise ValueError(
                    f"Observation keys differ between dataset {source!r} ({sorted(data_observation_space.spaces)}) and the "
                    f"env ({key_order}). Use the env the dataset was recorded in."
                )
            in_env_order = collections.OrderedDict((key, data_observation_space.spaces[key]) for key in key_order)
            flat_observation_space = _flat_observation_space(spaces.Dict(in_env_order), True, source)
        if isinstance(env_observation_space, spaces.Dict) and flatten_observations:
            env_observation_space = spaces.flatten_space(env_observation_space)
        _check_spaces(source, flat_observation_space, data_action_space, env_observation_space, env_action_space)
        env_spec = minari_dataset.spec.env_spec
        _check_env_id(source, None if env_spec is None else env_spec.id, env)
        assert isinstance(env_action_space, spaces.Box)
        action_space = env_action_space

    observations, next_observations, actions, rewards, terminations, truncations, lengths = [], [], [], [], [], [], []
    for episode in minari_dataset.iterate_episodes():
        episode_observations = _flatten_episode_observations(episode.observations, data_observation_space, key_order)
        if len(episode.actions) == 0:
            continue
        observations.append(episode_observations[:-1])
        next_observations.append(episode_observations[1:])
        actions.append(np.asarray(episode.actions).reshape(len(episode.actions), -1))
        rewards.append(np.asarray(episode.rewards).reshape(-1))
        terminations.append(np.asarray(episode.terminations).reshape(-1))
        truncations.append(np.asarray(episode.truncations).reshape(-1))
        lengths.append(len(episode.actions))
    if not lengths:
        raise ValueError(f"Dataset {source!r} is empty: it holds no transitions. Rebuild it or choose another dataset.")

    metadata = dict(minari_dataset.storage.metadata)
    env_spec = minari_dataset.spec.env_spec
    env_id = env_spec.id if env_spec is not None else None
    data = OfflineData.from_arrays(
        np.concatenate(observations),
        np.concatenate(actions),
        np.concatenate(rewards),
        np.concatenate(next_observations),
        np.concatenate(terminations),
        np.concatenate(truncations),
        episode_starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]),
        action_space=action_space,
        observation_space=flat_observation_space,
        gamma=gamma,
        ref_min_score=metadata.get("ref_min_score"),
        ref_max_score=metadata.get("ref_max_score"),
        source=source,
        env_id=env_id,
    )
    data.metadata = {key: value for key, value in metadata.items() if isinstance(value, str | int | float | bool)}
    if isinstance(data_observation_space, spaces.Dict):
        data.metadata[FLATTENED_KEYS] = ",".join(key_order or list(data_observation_space.spaces))
    same_bounds = np.allclose(data_action_space.low, action_space.low) and np.allclose(
        data_action_space.high, action_space.high
    )
    if not same_bounds:
        warnings.warn(
            f"Dataset {source!r} records action bounds [{data_action_space.low}, {data_action_space.high}] but the env "
            f"has [{action_space.low}, {action_space.high}]; actions were rescaled with the env's bounds.",
            stacklevel=2,
        )
    return data
