"""The examples: every script compiles, and the export, own-arrays and resume examples run at a tiny budget."""

from __future__ import annotations

import importlib.util
import py_compile
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("script", sorted(EXAMPLES.glob("*.py")), ids=lambda path: path.name)
def test_example_compiles(script):
    py_compile.compile(str(script), doraise=True)


def _import_example(name: str):
    # imported under a real module name: TorchScript serialises the class's qualified name
    spec = importlib.util.spec_from_file_location(f"{name}_example", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_policy_example(tmp_path):
    module = _import_example("export_policy")
    module.main(["--offline-steps", "20", "--output", str(tmp_path)])  # asserts equal actions itself
    assert (tmp_path / "policy.torchscript.pt").is_file() and (tmp_path / "policy.pth").is_file()


def test_own_arrays_example(tmp_path):
    pytest.importorskip("mujoco")
    model = _import_example("own_arrays").main(n_collected=300, steps=40, save_path=str(tmp_path / "iql_own_arrays"))
    # pre-trained and fine-tuned, saved, then loaded with the in-memory dataset passed again and trained on
    assert model.offline_updates == 40 and model.num_timesteps == 50 and model.replay_buffer.n_offline == 300


def test_resume_run_example(tmp_path, capsys):
    module = _import_example("resume_run")
    checkpoints = str(tmp_path / "checkpoints")
    first = module.main(checkpoints, total_timesteps=40, offline_steps=40, save_freq=20)
    assert (first.offline_updates, first.num_timesteps) == (40, 40)
    # run again with a larger target: it resumes from the latest checkpoint (buffer and counters) and goes on
    resumed = module.main(checkpoints, total_timesteps=60, offline_steps=40, save_freq=20)
    assert "Resuming from" in capsys.readouterr().out
    assert (resumed.offline_updates, resumed.num_timesteps, resumed.replay_buffer.size()) == (40, 60, 60)
