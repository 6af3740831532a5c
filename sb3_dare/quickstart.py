"""
The quickstart: offline pre-training, then online fine-tuning with IQL and DARE_IQL side by side.

Run ``python -m sb3_dare.quickstart`` (about 6 minutes on 2 CPU cores). With no arguments it uses a small
dataset shipped inside the package (Pendulum-v1, medium quality, built with ``python -m sb3_dare.data build``),
so nothing is downloaded. It prints a table of normalised scores before and after fine-tuning and writes
PNG plots: learning curves, DARE's exchange diagnostics and its alignment-score histogram.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor

EMBEDDED_DATASET = os.path.join(os.path.dirname(__file__), "datasets", "pendulum", "medium-v0")
ALGORITHMS = ("iql", "dare_iql")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sb3_dare.quickstart",
        description="Offline pre-training, then online fine-tuning with IQL and DARE_IQL side by side.",
    )
    parser.add_argument("--dataset", default=EMBEDDED_DATASET, help="Minari id or dataset folder (default: the embedded one)")
    parser.add_argument("--env", default=None, help="Gymnasium env id (default: the dataset's env)")
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    parser.add_argument("--offline-steps", type=int, default=5000, help="offline gradient steps (shared by all algorithms)")
    parser.add_argument("--online-steps", type=int, default=5000, help="online environment steps per algorithm")
    parser.add_argument("--eval-freq", type=int, default=1000, help="evaluate every this many online steps")
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--behavior-model", default="diffusion", choices=("diffusion", "gaussian"))
    parser.add_argument("--behavior-steps", type=int, default=3000, help="gradient steps to fit DARE's behaviour model")
    parser.add_argument("--energy-steps", type=int, default=1000, help="gradient steps to fit the energy network")
    parser.add_argument("--guidance-scale", type=float, default=3.0)
    parser.add_argument(
        "--max-support-states", type=int, default=5000, help="dataset states whose support actions train the energy network"
    )
    parser.add_argument("--net-arch", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--output", default="quickstart_output", help="folder for logs, checkpoints and plots")
    parser.add_argument("--no-progress-bar", action="store_true")
    return parser.parse_args(argv)


def _evaluate(model: Any, env_id: str, episodes: int, seed: int) -> float:
    from sb3_dare.common.evaluation import evaluate_normalized

    env = Monitor(gym.make(env_id))
    env.reset(seed=seed)
    result = evaluate_normalized(model, env, n_eval_episodes=episodes)
    env.close()
    return result.get("normalized_score", result["mean_reward"])


def plot_learning_curves(curves: dict[str, list[tuple[int, float]]], offline_score: float, path: str) -> str:
    """Normalised score over online steps, one line per algorithm, starting from the shared offline score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5))
    for name, points in curves.items():
        steps, scores = zip(*[(0, offline_score), *points], strict=True)
        axis.plot(steps, scores, marker="o", label=name)
    axis.set_xlabel("online environment steps")
    axis.set_ylabel("normalized score")
    axis.set_title("fine-tuning from one offline checkpoint")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the quickstart and return its results (also written to ``<output>/results.json``)."""
    from sb3_dare import IQL
    from sb3_dare.common.evaluation import NormalizedEvalCallback
    from sb3_dare.dare import DARE_IQL
    from sb3_dare.data import load_offline_data
    from sb3_dare.plots import plot_exchange, plot_score_histogram

    if args.threads is not None:
        th.set_num_threads(args.threads)
    os.makedirs(args.output, exist_ok=True)
    data = load_offline_data(args.dataset)
    env_id = args.env or data.env_id
    if env_id is None:
        raise ValueError(f"Dataset {args.dataset!r} does not name its env: pass --env.")
    print(f"Dataset: {data}\nEnvironment: {env_id}")
    progress = not args.no_progress_bar
    common = dict(
        batch_size=args.batch_size,
        policy_kwargs=dict(net_arch=list(args.net_arch)),
        offline_eval_freq=0,
        seed=args.seed,
    )

    start = time.time()
    base = IQL("MlpPolicy", env_id, dataset=data, offline_steps=args.offline_steps, **common)
    print(f"\nOffline pre-training: {args.offline_steps} IQL updates")
    base.learn(0, progress_bar=progress)
    offline_time = time.time() - start
    offline_score = _evaluate(base, env_id, args.eval_episodes, args.seed)
    checkpoint = os.path.join(args.output, "iql_offline.zip")
    base.save(checkpoint)
    print(f"Offline normalized score: {offline_score:.1f} ({offline_time:.0f} s)")

    results: dict[str, Any] = {"offline_score": offline_score, "offline_time_s": offline_time, "algorithms": {}}
    curves: dict[str, list[tuple[int, float]]] = {}
    plots = []
    for name in args.algorithms:
        print(f"\nOnline fine-tuning with {name}: {args.online_steps} environment steps")
        start = time.time()
        if name == "iql":
            model: Any = IQL.load(checkpoint, env=gym.make(env_id), dataset=data)
        else:
            model = DARE_IQL.from_base(
                checkpoint,
                env=gym.make(env_id),
                dataset=data,
                behavior_model=args.behavior_model,
                behavior_steps=args.behavior_steps,
                energy_steps=args.energy_steps,
                guidance_scale=args.guidance_scale if args.behavior_model == "diffusion" else 0.0,
                max_support_states=args.max_support_states,
            )
        log_dir = os.path.join(args.output, name)
        model.set_logger(configure(log_dir, ["csv"]))
        eval_env = Monitor(gym.make(env_id))
        callback = NormalizedEvalCallback(
            eval_env, dataset=data, n_eval_episodes=args.eval_episodes, eval_freq=args.eval_freq, verbose=0
        )
        model.learn(args.online_steps, callback=callback, log_interval=1, progress_bar=progress)
        elapsed = time.time() - start
        final_score = _evaluate(model, env_id, args.eval_episodes, args.seed + 1)
        curves[name] = [(args.eval_freq * (index + 1), score) for index, score in enumerate(callback.normalized_scores)]
        results["algorithms"][name] = {"final_score": final_score, "online_time_s": elapsed, "curve": curves[name]}
        if name == "dare_iql":
            plots.append(plot_exchange(log_dir, os.path.join(args.output, "dare_exchange.png")))
            plots.append(plot_score_histogram(model, os.path.join(args.output, "dare_score_histogram.png")))
    plots.insert(0, plot_learning_curves(curves, offline_score, os.path.join(args.output, "learning_curves.png")))
    results["plots"] = plots
    with open(os.path.join(args.output, "results.json"), "w") as file_handler:
        json.dump(results, file_handler, indent=2)

    print("\n| algorithm | normalized score after offline | after fine-tuning | online time |")
    print("|---|---|---|---|")
    for name, result in results["algorithms"].items():
        print(f"| {name} | {offline_score:.1f} | {result['final_score']:.1f} | {result['online_time_s']:.0f} s |")
    print(f"\nOffline phase (shared): {offline_time:.0f} s. Plots: {', '.join(plots)}")
    print(
        "One seed at a tiny budget decides nothing about which method is better: see benchmarks/results/ for "
        "measured comparisons over several seeds with confidence intervals."
    )
    return results


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    run(parse_args(argv))


if __name__ == "__main__":
    main()
