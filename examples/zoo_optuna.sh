#!/usr/bin/env bash
# sb3_dare through RL Zoo on one machine: train, watch, tune with Optuna (two workers, one journal file), retrain the best.
# Needs `pip install -e ".[zoo,mujoco]"` and the env's dataset (see docs/zoo.md). Run it from any folder: logs go to
# $LOGS (default ./logs).
#
# Knobs (environment variables): ALGO (iql), ENV_ID (Hopper-v5), N_TIMESTEPS (online env steps; default: the yml's),
# TRIALS_PER_WORKER (4), TRIAL_TIMESTEPS (online env steps per trial, 20000), EXTRA_PARAMS (more -params items), LOGS.
# A quick smoke run on a small dataset:
#   ENV_ID=InvertedPendulum-v5 N_TIMESTEPS=300 TRIAL_TIMESTEPS=300 TRIALS_PER_WORKER=1 \
#     EXTRA_PARAMS="offline_steps:200 batch_size:64" bash examples/zoo_optuna.sh
set -euo pipefail

ALGO=${ALGO:-iql}
ENV_ID=${ENV_ID:-Hopper-v5}
N_TIMESTEPS=${N_TIMESTEPS:-}
TRIALS_PER_WORKER=${TRIALS_PER_WORKER:-4}
TRIAL_TIMESTEPS=${TRIAL_TIMESTEPS:-20000}
EXTRA_PARAMS=${EXTRA_PARAMS:-}
LOGS=${LOGS:-logs}
PYTHON=${PYTHON:-python}
STUDY=${STUDY:-${ALGO}_${ENV_ID}}
STORAGE="$LOGS/optuna_${STUDY}.log"  # a .log path: Optuna's JournalFileStorage, safe for several processes
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$LOGS"

# shellcheck disable=SC2086  # EXTRA_PARAMS is a list of -params items
params() { if [ -n "$EXTRA_PARAMS" ]; then echo -params $EXTRA_PARAMS; fi; }

echo "== train (offline phase, then online fine-tuning)"
"$PYTHON" -m rl_zoo3.train --algo "$ALGO" --env "$ENV_ID" -f "$LOGS" ${N_TIMESTEPS:+-n "$N_TIMESTEPS"} $(params)

echo "== evaluate the trained agent"
"$PYTHON" -m rl_zoo3.enjoy --algo "$ALGO" --env "$ENV_ID" -f "$LOGS" --no-render -n 5000

echo "== tune: two workers on one study; trials share one offline pre-training (see $LOGS/offline_cache)"
tune() {
  "$PYTHON" -m rl_zoo3.train --algo "$ALGO" --env "$ENV_ID" -f "$LOGS" -n "$TRIAL_TIMESTEPS" -optimize \
    --n-trials "$TRIALS_PER_WORKER" --n-evaluations 2 --storage "$STORAGE" --study-name "$STUDY" --no-optim-plots \
    --num-threads 1 $(params)
}
tune >"$LOGS/tune_1.txt" 2>&1 &
first=$!
tune >"$LOGS/tune_2.txt" 2>&1 &
second=$!
wait "$first"
wait "$second"
grep -h "sb3_dare: trial\|finished with value" "$LOGS"/tune_*.txt || true

echo "== retrain the best trial"
# RL Zoo 2.9.2 ignores --trial-id 0 (it tests the id's truthiness): trial 0 goes back in as -params instead
best=$("$PYTHON" - "$STORAGE" "$STUDY" <<'EOF'
import sys

import optuna

backend = optuna.storages.journal.JournalFileBackend(sys.argv[1])
best = optuna.load_study(study_name=sys.argv[2], storage=optuna.storages.JournalStorage(backend)).best_trial
print(best.number if best.number else "-params " + " ".join(f"{key}:{value!r}" for key, value in best.params.items()))
EOF
)
if [[ "$best" == -params* ]]; then
  # shellcheck disable=SC2086
  "$PYTHON" -m rl_zoo3.train --algo "$ALGO" --env "$ENV_ID" -f "$LOGS" ${N_TIMESTEPS:+-n "$N_TIMESTEPS"} \
    -params $EXTRA_PARAMS ${best#-params }
else
  "$PYTHON" -m rl_zoo3.train --algo "$ALGO" --env "$ENV_ID" -f "$LOGS" ${N_TIMESTEPS:+-n "$N_TIMESTEPS"} \
    --storage "$STORAGE" --study-name "$STUDY" --trial-id "$best" $(params)
fi
