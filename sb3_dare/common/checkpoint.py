"""
Checkpoints that survive a kill, and resuming from them.

A checkpoint is a set of files in ``save_path`` (the model zip, the online part of the replay buffer, the RNG
states) and a small JSON manifest, ``<name_prefix>_latest.json``, written last. Every file is written to a
temporary file in the same folder, flushed to disk and renamed over its final name, so the manifest only ever
points at complete files: a kill at any moment leaves the previous checkpoint usable.

Also here: the checks :meth:`sb3_dare.common.o2o.O2OAlgorithm.load` runs on a model zip before SB3 reads it
(corrupt files, incompatible versions, another algorithm's file, an env with other spaces), so that each
problem gets an error that names it and its fix.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import json
import os
import pathlib
import pickle
import re
import secrets
import warnings
import zipfile
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.save_util import json_to_data
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback

from sb3_dare.common.env_spec import env_id_of, env_spec_of, recreatable_spec

if TYPE_CHECKING:
    from sb3_dare.common.o2o import O2OAlgorithm

MANIFEST_SUFFIX = "_latest.json"
MANIFEST_FORMAT = 1
# saves made by sb3_dare versions older than this cannot be read by the installed one
OLDEST_COMPATIBLE_VERSION = "0.1.0"
# the keys O2OAlgorithm.save() adds to the zip's data
VERSION_KEY = "_sb3_dare_version"
ALGORITHM_KEY = "_sb3_dare_algorithm"

# the online arrays of the replay buffer (leading dimension buffer_size); only their filled rows are written
_ONLINE_ARRAYS = (
    "observations",
    "next_observations",
    "actions",
    "rewards",
    "dones",
    "timeouts",
    "online_mc_returns",
    "online_scores",
)
_NAN_FILLED_ARRAYS = ("online_mc_returns", "online_scores")  # NaN means "unknown" there, as in a new buffer

_CHECKPOINT_FILES = {"model": ".zip", "replay_buffer": "_replay_buffer.pkl", "state": "_state.pkl"}


def installed_version() -> str:
    """``sb3_dare.__version__`` (read when needed: this module is imported while the package initialises)."""
    import sb3_dare

    return sb3_dare.__version__


def _version_tuple(version: str) -> tuple[int, ...]:
    numbers = []
    for part in version.split("."):
        match = re.match(r"\d+", part)
        if match is None:
            break
        numbers.append(int(match.group()))
    return tuple(numbers)


def check_version_compatible(saved_version: str | None, what: str) -> None:
    """
    Raise ValueError when a save of ``saved_version`` cannot be read by the installed sb3_dare: saves older than
    :data:`OLDEST_COMPATIBLE_VERSION`, and saves of a newer major or minor version (whose format this one may not
    know), are refused.

    :param saved_version: the version written into the save (None: none was written)
    :param what: the file, for the message
    """
    installed = installed_version()
    if saved_version is None:
        raise ValueError(
            f"{what} records no sb3_dare version: it was not saved by sb3_dare (>= {OLDEST_COMPATIBLE_VERSION}). "
            "Load it with the library and class that saved it."
        )
    saved, current = _version_tuple(saved_version), _version_tuple(installed)
    if saved < _version_tuple(OLDEST_COMPATIBLE_VERSION):
        raise ValueError(
            f"{what} was saved by sb3_dare {saved_version}; sb3_dare {installed} reads saves of version "
            f"{OLDEST_COMPATIBLE_VERSION} or newer. Load it with sb3_dare=={saved_version} and retrain, or pin that version."
        )
    if saved[:2] > current[:2]:
        raise ValueError(
            f"{what} was saved by sb3_dare {saved_version}, newer than the installed {installed}. "
            f"Upgrade: pip install 'sb3_dare>={saved_version}'."
        )


# ---------------------------------------------------------------------- atomic writes


def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """
    Write a file so that it is either complete or absent: ``write`` fills a temporary file in the same folder,
    which is flushed to disk and then renamed over ``path``. If ``write`` raises, the temporary file is removed
    and ``path`` keeps its previous content.

    :param path: the final file
    :param write: called with the open binary file
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
    _fsync_directory(directory)


