"""
RL Zoo integration: the real CLIs in subprocesses (both routes), Optuna with the shared offline checkpoint, two workers
on one storage, the start-up hook from a wheel and from an editable wheel, and the pieces of sb3_dare.zoo in-process.

Every CLI runs from a temporary folder outside the repository, on a tiny Minari dataset, with tiny budgets.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch as th

from sb3_dare import zoo

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
ENV_ID = "InvertedPendulum-v5"
# enjoy prints "Mean reward" only for finished episodes: run past the 1000-step time limit so that one always ends,
# whether or not the tiny policy keeps the pole up (RL Zoo draws a random seed per run)
ENJOY_STEPS = "1100"
# the id the shipped hyperparams/iql.yml names for InvertedPendulum-v5: the tiny dataset takes its place
DATASET_ID = "mujoco/invertedpendulum/medium-v0"
TINY_PARAMS = [
    "-params",
    "offline_steps:200",
    "batch_size:64",
    "policy_kwargs:dict(net_arch=[32,32])",
    "offline_eval_freq:0",
    "buffer_size:2000",
]
# extra tiny -params per algorithm; an algorithm listed here gets its own CLI training test (DARE: add its entries)
DARE_PARAMS = [
    "behavior_model:'gaussian'",
    "guidance_scale:0.0",
    "behavior_steps:50",
    "behavior_kwargs:dict(hidden_sizes=[16])",
]
ALGO_PARAMS = {
    "iql": [],
    "calql": ["cql_n_actions:2", "batch_size:32", "offline_steps:100"],
    "dare_iql": [*DARE_PARAMS, "reward_scale:'return_range'"],  # a string option through RL Zoo's -params
    "dare_calql": ["cql_n_actions:2", "batch_size:32", "offline_steps:100", *DARE_PARAMS],
}


def hook_installed() -> bool:
    """Whether this environment's site-packages hold the start-up hook (an install of this checkout)."""
    import site

    folders = [*site.getsitepackages(), site.getusersitepackages()]
    return any(os.path.isfile(os.path.join(folder, "sb3_dare_zoo.pth")) for folder in folders)


needs_hook = pytest.mark.skipif(not hook_installed(), reason="sb3_dare is not installed with its start-up hook")


@pytest.fixture(scope="module")
def zoo_datasets(tmp_path_factory) -> Path:
    """A MINARI_DATASETS_PATH holding a tiny balancing dataset under the id the shipped yml uses for InvertedPendulum-v5."""
    import minari
    from conftest import balancing_policy, make_episode_buffers

    root = tmp_path_factory.mktemp("minari_datasets")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root))
        buffers = make_episode_buffers(ENV_ID, n_episodes=15, max_steps=200, policy=balancing_policy())
        minari.create_dataset_from_buffers(
            DATASET_ID,
            buffer=buffers,
            env=ENV_ID,
            algorithm_name="balancing controller",
            author="sb3_dare tests",
            author_email="tests@example.com",
            code_permalink="https://example.com",
            description="tiny test dataset",
            ref_min_score=5.0,
            ref_max_score=1000.0,
        )
    return root


