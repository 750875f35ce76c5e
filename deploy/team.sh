#!/usr/bin/env bash
# One service of the team set-up, in the foreground: s3 | buckets | mlflow | serve (docs/DEPLOY.md).
# compose.yaml runs each in its own container; deploy/team-local.sh runs them all on this machine's loopback.
# Every setting comes from the environment; the defaults are the compose file's ports.
set -euo pipefail

HOST=${TEAM_BIND:-127.0.0.1}        # bind address: 0.0.0.0 in a container, loopback elsewhere
DATA=${TEAM_DATA:-./team-data}      # SeaweedFS volumes and the MLflow database
: "${AWS_ACCESS_KEY_ID:?the S3 access key}" "${AWS_SECRET_ACCESS_KEY:?the S3 secret key}"

case "${1:-}" in
s3)
  # SeaweedFS with its S3 gateway; the one identity is the AWS_* key pair. No telemetry, no metrics port.
  mkdir -p "$DATA/s3/data" "$DATA/s3/logs"
  python - "$DATA/s3/identities.json" <<'PY'
import json, os, sys
identity = {"name": "heimdall", "actions": ["Admin", "Read", "Write", "List"],
            "credentials": [{"accessKey": os.environ["AWS_ACCESS_KEY_ID"],
                             "secretKey": os.environ["AWS_SECRET_ACCESS_KEY"]}]}
with open(os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
    json.dump({"identities": [identity]}, f)
PY
  exec weed -logdir "$DATA/s3/logs" server -dir="$DATA/s3/data" \
    -ip="${WEED_ADVERTISE:-127.0.0.1}" -ip.bind="$HOST" \
    -master.port="${WEED_MASTER_PORT:-9333}" -volume.port="${WEED_VOLUME_PORT:-8080}" \
    -filer.port="${WEED_FILER_PORT:-8888}" -s3 -s3.port="${S3_PORT:-8333}" \
    -s3.config="$DATA/s3/identities.json" -s3.port.iceberg=0 -s3.port.lance=0 \
    -master.telemetry=false -metricsPort=0 -volume.max=64 -master.volumeSizeLimitMB=64
  ;;
buckets)
  # Waits for the S3 endpoint, then makes the artifact and model buckets (kept when they exist).
  exec python - "$MLFLOW_S3_ENDPOINT_URL" "${MLFLOW_BUCKET:-mlflow}" "${MINIO_BUCKET:-models}" <<'PY'
import sys, time
import boto3
from botocore.config import Config

endpoint, *buckets = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2))
deadline = time.time() + 120
while True:
    try:
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        break
    except Exception as exc:
        if time.time() > deadline:
            sys.exit(f"buckets: S3 at {endpoint} did not answer in 120 s: {exc}")
        time.sleep(1)
for bucket in buckets:
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)
print("buckets:", ", ".join(buckets))
PY
  ;;
mlflow)
  # Tracking and registry; artifacts proxied to S3, so that clients need only its URL. Host names other than
  # loopback and private addresses must be allowed in $MLFLOW_SERVER_ALLOWED_HOSTS (compose: mlflow:5000).
  mkdir -p "$DATA/mlflow"
  export MLFLOW_DISABLE_TELEMETRY=true
  exec mlflow server \
    --backend-store-uri "${MLFLOW_BACKEND_STORE_URI:-sqlite:///$(cd "$DATA/mlflow" && pwd)/mlflow.db}" \
    --serve-artifacts --artifacts-destination "s3://${MLFLOW_BUCKET:-mlflow}/artifacts" \
    --host "$HOST" --port "${MLFLOW_PORT:-5000}" --workers 1
  ;;
serve)
  # The registry's model ($HEIMDALL_ALIAS, default champion) through $MLFLOW_TRACKING_URI.
  exec heimdall serve --host "$HOST" --port "${HEIMDALL_PORT:-8000}" --alias "${HEIMDALL_ALIAS:-champion}"
  ;;
*)
  echo "usage: $0 s3|buckets|mlflow|serve" >&2
  exit 2
  ;;
esac
