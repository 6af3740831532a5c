"""The dataset builder: every quality, metadata, Minari round trip, load_offline_data, overwrite, the policy cache, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import minari
import numpy as np
import pytest
import torch
from stable_baselines3 import SAC

from sb3_dare.data import builder as builder_module
from sb3_dare.data import load_offline_data
from sb3_dare.data.__main__ import main
from sb3_dare.data.builder import (
    QUALITIES,
    build_dataset,
    default_cache_dir,
    default_dataset_id,
    default_train_steps,
    select_medium_checkpoint,
    train_policies,
)

# InvertedPendulum: cheap MuJoCo steps, actions in [-3, 3] (so env units and SB3's [-1, 1] differ), and a tiny SAC
# learns something in 2000 steps (random policy ~6, final policy ~60 here), so medium and expert differ.
ENV_ID = "InvertedPendulum-v5"
TRAINING = {
    "train_steps": 2000,
    "sac_kwargs": {"learning_rate": 3e-3, "policy_kwargs": {"net_arch": [64, 64]}},
    "n_checkpoint_episodes": 2,
}
QUIET = {"progress_bar": False, "verbose": 0}
STEPS = 600


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    # Tiny networks run fastest on one thread, and two threads on a busy 2-core machine can be 10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def policy_cache(tmp_path_factory) -> Path:
    """One SAC run shared by the module's tests (each test gets its own dataset folder)."""
    cache = tmp_path_factory.mktemp("policy_cache")
    train_policies(ENV_ID, cache_dir=cache, **TRAINING, **QUIET)
    return cache


@pytest.fixture
def trained(policy_cache) -> builder_module.TrainedPolicies:
    return train_policies(ENV_ID, cache_dir=policy_cache, **TRAINING, **QUIET)


