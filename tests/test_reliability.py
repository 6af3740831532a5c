"""Reliability: checkpoints that survive SIGKILL, resuming, determinism, divergence, and the bad-input table's rows
that no other test file covers (docs/bad_input.md names the test of every row)."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback

import sb3_dare
from sb3_dare import DARE_IQL, IQL, CalQL, DARE_CalQL
from sb3_dare.common.buffers import OfflineOnlineReplayBuffer
from sb3_dare.common.checkpoint import O2OCheckpointCallback, atomic_write, load_checkpoint, read_manifest, resume
from sb3_dare.common.logging import DivergenceError
from sb3_dare.data import OfflineData, load_offline_data

ENV_ID = "InvertedPendulum-v5"
TINY = dict(batch_size=32, policy_kwargs=dict(net_arch=[16, 16]), offline_eval_freq=0, offline_log_interval=50, seed=0)
TINY_DARE = dict(
    behavior_model="gaussian",
    guidance_scale=0.0,
    behavior_steps=30,
    behavior_batch_size=64,
    behavior_kwargs=dict(hidden_sizes=[16]),
)
ALGORITHMS = [IQL, CalQL, DARE_IQL, DARE_CalQL]


def make_model(algorithm: type, dataset: Any, env: Any = ENV_ID, **kwargs: Any) -> Any:
    # DARE with moving averages of the score moments: their state must travel with checkpoints too
    extra = dict(TINY_DARE, score_ema=0.9, exchange_warmup=False) if algorithm in (DARE_IQL, DARE_CalQL) else {}
    if algorithm in (CalQL, DARE_CalQL):
        extra.update(cql_n_actions=2, cql_lagrange=True)  # the Lagrange multiplier's state travels too
    return algorithm("MlpPolicy", env, dataset=dataset, **{**TINY, **extra, **kwargs})


def assert_same_state(first: Any, second: Any, where: str = "") -> None:
    """Exact equality of nested state dicts (tensors, lists, dicts, numbers)."""
    if isinstance(first, th.Tensor):
        assert isinstance(second, th.Tensor) and th.equal(first, second), where
    elif isinstance(first, dict):
        assert first.keys() == second.keys(), where
        for key in first:
            assert_same_state(first[key], second[key], f"{where}/{key}")
    elif isinstance(first, list | tuple):
        assert len(first) == len(second), where
        for index, (a, b) in enumerate(zip(first, second, strict=True)):
            assert_same_state(a, b, f"{where}[{index}]")
    else:
        assert first == second, where


class CountingCallback(BaseCallback):
    """Counts offline updates and env steps seen."""

    def __init__(self) -> None:
        super().__init__()
        self.offline_calls = 0

    def on_offline_step(self) -> bool:
        self.offline_calls += 1
        return True

    def _on_step(self) -> bool:
        return True


# ---------------------------------------------------------------------- checkpoint contents


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda cls: cls.__name__)
def test_checkpoint_restores_buffer_counters_optimizers_and_rng(pendulum_balance_dataset, tmp_path, algorithm):
    model = make_model(algorithm, pendulum_balance_dataset, offline_steps=30, learning_starts=10)
    model.learn(30, callback=O2OCheckpointCallback(save_freq=15, save_path=tmp_path / "ck"))
    manifest = read_manifest(tmp_path / "ck")
    # the last checkpoint is the end of learn(): the live model is its reference
    assert (manifest["phase"], manifest["offline_updates"], manifest["num_timesteps"]) == ("online", 30, 30)
    assert manifest["algorithm"] == algorithm.__name__ and manifest["sb3_dare_version"] == sb3_dare.__version__
    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state(), th.get_rng_state()

    loaded = algorithm.load_checkpoint(tmp_path / "ck")  # env made from the id in the manifest
    for name in ("num_timesteps", "_n_updates", "_episode_num", "offline_updates", "offline_phase_done"):
        assert getattr(loaded, name) == getattr(model, name), name
    assert loaded._n_updates == 30 + 30 - 10  # offline updates + online updates after the warm-up
    # networks, optimizers, DARE's behaviour model; entropy and Lagrange multipliers
    assert_same_state(model.get_parameters(), loaded.get_parameters())
    for name in model._get_torch_save_params()[1]:
        assert th.equal(getattr(model, name), getattr(loaded, name)), name
    # the online part of the buffer with its extra arrays, and the offline scores
    buffer, restored = model.replay_buffer, loaded.replay_buffer
    assert isinstance(restored, OfflineOnlineReplayBuffer) and restored.buffer_size == buffer.buffer_size
    assert (restored.pos, restored.full, restored.size()) == (buffer.pos, buffer.full, 30)
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts", "online_mc_returns"):
        np.testing.assert_array_equal(getattr(restored, name), getattr(buffer, name), err_msg=name)
    np.testing.assert_array_equal(restored.online_scores, buffer.online_scores)
    np.testing.assert_array_equal(restored.offline_scores, buffer.offline_scores)
    # RNG states: load re-seeds every generator, the checkpoint's states are put back
    assert random.getstate() == python_state
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy_state, strict=True))
    assert th.equal(th.get_rng_state(), torch_state)
    if algorithm in (DARE_IQL, DARE_CalQL):
        assert th.equal(loaded._score_generator.get_state(), model._score_generator.get_state())
        assert loaded.behavior.is_fitted and not np.isnan(restored.offline_scores).any()
        assert not th.isnan(model._moments_ema.state).any()  # the averages have seen batches
        assert th.equal(loaded._moments_ema.state, model._moments_ema.state)
    counter = CountingCallback()
    loaded.learn(10, callback=counter, reset_num_timesteps=False)
    assert counter.offline_calls == 0 and loaded.num_timesteps == 40 and loaded.replay_buffer.size() == 40


def test_checkpoint_points_and_files(pendulum_balance_dataset, tmp_path):
    folder = tmp_path / "ck"
    callback = O2OCheckpointCallback(save_freq=20, save_path=folder, name_prefix="iql", keep_last=2)
    model = make_model(IQL, pendulum_balance_dataset, offline_steps=50)
    model.learn(45, callback=callback)
    manifest = read_manifest(folder)
    # offline 20, 40, the phase end (50), online 20, 40
    assert [entry["sequence"] for entry in manifest["history"]] == [4, 5]
    assert (manifest["offline_updates"], manifest["num_timesteps"], manifest["total_timesteps"]) == (50, 40, 45)
    assert sorted(os.listdir(folder)) == sorted(
        ["iql_latest.json"]
        + [f"iql_00000{i}{suffix}" for i in (4, 5) for suffix in (".zip", "_replay_buffer.pkl", "_state.pkl")]
    )
    older = load_checkpoint(folder, sequence=4)
    assert older.num_timesteps == 20 and isinstance(older, IQL)
    # the buffer file holds only the filled rows: small although buffer_size is 1M
    assert manifest["sizes"]["replay_buffer"] < 100_000


@pytest.mark.parametrize("algorithm", [IQL, DARE_IQL])
def test_resuming_before_the_first_env_step_is_the_same_run(pendulum_balance_dataset, tmp_path, algorithm):
    # checkpoints of the offline phase and of its end come before any env step: resumed, the env is seeded as the
    # original run's was, and the run ends bit-identical to the uninterrupted one (the env's reset noise included)
    folder = tmp_path / "ck"
    reference = make_model(algorithm, pendulum_balance_dataset, offline_steps=20)
    reference.learn(30, callback=O2OCheckpointCallback(save_freq=10, save_path=folder, keep_last=10))
    entries = [entry for entry in read_manifest(folder)["history"] if entry["num_timesteps"] == 0]
    assert [entry["offline_updates"] for entry in entries] == [10, 20, 20]  # offline 10, 20, then the phase end
    for entry in entries:
        resumed = load_checkpoint(folder, sequence=entry["sequence"], env=gym.make(ENV_ID))
        resumed.learn(30, reset_num_timesteps=False)
        assert_same_state(reference.get_parameters(), resumed.get_parameters(), f"checkpoint {entry['sequence']}")
        np.testing.assert_array_equal(reference.replay_buffer.observations, resumed.replay_buffer.observations)


def test_continuing_learn_keeps_the_episode_in_progress(pendulum_balance_dataset):
    # learn(n, reset_num_timesteps=False) on a live model: SB3 does not reset the env, so the running episode goes on
    # and its transitions get their Monte-Carlo returns when it ends, as in one learn() call
    whole = make_model(IQL, pendulum_balance_dataset, offline_steps=10)
    whole.learn(60)
    split = make_model(IQL, pendulum_balance_dataset, offline_steps=10)
    split.learn(22)
    assert split.replay_buffer.episode_lengths[0] > 0  # the split falls inside an episode
    split.learn(38, reset_num_timesteps=False)
    np.testing.assert_array_equal(whole.replay_buffer.online_mc_returns, split.replay_buffer.online_mc_returns)
    assert_same_state(whole.get_parameters(), split.get_parameters())


def test_resuming_on_another_env_is_reported(pendulum_balance_dataset, tmp_path):
    folder = tmp_path / "ck"
    model = make_model(IQL, pendulum_balance_dataset, offline_steps=10)
    model.learn(10, callback=O2OCheckpointCallback(save_freq=10, save_path=folder))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        load_checkpoint(folder, env=gym.make(ENV_ID))  # the recorded env: nothing to say
    with pytest.warns(UserWarning, match=r"another env than the one given \(max_episode_steps 1000 -> 30\)"):
        load_checkpoint(folder, env=gym.make(ENV_ID, max_episode_steps=30))


def test_a_buffer_loaded_into_a_live_model_ends_its_saved_episodes(pendulum_balance_dataset, tmp_path):
    # the episode in progress when the buffer was saved cannot go on in the live env: its rows keep unknown returns
    # instead of being chained to the live episode's rewards
    model = make_model(IQL, pendulum_balance_dataset, offline_steps=10)
    model.learn(22)
    running = int(model.replay_buffer.episode_lengths[0])
    assert running > 0  # rows 22 - running .. 21 belong to the episode in progress
    model.save_replay_buffer(tmp_path / "buffer")
    model.learn(8, reset_num_timesteps=False)
    model.load_replay_buffer(tmp_path / "buffer")
    assert model.replay_buffer.episode_lengths[0] == 0
    model.learn(20, reset_num_timesteps=False)
    returns = model.replay_buffer.online_mc_returns[:, 0]
    assert np.isnan(returns[22 - running : 22]).all() and np.isfinite(returns[: 22 - running]).all()


def test_failed_save_keeps_the_previous_checkpoint_and_leaves_nothing(pendulum_balance_dataset, tmp_path, monkeypatch):
    folder = tmp_path / "ck"
    callback = O2OCheckpointCallback(save_freq=10, save_path=folder)
    model = make_model(IQL, pendulum_balance_dataset, offline_steps=25)
    model.learn(0, callback=callback)
    before = read_manifest(folder)
    files_before = sorted(os.listdir(folder))
    # a write that dies half-way (disk full, a kill) in the middle of the replay buffer
    import sb3_dare.common.checkpoint as checkpoint_module

    def broken_write(buffer, file):
        file.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint_module, "write_replay_buffer", broken_write)
    with pytest.raises(OSError, match="No space left"):
        callback.save()
    assert read_manifest(folder)["sequence"] == before["sequence"]
    assert sorted(os.listdir(folder)) == files_before  # no temporary file, no orphan of the new set
    assert IQL.load_checkpoint(folder).offline_updates == 25


def test_leftovers_of_a_killed_save_are_removed(pendulum_balance_dataset, tmp_path):
    folder = tmp_path / "ck"
    model = make_model(IQL, pendulum_balance_dataset, offline_steps=20)
    model.learn(0, callback=O2OCheckpointCallback(save_freq=10, save_path=folder))
    sequence = read_manifest(folder)["sequence"]
    # what a SIGKILL during the next save leaves: a temporary file and a complete but unreferenced zip
    (folder / f".o2o_model_{sequence + 1:06d}.zip.0123abcd.tmp").write_bytes(b"half")
    (folder / f"o2o_model_{sequence + 1:06d}.zip").write_bytes(b"orphan")
    loaded = IQL.load_checkpoint(folder)  # the manifest still names the complete set
    loaded.learn(10, callback=O2OCheckpointCallback(save_freq=10, save_path=folder), reset_num_timesteps=False)
    assert not any(name.endswith(".tmp") for name in os.listdir(folder))
    assert len(os.listdir(folder)) == 4 and read_manifest(folder)["sequence"] > sequence


def test_atomic_write_replaces_whole_files_only(tmp_path):
    target = tmp_path / "file.bin"
    atomic_write(target, lambda file: file.write(b"first"))

    def dies(file):
        file.write(b"second, half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, dies)
    assert target.read_bytes() == b"first" and os.listdir(tmp_path) == ["file.bin"]


def test_model_save_is_atomic_and_records_the_version(pendulum_balance_dataset, tmp_path, monkeypatch):
    model = make_model(IQL, pendulum_balance_dataset, offline_steps=0)
    folder = tmp_path / "models"
    model.save(folder / "model")  # the folder is created, .zip added, as SB3 does
    with zipfile.ZipFile(folder / "model.zip") as archive:
        data = json.loads(archive.read("data"))
    assert data["_sb3_dare_version"] == sb3_dare.__version__ and data["_sb3_dare_algorithm"] == "IQL"
    original = (folder / "model.zip").read_bytes()
    from stable_baselines3.common import save_util

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(save_util, "data_to_json", killed)  # SB3's save dies before writing anything useful
    with pytest.raises(KeyboardInterrupt):
        model.save(folder / "model")
    assert (folder / "model.zip").read_bytes() == original and os.listdir(folder) == ["model.zip"]


# ---------------------------------------------------------------------- SIGKILL, then resume

TRAIN_SCRIPT = """
import json, os, sys
import torch
torch.set_num_threads(1)
from stable_baselines3.common.callbacks import BaseCallback
import sb3_dare
from sb3_dare.common.checkpoint import O2OCheckpointCallback

