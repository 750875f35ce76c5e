#!/usr/bin/env bash
# The team set-up of compose.yaml on this machine's loopback, end to end: the signing key pair, SeaweedFS S3, the
# MLflow server (basic authentication) and `heimdall serve` (verifying signatures), started with the same commands
# (deploy/team.sh), on free ports; then a tiny model is simulated, trained, signed, published to them, and the service
# is asked for one localization (printed as JSON on stdout).
# Everything lives in TEAM_DATA (default: a new temporary folder, removed at the end); every process started here
# is stopped at exit (SIGTERM, then SIGKILL after 10 s). Needs heimdall with the team (or dev) extra on PATH, as
# `make` installs it: `. .venv/bin/activate` first.
#
#   deploy/team-local.sh                 # the whole round trip, then stop
#   TEAM_KEEP=1 deploy/team-local.sh     # leave it running until Ctrl-C (prints the URLs)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export TEAM_BIND=127.0.0.1
if [ -z "${TEAM_DATA:-}" ]; then
  TEAM_DATA=$(mktemp -d "${TMPDIR:-/tmp}/heimdall-team-XXXXXX")
  remove_data=1
fi
export TEAM_DATA
log() { echo "team-local: $*" >&2; }

pids=()
stop_all() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "${remove_data:-}" ]; then rm -rf "$TEAM_DATA"; fi
}
trap stop_all EXIT
trap 'exit 130' INT TERM

start() { # start NAME: deploy/team.sh NAME in its own process group, its output in $TEAM_DATA/NAME.log
  setsid bash "$here/team.sh" "$1" >"$TEAM_DATA/$1.log" 2>&1 &
  pids+=("$!")
}
wait_http() { # wait_http URL NAME: until URL answers 200 (its process must stay alive)
  local pid=${pids[-1]}
  for _ in $(seq 600); do
    if python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" 2>/dev/null; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { log "$2 exited:"; tail -20 "$TEAM_DATA/$2.log" >&2; return 1; }
    sleep 0.5
  done
  log "$2 did not answer at $1"; return 1
}

# free ports; SeaweedFS also takes port + 10000 for gRPC
read -r WEED_MASTER_PORT WEED_VOLUME_PORT WEED_FILER_PORT WEED_S3_PORT S3_PORT MLFLOW_PORT HEIMDALL_PORT < <(python - <<'PY'
import socket
ports = []
while len(ports) < 7:
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        p = a.getsockname()[1]
        if p + 10000 > 65535 or p in ports:
            continue
        try:
            b.bind(("127.0.0.1", p + 10000))
        except OSError:
            continue
    ports.append(p)
print(*ports)
PY
)
export WEED_MASTER_PORT WEED_VOLUME_PORT WEED_FILER_PORT WEED_S3_PORT S3_PORT MLFLOW_PORT HEIMDALL_PORT
new_secret() { python -c "import secrets; print(secrets.token_hex(16))"; }
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-heimdall} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-$(new_secret)}
export MLFLOW_TRACKING_USERNAME=${MLFLOW_TRACKING_USERNAME:-heimdall}
export MLFLOW_TRACKING_PASSWORD=${MLFLOW_TRACKING_PASSWORD:-$(new_secret)}
export HEIMDALL_VERIFY_KEY_FILE=$TEAM_DATA/keys/verify/verify.pem  # the public key: where the service runs
signing_key=$TEAM_DATA/keys/signing/signing.pem                      # the private key: where training runs only
export AWS_DEFAULT_REGION=us-east-1
export MLFLOW_S3_ENDPOINT_URL=http://127.0.0.1:$S3_PORT AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT MINIO_BUCKET=models
export HEIMDALL_WORKSPACE=$TEAM_DATA/workspace MLFLOW_DISABLE_TELEMETRY=true

HEIMDALL_SIGNING_KEY_FILE=$signing_key bash "$here/team.sh" keys >&2
log "SeaweedFS S3 on $MLFLOW_S3_ENDPOINT_URL"
start s3
bash "$here/team.sh" buckets >&2
log "MLflow on $MLFLOW_TRACKING_URI"
start mlflow
wait_http "$MLFLOW_TRACKING_URI/health" mlflow

log "simulating and training a tiny model (about a minute)"
store=$TEAM_DATA/store
heimdall simulate -n "${TEAM_TRANSMISSIONS:-1500}" --seed 21 --out "$store" --quiet >&2
# judged on val, the split its covariance is calibrated on: a model trained for seconds is at best roughly calibrated
HEIMDALL_SIGNING_KEY_FILE=$signing_key \
  heimdall train --data-dir "$store" --epochs "${TEAM_EPOCHS:-3}" --d-model 32 --n-layers 1 --threads 2 \
  --eval-data "$store/val.h5" --log-level warning --json >"$TEAM_DATA/train.json"
# serve what training registered: champion when it beat the champion rule, else its challenger alias
HEIMDALL_ALIAS=$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['model']['registry']['alias'])" \
  "$TEAM_DATA/train.json")
export HEIMDALL_ALIAS
log "registered as $HEIMDALL_ALIAS; heimdall serve on http://127.0.0.1:$HEIMDALL_PORT"
start serve
wait_http "http://127.0.0.1:$HEIMDALL_PORT/readyz" serve

# one localization: the first test transmission of the store, by its receivers' features
python - "$store/test.h5" "http://127.0.0.1:$HEIMDALL_PORT/v1/localize" "$TEAM_DATA/train.json" <<'PY'
import json, sys, urllib.request
import h5py

with h5py.File(sys.argv[1]) as f:
    ids, features = f["receivers/id"].asstr()[...], f["features"][0]
body = {"features": [{"id": i, "features": v.tolist()} for i, v in zip(ids, features, strict=True)]}
request = urllib.request.Request(sys.argv[2], json.dumps(body).encode(), {"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=60) as answer:
    print(json.dumps({"registry": json.load(open(sys.argv[3]))["model"]["registry"], "answer": json.load(answer)}))
PY
if [ -n "${TEAM_KEEP:-}" ]; then
  log "running: S3 $MLFLOW_S3_ENDPOINT_URL, MLflow $MLFLOW_TRACKING_URI, service http://127.0.0.1:$HEIMDALL_PORT (Ctrl-C stops)"
  log "MLflow account $MLFLOW_TRACKING_USERNAME, password in MLFLOW_TRACKING_PASSWORD of this script's environment"
  wait
fi