@pytest.fixture
def paths(tmp_path, monkeypatch, policy_cache):
    """A fresh MINARI_DATASETS_PATH, and SB3_DARE_CACHE at the module's trained policies."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    monkeypatch.setenv("SB3_DARE_CACHE", str(policy_cache))
    return tmp_path


def _concatenated(dataset_id: str) -> dict[str, np.ndarray]:
    episodes = list(minari.load_dataset(dataset_id).iterate_episodes())
    return {
        "observations": np.concatenate([episode.observations[:-1] for episode in episodes]),
        "next_observations": np.concatenate([episode.observations[1:] for episode in episodes]),
        "actions": np.concatenate([episode.actions for episode in episodes]),
        "rewards": np.concatenate([episode.rewards for episode in episodes]),
        "terminations": np.concatenate([episode.terminations for episode in episodes]),
        "truncations": np.concatenate([episode.truncations for episode in episodes]),
    }


def test_select_medium_checkpoint():
    # target = 0 + 3000 / 3 = 1000
    assert select_medium_checkpoint([10, 20, 30, 40], [10.0, 400.0, 900.0, 1500.0], 0.0, 3000.0) == 30
    # negative returns (Pendulum-like): target = -1200 + 1050 / 3 = -850
    assert select_medium_checkpoint([1, 2, 3, 4], [-1500.0, -1100.0, -830.0, -200.0], -1200.0, -150.0) == 3
    # ties go to the earliest checkpoint, whatever the order given
    assert select_medium_checkpoint([300, 100, 200], [1200.0, 800.0, 1200.0], 0.0, 3000.0) == 100
    assert select_medium_checkpoint([300, 200], [1200.0, 800.0], 0.0, 3000.0) == 200
    # other fractions, and an "expert" worse than random still picks the nearest return
    assert select_medium_checkpoint([1, 2, 3], [0.0, 50.0, 100.0], 0.0, 100.0, fraction=0.5) == 2
    assert select_medium_checkpoint([1, 2, 3], [-10.0, -40.0, -90.0], 0.0, -90.0) == 2  # target -30
    with pytest.raises(ValueError, match="at least one checkpoint"):
        select_medium_checkpoint([], [], 0.0, 1.0)


def test_defaults(monkeypatch, tmp_path):
    from minari.dataset.minari_dataset import parse_dataset_id

    assert default_dataset_id("Hopper-v5", "medium-replay") == "sb3_dare/hopper-v5/medium-replay-v0"
    assert default_dataset_id("gymnasium_robotics/AntMaze_UMaze-v4", "expert") == "sb3_dare/antmaze_umaze-v4/expert-v0"
    assert parse_dataset_id(default_dataset_id("Hopper-v5", "medium")) == ("sb3_dare/hopper-v5", "medium", 0)
    assert default_train_steps("Hopper-v5") == 250_000
    assert default_train_steps("Walker2d-v5") == default_train_steps("HalfCheetah-v5") == 150_000
    monkeypatch.setenv("SB3_DARE_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("SB3_DARE_CACHE")
    assert default_cache_dir() == Path("~/.cache/sb3_dare").expanduser()


@pytest.mark.parametrize("quality", QUALITIES)
def test_every_quality(quality, paths, trained):
    dataset = build_dataset(ENV_ID, quality, steps=STEPS, **TRAINING, **QUIET)
    dataset_id = f"sb3_dare/invertedpendulum-v5/{quality}-v0"
    assert dataset.spec.dataset_id == dataset_id
    assert dataset_id in minari.list_local_datasets()

    loaded = minari.load_dataset(dataset_id)
    episodes = list(loaded.iterate_episodes())
    expected_steps = min(STEPS, trained.medium.step) if quality == "medium-replay" else STEPS
    assert loaded.total_steps == sum(len(episode.actions) for episode in episodes) == expected_steps
    for episode in episodes:
        assert len(episode.observations) == len(episode.actions) + 1
        ends = episode.terminations | episode.truncations
        assert ends[-1] and not ends[:-1].any()  # one episode per Minari episode, the last one cut at the cap
    data = _concatenated(dataset_id)
    # actions are stored in env units: inside InvertedPendulum's [-3, 3], not SB3's [-1, 1]
    assert np.abs(data["actions"]).max() <= 3.0 + 1e-6
    if quality in ("random", "medium-replay"):
        assert np.abs(data["actions"]).max() > 1.0
    env = loaded.recover_environment()
    assert env.spec is not None and env.spec.id == ENV_ID
    env.close()

    offline = load_offline_data(dataset_id)
    assert len(offline) == expected_steps
    np.testing.assert_allclose(offline.actions * 3.0, data["actions"], rtol=1e-5, atol=1e-6)
    assert offline.ref_min_score == pytest.approx(trained.ref_min_score)
    assert offline.ref_max_score == pytest.approx(trained.ref_max_score)
    assert offline.normalized_score(trained.ref_max_score) == pytest.approx(100.0)
    assert offline.metadata["quality"] == quality


def test_medium_replay_is_sac_replay(paths, trained):
    medium = trained.medium
    assert medium.step > 200  # learning_starts = 2000 // 10: untrained checkpoints are no candidates
    build_dataset(ENV_ID, "medium-replay", **TRAINING, **QUIET)  # no steps: everything up to the checkpoint
    data = _concatenated("sb3_dare/invertedpendulum-v5/medium-replay-v0")
    replay = trained.load_replay()
    assert len(data["actions"]) == medium.step
    for key in ("observations", "next_observations", "actions", "rewards", "terminations"):
        np.testing.assert_allclose(data[key], replay[key][: medium.step], err_msg=key)
    # the episode running at the checkpoint is cut there
    np.testing.assert_array_equal(data["truncations"][:-1], replay["truncations"][: medium.step - 1])
    assert data["truncations"][-1] or data["terminations"][-1]
    # SB3 keeps actions in [-1, 1]; the replay export maps them back to the env's [-3, 3]
    assert 1.0 < np.abs(replay["actions"]).max() <= 3.0 + 1e-6
    metadata = minari.load_dataset("sb3_dare/invertedpendulum-v5/medium-replay-v0").storage.metadata
    assert metadata["medium_checkpoint_step"] == medium.step


def test_medium_expert_is_half_medium_half_expert(paths, trained):
    assert trained.medium.step < trained.expert.step == TRAINING["train_steps"]
    build_dataset(ENV_ID, "medium", steps=STEPS, **TRAINING, **QUIET)
    build_dataset(ENV_ID, "medium-expert", steps=STEPS, **TRAINING, **QUIET)
    medium = _concatenated("sb3_dare/invertedpendulum-v5/medium-v0")
    mixed = _concatenated("sb3_dare/invertedpendulum-v5/medium-expert-v0")
    half = STEPS // 2
    # the same seed per policy: the medium half is the beginning of the medium dataset
    np.testing.assert_array_equal(mixed["observations"][:half], medium["observations"][:half])
    np.testing.assert_array_equal(mixed["actions"][:half], medium["actions"][:half])
    assert mixed["truncations"][half - 1] or mixed["terminations"][half - 1]
    assert not np.array_equal(mixed["actions"][half:], medium["actions"][half:])


def test_metadata(paths, trained):
    build_dataset(ENV_ID, "medium", steps=STEPS, seed=0, **TRAINING, **QUIET)
    metadata = minari.load_dataset("sb3_dare/invertedpendulum-v5/medium-v0").storage.metadata
    # both reference scores are ours, not re-estimated by Minari
    assert metadata["ref_min_score"] == trained.ref_min_score
    assert metadata["ref_max_score"] == trained.ref_max_score
    assert metadata["ref_max_score"] > metadata["ref_min_score"]
    assert metadata["num_episodes_average_score"] == 10
    assert metadata["ref_min_episodes"] == 100
    assert json.loads(metadata["env_spec"])["id"] == ENV_ID
    assert metadata["requirements"] == [
        f"gymnasium=={builder_module.package_versions()['gymnasium']}",
        f"mujoco=={builder_module.package_versions()['mujoco']}",
    ]
    assert any(entry.startswith("stable-baselines3==") for entry in metadata["build_versions"])
    assert any(entry.startswith("torch==") for entry in metadata["build_versions"])
    assert metadata["algorithm_name"] == "SB3 SAC"
    assert metadata["quality"] == "medium" and metadata["seed"] == 0 and metadata["sac_train_steps"] == 2000
    assert metadata["medium_checkpoint_step"] == trained.medium.step
    assert metadata["medium_checkpoint_return"] == pytest.approx(trained.medium.mean_return)
    assert f"step {trained.medium.step}" in metadata["description"]


def _hidden_entries(root: Path) -> list[str]:
    """Staging folders and set-aside datasets anywhere under a datasets root (a finished build leaves none)."""
    return sorted(str(path.relative_to(root)) for path in root.rglob(".*"))


def test_concurrent_build_of_the_same_id(paths):
    """Another process writes the same id while this build runs: its dataset is kept, never deleted or mixed."""
    dataset_id = "test/race/random-v0"
    real_create = minari.create_dataset_from_buffers

    def other_process_writes_first(*args, **kwargs):
        # this build writes into its staging root; "the other process" puts its own dataset (200 steps) in the real one
        staging = os.environ["MINARI_DATASETS_PATH"]
        assert Path(staging).parent == paths / "datasets" and Path(staging).name.startswith(".")
        os.environ["MINARI_DATASETS_PATH"] = str(paths / "datasets")
        try:
            real_create(*args, **{**kwargs, "buffer": kwargs["buffer"][:1], "description": "the other process"})
        finally:
            os.environ["MINARI_DATASETS_PATH"] = staging
        return real_create(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(minari, "create_dataset_from_buffers", other_process_writes_first)
        with pytest.raises(ValueError, match=r"(?s)test/race/random-v0.*already exists.*another process"):
            build_dataset(ENV_ID, "random", dataset_id, steps=300, **TRAINING, **QUIET)
    assert os.environ["MINARI_DATASETS_PATH"] == str(paths / "datasets")  # restored
    kept = minari.load_dataset(dataset_id)
    assert kept.storage.metadata["description"] == "the other process"
    assert _hidden_entries(paths / "datasets") == []
    # with overwrite=True, this build's dataset replaces the one the other process wrote meanwhile
    minari.delete_dataset(dataset_id)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(minari, "create_dataset_from_buffers", other_process_writes_first)
        build_dataset(ENV_ID, "random", dataset_id, steps=300, overwrite=True, **TRAINING, **QUIET)
    assert minari.load_dataset(dataset_id).total_steps == 300
    assert _hidden_entries(paths / "datasets") == []


def test_overwrite_and_reproducibility(paths):
    dataset_id = "test/check/random-v0"
    build_dataset(ENV_ID, "random", dataset_id, steps=300, **TRAINING, **QUIET)
    first = _concatenated(dataset_id)
    with pytest.raises(ValueError, match=r"(?s)test/check/random-v0.*overwrite"):
        build_dataset(ENV_ID, "random", dataset_id, steps=200, **TRAINING, **QUIET)
    assert minari.load_dataset(dataset_id).total_steps == 300  # untouched
    # an overwrite whose write fails keeps the old dataset (and leaves nothing else behind)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            minari, "create_dataset_from_buffers", lambda *args, **kwargs: (_ for _ in ()).throw(OSError("disk full"))
        )
        with pytest.raises(OSError, match="disk full"):
            build_dataset(ENV_ID, "random", dataset_id, steps=200, overwrite=True, **TRAINING, **QUIET)
    assert minari.load_dataset(dataset_id).total_steps == 300
    assert _hidden_entries(paths / "datasets") == []
    build_dataset(ENV_ID, "random", dataset_id, steps=200, overwrite=True, **TRAINING, **QUIET)
    assert minari.load_dataset(dataset_id).total_steps == 200
    # the same seed gives the same data
    second = _concatenated(dataset_id)
    np.testing.assert_array_equal(second["actions"][:150], first["actions"][:150])
    np.testing.assert_array_equal(second["observations"][:150], first["observations"][:150])


def test_bad_input(paths, tmp_path):
    cache = tmp_path / "untouched_cache"
    kwargs = {"cache_dir": cache, **QUIET}
    with pytest.raises(ValueError, match="random, medium, medium-replay, medium-expert, expert"):
        build_dataset(ENV_ID, "good", **kwargs)
    with pytest.raises(ValueError, match="steps must be positive"):
        build_dataset(ENV_ID, "random", steps=0, **kwargs)
    with pytest.raises(ValueError, match="Box action space"):
        build_dataset("CartPole-v1", "random", **kwargs)
    with pytest.raises(ValueError, match="Malformed dataset id"):
        build_dataset(ENV_ID, "random", "no version", **kwargs)
    with pytest.raises(ValueError, match="train_steps must be positive"):
        build_dataset(ENV_ID, "random", train_steps=0, **kwargs)
    with pytest.raises(ValueError, match="buffer_size"):
        build_dataset(ENV_ID, "random", train_steps=1000, sac_kwargs={"buffer_size": 500}, **kwargs)
    assert not cache.exists()  # every check came before training


@pytest.mark.filterwarnings("ignore:The final SAC policy")  # 300 steps do not make a Pendulum expert
def test_cache_is_atomic_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    monkeypatch.setenv("SB3_DARE_CACHE", str(tmp_path / "cache"))
    settings = {
        "train_steps": 300,
        "sac_kwargs": {"policy_kwargs": {"net_arch": [16, 16]}},
        "n_checkpoint_episodes": 1,
        "n_eval_episodes": 2,
        **QUIET,
    }
    learn_calls = []
    original_learn = SAC.learn

    def counting_learn(self, *args, **kwargs):
        learn_calls.append(self)
        return original_learn(self, *args, **kwargs)

    monkeypatch.setattr(SAC, "learn", counting_learn)
    policies_dir = tmp_path / "cache" / "policies"

    # A build killed after training leaves nothing that a later build would trust.
    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(builder_module, "_save_replay", crash)
        with pytest.raises(RuntimeError, match="killed"):
            build_dataset("Pendulum-v1", "expert", steps=200, **settings)
    assert list(policies_dir.iterdir()) == []
    assert len(learn_calls) == 1

    build_dataset("Pendulum-v1", "expert", steps=200, **settings)
    assert len(learn_calls) == 2
    (entry,) = policies_dir.iterdir()
    assert entry.name.startswith("Pendulum-v1-300-0-")  # a settings hash follows: sac_kwargs differ from the defaults
    assert {path.name for path in entry.iterdir()} == {"manifest.json", "final_model.zip", "replay.npz", "checkpoints"}
    assert len(list((entry / "checkpoints").iterdir())) == 10  # every 30 steps
    manifest = json.loads((entry / "manifest.json").read_text())
    assert [checkpoint["step"] for checkpoint in manifest["checkpoints"]] == list(range(30, 301, 30))
    assert SAC.load(entry / "final_model.zip").num_timesteps == 300
    modified = entry.stat().st_mtime_ns

    for quality in ("medium", "random", "medium-replay"):
        build_dataset("Pendulum-v1", quality, steps=200, **settings)
    assert len(learn_calls) == 2  # no retraining
    assert entry.stat().st_mtime_ns == modified

    build_dataset("Pendulum-v1", "expert", "test/pendulum/seed1-v0", steps=200, seed=1, **settings)
    assert len(learn_calls) == 3  # another seed is another policy
    assert len(list(policies_dir.iterdir())) == 2


def test_cli_in_process(paths, policy_cache, capsys):
    common = ["--env", ENV_ID, "--steps", "300", "--train-steps", "2000", "--checkpoint-episodes", "2"]
    common += ["--sac-kwargs", json.dumps(TRAINING["sac_kwargs"]), "--no-progress-bar", "-v", "0"]
    assert main(["build", "--quality", "random", "expert", *common]) == 0
    assert len(list((policy_cache / "policies").iterdir())) == 1  # the module's trained policies were reused
    assert minari.load_dataset("sb3_dare/invertedpendulum-v5/expert-v0").total_steps == 300

    assert main(["info", "sb3_dare/invertedpendulum-v5/random-v0"]) == 0
    output = capsys.readouterr().out
    assert "sb3_dare/invertedpendulum-v5/random-v0" in output
    assert "300 in" in output and "normalised score" in output and "InvertedPendulum-v5" in output

    assert main(["build", "--quality", "random", *common]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["build", "--quality", "random", "expert", "--id", "x/y-v0", *common]) == 1
    assert "--id names one dataset: give one --quality with it" in capsys.readouterr().err
    assert main(["info", "nowhere/nothing-v0"]) == 1
    assert "python -m sb3_dare.data build" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage_error:
        main(["build", "--env", ENV_ID, "--quality", "bad"])
    assert usage_error.value.code == 2 and "invalid choice: 'bad'" in capsys.readouterr().err


def test_cli_subprocess(tmp_path):
    env = {**os.environ, "MINARI_DATASETS_PATH": str(tmp_path / "datasets"), "SB3_DARE_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "sb3_dare.data", "build", "--env", "Pendulum-v1", "--quality", "medium"]
    command += ["--steps", "300", "--train-steps", "300", "--checkpoint-episodes", "1", "--eval-episodes", "2"]
    command += ["--sac-kwargs", '{"policy_kwargs": {"net_arch": [16, 16]}}', "--num-threads", "1"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Wrote sb3_dare/pendulum-v1/medium-v0" in result.stdout
    info = subprocess.run(
        [sys.executable, "-m", "sb3_dare.data", "info", "sb3_dare/pendulum-v1/medium-v0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert info.returncode == 0, info.stderr
    assert "300 in 2 episodes" in info.stdout
