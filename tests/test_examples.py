"""The examples: every script compiles, and the export example runs at a tiny budget."""

from __future__ import annotations

import importlib.util
import py_compile
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("script", sorted(EXAMPLES.glob("*.py")), ids=lambda path: path.name)
def test_example_compiles(script):
    py_compile.compile(str(script), doraise=True)


def test_export_policy_example(tmp_path):
    # imported under a real module name: TorchScript serialises the class's qualified name
    spec = importlib.util.spec_from_file_location("export_policy_example", EXAMPLES / "export_policy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--offline-steps", "20", "--output", str(tmp_path)])  # asserts equal actions itself
    assert (tmp_path / "policy.torchscript.pt").is_file() and (tmp_path / "policy.pth").is_file()
