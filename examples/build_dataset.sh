#!/usr/bin/env bash
# Build D4RL-style datasets for any Gymnasium env (real Minari datasets, with reference scores).
# SAC is trained once per (env, train steps, seed) and cached under ${SB3_DARE_CACHE:-~/.cache/sb3_dare};
# every further quality of the same env reuses it. See docs/datasets.md for the measured cost.
set -euo pipefail
export MINARI_DATASETS_PATH=${MINARI_DATASETS_PATH:-$HOME/.minari/datasets}

# a quick one: Pendulum-v1 (no MuJoCo), a few minutes on 2 cores
python -m sb3_dare.data build --env Pendulum-v1 --quality medium expert --train-steps 6000 --steps 20000
python -m sb3_dare.data info sb3_dare/pendulum-v1/medium-v0

# the D4RL set for Hopper-v5 (hours of SAC training on a CPU, once)
# python -m sb3_dare.data build --env Hopper-v5 --quality random medium medium-replay medium-expert expert
