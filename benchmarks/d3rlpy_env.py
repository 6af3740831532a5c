"""
d3rlpy's own virtual environment, shared by ``speed.py`` (update rates) and ``o2o_suite.py`` (the peer row).

d3rlpy 2.8.1 pins its own gymnasium, so it never shares sb3_dare's environment: it lives under
``${SB3_DARE_CACHE:-~/.cache/sb3_dare}/d3rlpy-2.8.1`` with the same torch as ours and, for the suite's
fine-tuning runs, the same MuJoCo, h5py and imageio versions as ours (the same simulator on both sides of a comparison).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import time
from pathlib import Path

D3RLPY_VERSION = "2.8.1"
# what a ready environment was built with, one requirement per line
_MARKER_NAME = ".sb3_dare_ready"


def d3rlpy_environment() -> Path:
    """The folder of d3rlpy's virtual environment."""
    cache = Path(os.environ.get("SB3_DARE_CACHE", Path.home() / ".cache" / "sb3_dare")).expanduser()
    return cache / f"d3rlpy-{D3RLPY_VERSION}"


def d3rlpy_python() -> Path:
    """The interpreter of d3rlpy's virtual environment."""
    return d3rlpy_environment() / "bin" / "python"


def d3rlpy_requirements() -> list[str]:
    """
    What the environment holds: d3rlpy, and torch, MuJoCo, h5py and imageio (gymnasium's MuJoCo envs import it) at
    the versions installed on our side.

    :return: pip requirement strings
    """
    requirements = [f"d3rlpy=={D3RLPY_VERSION}"]
    for name in ("torch", "mujoco", "h5py", "imageio"):
        try:
            # a local build tag (``2.13.0+cpu``) is not part of the version pip resolves
            requirements.append(f"{name}=={importlib.metadata.version(name).split('+')[0]}")
        except importlib.metadata.PackageNotFoundError:
            requirements.append(name)
    return requirements


def ensure_d3rlpy_environment() -> float:
    """
    Create d3rlpy's environment the first time, or complete it when it was made with other requirements (an
    environment from an older script without MuJoCo, say).

    :return: seconds spent (0 when it was ready)
    """
    environment, python = d3rlpy_environment(), d3rlpy_python()
    requirements = d3rlpy_requirements()
    marker = environment / _MARKER_NAME
    if python.is_file() and marker.is_file() and marker.read_text().split() == requirements:
        return 0.0
    start = time.perf_counter()
    if not python.is_file():
        print(f"Creating d3rlpy's environment in {environment} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(environment)], check=True)
    else:
        print(f"Completing d3rlpy's environment in {environment}: {' '.join(requirements)}", file=sys.stderr)
    # the marker is written last, so an interrupted install is redone next time
    marker.unlink(missing_ok=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *requirements], check=True)
    marker.write_text("\n".join(requirements) + "\n")
    return time.perf_counter() - start