def sb3_save_path(path: str | os.PathLike) -> pathlib.Path:
    """The file SB3's ``save(path)`` writes to: ``.zip`` is added to a path without suffix."""
    path = pathlib.Path(path)
    return pathlib.Path(f"{path}.zip") if path.suffix == "" else path


# ---------------------------------------------------------------------- the replay buffer


def write_replay_buffer(buffer: Any, file: IO[bytes]) -> None:
    """
    Pickle the replay buffer as ``save_replay_buffer`` does (the online part with its extra arrays, the offline
    scores and the reference of the offline data), but with only the filled rows of the online arrays: a
    checkpoint early in a run with a 1M-transition buffer stays small.

    :param buffer: the replay buffer
    :param file: an open binary file
    """
    state = dict(buffer.__getstate__())
    rows = int(buffer.buffer_size)
    used = rows if buffer.full else int(buffer.pos)
    trimmed = []
    for key in _ONLINE_ARRAYS:
        value = state.get(key)
        if used < rows and isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == rows:
            state[key] = value[:used]
            trimmed.append(key)
    payload = {"class": type(buffer), "state": state, "rows": rows, "trimmed": trimmed}
    pickle.dump(payload, file, protocol=pickle.HIGHEST_PROTOCOL)


def read_replay_buffer(path: str | os.PathLike) -> Any:
    """Read a replay buffer written by :func:`write_replay_buffer` (full-size arrays again)."""
    with open(path, "rb") as file:
        payload = pickle.load(file)
    state, rows = payload["state"], payload["rows"]
    for key in payload["trimmed"]:
        used = state[key]
        full = np.full((rows, *used.shape[1:]), np.nan if key in _NAN_FILLED_ARRAYS else 0, dtype=used.dtype)
        full[: len(used)] = used
        state[key] = full
    buffer = payload["class"].__new__(payload["class"])
    set_state = getattr(buffer, "__setstate__", None)
    if set_state is not None:
        set_state(state)
    else:
        buffer.__dict__.update(state)
    return buffer


# ---------------------------------------------------------------------- checks before loading a model zip