config = json.loads(sys.argv[1])


class Heartbeat(BaseCallback):
    # the progress reached, for the test to measure what a kill loses
    def _write(self):
        temporary = config["heartbeat"] + ".tmp"
        with open(temporary, "w") as file:
            file.write(f"{self.model.offline_updates} {self.model.num_timesteps}")
        os.replace(temporary, config["heartbeat"])

    def on_offline_step(self):
        self._write()
        return True

    def _on_step(self):
        self._write()
        return True


algorithm = getattr(sb3_dare, config["algorithm"])
model = algorithm("MlpPolicy", config["env"], dataset=config["dataset"], **config["kwargs"])
checkpoints = O2OCheckpointCallback(save_freq=config["save_freq"], save_path=config["save_path"])
# the heartbeat first: a kill between the two then loses at most one interval (checkpoint first, a kill between
# the manifest and the heartbeat would leave the heartbeat one update behind the manifest)
model.learn(config["total_timesteps"], callback=[Heartbeat(), checkpoints])
print("finished")
"""


def train_and_kill(tmp_path, config: dict[str, Any], wanted, delay: float, timeout: float = 90.0) -> tuple[int, int]:
    """Train in a subprocess, SIGKILL it ``delay`` s after the manifest shows ``wanted``; return the progress at the kill."""
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    config = {**config, "save_path": str(tmp_path / "ck"), "heartbeat": str(tmp_path / "heartbeat"), "env": ENV_ID}
    with open(tmp_path / "train.log", "wb") as log:
        process = subprocess.Popen([sys.executable, str(script), json.dumps(config)], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    if wanted(read_manifest(tmp_path / "ck")):
                        break
                except (FileNotFoundError, ValueError):
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"training ended or stalled before the kill:\n{(tmp_path / 'train.log').read_text()[-3000:]}")
                time.sleep(0.01)
            time.sleep(delay)
            os.kill(process.pid, signal.SIGKILL)
            assert process.wait(timeout=30) == -signal.SIGKILL
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    offline_updates, num_timesteps = (int(value) for value in (tmp_path / "heartbeat").read_text().split())
    return offline_updates, num_timesteps


def test_sigkill_in_the_offline_phase_then_resume(pendulum_balance_dataset, tmp_path):
    save_freq, offline_steps, total_timesteps = 50, 400, 30
    config = dict(
        algorithm="IQL",
        dataset=pendulum_balance_dataset,
        kwargs={**TINY, "offline_steps": offline_steps},
        save_freq=save_freq,
        total_timesteps=total_timesteps,
    )
    reached, _ = train_and_kill(tmp_path, config, lambda manifest: manifest["offline_updates"] >= 150, delay=0.13)
    manifest = read_manifest(tmp_path / "ck")
    assert manifest["phase"] == "offline" and manifest["offline_updates"] % save_freq == 0
    # at most one checkpoint interval was lost
    assert 0 <= reached - manifest["offline_updates"] <= save_freq
    counter = CountingCallback()
    model = resume(tmp_path / "ck", callback=[counter, O2OCheckpointCallback(save_freq, tmp_path / "ck")])
    assert isinstance(model, IQL)
    assert counter.offline_calls == offline_steps - manifest["offline_updates"]  # no offline update is repeated
    assert (model.offline_updates, model.num_timesteps, model._n_updates) == (
        offline_steps,
        total_timesteps,
        offline_steps + total_timesteps,
    )
    assert read_manifest(tmp_path / "ck")["offline_phase_done"]


def test_sigkill_in_the_online_phase_then_resume(pendulum_balance_dataset, tmp_path):
    save_freq, offline_steps, learning_starts, total_timesteps = 50, 40, 50, 400
    kwargs = {**TINY, **TINY_DARE, "offline_steps": offline_steps, "learning_starts": learning_starts}
    config = dict(
        algorithm="DARE_IQL",
        dataset=pendulum_balance_dataset,
        kwargs=kwargs,
        save_freq=save_freq,
        total_timesteps=total_timesteps,
    )
    wanted = lambda manifest: manifest["phase"] == "online" and manifest["num_timesteps"] >= 150  # noqa: E731
    _, reached = train_and_kill(tmp_path, config, wanted, delay=0.21)
    manifest = read_manifest(tmp_path / "ck")
    assert manifest["phase"] == "online" and manifest["num_timesteps"] % save_freq == 0
    assert 0 <= reached - manifest["num_timesteps"] <= save_freq
    model = DARE_IQL.load_checkpoint(tmp_path / "ck", env=gym.make(ENV_ID))
    assert model.replay_buffer.size() == manifest["num_timesteps"] and model.behavior.is_fitted
    model.behavior.fit = None  # the behaviour model is restored, never fitted again
    counter = CountingCallback()
    model.learn(total_timesteps - model.num_timesteps, callback=counter, reset_num_timesteps=False)
    assert counter.offline_calls == 0
    # every online update happened exactly once: no warm-up again, none lost or repeated at the checkpoint
    assert model._n_updates == offline_steps + total_timesteps - learning_starts
    assert model.num_timesteps == total_timesteps and model.replay_buffer.size() == total_timesteps
    model.replay_buffer.flush_scores()  # online scores are computed in batches
    assert not np.isnan(model.replay_buffer.online_scores[:total_timesteps]).any()


# ---------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_parameters(pendulum_balance_dataset):
    th.set_num_threads(1)

    class Snapshot(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.after_offline: dict[str, Any] = {}

        def on_offline_step(self) -> bool:
            if self.model.offline_updates == self.model.offline_steps:
                self.after_offline = {key: _clone(value) for key, value in self.model.get_parameters().items()}
            return True

        def _on_step(self) -> bool:
            return True

    def run() -> tuple[dict[str, Any], dict[str, Any]]:
        model = make_model(IQL, pendulum_balance_dataset, offline_steps=200, seed=7)
        snapshot = Snapshot()
        model.learn(1000, callback=snapshot)
        assert model.num_timesteps == 1000
        return snapshot.after_offline, model.get_parameters()

    first_offline, first_online = run()
    second_offline, second_online = run()
    assert first_offline
    assert_same_state(first_offline, second_offline, "after the offline phase")
    assert_same_state(first_online, second_online, "after 1000 online steps")
    assert not th.equal(first_offline["policy"]["actor.log_std"], first_online["policy"]["actor.log_std"])


def _clone(value: Any) -> Any:
    if isinstance(value, th.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {key: _clone(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clone(item) for item in value]
    return value


# ---------------------------------------------------------------------- divergence


class PoisonRewards(BaseCallback):
    """Makes every offline reward NaN after ``at`` updates (the shared dataset arrays of this model only)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def on_offline_step(self) -> bool:
        if self.model.offline_updates == self.at:
            self.model.replay_buffer.offline_rewards[:] = np.nan
        return True

    def _on_step(self) -> bool:
        return True


