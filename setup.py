"""Packaging for sb3_dare (setuptools, see pyproject.toml for tool settings)."""

import os

from setuptools import find_packages, setup

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
PLOTS_REQUIREMENTS = ["rliable", "seaborn"]

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
    package_data={"sb3_dare": ["version.txt", "py.typed"]},
    install_requires=[
        "stable-baselines3>=2.9.2,<3",
        "sb3-contrib>=2.9.2,<3",
        "torch>=2.3",
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
        "tests": [
            "pytest>=8",
            "pytest-xdist",
            "pytest-timeout",
            "ruff",
            "mypy",
            *MUJOCO_REQUIREMENTS,
            *ZOO_REQUIREMENTS,
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