def _resolve_zip(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if os.path.isfile(path):
        return path
    if os.path.isfile(f"{path}.zip"):
        return f"{path}.zip"
    if os.path.isdir(path) and any(name.endswith(MANIFEST_SUFFIX) for name in os.listdir(path)):
        raise FileNotFoundError(
            f"{path!r} is a checkpoint folder, not a model zip. Resume from it with "
            "<Algorithm>.load_checkpoint(path, env) or sb3_dare.common.checkpoint.resume(path, env)."
        )
    raise FileNotFoundError(f"No saved model at {path!r} (nor {path}.zip). Check the path; save with model.save(path).")


def _read_saved_data(file: IO[bytes], name: str) -> tuple[dict[str, Any], str | None]:
    """The raw (not unpickled) JSON data of a model zip and SB3's version; ValueError for unreadable files."""
    problem = None
    try:
        with zipfile.ZipFile(file) as archive:
            first_bad = archive.testzip()  # reads every member and checks its CRC
            if first_bad is not None:
                problem = f"member {first_bad!r} fails its checksum"
            elif "data" not in archive.namelist():
                problem = "it has no 'data' entry"
            else:
                raw = json.loads(archive.read("data").decode())
                sb3_version = (
                    archive.read("_stable_baselines3_version").decode()
                    if "_stable_baselines3_version" in archive.namelist()
                    else None
                )
                return raw, sb3_version
    except Exception as error:  # BadZipFile, EOFError, zlib.error, bad JSON...: all mean the same to the user
        problem = f"{type(error).__name__}: {error}"
    raise ValueError(
        f"{name} is not a readable model zip ({problem}): the file is corrupt or truncated, for example by a kill "
        "during a save that was not atomic. Load an earlier copy (sb3_dare's checkpoints keep the previous one "
        "complete) or save the model again."
    )


def saved_data_of(path: str | os.PathLike) -> dict[str, Any]:
    """
    The JSON data of a model zip as saved (simple values as they are, objects still serialised), read without loading
    the model.

    :param path: the zip, with or without ``.zip``
    :return: the data; empty for a zip that cannot be read (``load`` then reports why)
    """
    try:
        resolved = _resolve_zip(path)
        with open(resolved, "rb") as file:
            raw, _ = _read_saved_data(file, repr(resolved))
    except (FileNotFoundError, ValueError):
        return {}
    return raw


def _saved_name(algorithm: type) -> str:
    """What ``algorithm`` records in its zips: :meth:`O2OAlgorithm.saved_algorithm_name`, else the class name."""
    name = getattr(algorithm, "saved_algorithm_name", None)
    return name() if callable(name) else algorithm.__name__


def _same_algorithm(saved_algorithm: str, algorithm: type) -> bool:
    expected = _saved_name(algorithm)
    # earlier zips of runs under RL Zoo recorded their Zoo<Algorithm> class: they hold the same model
    return saved_algorithm in (expected, f"Zoo{expected}")


def _algorithm_hint(saved_algorithm: str, expected: type) -> str:
    if saved_algorithm == getattr(getattr(expected, "base_algorithm", None), "__name__", None):
        return (
            f"Load it with {saved_algorithm}.load(path), or start {expected.__name__} from it with "
            f"{expected.__name__}.from_base(path, env) (through RL Zoo: --algo <dare algorithm> -i path)."
        )
    return f"Load it with {saved_algorithm}.load(path)."


def _deserialize(raw: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Unpickle only ``keys`` of a zip's data; empty if they cannot be (SB3's own load then reports it)."""
    try:
        return json_to_data(json.dumps({key: raw[key] for key in keys if key in raw}))
    except Exception:
        return {}


def check_saved_model(
    path: str | os.PathLike | IO[bytes], algorithm: type, env: GymEnv | None, custom_objects: dict[str, Any] | None = None
) -> None:
    """
    Check a model zip before SB3 loads it, raising an error that names the problem and the fix:
    FileNotFoundError for a missing file, ValueError for a corrupt or truncated zip, a zip without an
    sb3_dare version or of an incompatible version, a zip of another algorithm, and an env whose spaces
    differ from the saved ones.

    :param path: the zip (a path, with or without ``.zip``, or an open binary file, read and rewound)
    :param algorithm: the class ``load`` was called on
    :param env: the env passed to ``load`` (None: not checked)
    :param custom_objects: those passed to ``load``: an ``observation_space`` or ``action_space`` there replaces the
        saved one before the comparison, as SB3 applies it (e.g. to load with wider observation bounds)
    """
    if isinstance(path, str | os.PathLike):
        resolved = _resolve_zip(path)
        name = repr(resolved)
        with open(resolved, "rb") as file:
            raw, sb3_version = _read_saved_data(file, name)
    else:
        name = "The model file"
        start = path.tell()
        try:
            raw, sb3_version = _read_saved_data(path, name)
        finally:
            path.seek(start)
    saved_algorithm = raw.get(ALGORITHM_KEY)
    if raw.get(VERSION_KEY) is None:
        origin = f"stable-baselines3 {sb3_version}" if sb3_version else "another library"
        raise ValueError(
            f"{name} was not saved by sb3_dare (it records no sb3_dare version; it was written by {origin}). "
            f"{algorithm.__name__}.load reads zips saved by sb3_dare >= {OLDEST_COMPATIBLE_VERSION}; load this one "
            "with the class that saved it (e.g. stable_baselines3.SAC.load)."
        )
    check_version_compatible(raw[VERSION_KEY], name)
    if not _same_algorithm(str(saved_algorithm), algorithm):
        raise ValueError(
            f"{name} holds {_a(str(saved_algorithm))} model, not {_a(_saved_name(algorithm))} one. "
            + _algorithm_hint(str(saved_algorithm), algorithm)
        )
    if env is not None:
        saved = _deserialize(raw, ("observation_space", "action_space"))
        saved.update({key: value for key, value in (custom_objects or {}).items() if key in saved})
        for key, label in (("observation_space", "observation"), ("action_space", "action")):
            env_space = getattr(env, key)
            if key in saved and saved[key] != env_space:
                raise ValueError(
                    f"The env does not match {name}: its {label} space is {env_space}, the model was trained with "
                    f"{saved[key]}. Load it with the env it was trained on (same id, version and wrappers), "
                    "or with env=None to only predict."
                )


# ---------------------------------------------------------------------- the callback


def _manifest_path(save_path: str, name_prefix: str) -> str:
    return os.path.join(save_path, f"{name_prefix}{MANIFEST_SUFFIX}")


def _env_record(model: O2OAlgorithm) -> dict[str, Any]:
    """What the manifest records of the env: its id and, where it can re-create the env exactly, its whole spec."""
    if model.env is None:  # an offline-only run: it resumes without an env, as it ran
        return {"env_id": None, "env_spec": None, "env_spec_problem": None}
    if model.env.num_envs != 1:
        return {"env_id": None, "env_spec": None, "env_spec_problem": "several envs: pass them again, env=..."}
    spec, problem = recreatable_spec(model.env)
    return {
        "env_id": env_id_of(model.env),  # also of an env its spec cannot re-create
        "env_spec": spec.to_json() if spec is not None and problem is None else None,
        "env_spec_problem": problem,
    }


class O2OCheckpointCallback(BaseCallback):
    """
    Save a resumable checkpoint every ``save_freq`` offline updates during the offline phase and every ``save_freq``
    environment steps online (SB3's ``CheckpointCallback`` counts env steps only; this one also sees the offline
    phase through ``on_offline_step()``).

    A checkpoint holds the model zip (networks, optimizers, entropy and Lagrange multipliers, DARE's behaviour
    model, the counters and the phase reached), the online part of the replay buffer with its extra arrays and
    the offline scores, and the RNG states. It is written atomically (see the module docstring); the manifest
    ``<save_path>/<name_prefix>_latest.json`` names the complete set. Online, the save happens at the start of
    the next rollout, after the gradient steps of the step that reached the mark, so buffer, networks and
    counters are consistent. One more checkpoint is written when the offline phase ends, so that DARE's
    behaviour model (fitted then) is never fitted twice.

    Before writing, the model is checked for NaN or infinite parameters: a diverged model raises
    :class:`sb3_dare.common.logging.DivergenceError` instead of replacing the last good checkpoint.

    Usable from RL Zoo: ``callback: [{sb3_dare.common.checkpoint.O2OCheckpointCallback: {save_freq: 10000,
    save_path: logs/checkpoints}}]``. Resume with :func:`resume` or ``<Algorithm>.load_checkpoint``.

    :param save_freq: offline updates (offline phase) and env steps (online phase) between checkpoints
    :param save_path: folder of the checkpoints (created if needed)
    :param name_prefix: prefix of the file names; one manifest per prefix
    :param save_replay_buffer: save the online part of the replay buffer (without it a resumed run starts
        with an empty online buffer)
    :param save_on_phase_end: save once more when the offline phase ends
    :param keep_last: complete checkpoints kept on disk (older ones are deleted once a newer one is complete)
    :param verbose: 1 prints the path of every checkpoint
    """

    def __init__(
        self,
        save_freq: int,
        save_path: str | os.PathLike,
        name_prefix: str = "o2o_model",
        save_replay_buffer: bool = True,
        save_on_phase_end: bool = True,
        keep_last: int = 1,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        if isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq < 1:
            raise ValueError(f"save_freq must be an integer >= 1 (updates or env steps), got {save_freq!r}.")
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
            raise ValueError(f"keep_last must be an integer >= 1, got {keep_last!r}.")
        if not name_prefix or os.sep in name_prefix or (os.altsep and os.altsep in name_prefix):
            raise ValueError(f"name_prefix must be a non-empty file name without folder separators, got {name_prefix!r}.")
        self.save_freq = save_freq
        self.save_path = os.fspath(save_path)
        self.name_prefix = name_prefix
        self.save_replay_buffer = save_replay_buffer
        self.save_on_phase_end = save_on_phase_end
        self.keep_last = keep_last
        self.last_checkpoint: dict[str, Any] | None = None
        self._sequence = 0
        self._offline_mark = 0
        self._online_mark = 0
        self._pending = False
        self._phase_end_saved = False
        self._file_pattern = re.compile(
            rf"^\.?{re.escape(name_prefix)}_(\d{{6}})(?:\.zip|_replay_buffer\.pkl|_state\.pkl)(?:\.[0-9a-f]{{8}}\.tmp)?$"
        )

    @property
    def o2o_model(self) -> O2OAlgorithm:
        """The model, typed as the sb3_dare base class (checked when the callback starts)."""
        return self.model  # type: ignore[return-value]

    @property
    def manifest_path(self) -> str:
        """The manifest naming the latest complete checkpoint."""
        return _manifest_path(self.save_path, self.name_prefix)

    def _init_callback(self) -> None:
        from sb3_dare.common.o2o import O2OAlgorithm

        if not isinstance(self.model, O2OAlgorithm):
            raise ValueError(
                f"O2OCheckpointCallback works with the sb3_dare algorithms, got {type(self.model).__name__}: "
                "use stable_baselines3.common.callbacks.CheckpointCallback for it."
            )
        os.makedirs(self.save_path, exist_ok=True)
        # continue the numbering of an existing manifest (a resumed run writes into the same folder)
        with contextlib.suppress(FileNotFoundError, ValueError):
            self._sequence = int(read_manifest(self.manifest_path)["sequence"])
        self._offline_mark = self.o2o_model.offline_updates // self.save_freq
        self._online_mark = self.model.num_timesteps // self.save_freq
        self._pending = False
        self._phase_end_saved = self.o2o_model.offline_phase_done

    def on_offline_step(self) -> bool:
        """Called by the offline phase after every update."""
        mark = self.o2o_model.offline_updates // self.save_freq
        if mark > self._offline_mark:
            self._offline_mark = mark
            self.save()
        return True

    def _on_step(self) -> bool:
        mark = self.model.num_timesteps // self.save_freq
        if mark > self._online_mark:
            self._online_mark = mark
            self._pending = True  # saved at the next rollout start, once this step's gradient steps are done
        return True

    def _due(self) -> bool:
        phase_end = self.save_on_phase_end and self.o2o_model.offline_phase_done and not self._phase_end_saved
        return self._pending or phase_end

    def _on_rollout_start(self) -> None:
        if self._due():
            self.save()

    def _on_training_end(self) -> None:
        if self._due():
            self.save()

    # ------------------------------------------------------------------ writing

    def save(self) -> dict[str, Any]:
        """
        Write a checkpoint now.

        :return: its manifest entry
        :raises DivergenceError: if the model has NaN or infinite parameters (the previous checkpoint is kept)
        """
        model = self.o2o_model
        model._raise_if_diverged()
        sequence = self._sequence + 1
        stem = f"{self.name_prefix}_{sequence:06d}"
        files = {key: stem + suffix for key, suffix in _CHECKPOINT_FILES.items()}
        if not self.save_replay_buffer:
            del files["replay_buffer"]
        try:
            atomic_write(os.path.join(self.save_path, files["model"]), lambda file: model.save(file))  # type: ignore[arg-type]
            if "replay_buffer" in files:
                atomic_write(
                    os.path.join(self.save_path, files["replay_buffer"]),
                    lambda file: write_replay_buffer(model.replay_buffer, file),
                )
            state = {"rng": model._get_rng_states(), "extra": model._get_checkpoint_extra_state()}
            atomic_write(
                os.path.join(self.save_path, files["state"]),
                lambda file: pickle.dump(state, file, protocol=pickle.HIGHEST_PROTOCOL),
            )
        except BaseException:
            # nothing half-written stays behind: the files of this set are not referenced by any manifest
            for name in files.values():
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.save_path, name))
            raise
        entry = {
            "sequence": sequence,
            "phase": "online" if model.offline_phase_done else "offline",
            "offline_updates": int(model.offline_updates),
            "offline_steps": int(model.offline_steps),
            "offline_phase_done": bool(model.offline_phase_done),
            "num_timesteps": int(model.num_timesteps),
            "total_timesteps": int(model._total_timesteps),
            "n_updates": int(model._n_updates),
            "episode_num": int(model._episode_num),
            "files": files,
            "sizes": {key: os.path.getsize(os.path.join(self.save_path, name)) for key, name in files.items()},
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        previous = _latest_entry_or_none(self.manifest_path)
        history = [*([] if previous is None else previous.get("history", [])), entry][-self.keep_last :]
        manifest = {
            "format": MANIFEST_FORMAT,
            "sb3_dare_version": installed_version(),
            "algorithm": type(model).__name__,
            "algorithm_module": type(model).__module__,
            "saved_algorithm": model.saved_algorithm_name(),
            **_env_record(model),
            "n_envs": int(model.n_envs),
            **entry,
            "history": history,
        }
        atomic_write(self.manifest_path, lambda file: file.write(json.dumps(manifest, indent=1).encode()))
        self._sequence = sequence
        self._pending = False
        if model.offline_phase_done:
            self._phase_end_saved = True
        self.last_checkpoint = entry
        self._remove_unreferenced_files({int(item["sequence"]) for item in history})
        if self.verbose >= 1:
            print(f"Saved checkpoint {sequence} ({entry['phase']}) to {os.path.join(self.save_path, files['model'])}")
        return entry

    def _remove_unreferenced_files(self, kept: set[int]) -> None:
        """Delete older checkpoints, and files left by a save that was killed (never named by a manifest)."""
        for name in os.listdir(self.save_path):
            match = self._file_pattern.match(name)
            if match is not None and (int(match.group(1)) not in kept or name.endswith(".tmp")):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.save_path, name))


def _latest_entry_or_none(manifest_path: str) -> dict[str, Any] | None:
    try:
        return read_manifest(manifest_path)
    except (FileNotFoundError, ValueError):
        return None


# ---------------------------------------------------------------------- reading and resuming


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """
    Read a checkpoint manifest.

    :param path: the manifest file, or the checkpoint folder holding one manifest
    :return: the manifest (the latest checkpoint's entry, plus ``history``: the entries of the checkpoints kept)
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        manifests = sorted(name for name in os.listdir(path) if name.endswith(MANIFEST_SUFFIX))
        if not manifests:
            raise FileNotFoundError(
                f"No checkpoint manifest (*{MANIFEST_SUFFIX}) in {path!r}. Was O2OCheckpointCallback(save_path={path!r}) "
                "used, and did it save at least once? A single model zip loads with <Algorithm>.load(path)."
            )
        if len(manifests) > 1:
            raise ValueError(
                f"{path!r} holds the checkpoints of several runs ({', '.join(manifests)}): pass the manifest file "
                f"of the one to resume, e.g. {os.path.join(path, manifests[0])!r}."
            )
        path = os.path.join(path, manifests[0])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint manifest at {path!r}. Pass the checkpoint folder or its *{MANIFEST_SUFFIX}.")
    try:
        with open(path, "rb") as file:
            manifest = json.loads(file.read().decode())
        if not isinstance(manifest, dict) or "files" not in manifest or "algorithm" not in manifest:
            raise ValueError("required keys are missing")
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path!r} is not a readable checkpoint manifest ({error}). It is written atomically by "
            "O2OCheckpointCallback, so this file was changed by something else: restore it or load the model zip "
            "next to it with <Algorithm>.load(path)."
        ) from None
    manifest["path"] = path
    return manifest


