#!/usr/bin/env bash
# Distributed hyperparameter search with RL Zoo: two `-optimize` workers share one Optuna study stored in PostgreSQL.
#
# Starts a throw-away local PostgreSQL server (Debian package `postgresql`, installed with apt-get when missing and we are
# root), creates a database, runs two workers against `postgresql://...`, prints the study and stops the server.
# Not part of CI. Needs `pip install -e ".[distributed]"` (psycopg2-binary) and the dataset of the chosen env.
#
# On many machines the worker command is the same: start one server that every machine reaches, then on each machine run
#   python -m rl_zoo3.train --algo iql --env Hopper-v5 -optimize --storage "$STORAGE" --study-name "$STUDY" -f "$LOGS" ...
# with the same study name; see docs/zoo.md ("Distributed search").
#
# Knobs (environment variables): ALGO (iql), ENV_ID (Hopper-v5), STUDY, TRIALS_PER_WORKER (2), N_TIMESTEPS (online env
# steps per trial, 20000), EXTRA_PARAMS (more `-params`, e.g. "offline_steps:10000"), PGPORT (54329), WORKDIR (a temp dir).
# A quick smoke run on a tiny dataset:
#   ENV_ID=InvertedPendulum-v5 N_TIMESTEPS=300 EXTRA_PARAMS="offline_steps:200 batch_size:64" bash examples/distributed_optuna.sh
set -euo pipefail

ALGO=${ALGO:-iql}
ENV_ID=${ENV_ID:-Hopper-v5}
STUDY=${STUDY:-sb3_dare_${ALGO}_${ENV_ID}}
TRIALS_PER_WORKER=${TRIALS_PER_WORKER:-2}
N_TIMESTEPS=${N_TIMESTEPS:-20000}
EXTRA_PARAMS=${EXTRA_PARAMS:-}
PGPORT=${PGPORT:-54329}
PYTHON=${PYTHON:-python}
WORKDIR=${WORKDIR:-$(mktemp -d -t sb3_dare_optuna.XXXXXX)}
mkdir -p "$WORKDIR" && chmod 755 "$WORKDIR"  # the server runs as the postgres user and must reach its data folder

"$PYTHON" -c "import psycopg2" 2>/dev/null || {
  echo "psycopg2 is missing: pip install -e \".[distributed]\" (or pip install psycopg2-binary)" >&2
  exit 1
}

# ---- 1. a PostgreSQL server (Debian package)
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$pg_bin" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  else
    echo "No PostgreSQL server found: install the Debian package postgresql (as root: apt-get install postgresql)." >&2
    exit 1
  fi
fi
as_server_user() {  # initdb and postgres refuse to run as root
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
data="$WORKDIR/pgdata"
mkdir -p "$data"
[ "$(id -u)" = 0 ] && chown postgres: "$data"
as_server_user "$pg_bin/initdb" -D "$data" -U postgres --auth=trust >"$WORKDIR/initdb.log"
as_server_user "$pg_bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
  -o "-p $PGPORT -k $data -c listen_addresses=127.0.0.1" start >/dev/null
trap 'as_server_user "$pg_bin/pg_ctl" -D "$data" -m fast stop >/dev/null || true' EXIT
"$pg_bin/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres optuna
# SQLAlchemy >= 2.1 reads plain postgresql:// as psycopg 3: name the psycopg2 driver of the [distributed] extra
STORAGE="postgresql+psycopg2://postgres@127.0.0.1:$PGPORT/optuna"
echo "PostgreSQL is up: $STORAGE (data and logs in $WORKDIR)"

# ---- 2. two workers on the same study (each runs TRIALS_PER_WORKER trials; both share the offline checkpoint)
worker() {
  # shellcheck disable=SC2086  # EXTRA_PARAMS is a list of -params items
  OMP_NUM_THREADS=1 "$PYTHON" -m rl_zoo3.train --algo "$ALGO" --env "$ENV_ID" -n "$N_TIMESTEPS" \
    -optimize --n-trials "$TRIALS_PER_WORKER" --n-evaluations 2 --storage "$STORAGE" --study-name "$STUDY" \
    --no-optim-plots --num-threads 1 -f "$WORKDIR/logs" ${EXTRA_PARAMS:+-params $EXTRA_PARAMS} >"$WORKDIR/worker_$1.log" 2>&1
}
worker 1 &
first=$!
worker 2 &
second=$!
status=0
wait "$first" || status=$?
wait "$second" || status=$?
grep -h "sb3_dare: trial\|Trial [0-9]* finished\|Trial [0-9]* pruned" "$WORKDIR"/worker_*.log || true
if [ "$status" != 0 ]; then
  echo "A worker failed: see $WORKDIR/worker_1.log and $WORKDIR/worker_2.log" >&2
  exit "$status"
fi

# ---- 3. the shared study
"$PYTHON" - "$STORAGE" "$STUDY" <<'EOF'
import sys

import optuna

study = optuna.load_study(storage=sys.argv[1], study_name=sys.argv[2])
for trial in study.trials:
    print(f"trial {trial.number}: {trial.state.name} value={trial.value} params={trial.params}")
done = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
if done:
    print(f"best: trial {study.best_trial.number}, value {study.best_value}")
EOF
