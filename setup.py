"""Packaging for sb3_dare (setuptools, see pyproject.toml for tool settings)."""

import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

try:  # PEP 660 editable installs (setuptools >= 64)
    from setuptools.command.editable_wheel import editable_wheel
except ImportError:  # pragma: no cover
    editable_wheel = None  # type: ignore[assignment,misc]

with open(os.path.join("sb3_dare", "version.txt")) as file_handler:
    __version__ = file_handler.read().strip()

with open("README.md", encoding="utf-8") as file_handler:
    long_description = file_handler.read()

# The benchmark datasets in shared/ were recorded with mujoco 4.0.0 (Gymnasium 1.4.0 MuJoCo v5 envs).
# Physics changes between MuJoCo majors alter returns, so we pin the major version the data came from.
MUJOCO_REQUIREMENTS = ["gymnasium[mujoco]>=1.0", "mujoco>=4.0,<5"]
# RL Zoo 2.9.2 imports requests (enjoy), pandas (-optimize report) and moviepy (record_video)
# without declaring them.
ZOO_REQUIREMENTS = ["rl_zoo3>=2.9.2,<2.10", "optuna>=3.0", "requests", "pandas", "moviepy", "pyyaml"]
# rliable 1.2 needs arch < 8, and arch 7.x calls a private pandas helper whose signature pandas 3 changed: importing
# rliable (so RL Zoo's `rl_zoo3` console script and its plot scripts) fails with pandas 3
PLOTS_REQUIREMENTS = ["rliable", "seaborn", "pandas<3"]

# The RL Zoo start-up hook (see docs/zoo.md): a .pth file (and its PEP 829 .start twin for Python 3.15+) that imports
# the tiny top-level module _sb3_dare_zoo_hook; and the RL Zoo hyperparameter files, installed as sb3_dare/hyperparams.
HOOK_FILES = ["sb3_dare_zoo.pth", "sb3_dare_zoo.start"]
HYPERPARAMS_DIR = "hyperparams"


def _hyperparams_files() -> list[str]:
    return sorted(os.path.join(HYPERPARAMS_DIR, name) for name in os.listdir(HYPERPARAMS_DIR) if name.endswith(".yml"))


class BuildPyWithZooFiles(build_py):
    """build_py that also puts the hook files at the top of the wheel and the hyperparameter files into the package."""

    def run(self) -> None:
        super().run()
        for name in HOOK_FILES:
            self.copy_file(name, os.path.join(self.build_lib, name))
        target = os.path.join(self.build_lib, "sb3_dare", HYPERPARAMS_DIR)
        self.mkpath(target)
        for path in _hyperparams_files():
            self.copy_file(path, os.path.join(target, os.path.basename(path)))

    def get_source_files(self) -> list[str]:
        # what the sdist must hold besides the packages
        return [*super().get_source_files(), *HOOK_FILES, *_hyperparams_files()]


cmdclass: dict = {"build_py": BuildPyWithZooFiles}

if editable_wheel is not None and hasattr(editable_wheel, "_run_build_commands"):

    class EditableWheelWithZooHook(editable_wheel):  # type: ignore[valid-type,misc]
        """
        editable_wheel that also puts the hook files into the editable wheel (build_py's extra outputs do not reach it).
        The hook module itself is copied too, so that pip byte-compiles it at install time: read from the checkout, it
        would be compiled at every interpreter start where bytecode is not written (PYTHONDONTWRITEBYTECODE).
        _run_build_commands is private: pyproject.toml pins the setuptools range this was tested with.
        """

        def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):  # type: ignore[no-untyped-def]
            result = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
            for name in [*HOOK_FILES, "_sb3_dare_zoo_hook.py"]:
                shutil.copy2(name, os.path.join(unpacked_wheel, name))
            return result

    cmdclass["editable_wheel"] = EditableWheelWithZooHook

setup(
    name="sb3_dare",
    version=__version__,
    description="Offline-to-online RL for Stable-Baselines3: IQL, Cal-QL and DARE (sample-level constraint release)",
    long_description=long_description,
    long_description_content_type="text/markdown",
    author="sb3_dare developers",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["sb3_dare", "sb3_dare.*"]),
    py_modules=["_sb3_dare_zoo_hook"],
    cmdclass=cmdclass,
    package_data={"sb3_dare": ["version.txt", "py.typed", "datasets/*/*/data/*"]},
    install_requires=[
        "stable-baselines3>=2.9.2,<3",
        "sb3-contrib>=2.9.2,<3",
        "torch>=2.4",  # fused Adam on CPU (the optimizers' default) exists from torch 2.4
        "gymnasium>=1.0",
        "numpy>=1.24",
        "minari[hdf5,hf]>=0.5.4,<0.6",
        # Minari's HDF5 storage imports PIL without declaring it.
        "pillow",
        "tqdm",
        "rich",
        "tensorboard",
        "matplotlib",
    ],
    extras_require={
        "mujoco": MUJOCO_REQUIREMENTS,
        "zoo": ZOO_REQUIREMENTS,
        "plots": PLOTS_REQUIREMENTS,
        # several RL Zoo -optimize workers on machines sharing one PostgreSQL storage (examples/distributed_optuna.sh)
        "distributed": [*ZOO_REQUIREMENTS, "psycopg2-binary"],
        "tests": [
            # Minari's own DataCollector needs jax: the loader is tested against it too
            "minari[create]>=0.5.4,<0.6",
            "pytest>=8",
            "pytest-xdist",
            "pytest-timeout",
            "ruff",
            "mypy",
            *MUJOCO_REQUIREMENTS,
            *ZOO_REQUIREMENTS,
            # the benchmark report's tests compute IQM intervals with rliable
            *PLOTS_REQUIREMENTS,
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