def _algorithm_class(manifest: dict[str, Any]) -> type[O2OAlgorithm]:
    from sb3_dare.common.o2o import O2OAlgorithm

    name, module_name = manifest["algorithm"], manifest.get("algorithm_module", "sb3_dare")
    algorithm = None
    for candidate in (module_name, "sb3_dare"):
        with contextlib.suppress(ImportError):
            algorithm = getattr(importlib.import_module(candidate), name, None)
        if algorithm is not None:
            break
    if not (isinstance(algorithm, type) and issubclass(algorithm, O2OAlgorithm)):
        raise ValueError(
            f"The checkpoint {manifest['path']!r} was written by {module_name}.{name}, which cannot be imported here. "
            "Import the module that defines it, or pass its class: load_checkpoint(path, algorithm=MyAlgorithm)."
        )
    return algorithm


def _select_entry(manifest: dict[str, Any], sequence: int | None) -> dict[str, Any]:
    if sequence is None or sequence == manifest.get("sequence"):
        return manifest
    for entry in manifest.get("history", []):
        if entry.get("sequence") == sequence:
            return entry
    kept = [entry.get("sequence") for entry in manifest.get("history", [])]
    raise ValueError(f"Checkpoint {sequence} is not kept in {manifest['path']!r}; kept: {kept} (see keep_last).")