def test_divergence_names_the_loss_and_window_and_the_checkpoint_stays_usable(pendulum_balance_dataset, tmp_path):
    folder = tmp_path / "ck"
    model = make_model(IQL, pendulum_balance_dataset, offline_steps=100, offline_log_interval=25)
    # NaN rewards from update 39 on: the checkpoint of update 40 would hold NaN critics, so it is refused
    with pytest.raises(DivergenceError, match=r"offline/critic_loss.*NaN or infinite in the updates 25\.\.40"):
        model.learn(0, callback=[O2OCheckpointCallback(save_freq=20, save_path=folder), PoisonRewards(at=38)])
    manifest = read_manifest(folder)
    assert manifest["offline_updates"] == 20 and len(os.listdir(folder)) == 4
    loaded = IQL.load_checkpoint(folder)
    assert all(th.isfinite(parameter).all() for parameter in loaded.policy.parameters())
    loaded.learn(0)  # the dataset is read again from disk: the run goes on from update 20
    assert loaded.offline_updates == 100 and all(th.isfinite(parameter).all() for parameter in loaded.policy.parameters())


def test_divergence_at_the_log_dump(pendulum_balance_dataset):
    model = make_model(IQL, pendulum_balance_dataset, offline_steps=100, offline_log_interval=31)
    with pytest.raises(DivergenceError, match=r"offline/critic_loss.*NaN or infinite in the updates 0\.\.31\. Lower"):
        model.learn(0, callback=PoisonRewards(at=30))


