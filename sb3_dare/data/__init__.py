"""Offline data: loading Minari datasets into validated transition arrays, and building datasets."""

from sb3_dare.data.builder import build_dataset
from sb3_dare.data.loading import load_offline_data
from sb3_dare.data.offline_data import OfflineData

__all__ = ["OfflineData", "build_dataset", "load_offline_data"]