def load_checkpoint(
    path: str | os.PathLike,
    env: GymEnv | None = None,
    device: str = "auto",
    algorithm: type[O2OAlgorithm] | None = None,
    sequence: int | None = None,
    **kwargs: Any,
) -> O2OAlgorithm:
    """
    Load a checkpoint written by :class:`O2OCheckpointCallback`: the model, the online part of its replay buffer,
    and the RNG states, ready to continue with ``learn(..., reset_num_timesteps=False)`` (see :func:`resume`).
    The env starts a new episode: the episode in progress at the checkpoint is not continued, and the env is
    re-seeded from the model's seed and step count so that a resumed run is reproducible.

    :param path: the checkpoint folder, or its manifest ``<name_prefix>_latest.json``
    :param env: the env to continue in; default: a new ``gym.make`` of the env spec recorded in the manifest (id,
        arguments, time limit and wrappers; a ValueError names what to pass when the spec cannot re-create the env)
    :param device: torch device
    :param algorithm: the expected class (default: the class recorded in the manifest)
    :param sequence: load this older checkpoint instead of the latest (one of those kept, see ``keep_last``)
    :param kwargs: passed to ``load`` (e.g. ``dataset=`` for a model trained on an in-memory dataset)
    :return: the model
    """
    manifest = read_manifest(path)
    check_version_compatible(manifest.get("sb3_dare_version"), f"The checkpoint {manifest['path']!r}")
    if algorithm is None:
        algorithm = _algorithm_class(manifest)
    elif not _same_algorithm(manifest.get("saved_algorithm", manifest["algorithm"]), algorithm):
        raise ValueError(
            f"The checkpoint {manifest['path']!r} holds {_a(manifest['algorithm'])} run, not {_a(algorithm.__name__)} one. "
            f"Resume it with {manifest['algorithm']}.load_checkpoint(path) or sb3_dare.common.checkpoint.resume(path)."
        )
    entry = _select_entry(manifest, sequence)
    folder = os.path.dirname(manifest["path"])
    files = {key: os.path.join(folder, name) for key, name in entry["files"].items()}
    for key, file in files.items():
        expected = entry.get("sizes", {}).get(key)
        size = os.path.getsize(file) if os.path.isfile(file) else None
        if size is None or (expected is not None and size != expected):
            found = "is missing" if size is None else f"has {size} bytes instead of {expected}"
            raise ValueError(
                f"Checkpoint {entry['sequence']} in {folder!r} is incomplete: {os.path.basename(file)} {found}. "
                "The files of a checkpoint are written before its manifest and never changed afterwards, so they were "
                "removed or modified by something else. Load an older checkpoint (sequence=...) if one is kept."
            )
    if env is not None and manifest.get("env_spec") is not None:
        _warn_if_other_env(env, manifest)
    if env is None and manifest.get("n_envs", 1) == 1:
        if manifest.get("env_spec") is not None:
            # the id with its arguments, time limit and wrappers: the run continues on the env it was trained on
            env = gym.make(EnvSpec.from_json(manifest["env_spec"]))
        elif manifest.get("env_spec_problem") is not None:
            name = "" if manifest.get("env_id") is None else f" {manifest['env_id']!r}"
            raise ValueError(
                f"The checkpoint {manifest['path']!r} cannot re-create its env{name} ({manifest.get('env_spec_problem')}): "
                "pass the env it was trained on, env=..."
            )
        elif manifest.get("env_id") is not None:  # a manifest written before env specs were recorded
            env = gym.make(manifest["env_id"])
    model = algorithm.load(files["model"], env=env, device=device, **kwargs)
    if "replay_buffer" in files:
        from sb3_dare.common.buffers import OfflineOnlineReplayBuffer

        buffer = read_replay_buffer(files["replay_buffer"])
        if not isinstance(buffer, OfflineOnlineReplayBuffer):
            raise ValueError(f"{files['replay_buffer']!r} does not hold an OfflineOnlineReplayBuffer.")
        buffer.device = model.device
        model.replay_buffer = buffer
        if model.offline_data is not None:
            buffer.attach_offline_data(model.offline_data)
    with open(files["state"], "rb") as file:
        state = pickle.load(file)
    model._set_rng_states(state["rng"])
    model._set_checkpoint_extra_state(state.get("extra", {}))
    if model.env is not None and model.seed is not None:
        if model.num_timesteps == 0:
            # no env step yet (a checkpoint of the offline phase or of its end): the env is seeded as the original run's
            # was, so its first episode is the one the uninterrupted run plays, and the resumed run is the same run
            model.env.seed(int(model.seed))
        else:
            # a new episode, not the first episode of the original run again
            model.env.seed(int(model.seed) + int(model.num_timesteps) + int(model.offline_updates))
    model._checkpoint_total_timesteps = int(entry.get("total_timesteps", 0))
    return model