def test_divergence_before_the_dump_is_named_not_its_symptom(pendulum_balance_dataset):
    model = make_model(IQL, pendulum_balance_dataset, offline_steps=100, offline_log_interval=25)
    original_step = model._train_step

    def strict_step(replay_data):
        # what torch.distributions (with argument validation) does with a NaN actor: refuse it with a ValueError,
        # a few updates after the critics diverged and before the next log dump
        if not all(th.isfinite(parameter).all() for parameter in model.actor.parameters()):
            raise ValueError("Expected parameter loc to satisfy the constraint Real(), but found invalid values")
        return original_step(replay_data)

    model._train_step = strict_step
    with pytest.raises(DivergenceError, match=r"offline/critic_loss.*in the updates 25\.\.3\d\b") as info:
        model.learn(0, callback=PoisonRewards(at=30))
    assert isinstance(info.value.__context__, ValueError)


# ---------------------------------------------------------------------- model zips: corrupt, other versions, other algorithms


@pytest.fixture
def saved_iql(pendulum_balance_dataset, tmp_path):
    model = make_model(IQL, pendulum_balance_dataset, offline_steps=0)
    model.save(tmp_path / "iql.zip")
    return tmp_path / "iql.zip"


def rewrite_data(path, **changes: Any) -> None:
    """Change (or with None remove) keys of a zip's data entry."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(members["data"])
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    members["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No saved model at .*nothing.*nor .*nothing\.zip"):
        IQL.load(tmp_path / "nothing")


@pytest.mark.parametrize("damage", ["truncated", "flipped", "not_a_zip"])
def test_corrupt_or_truncated_zip(saved_iql, damage):
    content = saved_iql.read_bytes()
    if damage == "truncated":
        saved_iql.write_bytes(content[: len(content) // 2])
    elif damage == "flipped":
        middle = len(content) // 2
        saved_iql.write_bytes(content[:middle] + bytes([content[middle] ^ 0xFF]) + content[middle + 1 :])
    else:
        saved_iql.write_text("hello")
    with pytest.raises(ValueError, match=r"is not a readable model zip .*corrupt or truncated.*Load an earlier copy"):
        IQL.load(saved_iql)


@pytest.mark.parametrize(
    "version, message",
    [
        ("99.0.0", r"saved by sb3_dare 99\.0\.0, newer than the installed .*Upgrade"),
        ("0.0.1", r"saved by sb3_dare 0\.0\.1; sb3_dare .* reads saves of version 0\.1\.0 or newer"),
        (None, r"was not saved by sb3_dare"),
    ],
)
def test_incompatible_versions(saved_iql, version, message):
    rewrite_data(saved_iql, _sb3_dare_version=version)
    with pytest.raises(ValueError, match=message):
        IQL.load(saved_iql)


def test_zip_saved_by_stable_baselines3(tmp_path):
    SAC("MlpPolicy", "Pendulum-v1", buffer_size=10, policy_kwargs=dict(net_arch=[8])).save(tmp_path / "sac")
    with pytest.raises(ValueError, match=r"not saved by sb3_dare .*stable-baselines3 .*stable_baselines3\.SAC\.load"):
        IQL.load(tmp_path / "sac")


def test_zip_of_another_algorithm(saved_iql):
    with pytest.raises(ValueError, match=r"holds an IQL model, not a CalQL one\. Load it with IQL\.load\(path\)"):
        CalQL.load(saved_iql)
    with pytest.raises(ValueError, match=r"holds an IQL model, not a DARE_IQL one.*DARE_IQL\.from_base\(path, env\)"):
        DARE_IQL.load(saved_iql)


def test_load_on_an_env_with_another_observation_space(saved_iql):
    # both spaces are named, the env's (Hopper: 11 dimensions) and the model's (InvertedPendulum: 4)
    expected = r"The env does not match .*its observation space is Box\(.*\(11,\).*trained with Box\(.*\(4,\).*env=None"
    with pytest.raises(ValueError, match=expected):
        IQL.load(saved_iql, env=gym.make("Hopper-v5"))


def test_load_on_an_env_with_another_action_space(saved_iql):
    env = gym.wrappers.RescaleAction(gym.make(ENV_ID), min_action=-1.0, max_action=1.0)
    with pytest.raises(ValueError, match=r"its action space is Box\(-1\.0, 1\.0"):
        IQL.load(saved_iql, env=env)


def test_checkpoint_folder_passed_to_load(pendulum_balance_dataset, tmp_path):
    make_model(IQL, pendulum_balance_dataset, offline_steps=10).learn(
        0, callback=O2OCheckpointCallback(save_freq=10, save_path=tmp_path / "ck")
    )
    with pytest.raises(FileNotFoundError, match=r"is a checkpoint folder, not a model zip.*load_checkpoint"):
        IQL.load(tmp_path / "ck")


# ---------------------------------------------------------------------- checkpoint errors


@pytest.fixture
def checkpoint_folder(pendulum_balance_dataset, tmp_path):
    make_model(IQL, pendulum_balance_dataset, offline_steps=10).learn(
        0, callback=O2OCheckpointCallback(save_freq=10, save_path=tmp_path / "ck", name_prefix="iql")
    )
    return tmp_path / "ck"


def test_checkpoint_of_another_algorithm(checkpoint_folder):
    with pytest.raises(ValueError, match=r"holds an IQL run, not a CalQL one\. Resume it with IQL\.load_checkpoint"):
        CalQL.load_checkpoint(checkpoint_folder)


def test_folder_without_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No checkpoint manifest .*O2OCheckpointCallback\(save_path="):
        load_checkpoint(tmp_path)


def test_folder_with_several_runs(checkpoint_folder):
    (checkpoint_folder / "other_latest.json").write_text("{}")
    with pytest.raises(ValueError, match=r"holds the checkpoints of several runs .*pass the manifest file"):
        load_checkpoint(checkpoint_folder)


def test_corrupt_manifest(checkpoint_folder):
    (checkpoint_folder / "iql_latest.json").write_text('{"sequence": 1, "fil')
    with pytest.raises(ValueError, match="is not a readable checkpoint manifest"):
        load_checkpoint(checkpoint_folder)


def test_incomplete_checkpoint(checkpoint_folder):
    manifest = read_manifest(checkpoint_folder)
    buffer_file = checkpoint_folder / manifest["files"]["replay_buffer"]
    buffer_file.write_bytes(buffer_file.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"is incomplete: iql_\d+_replay_buffer\.pkl has 100 bytes instead of"):
        load_checkpoint(checkpoint_folder)
    os.remove(checkpoint_folder / manifest["files"]["model"])
    with pytest.raises(ValueError, match=r"is incomplete: iql_\d+\.zip is missing"):
        load_checkpoint(checkpoint_folder)


def test_checkpoint_of_a_class_that_cannot_be_imported(checkpoint_folder):
    manifest_file = checkpoint_folder / "iql_latest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest_file.write_text(json.dumps({**manifest, "algorithm": "MyIQL", "algorithm_module": "my_project.agents"}))
    with pytest.raises(ValueError, match=r"written by my_project\.agents\.MyIQL, which cannot be imported here.*algorithm="):
        load_checkpoint(checkpoint_folder)


def test_checkpoint_sequence_not_kept(checkpoint_folder):
    with pytest.raises(ValueError, match=r"Checkpoint 99 is not kept .*keep_last"):
        load_checkpoint(checkpoint_folder, sequence=99)


def test_checkpoint_of_a_newer_version(checkpoint_folder):
    manifest_file = checkpoint_folder / "iql_latest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest_file.write_text(json.dumps({**manifest, "sb3_dare_version": "99.0"}))
    with pytest.raises(ValueError, match=r"checkpoint .* was saved by sb3_dare 99\.0, newer than the installed"):
        load_checkpoint(checkpoint_folder)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(save_freq=0), "save_freq must be an integer >= 1"),
        (dict(save_freq=2.5), "save_freq must be an integer >= 1"),
        (dict(keep_last=0), "keep_last must be an integer >= 1"),
        (dict(name_prefix="a/b"), "name_prefix must be a non-empty file name"),
    ],
)
def test_checkpoint_callback_validation(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        O2OCheckpointCallback(**{"save_freq": 10, "save_path": tmp_path, **kwargs})


def test_checkpoint_callback_refuses_other_algorithms(tmp_path):
    model = SAC("MlpPolicy", "Pendulum-v1", buffer_size=10, policy_kwargs=dict(net_arch=[8]))
    with pytest.raises(ValueError, match=r"works with the sb3_dare algorithms, got SAC: use .*CheckpointCallback"):
        model.learn(1, callback=O2OCheckpointCallback(save_freq=10, save_path=tmp_path))


# ---------------------------------------------------------------------- the bad-input rows not covered elsewhere


def arrays(n: int = 5, obs_dim: int = 2, action_dim: int = 1) -> dict[str, np.ndarray]:
    return dict(
        observations=np.zeros((n, obs_dim)),
        actions=np.zeros((n, action_dim)),
        rewards=np.zeros(n),
        next_observations=np.zeros((n, obs_dim)),
        terminations=np.zeros(n),
    )


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(rewards=np.zeros(4)), r"'rewards' has 4 entries but 'observations' has 5; all transition arrays"),
        (dict(next_observations=np.zeros((5, 3))), r"next_observations have shape \(3,\) per transition, observations \(2,\)"),
        (dict(rewards=np.zeros((5, 2))), r"rewards must be one scalar per transition, got shape \(5, 2\)"),
        (dict(observation_space=spaces.Box(-1, 1, (3,))), r"observations have shape \(2,\) but the observation space is"),
        (dict(episode_starts=np.array([0, 3, 2])), "episode_starts must be strictly increasing indices starting at 0"),
        (dict(episode_starts=np.array([1, 3])), "episode_starts must be strictly increasing indices starting at 0"),
        (dict(episode_starts=np.array([0, 5])), r"episode_starts go past the last transition \(5\)"),
        (dict(action_space=spaces.Discrete(3)), r"has action space Discrete\(3\): sb3_dare supports continuous \(Box\)"),
        (dict(action_space=spaces.Box(-1, 1, (2,))), r"actions have shape \(1,\) but the action space is"),
        (dict(action_space=spaces.Box(-np.inf, np.inf, (1,))), r"has infinite bounds.*RescaleAction or ClipAction"),
        (dict(observations=np.zeros((5, 2, 2))), r"'observations' must have shape \(N, dim\), got \(5, 2, 2\)\. Flatten"),
        (dict(actions=np.array([["a"]] * 5)), r"'actions' must be numeric, got dtype <U1"),
    ],
)
def test_offline_data_bad_arrays(changes, message):
    kwargs = {**arrays(), **changes}
    with pytest.raises(ValueError, match=message):
        OfflineData.from_arrays(
            kwargs.pop("observations"),
            kwargs.pop("actions"),
            kwargs.pop("rewards"),
            kwargs.pop("next_observations"),
            kwargs.pop("terminations"),
            **kwargs,
        )


def test_normalized_score_with_equal_references():
    data = OfflineData.from_arrays(*arrays().values(), ref_min_score=1.0, ref_max_score=1.0)
    with pytest.raises(ValueError, match=r"ref_max_score == ref_min_score == 1\.0"):
        data.normalized_score(5.0)


def test_from_replay_buffer_refusals():
    from stable_baselines3.common.buffers import DictReplayBuffer

    observation_space = spaces.Dict({"a": spaces.Box(-1, 1, (2,))})
    with pytest.raises(ValueError, match="not DictReplayBuffer"):
        OfflineData.from_replay_buffer(DictReplayBuffer(10, observation_space, spaces.Box(-1, 1, (1,))))
    with pytest.raises(ValueError, match=r"Replay buffer has action space Discrete\(2\): only Box actions"):
        OfflineData.from_replay_buffer(ReplayBuffer(10, spaces.Box(-1, 1, (2,)), spaces.Discrete(2)))


def test_dataset_of_an_unsupported_type():
    with pytest.raises(ValueError, match=r"dataset must be a Minari dataset id, a folder, a minari\.MinariDataset or"):
        load_offline_data(42)


def test_env_with_discrete_actions_for_a_dataset():
    data = OfflineData.from_arrays(*arrays(obs_dim=4).values())
    with pytest.raises(ValueError, match=r"The env has action space Discrete\(2\): sb3_dare supports continuous \(Box\)"):
        load_offline_data(data, env="CartPole-v1")


def _create_minari_dataset(dataset_id: str, observation_space: spaces.Space, observations: Any, n_steps: int = 4) -> None:
    import minari
    from minari.data_collector import EpisodeBuffer

    buffer = EpisodeBuffer(
        id=0,
        observations=observations,
        actions=np.zeros((n_steps, 1), np.float32),
        rewards=np.ones(n_steps),
        terminations=np.array([False] * (n_steps - 1) + [True]),
        truncations=np.zeros(n_steps, bool),
    )
    minari.create_dataset_from_buffers(
        dataset_id,
        buffer=[buffer],
        env=None,
        observation_space=observation_space,
        action_space=spaces.Box(-1, 1, (1,)),
        algorithm_name="x",
        author="t",
        author_email="t@x.org",
        code_permalink="https://example.com",
        description="d",
    )


def test_dict_observations_with_non_box_parts(minari_root):
    space = spaces.Dict({"position": spaces.Box(-1, 1, (2,)), "room": spaces.Discrete(3)})
    observations = {"position": np.zeros((5, 2), np.float32), "room": np.zeros(5, np.int64)}
    _create_minari_dataset("test/rooms/dict-v0", space, observations)
    with pytest.raises(ValueError, match="only Dict observations made of Box sub-spaces can be flattened"):
        load_offline_data("test/rooms/dict-v0", flatten_observations=True)


def test_observations_neither_box_nor_dict(minari_root):
    _create_minari_dataset("test/grid/discrete-v0", spaces.Discrete(4), np.zeros(5, np.int64))
    with pytest.raises(ValueError, match=r"has observation space Discrete\(4\): only Box \(or flattened Dict\)"):
        load_offline_data("test/grid/discrete-v0")


def test_replay_buffer_refusals():
    box = spaces.Box(-1, 1, (3,))
    action_space = spaces.Box(-1, 1, (2,))
    with pytest.raises(ValueError, match="needs handle_timeout_termination=True"):
        OfflineOnlineReplayBuffer(10, box, action_space, handle_timeout_termination=False)
    with pytest.raises(ValueError, match=r"supports Box observations, got Discrete\(3\).*FlattenObservation"):
        OfflineOnlineReplayBuffer(10, spaces.Discrete(3), action_space)
    buffer = OfflineOnlineReplayBuffer(10, box, action_space, device="cpu")
    with pytest.raises(ValueError, match=r"Offline data has observations of shape \(2,\), the buffer expects \(3,\)"):
        buffer.attach_offline_data(OfflineData.from_arrays(*arrays(obs_dim=2, action_dim=2).values()))
    with pytest.raises(ValueError, match="Offline data has 1-dim actions, the buffer expects 2"):
        buffer.attach_offline_data(OfflineData.from_arrays(*arrays(obs_dim=3, action_dim=1).values()))
    with pytest.raises(ValueError, match="has no offline data reference; pass the OfflineData"):
        buffer.reattach_offline_data()
    buffer.attach_offline_data(OfflineData.from_arrays(*arrays(obs_dim=3, action_dim=2).values()))
    with pytest.raises(ValueError, match="The score function returned 1 scores for 5 transitions"):
        buffer.set_score_function(lambda observations, actions: np.zeros(1))


class ImageEnv(gym.Env):
    """An env with 2-D observations (the policies take flat vectors)."""

    observation_space = spaces.Box(-1, 1, (2, 2))
    action_space = spaces.Box(-1, 1, (1,))

    def reset(self, seed=None, options=None):
        return np.zeros((2, 2), np.float32), {}

    def step(self, action):
        return np.zeros((2, 2), np.float32), 0.0, False, False, {}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(gamma=1.5), r"gamma must be in \[0.0, 1.0\], got 1.5"),
        (dict(learning_starts=-1), "learning_starts must be >= 0"),
        (dict(buffer_size=0), "buffer_size must be >= 1"),
        (dict(offline_log_interval=0), "offline_log_interval must be >= 1"),
        (dict(offline_eval_episodes=0), "offline_eval_episodes must be >= 1"),
        (dict(offline_eval_freq=-1), r"offline_eval_freq must be >= 0 \(0 disables offline evaluation\)"),
        (dict(reward_scale=float("inf")), r"reward_scale must be finite \(or 'return_range'\), got inf"),
        (dict(reward_bias=float("nan")), "reward_bias must be finite, got nan"),
        (dict(reward_scale="returns"), "reward_scale must be a finite number or 'return_range', got 'returns'"),
        (dict(reward_scale="return_range"), "reward_scale='return_range' computes the scale from the offline dataset"),
        (dict(learning_rate=0.0), "learning_rate must be > 0, got 0.0"),
        (dict(replay_buffer_class=ReplayBuffer), "replay_buffer_class must be OfflineOnlineReplayBuffer or a subclass"),
        (dict(actor_learning_rate=-1.0), r"actor_learning_rate must be > 0 \(or None\)"),
        (dict(policy_kwargs=dict(net_arch=[16, 0])), "net_arch must be a list of positive layer sizes"),
        (dict(policy_kwargs=dict(n_critics=0)), "n_critics must be >= 1"),
        (dict(policy_kwargs=dict(use_sde=True)), r"gSDE \(use_sde=True\) is not supported"),
    ],
)
def test_base_constructor_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IQL("MlpPolicy", ENV_ID, **{**TINY, **kwargs})


def test_no_env_and_no_dataset():
    with pytest.raises(ValueError, match=r"Pass an env, or a dataset for offline-only use"):
        IQL("MlpPolicy", None)


def test_non_flat_observations():
    with pytest.raises(ValueError, match=r"take flat Box observations.*FlattenObservation"):
        IQL("MlpPolicy", ImageEnv(), **TINY)


# what the issue names for every algorithm, where the algorithm's own test file does not check it already
SHARED_ROWS = [
    (CalQL, dict(batch_size=1), "batch_size must be >= 2"),
    (DARE_IQL, dict(batch_size=1), "batch_size must be >= 2"),
    (DARE_CalQL, dict(batch_size=1), "batch_size must be >= 2"),
    (DARE_IQL, dict(offline_ratio=-0.1), r"offline_ratio must be in \[0.0, 1.0\]"),
    (DARE_CalQL, dict(offline_ratio=1.5), r"offline_ratio must be in \[0.0, 1.0\]"),
    (DARE_CalQL, dict(exchange="magic"), r"Unknown exchange rule 'magic'; choose one of"),
    (DARE_CalQL, dict(behavior_model="vae"), r"Unknown behavior_model 'vae'; choose one of \('diffusion', 'gaussian'\)"),
    (DARE_CalQL, dict(guidance_scale=-1.0), r"guidance_scale must be >= 0 \(0 = plain behaviour sampling\)"),
    (DARE_IQL, dict(score_reduction="max"), "Unknown score_reduction 'max'; choose one of"),
    (DARE_IQL, dict(sigma_floor=0.0), "sigma_floor must be > 0"),
    (DARE_IQL, dict(score_sigma=0.0), "score_sigma must be a finite number > 0"),
    (DARE_CalQL, dict(score_sigma=float("inf")), "score_sigma must be a finite number > 0"),
    (DARE_IQL, dict(behavior_steps=-1), "behavior_steps must be >= 0"),
    (DARE_IQL, dict(energy_steps=-1), "energy_steps must be >= 0"),
    (DARE_IQL, dict(behavior_batch_size=0), "behavior_batch_size must be >= 1"),
    (DARE_IQL, dict(n_support_actions=0), "n_support_actions must be >= 1"),
    (DARE_IQL, dict(max_support_states=0), "max_support_states must be >= 1"),
]


@pytest.mark.parametrize(
    "algorithm, kwargs, message", SHARED_ROWS, ids=[f"{row[0].__name__}-{next(iter(row[1]))}" for row in SHARED_ROWS]
)
def test_algorithm_constructor_validation(algorithm, kwargs, message):
    with pytest.raises(ValueError, match=message):
        algorithm("MlpPolicy", ENV_ID, **{**TINY, **kwargs})


def test_run_time_refusals(pendulum_balance_dataset, tmp_path):
    model = IQL("MlpPolicy", ENV_ID, **{**TINY, "offline_steps": 0})
    with pytest.raises(ValueError, match="total_timesteps must be >= 0"):
        model.learn(-1)
    with pytest.raises(ValueError, match="n_steps must be >= 0"):
        model.pretrain(n_steps=-1)
    with pytest.raises(ValueError, match=r"The offline phase needs a dataset: pass dataset=\.\.\."):
        model.pretrain(n_steps=5)
    # a replay buffer file of another kind leaves the model's buffer in place
    with open(tmp_path / "buffer.pkl", "wb") as file:
        pickle.dump(ReplayBuffer(10, spaces.Box(-1, 1, (4,)), spaces.Box(-1, 1, (1,))), file)
    buffer = model.replay_buffer
    with pytest.raises(ValueError, match=r"does not hold an OfflineOnlineReplayBuffer \(it holds a ReplayBuffer\)"):
        model.load_replay_buffer(tmp_path / "buffer.pkl")
    assert model.replay_buffer is buffer
    dare = make_model(DARE_IQL, pendulum_balance_dataset, offline_steps=0)
    with pytest.raises(ValueError, match="behaviour model is not fitted yet: it is fitted when the offline phase ends"):
        dare.score_transitions(np.zeros((2, 4), np.float32), np.zeros((2, 1), np.float32))


# ---------------------------------------------------------------------- the env beyond its id


def test_offline_evaluations_keep_the_time_limit_and_wrappers(tmp_path):
    """The default offline evaluation env is made from the training env's spec: Pendulum never terminates, so an eval
    env without its time limit would never end an episode (Gymnasium's unwrapped spec has max_episode_steps=None)."""
    from sb3_dare.quickstart import EMBEDDED_DATASET

    env = gym.wrappers.ClipReward(gym.make("Pendulum-v1", g=5.0, max_episode_steps=30), min_reward=-1.0)
    model = IQL(
        "MlpPolicy",
        env,
        dataset=EMBEDDED_DATASET,
        **{**TINY, "offline_steps": 4, "offline_eval_freq": 2},
        offline_eval_episodes=1,
    )
    model.learn(0)
    eval_env = model._offline_eval_env
    assert eval_env.spec.max_episode_steps == 30 and eval_env.spec.kwargs["g"] == 5.0
    assert [wrapper.name for wrapper in eval_env.spec.additional_wrappers] == ["ClipReward", "Monitor"]
    assert eval_env.get_episode_lengths() == [30, 30]  # two evaluations of one 30-step episode each


def test_online_fps_counts_the_online_phase_only():
    """SB3's time/fps divides env steps by the time since start_time: it restarts when the online phase does."""

    class Times(BaseCallback):
        def __init__(self):
            super().__init__()
            self.offline_end = self.online_start_time = None

        def on_offline_step(self) -> bool:
            self.offline_end = time.time_ns()
            return True

        def _on_step(self) -> bool:
            if self.online_start_time is None:
                self.online_start_time = self.model.start_time
            return True

    times = Times()
    model = IQL("MlpPolicy", "Pendulum-v1", dataset=_embedded(), **{**TINY, "offline_steps": 30})
    model.learn(5, callback=times)
    assert times.online_start_time >= times.offline_end


def test_checkpoint_resumes_on_the_env_it_was_trained_on(tmp_path):
    """The manifest records the env's whole spec (arguments, time limit, wrappers), not just its id."""
    env = gym.make("Pendulum-v1", g=5.0, max_episode_steps=50)
    model = IQL("MlpPolicy", env, dataset=_embedded(), **{**TINY, "offline_steps": 10})
    model.learn(20, callback=O2OCheckpointCallback(save_freq=10, save_path=tmp_path / "ck"))
    loaded = load_checkpoint(tmp_path / "ck")
    spec = loaded.env.get_attr("spec", indices=[0])[0]
    assert spec.id == "Pendulum-v1" and spec.kwargs["g"] == 5.0 and spec.max_episode_steps == 50
    # a wrapper that records no constructor arguments cannot be re-created: the error says to pass the env
    unrecorded = gym.Wrapper(gym.make("Pendulum-v1"))
    other = IQL("MlpPolicy", unrecorded, dataset=_embedded(), **{**TINY, "offline_steps": 10})
    other.learn(10, callback=O2OCheckpointCallback(save_freq=10, save_path=tmp_path / "ck2"))
    manifest = read_manifest(tmp_path / "ck2")
    assert manifest["env_spec"] is None and "record no constructor arguments" in manifest["env_spec_problem"]
    with pytest.raises(
        ValueError, match=r"cannot re-create its env 'Pendulum-v1' .*pass the env it was trained on, env=\.\.\."
    ):
        load_checkpoint(tmp_path / "ck2")
    assert load_checkpoint(tmp_path / "ck2", env=gym.Wrapper(gym.make("Pendulum-v1"))).num_timesteps == 10
    # an offline-only run (env=None) resumes without an env, as it ran
    offline_only = IQL("MlpPolicy", None, dataset=_embedded(), **{**TINY, "offline_steps": 20})
    offline_only.pretrain(n_steps=10, callback=O2OCheckpointCallback(save_freq=10, save_path=tmp_path / "ck3"))
    resumed = load_checkpoint(tmp_path / "ck3", dataset=_embedded())
    assert resumed.env is None and resumed.offline_updates == 10


def test_load_applies_custom_object_spaces_before_checking_the_env(tmp_path):
    """SB3's way to load with other bounds, custom_objects={"observation_space": ...}, is not refused."""
    model = IQL("MlpPolicy", "Pendulum-v1", dataset=_embedded(), **{**TINY, "offline_steps": 0})
    model.save(tmp_path / "iql")
    wider = gym.wrappers.TransformObservation(
        gym.make("Pendulum-v1"), lambda obs: obs, spaces.Box(-10.0, 10.0, (3,), dtype=np.float32)
    )
    with pytest.raises(ValueError, match="The env does not match"):
        IQL.load(tmp_path / "iql", env=wider)
    loaded = IQL.load(tmp_path / "iql", env=wider, custom_objects={"observation_space": wider.observation_space})
    assert loaded.observation_space == wider.observation_space


def _embedded() -> OfflineData:
    from sb3_dare.quickstart import EMBEDDED_DATASET

    return load_offline_data(EMBEDDED_DATASET)
