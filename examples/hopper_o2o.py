"""
Hopper-v5 offline-to-online with a dataset you build locally, IQL and DARE_IQL from one offline checkpoint.

    pip install -e ".[mujoco]"
    python -m sb3_dare.data build --env Hopper-v5 --quality medium    # writes sb3_dare/hopper-v5/medium-v0
    python examples/hopper_o2o.py --offline-steps 100000 --online-steps 50000

The builder trains SAC once (cached) and writes a Minari dataset under $MINARI_DATASETS_PATH, under its own id so
that it never shadows Minari's official ``mujoco/hopper/medium-v0`` (whose normalised scores are not comparable
with a locally trained SAC's); ``--dataset`` takes any other Minari id or dataset folder.
At the paper's scale (1M offline + 200k online steps) a run takes hours on a CPU.
"""

from __future__ import annotations

import argparse

import gymnasium as gym

from sb3_dare import DARE_IQL, IQL
from sb3_dare.common.evaluation import NormalizedEvalCallback


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="sb3_dare/hopper-v5/medium-v0")
    parser.add_argument("--offline-steps", type=int, default=100_000)
    parser.add_argument("--online-steps", type=int, default=50_000)
    parser.add_argument("--guidance-scale", type=float, default=8.0, help="the paper's value for hopper-medium")
    args = parser.parse_args()

    base = IQL(
        "MlpPolicy",
        "Hopper-v5",
        dataset=args.dataset,
        offline_steps=args.offline_steps,
        verbose=1,
        tensorboard_log="runs/hopper",
    )
    base.learn(0, progress_bar=True)
    base.save("hopper_iql_offline")
    for name in ("iql", "dare_iql"):
        if name == "iql":
            model = IQL.load("hopper_iql_offline", env=gym.make("Hopper-v5"))
        else:
            model = DARE_IQL.from_base(
                "hopper_iql_offline",
                env=gym.make("Hopper-v5"),
                guidance_scale=args.guidance_scale,
                tensorboard_log="runs/hopper",
            )
        callback = NormalizedEvalCallback(gym.make("Hopper-v5"), n_eval_episodes=5, eval_freq=5000)
        model.learn(args.online_steps, callback=callback, progress_bar=True, tb_log_name=name)
        model.save(f"hopper_{name}")
        print(name, "normalized scores during fine-tuning:", [round(score, 1) for score in callback.normalized_scores])


if __name__ == "__main__":
    main()
