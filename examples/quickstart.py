"""
The README's main job as a script: ``python examples/quickstart.py`` equals ``python -m sb3_dare.quickstart``.

Offline pre-training with IQL on the embedded Pendulum-v1 medium dataset, then IQL and DARE_IQL fine-tuned
side by side from that one checkpoint; a table of normalised scores and PNG plots in ``quickstart_output/``.
Pass the same options, e.g. ``--online-steps 20000`` or ``--dataset mujoco/hopper/medium-v0 --env Hopper-v5``.
"""

from sb3_dare.quickstart import main

if __name__ == "__main__":
    main()
