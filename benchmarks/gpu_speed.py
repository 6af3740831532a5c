"""
Offline updates per second of IQL and Cal-QL on a GPU at the tier-M sizes (batch 256, 2x256 networks, 100k synthetic
Hopper-shaped transitions, batch sampling included), eager and with ``torch_compile=True``: the median of 3 blocks
of 200 updates after 60 warm-up updates, one process. ``--profile`` adds the torch profiler's view of 30 updates
(kernels per update, GPU time per update). Figures and their conditions: ``docs/speed.md``, section "On a GPU".

Usage: ``python benchmarks/gpu_speed.py [--device cuda] [--profile]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import _synthetic_data


def _synchronize(device: str) -> None:
    import torch as th

    if device.startswith("cuda"):
        th.cuda.synchronize()


def updates_per_second(algorithm: type, data: Any, device: str, compiled: bool, blocks: int = 3, block: int = 200) -> float:
    """
    Median rate over ``blocks`` blocks of ``block`` offline updates, after 60 warm-up updates.

    :param algorithm: ``IQL`` or ``CalQL``
    :param data: the offline data
    :param device: torch device
    :param compiled: ``torch_compile=True``
    :param blocks: timed blocks
    :param block: updates per block
    :return: updates per second
    """
    model = algorithm(
        "MlpPolicy", None, dataset=data, batch_size=256, offline_steps=10**9, offline_eval_freq=0, device=device, seed=0,
        torch_compile=compiled,
    )  # fmt: skip
    model.pretrain(n_steps=60)
    _synchronize(device)
    rates = []
    for _ in range(blocks):
        start = time.perf_counter()
        model.pretrain(n_steps=block)
        _synchronize(device)
        rates.append(block / (time.perf_counter() - start))
    return statistics.median(rates)


def profile(algorithm: type, data: Any, device: str, n_updates: int = 30) -> str:
    """
    The torch profiler's view of ``n_updates`` eager updates.

    :param algorithm: ``IQL`` or ``CalQL``
    :param data: the offline data
    :param device: torch device
    :param n_updates: profiled updates
    :return: kernels and GPU time per update, and the profiler's table
    """
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    model = algorithm("MlpPolicy", None, dataset=data, batch_size=256, offline_steps=10**9, offline_eval_freq=0, device=device)
    model.pretrain(n_steps=20)
    _synchronize(device)
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        model.pretrain(n_steps=n_updates)
        _synchronize(device)
    events = profiler.key_averages()
    kernels = sum(event.count for event in events if event.device_type.name == "CUDA")
    gpu_us = sum(event.self_device_time_total for event in events)
    return (
        f"{algorithm.__name__}: {kernels / n_updates:.0f} CUDA kernels and {gpu_us / n_updates / 1000:.2f} ms of GPU "
        f"time per update\n{events.table(sort_by='self_device_time_total', row_limit=10)}"
    )


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="torch device (default cuda)")
    parser.add_argument("--profile", action="store_true", help="also profile 30 eager updates of each algorithm")
    args = parser.parse_args()
    import torch as th

    from sb3_dare import IQL, CalQL

    if args.device.startswith("cuda"):
        print(f"{th.cuda.get_device_name(0)}, torch {th.__version__}")
    data = _synthetic_data()
    for algorithm in (IQL, CalQL):
        for compiled in (False, True):
            rate = updates_per_second(algorithm, data, args.device, compiled)
            print(f"{algorithm.__name__} torch_compile={compiled}: {rate:.1f} updates/s (median of 3 x 200)", flush=True)
        if args.profile:
            print(profile(algorithm, data, args.device), flush=True)


if __name__ == "__main__":
    main()
