"""
Checkpoint a run in both phases and resume it after a crash, with the same buffer, counters and RNG states.

Run: ``python examples/resume_run.py`` (Pendulum-v1 and the embedded dataset: no download). The first call
trains and checkpoints; kill it at any moment (Ctrl-C, kill -9) and run it again: it resumes from the latest
checkpoint instead of starting over.
"""

from __future__ import annotations

import os

from sb3_dare import IQL
from sb3_dare.common.checkpoint import O2OCheckpointCallback, resume
from sb3_dare.quickstart import EMBEDDED_DATASET

CHECKPOINTS = "runs/resume_example/checkpoints"
TOTAL_TIMESTEPS = 20_000


def main(
    checkpoints: str = CHECKPOINTS, total_timesteps: int = TOTAL_TIMESTEPS, offline_steps: int = 10_000, save_freq: int = 2_000
) -> IQL:
    callback = O2OCheckpointCallback(save_freq=save_freq, save_path=checkpoints, name_prefix="iql")
    manifest = os.path.join(checkpoints, "iql_latest.json")
    if os.path.exists(manifest):
        print(f"Resuming from {manifest}")
        model = resume(checkpoints, total_timesteps=total_timesteps, callback=callback, progress_bar=True)
    else:
        model = IQL("MlpPolicy", "Pendulum-v1", dataset=EMBEDDED_DATASET, offline_steps=offline_steps, seed=0, verbose=0)
        model.learn(total_timesteps, callback=callback, progress_bar=True)
    print(f"done: {model.offline_updates} offline updates, {model.num_timesteps} env steps")
    return model


if __name__ == "__main__":
    main()
