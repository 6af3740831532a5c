"""sb3_dare: offline-to-online reinforcement learning for Stable-Baselines3."""

import os

from sb3_dare.iql import IQL

with open(os.path.join(os.path.dirname(__file__), "version.txt")) as file_handler:
    __version__ = file_handler.read().strip()

__all__ = ["IQL", "__version__"]
