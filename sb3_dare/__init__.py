"""sb3_dare: offline-to-online reinforcement learning for Stable-Baselines3."""

import os

from sb3_dare.calql import CalQL
from sb3_dare.dare import DARE_IQL, DARE_CalQL
from sb3_dare.iql import IQL

with open(os.path.join(os.path.dirname(__file__), "version.txt")) as file_handler:
    __version__ = file_handler.read().strip()

__all__ = ["DARE_IQL", "IQL", "CalQL", "DARE_CalQL", "__version__"]
