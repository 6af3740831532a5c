"""How close to the compute limit can an update of these networks get? The matrix products alone, against the update.

``benchmarks/speed.py`` reports each update's roofline fraction: FLOPs per update x updates/s over the best 256^3
float32 GEMM throughput of the run. This script asks what part of the gap the matrix products themselves leave: it
records every matrix product one update of IQL or Cal-QL makes (``mm``, ``bmm``, ``addmm``, ``baddbmm``: the same
shapes and strides, on random data), replays only them, and times the replay against the whole update and the GEMM
reference, in turns (round by round), in one process. The products' own fraction is an upper bound on what any
eager implementation of the same networks at the same batch size reaches on this machine: everything else in an
update (activations, bias gradients, Adam, batch sampling, autograd) only adds time.

Usage::

    python benchmarks/gemm_bound.py --algo iql --threads 2 --out iql.json
    python benchmarks/gemm_bound.py --algo calql --threads 2

Conditions as ``speed.py``: Hopper-shaped synthetic data (100k transitions, 11-dim observations, 3-dim actions),
batch 256, 2x256 networks, 2 critics, Adam, float32, CPU. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

MATRIX_PRODUCTS = {"mm", "bmm", "addmm", "baddbmm", "mv", "addmv"}
GEMM_SIZE = 256


def record_products(update: Callable[[], Any]) -> list[tuple[Any, list[Any], dict[str, Any]]]:
    """The matrix products one call of ``update`` makes: (op, [(shape, stride) or value per argument], kwargs)."""
    import torch as th
    from torch.utils._python_dispatch import TorchDispatchMode

    calls: list[tuple[Any, list[Any], dict[str, Any]]] = []

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if func.overloadpacket.__name__ in MATRIX_PRODUCTS:
                layout = [(arg.shape, arg.stride()) if isinstance(arg, th.Tensor) else arg for arg in args]
                calls.append((func, layout, dict(kwargs or {})))
            return func(*args, **(kwargs or {}))

    with Recorder():
        update()
    return calls


def replay(calls: list[tuple[Any, list[Any], dict[str, Any]]]) -> Callable[[], None]:
    """A function running the recorded products on random tensors of the same shapes and strides."""
    import torch as th

    def tensor(layout: Any) -> Any:
        if not isinstance(layout, tuple):
            return layout
        shape, stride = layout
        storage = 1 + sum((size - 1) * step for size, step in zip(shape, stride, strict=True)) if len(shape) else 1
        return th.randn(max(storage, 1)).as_strided(shape, stride)

    prepared = [(func, [tensor(arg) for arg in args], kwargs) for func, args, kwargs in calls]

    def run() -> None:
        for func, args, kwargs in prepared:
            func(*args, **kwargs)

    return run


def measure(algo: str, threads: int, rounds: int, block: int) -> dict[str, Any]:
    """Rates of the update, of its products alone, and of the GEMM reference, timed in turns; medians over rounds."""
    import torch as th
    from torch.utils.flop_counter import FlopCounterMode

    th.set_num_threads(threads)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from speed import _synthetic_data

    from sb3_dare import IQL, CalQL

    model = {"iql": IQL, "calql": CalQL}[algo](
        "MlpPolicy", None, dataset=_synthetic_data(), offline_steps=10**9, offline_eval_freq=0,
        offline_log_interval=10**9, seed=0, device="cpu",
    )  # fmt: skip
    model.pretrain(n_steps=20)  # warm-up

    def update() -> None:
        model.pretrain(n_steps=1)

    products = replay(record_products(update))
    counter = FlopCounterMode(display=False)
    with counter:
        update()
    flops = counter.get_total_flops()
    left, right = th.randn(GEMM_SIZE, GEMM_SIZE), th.randn(GEMM_SIZE, GEMM_SIZE)

    def gemm_rate() -> float:  # best of 5, as speed.py
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(50):
                th.mm(left, right)
            best = min(best, time.perf_counter() - start)
        return 2 * GEMM_SIZE**3 * 50 / best

    def rate(function: Callable[[], None]) -> float:
        start = time.perf_counter()
        for _ in range(block):
            function()
        return block / (time.perf_counter() - start)

    for _ in range(2):
        rate(update), rate(products), gemm_rate()
    gemms, updates, alone = [], [], []
    for _ in range(rounds):
        gemms.append(gemm_rate())
        updates.append(rate(update))
        alone.append(rate(products))
    best_gemm = max(gemms)
    return {
        "algorithm": algo,
        "threads": threads,
        "rounds": rounds,
        "updates_per_block": block,
        "matrix_products_per_update": len(record_products(update)),
        "gflop_per_update": flops / 1e9,
        "gemm_gflops_best": best_gemm / 1e9,
        "updates_per_s": statistics.median(updates),
        "products_alone_per_s": statistics.median(alone),
        "roofline_fraction": flops * statistics.median(updates) / best_gemm,
        "products_alone_fraction": flops * statistics.median(alone) / best_gemm,
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=("iql", "calql"), default="iql")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--block", type=int, default=None, help="updates per timed block (default: 40 IQL, 5 Cal-QL)")
    parser.add_argument("--out", type=str, default=None, help="also write the result as JSON to this file")
    args = parser.parse_args(argv)
    block = args.block or (40 if args.algo == "iql" else 5)
    result = measure(args.algo, args.threads, args.rounds, block)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as file:
            file.write(text + "\n")


if __name__ == "__main__":
    main()