def cli_env(datasets: Path | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MUJOCO_GL="egl", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("SB3_DARE_NO_ZOO_HOOK", None)
    env.pop(zoo.OPTUNA_OFFLINE_ENV_VAR, None)
    if datasets is not None:
        env["MINARI_DATASETS_PATH"] = str(datasets)
    env.update(extra)
    return env


def run_cli(args: list[str], cwd: Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([PYTHON, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def train_args(module: str, algo: str = "iql", *extra: str) -> list[str]:
    return [
        "-m",
        module,
        "--algo",
        algo,
        "--env",
        ENV_ID,
        "-n",
        "300",
        "--eval-freq",
        "150",
        "--eval-episodes",
        "2",
        "--num-threads",
        "1",
        *extra,
        *TINY_PARAMS,
        *ALGO_PARAMS[algo],
    ]


def run_folder(cwd: Path, algo: str = "iql") -> Path:
    return cwd / "logs" / algo / f"{ENV_ID}_1"


def check_trained(cwd: Path, result: subprocess.CompletedProcess, algo: str = "iql", config: Path | None = None) -> None:
    expected = config or zoo.default_config_path(algo)
    assert f"Loading hyperparameters from: {expected}" in result.stdout
    folder = run_folder(cwd, algo)
    assert (folder / f"{ENV_ID}.zip").is_file()
    saved = (folder / ENV_ID / "config.yml").read_text()
    assert DATASET_ID in saved  # the yml entry of the env, not -params, named the dataset


def check_video(cwd: Path, algo: str = "iql") -> None:
    videos = list((run_folder(cwd, algo) / "videos").glob("*.mp4"))
    assert videos and videos[0].stat().st_size > 0


# ---------------------------------------------------------------------------------------------- the two CLI routes


@needs_hook
def test_literal_rl_zoo_commands_train_enjoy_record_video(zoo_datasets, tmp_path):
    env = cli_env(zoo_datasets)
    # -P: RL Zoo calls on_training_end() of its progress bar after learn(), before it saves the model
    result = run_cli(train_args("rl_zoo3.train", "iql", "-P"), tmp_path, env)
    check_trained(tmp_path, result)
    enjoy = ["-m", "rl_zoo3.enjoy", "--algo", "iql", "--env", ENV_ID, "-f", "logs", "--no-render", "-n", ENJOY_STEPS]
    result = run_cli(enjoy, tmp_path, env)
    assert "Mean reward" in result.stdout
    run_cli(["-m", "rl_zoo3.record_video", "--algo", "iql", "--env", ENV_ID, "-f", "logs", "-n", "40"], tmp_path, env)
    check_video(tmp_path)


def test_wrapper_modules_work_without_the_hook(zoo_datasets, tmp_path):
    env = cli_env(zoo_datasets, SB3_DARE_NO_ZOO_HOOK="1")
    # negative control: with the hook off, RL Zoo does not know the algorithm
    refused = run_cli(["-m", "rl_zoo3.train", "--algo", "iql", "--env", ENV_ID], tmp_path, env, check=False)
    assert refused.returncode != 0 and "invalid choice: 'iql'" in refused.stderr
    result = run_cli(train_args("sb3_dare.train"), tmp_path, env)
    check_trained(tmp_path, result)
    enjoy = ["-m", "sb3_dare.enjoy", "--algo", "iql", "--env", ENV_ID, "-f", "logs", "--no-render", "-n", ENJOY_STEPS]
    assert "Mean reward" in run_cli(enjoy, tmp_path, env).stdout
    run_cli(["-m", "sb3_dare.record_video", "--algo", "iql", "--env", ENV_ID, "-f", "logs", "-n", "40"], tmp_path, env)
    check_video(tmp_path)


@needs_hook
@pytest.mark.parametrize("algo", [name for name in ALGO_PARAMS if name != "iql"])
def test_other_algorithms_train_through_rl_zoo(algo, zoo_datasets, tmp_path):
    assert algo in zoo.available_algorithms(), f"{algo} is not registered with RL Zoo"  # a failed import must fail here
    env = cli_env(zoo_datasets)
    result = run_cli(train_args("rl_zoo3.train", algo), tmp_path, env)
    check_trained(tmp_path, result, algo)
    # and enjoy loads what train saved (DARE's zip rebuilds its behaviour model from its name and state)
    enjoy = ["-m", "rl_zoo3.enjoy", "--algo", algo, "--env", ENV_ID, "-f", "logs", "--no-render", "-n", ENJOY_STEPS]
    assert "Mean reward" in run_cli(enjoy, tmp_path, env).stdout


@needs_hook
def test_missing_dataset_prints_the_builder_command_and_the_override(tmp_path):
    # Pendulum-v1 has no entry in iql.yml: the `default` entry sets no dataset
    args = ["-m", "rl_zoo3.train", "--algo", "iql", "--env", "Pendulum-v1", "-n", "10"]
    result = run_cli(args, tmp_path, cli_env(), check=False)
    assert result.returncode != 0
    assert "MissingDatasetError" in result.stderr
    assert "python -m sb3_dare.data build --env Pendulum-v1 --quality medium" in result.stderr
    assert "-params dataset:\"'mujoco/pendulum/medium-v0'\"" in result.stderr


@needs_hook
def test_rl_zoo3_console_script_lists_the_algorithms(tmp_path):
    # the console script imports rl_zoo3.plots, hence rliable -> arch, which fails under pandas 3 (setup.py pins it)
    script = Path(sys.executable).parent / "rl_zoo3"
    if not script.exists():
        pytest.skip("no rl_zoo3 console script next to this interpreter")
    result = subprocess.run([str(script), "train", "--help"], cwd=tmp_path, env=cli_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert all(name in result.stdout for name in ("iql", "calql", "dare_iql", "dare_calql"))


def test_dare_without_a_dataset_names_the_dataset_not_online_only_training():
    # DARE fits its behaviour model on the dataset even with offline_steps=0: the message must not offer online-only
    dare_class = zoo.available_algorithms()["dare_iql"]
    for kwargs in ({}, {"offline_steps": 0, "offline_ratio": 0.0}):
        with pytest.raises(zoo.MissingDatasetError, match="it fits its behaviour model on it") as caught:
            dare_class("MlpPolicy", "Pendulum-v1", **kwargs)
        assert "python -m sb3_dare.data build --env Pendulum-v1" in str(caught.value)
        assert "online only" not in str(caught.value)


# ---------------------------------------------------------------------------------------------- Optuna


def optimize_args(storage: str, study: str, n_trials: int) -> list[str]:
    return [
        "-m",
        "rl_zoo3.train",
        "--algo",
        "iql",
        "--env",
        ENV_ID,
        "-n",
        "300",
        "-optimize",
        "--n-trials",
        str(n_trials),
        "--n-evaluations",
        "1",
        "--eval-episodes",
        "2",
        "--storage",
        storage,
        "--study-name",
        study,
        "--no-optim-plots",
        "--num-threads",
        "1",
        *TINY_PARAMS,
    ]


def load_journal_study(path: Path, name: str) -> optuna.Study:
    backend = optuna.storages.journal.JournalFileBackend(str(path))
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(backend))


@needs_hook
def test_optimize_trials_share_one_offline_checkpoint_and_trial_id_retrains(zoo_datasets, tmp_path):
    env = cli_env(zoo_datasets)
    result = run_cli(optimize_args("logs/study.log", "shared", 2), tmp_path, env)
    assert result.stdout.count("ran the offline phase (200 updates)") == 1
    assert result.stdout.count("restored the offline phase (200 updates)") == 1
    assert len(list((tmp_path / "logs" / zoo.OFFLINE_CACHE_FOLDER).glob("*.zip"))) == 1
    assert list((tmp_path / "logs" / "iql").glob("report_*.csv"))
    study = load_journal_study(tmp_path / "logs" / "study.log", "shared")
    trials = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 2
    # the default search: only what acts after the offline phase
    assert set(trials[1].params) == {"online_learning_rate", "offline_ratio"}

    # --trial-id 1 retrains with trial 1's hyperparameters (through the converter); --trial-id 0 would be ignored
    retrain = train_args("rl_zoo3.train", "iql", "--storage", "logs/study.log", "--study-name", "shared", "--trial-id", "1")
    result = run_cli(retrain, tmp_path, env)
    assert "Loading from Optuna study" in result.stdout
    saved = (run_folder(tmp_path).parent / f"{ENV_ID}_2" / ENV_ID / "config.yml").read_text()
    assert "online_learning_rate" in saved and "offline_ratio" in saved


@needs_hook
def test_two_optimize_workers_share_one_journal_storage(zoo_datasets, tmp_path):
    env = cli_env(zoo_datasets)
    command = [PYTHON, *optimize_args("logs/study.log", "distributed", 1)]
    workers = [
        subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-4000:]
    joined = "".join(outputs)
    # one worker pre-trained, the other waited on the lock and restored the checkpoint
    assert joined.count("ran the offline phase") == 1 and joined.count("restored the offline phase") == 1
    assert len(list((tmp_path / "logs" / zoo.OFFLINE_CACHE_FOLDER).glob("*.zip"))) == 1
    study = load_journal_study(tmp_path / "logs" / "study.log", "distributed")
    assert sorted(trial.state.name for trial in study.trials) == ["COMPLETE", "COMPLETE"]


# ---------------------------------------------------------------------------------------------- in-process pieces


def test_register_is_idempotent_and_fills_rl_zoo():
    from rl_zoo3 import hyperparams_opt
    from rl_zoo3.exp_manager import ExperimentManager
    from rl_zoo3.utils import ALGOS

    zoo.register()
    zoo.register()
    available = zoo.available_algorithms()
    assert "iql" in available
    for name, algorithm_class in available.items():
        assert ALGOS[name] is algorithm_class and algorithm_class.zoo_name == name
        assert hyperparams_opt.HYPERPARAMS_SAMPLER[name] is zoo.SAMPLERS[name]
        assert hyperparams_opt.HYPERPARAMS_CONVERTER[name] is zoo.convert_params
        assert zoo.default_config_path(name) is not None
    from sb3_dare import IQL

    assert issubclass(ALGOS["iql"], IQL)
    assert ExperimentManager._sb3_dare_patched
    assert zoo.default_config_path("no_such_algorithm") is None


@pytest.mark.parametrize("name", list(zoo.ALGORITHMS))
def test_hyperparameter_files_have_what_rl_zoo_needs(name):
    import yaml

    path = REPO / "hyperparams" / f"{name}.yml"
    content = yaml.safe_load(path.read_text())
    assert {"policy", "n_timesteps"} <= set(content["default"]) and "dataset" not in content["default"]
    for env_id in ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", ENV_ID):
        entry = content[env_id]
        assert entry["dataset"] == f"mujoco/{env_id.split('-')[0].lower()}/medium-v0"
        assert "policy" in entry and "n_timesteps" in entry
    if name.startswith("dare"):
        assert [content[env]["guidance_scale"] for env in ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5")] == [8, 10, 10]


@pytest.mark.parametrize("offline", [False, True])
def test_samplers_draw_online_knobs_by_default_and_never_network_sizes(offline, monkeypatch):
    monkeypatch.setenv(zoo.OPTUNA_OFFLINE_ENV_VAR, "1" if offline else "0")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    expected_online = {
        "iql": {"online_learning_rate", "offline_ratio"},
        "calql": {"online_learning_rate", "online_actor_learning_rate", "offline_ratio"},
    }
    expected_offline = {
        "iql": {"learning_rate", "expectile", "beta"},
        "calql": {"learning_rate", "actor_learning_rate", "cql_alpha"},
    }
    for name, sampler in (("iql", zoo.sample_iql_params), ("calql", zoo.sample_calql_params)):
        trial = study.ask()
        params = sampler(trial, 1, 1, {})
        assert set(params) == expected_online[name] | (expected_offline[name] if offline else set())
        assert zoo.convert_params(trial.params) == params
        assert 0.0 <= params["offline_ratio"] <= 1.0 and params["online_learning_rate"] > 0


def test_dare_samplers_add_the_knobs_each_class_takes():
    from sb3_dare.dare import EXCHANGE_RULES

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for sampler, own in (
        (zoo.sample_dare_iql_params, {"guidance_scale", "exchange", "online_ent_coef"}),
        (zoo.sample_dare_calql_params, {"guidance_scale", "exchange"}),  # DARE_CalQL has no online_ent_coef
    ):
        trial = study.ask()
        params = sampler(trial, 1, 1, {})
        assert own <= set(params) and "online_learning_rate" in params
        assert params["exchange"] in EXCHANGE_RULES and params["guidance_scale"] in zoo.GUIDANCE_SCALES
        assert ("online_ent_coef" in params) == ("online_ent_coef" in own)


def make_zoo_iql(dataset: str, **kwargs):
    iql_class = zoo.available_algorithms()["iql"]
    arguments = dict(
        policy="MlpPolicy",
        env=ENV_ID,
        dataset=dataset,
        offline_steps=30,
        batch_size=32,
        policy_kwargs=dict(net_arch=[16, 16]),
        offline_eval_freq=0,
        buffer_size=500,
        seed=0,
    )
    arguments.update(kwargs)
    return iql_class(**arguments)


def test_rl_zoo_progress_bar_becomes_the_two_phase_bar(pendulum_balance_dataset, monkeypatch):
    # RL Zoo's -P appends SB3's ProgressBarCallback, which stands still through the offline phase
    from stable_baselines3.common.callbacks import BaseCallback, ProgressBarCallback

    import sb3_dare.common.o2o as o2o

    made: list[tuple[int, int]] = []

    class RecordingBar(BaseCallback):
        def __init__(self, offline_steps: int, online_steps: int):
            super().__init__()
            made.append((offline_steps, online_steps))

        def _on_step(self) -> bool:
            return True

    monkeypatch.setattr(o2o, "O2OProgressBarCallback", RecordingBar)
    sb3_bar = ProgressBarCallback()
    started = []
    monkeypatch.setattr(sb3_bar, "_on_training_start", lambda: started.append(True))
    other = RecordingBar(0, 0)
    made.clear()
    model = make_zoo_iql(pendulum_balance_dataset)
    model.learn(5, callback=[other, sb3_bar])
    assert made == [(30, 5)] and not started  # the algorithm's bar over both phases, SB3's never started
    assert other.num_timesteps == 5  # the other callbacks still run
    sb3_bar.on_training_end()  # RL Zoo calls it on its first callback after learn(): it must not raise


def test_rl_zoo_starts_dare_from_a_base_model(pendulum_balance_dataset, tmp_path):
    # `rl_zoo3.train --algo dare_iql -i <iql zip>`: RL Zoo calls load() with the yml's hyperparameters (offline_steps
    # 1M among them); the DARE class starts from the base's networks and offline phase (from_base)
    from stable_baselines3.common.env_util import make_vec_env

    base = make_zoo_iql(pendulum_balance_dataset)
    base.learn(5)
    base.save(tmp_path / "iql")
    dare_class = zoo.available_algorithms()["dare_iql"]
    hyperparams = dict(
        dataset=pendulum_balance_dataset,
        offline_steps=1_000_000,
        behavior_model="gaussian",
        guidance_scale=0.0,
        behavior_steps=20,
        behavior_kwargs=dict(hidden_sizes=[16]),
        reward_scale="return_range",  # the yml's; the base's critics were fitted at 1.0
    )
    env = make_vec_env(ENV_ID, n_envs=1, seed=0)
    with pytest.warns(
        UserWarning, match=r"was trained with reward_scale=1\.0: the hyperparameters' 'return_range' is ignored"
    ):
        dare = dare_class.load(tmp_path / "iql", env=env, seed=0, tensorboard_log=None, verbose=0, device="cpu", **hyperparams)
    assert type(dare).__name__ == "ZooDARE_IQL" and (dare.offline_updates, dare.offline_steps) == (30, 30)
    assert dare.reward_scale == 1.0
    assert all(th.equal(dare.critic.state_dict()[key], value) for key, value in base.critic.state_dict().items())
    dare.learn(5)
    assert dare.offline_updates == 30 and dare.behavior.is_fitted and dare.num_timesteps == 5
    # a DARE zip loads as before
    dare.save(tmp_path / "dare")
    assert dare_class.load(tmp_path / "dare", env=env).behavior.is_fitted


def test_offline_cache_key_ignores_online_arguments_only(pendulum_balance_dataset, make_minari_dataset):
    import minari

    dataset = pendulum_balance_dataset
    base = make_zoo_iql(dataset)
    key = base.offline_cache_key()[0]
    assert make_zoo_iql(dataset, offline_ratio=0.2, online_learning_rate=1e-4, seed=3).offline_cache_key()[0] == key
    assert make_zoo_iql(dataset, expectile=0.8).offline_cache_key()[0] != key
    assert make_zoo_iql(dataset, offline_steps=31).offline_cache_key()[0] != key
    assert make_zoo_iql(dataset, policy_kwargs=dict(net_arch=[8, 8])).offline_cache_key()[0] != key
    other = make_minari_dataset(dataset_id="test/other/medium-v0", env_id=ENV_ID, n_episodes=2, max_steps=40)
    assert make_zoo_iql(other).offline_cache_key()[0] != key
    # the same id with other data (a rebuilt dataset, another MINARI_DATASETS_PATH) is another offline phase
    minari.delete_dataset(dataset)
    make_minari_dataset(dataset_id=dataset, env_id=ENV_ID, n_episodes=2, max_steps=40)
    assert make_zoo_iql(dataset).offline_cache_key()[0] != key


def test_online_learning_rates_start_after_the_offline_phase(pendulum_balance_dataset):
    model = make_zoo_iql(pendulum_balance_dataset, learning_rate=3e-4, online_learning_rate=5e-5)
    model.pretrain()
    assert model.lr_schedule(1.0) == pytest.approx(5e-5)  # switched at the end of the offline phase
    model.learn(total_timesteps=10)
    for optimizer, _ in model._optimizer_schedules():
        assert optimizer.param_groups[0]["lr"] == pytest.approx(5e-5)
    with pytest.raises(ValueError, match="online_learning_rate"):
        make_zoo_iql(pendulum_balance_dataset, online_learning_rate=0.0)


def test_trial_restores_the_cached_offline_phase_exactly(pendulum_balance_dataset, tmp_path, capsys):
    token = zoo._TRIAL_CONTEXT.set(zoo._TrialContext(tmp_path / "cache", trial_number=0))
    try:
        first = make_zoo_iql(pendulum_balance_dataset, online_learning_rate=1e-4)
        first.learn(total_timesteps=0)
        assert "trial 0 ran the offline phase (30 updates)" in capsys.readouterr().out
        assert first.offline_phase_done and first.lr_schedule(1.0) == pytest.approx(1e-4)
        cached = {name: tensor.clone() for name, tensor in first.policy.state_dict().items()}
        second = make_zoo_iql(pendulum_balance_dataset, offline_ratio=0.3, seed=1)
        second.learn(total_timesteps=0)
        assert "trial 0 restored the offline phase (30 updates)" in capsys.readouterr().out
    finally:
        zoo._TRIAL_CONTEXT.reset(token)
    assert second.offline_updates == 30 and second.offline_phase_done
    for name, tensor in second.policy.state_dict().items():
        th.testing.assert_close(tensor, cached[name], msg=name)
    restored_state = second.critic.optimizer.state_dict()["state"]
    for index, original in first.critic.optimizer.state_dict()["state"].items():
        np.testing.assert_allclose(restored_state[index]["exp_avg"].numpy(), original["exp_avg"].numpy())
    files = sorted(path.suffix for path in (tmp_path / "cache").iterdir())
    assert files == [".json", ".lock", ".zip"]  # no temporary file left behind


def test_trial_keeps_its_own_behavior_model(pendulum_balance_dataset, tmp_path):
    # the behaviour model is not part of the offline-checkpoint key: a trial with another kind of behaviour model
    # restores the cached offline phase and fits its own model, never the cached run's (unfitted) one
    dare_class = zoo.available_algorithms()["dare_iql"]
    tiny = dict(
        policy="MlpPolicy",
        env=ENV_ID,
        dataset=pendulum_balance_dataset,
        offline_steps=20,
        batch_size=32,
        policy_kwargs=dict(net_arch=[16, 16]),
        offline_eval_freq=0,
        seed=0,
        guidance_scale=0.0,
        behavior_steps=20,
        behavior_batch_size=64,
        behavior_kwargs=dict(hidden_sizes=[16]),
    )
    token = zoo._TRIAL_CONTEXT.set(zoo._TrialContext(tmp_path / "cache", trial_number=0))
    try:
        first = dare_class(**tiny, behavior_model="gaussian")
        first.learn(total_timesteps=0)
        second = dare_class(**tiny, behavior_model="diffusion")
        second.learn(total_timesteps=0)
    finally:
        zoo._TRIAL_CONTEXT.reset(token)
    assert len(list((tmp_path / "cache").glob("*.zip"))) == 1  # one offline phase, shared
    assert second.offline_updates == 20 and second.behavior.name == "diffusion" and second.behavior.is_fitted
    for name, tensor in second.policy.state_dict().items():
        th.testing.assert_close(tensor, first.policy.state_dict()[name], msg=name)


def test_models_saved_through_rl_zoo_load_with_the_plain_class_and_back(pendulum_balance_dataset, tmp_path):
    from sb3_dare import IQL, CalQL
    from sb3_dare.common.checkpoint import O2OCheckpointCallback, read_manifest

    zoo_model = make_zoo_iql(pendulum_balance_dataset, offline_steps=10)
    zoo_model.learn(total_timesteps=0, callback=O2OCheckpointCallback(save_freq=10, save_path=tmp_path / "ck"))
    zoo_model.save(tmp_path / "zoo_iql")
    plain = IQL.load(tmp_path / "zoo_iql")
    assert type(plain) is IQL and plain.offline_updates == 10
    plain.save(tmp_path / "plain_iql")
    assert type(zoo.available_algorithms()["iql"].load(tmp_path / "plain_iql")).__name__ == "ZooIQL"
    with pytest.raises(ValueError, match="holds an IQL model, not a CalQL one"):
        zoo.available_algorithms()["calql"].load(tmp_path / "zoo_iql")
    with pytest.raises(ValueError, match="holds an IQL model, not a CalQL one"):
        CalQL.load(tmp_path / "zoo_iql")
    # zips written before the Zoo classes recorded the algorithm they wrap named the Zoo class: they load too
    zoo_iql = type(zoo_model)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(zoo_iql, "saved_algorithm_name", classmethod(lambda cls: "ZooIQL"))
        zoo_model.save(tmp_path / "older_zoo_iql")
    with zipfile.ZipFile(tmp_path / "older_zoo_iql.zip") as archive:
        assert '"_sb3_dare_algorithm": "ZooIQL"' in archive.read("data").decode()
    assert IQL.load(tmp_path / "older_zoo_iql").offline_updates == 10
    # the checkpoint names the Zoo class; a fresh interpreter resumes it without registering anything first
    assert read_manifest(tmp_path / "ck")["algorithm"] == "ZooIQL"
    script = f"from sb3_dare.common.checkpoint import resume; print(type(resume({str(tmp_path / 'ck')!r})).__name__)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "ZooIQL"


def test_missing_dataset_id_error_names_the_override(minari_root, hub_offline):
    model = make_zoo_iql("test/nowhere/medium-v0", offline_steps=1)
    with pytest.raises(zoo.MissingDatasetError) as raised:
        model.learn(total_timesteps=1)
    message = str(raised.value)
    assert "--id test/nowhere/medium-v0" in message  # build it under the id RL Zoo was given ...
    assert "To use another dataset with RL Zoo, pass its id with -params dataset:\"'<dataset id>'\"" in message  # ... or not


# ---------------------------------------------------------------------------------------------- the start-up hook


@needs_hook
def test_hook_imports_nothing_heavy_at_start_up(tmp_path):
    code = "import sys; print(sorted(m for m in ('torch', 'sb3_dare', 'rl_zoo3') if m in sys.modules))"
    code += "; print(any(getattr(f, '_sb3_dare_zoo_hook', False) for f in sys.meta_path))"
    result = run_cli(["-c", code], tmp_path, cli_env())
    assert result.stdout.split() == ["[]", "True"]
    result = run_cli(["-c", code], tmp_path, cli_env(SB3_DARE_NO_ZOO_HOOK="1"))
    assert result.stdout.split() == ["[]", "False"]
    timing = run_cli(["-X", "importtime", "-c", "pass"], tmp_path, cli_env())
    assert re.search(r"import time:\s+\d+ \|\s+\d+ \|\s+_sb3_dare_zoo_hook", timing.stderr)


def source_copy(tmp_path: Path) -> Path:
    """What a build needs, copied out of the checkout (a build writes build/ and *.egg-info next to setup.py)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "_sb3_dare_zoo_hook.py", "sb3_dare_zoo.pth", "sb3_dare_zoo.start"):
        shutil.copy2(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "sb3_dare", source / "sb3_dare", ignore=ignore)
    shutil.copytree(REPO / "hyperparams", source / "hyperparams", ignore=ignore)
    return source


def build_backend_path(tmp_path: Path) -> str:
    """A PYTHONPATH with the setuptools pyproject.toml asks for: this interpreter's when it fits, else a fresh install."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    requires = re.search(r"requires\s*=\s*\[([^\]]*)\]", (REPO / "pyproject.toml").read_text())
    assert requires is not None
    requirements = [Requirement(item) for item in re.findall(r'"([^"]+)"', requires.group(1))]
    try:
        import setuptools

        version = Version(setuptools.__version__)
        fits = all(version in requirement.specifier for requirement in requirements if requirement.name == "setuptools")
        has_wheel = version >= Version("70.1") or __import__("importlib").util.find_spec("wheel") is not None
        if fits and has_wheel:
            return ""
    except ImportError:
        pass
    target = tmp_path / "build_env"
    pip = [PYTHON, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), *map(str, requirements)]
    subprocess.run(pip, check=True, capture_output=True, timeout=600)
    return str(target)


def build(kind: str, tmp_path: Path) -> Path:
    source, out = source_copy(tmp_path), tmp_path / "dist"
    code = f"from setuptools import build_meta; print(build_meta.build_{kind}({str(out)!r}))"
    env = cli_env(PYTHONPATH=build_backend_path(tmp_path))
    result = run_cli(["-c", code], source, env)
    return out / result.stdout.strip().splitlines()[-1]


def site_packages() -> list[str]:
    import site

    return [folder for folder in site.getsitepackages() if os.path.isdir(folder)]


def run_from_install(target: Path, body: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """
    ``python -S``: ``target`` as a site dir (its .pth files run), then this environment's packages on sys.path without
    their .pth files (the running checkout's own editable install and hook stay out).
    """
    prologue = f"""
    import site, sys
    site.addsitedir({str(target)!r})
    sys.path.extend({site_packages()!r})
    assert '_sb3_dare_zoo_hook' in sys.modules and sys.meta_path[0].__name__ == 'ZooHookFinder', sys.meta_path
    """
    return run_cli(["-S", "-c", textwrap.dedent(prologue) + textwrap.dedent(body)], cwd, env)


def test_wheel_ships_the_hook_and_the_hyperparameters_and_the_cli_works_from_it(zoo_datasets, tmp_path):
    wheel = build("wheel", tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"sb3_dare_zoo.pth", "sb3_dare_zoo.start", "_sb3_dare_zoo_hook.py", "sb3_dare/zoo.py", "sb3_dare/train.py"}
    expected |= {f"sb3_dare/hyperparams/{name}.yml" for name in zoo.ALGORITHMS}
    assert expected <= names
    target = tmp_path / "installed"
    run_cli(["-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)], tmp_path, cli_env())
    workdir = tmp_path / "work"
    workdir.mkdir()
    body = f"""
    import runpy
    import rl_zoo3.utils
    from sb3_dare import zoo
    assert zoo.__file__.startswith({str(target)!r}), zoo.__file__
    assert 'iql' in rl_zoo3.utils.ALGOS
    sys.argv = ['train', *{train_args("rl_zoo3.train")[2:]!r}]
    runpy.run_module('rl_zoo3.train', run_name='__main__')
    """
    result = run_from_install(target, body, workdir, cli_env(zoo_datasets))
    check_trained(workdir, result, config=(target / "sb3_dare" / "hyperparams" / "iql.yml").resolve())


def test_editable_wheel_ships_the_hook(tmp_path):
    wheel = build("editable", tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    # the hook module is copied into the editable wheel too, so that pip byte-compiles it (see setup.py)
    assert {"sb3_dare_zoo.pth", "sb3_dare_zoo.start", "_sb3_dare_zoo_hook.py"} <= names
    target = tmp_path / "installed"
    zipfile.ZipFile(wheel).extractall(target)
    body = f"""
    import rl_zoo3.utils
    from rl_zoo3.exp_manager import ExperimentManager
    from sb3_dare import zoo
    assert zoo.__file__.startswith({str(tmp_path / "source")!r}), zoo.__file__
    assert 'iql' in rl_zoo3.utils.ALGOS and ExperimentManager._sb3_dare_patched
    print(zoo.default_config_path('iql'))
    """
    result = run_from_install(target, body, tmp_path, cli_env())
    assert result.stdout.strip().endswith(str(Path("source") / "hyperparams" / "iql.yml"))