def _a(name: str) -> str:
    """The algorithm's name with its article, as read aloud: "an IQL", "a CalQL", "a DARE_IQL"."""
    return f"an {name}" if name[:1] in "AEIOU" else f"a {name}"


def _warn_if_other_env(env: GymEnv, manifest: dict[str, Any]) -> None:
    """Warn when the env given to resume a checkpoint differs from the recorded one (id, arguments, time limit)."""
    given = env_spec_of(env)
    if given is None:  # an env without a Gymnasium spec: nothing to compare
        return
    recorded = EnvSpec.from_json(manifest["env_spec"])

    def described(spec: EnvSpec) -> dict[str, Any]:
        # through JSON, as the manifest stored it (tuples become lists); the render mode changes no dynamics (SB3 makes
        # an env given by id with render_mode="rgb_array")
        kwargs = json.loads(json.dumps({k: v for k, v in spec.kwargs.items() if k != "render_mode"}, default=repr))
        return {"id": spec.id, "kwargs": kwargs, "max_episode_steps": spec.max_episode_steps}

    first, second = described(recorded), described(given)
    differences = [f"{key} {first[key]!r} -> {second[key]!r}" for key in first if first[key] != second[key]]
    if differences:
        warnings.warn(
            f"The checkpoint {manifest['path']!r} was trained on another env than the one given ({'; '.join(differences)}). "
            "The run continues on the given env, so it is not the run it resumes; pass env=None to re-create the "
            "recorded one.",
            stacklevel=3,
        )


def resume(
    path: str | os.PathLike,
    env: GymEnv | None = None,
    total_timesteps: int | None = None,
    callback: MaybeCallback = None,
    device: str = "auto",
    load_kwargs: dict[str, Any] | None = None,
    **learn_kwargs: Any,
) -> O2OAlgorithm:
    """
    Continue a run from its latest checkpoint: what remains of the offline phase (no update is repeated), then the
    online steps up to the run's ``total_timesteps`` (the warm-up is not repeated: ``num_timesteps`` is restored).
    Pass an :class:`O2OCheckpointCallback` on the same folder to keep checkpointing.

    :param path: the checkpoint folder, or its manifest
    :param env: the env (default: made from the env spec recorded in the manifest, see :func:`load_checkpoint`)
    :param total_timesteps: the run's total env steps (default: the one of the interrupted ``learn()``)
    :param callback: callbacks of the continued ``learn()``
    :param device: torch device
    :param load_kwargs: passed to ``load`` (e.g. ``{"dataset": data}``)
    :param learn_kwargs: passed to ``learn()`` (``log_interval``, ``tb_log_name``, ``progress_bar``)
    :return: the trained model
    """
    model = load_checkpoint(path, env=env, device=device, **(load_kwargs or {}))
    target = model._checkpoint_total_timesteps if total_timesteps is None else total_timesteps
    remaining = max(int(target) - int(model.num_timesteps), 0)
    return model.learn(remaining, callback=callback, reset_num_timesteps=False, **learn_kwargs)
