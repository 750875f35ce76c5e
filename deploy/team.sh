#!/usr/bin/env bash
# One service of the team set-up, in the foreground: keys | s3 | buckets | mlflow | serve (docs/DEPLOY.md).
# compose.yaml runs each in its own container; deploy/team-local.sh runs them all on this machine's loopback.
# Every setting comes from the environment; the defaults are the compose file's ports.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
HOST=${TEAM_BIND:-127.0.0.1}        # bind address: 0.0.0.0 in a container, loopback elsewhere
DATA=${TEAM_DATA:-./team-data}      # SeaweedFS volumes and the MLflow database
: "${AWS_ACCESS_KEY_ID:?the S3 access key}" "${AWS_SECRET_ACCESS_KEY:?the S3 secret key}"
secret() { python -c "import secrets; print(secrets.token_hex(32))"; }

case "${1:-}" in
keys)
  # One-shot, once: the ed25519 key pair models are signed with. The private key goes where training runs
  # ($HEIMDALL_SIGNING_KEY_FILE, readable by its owner only), the public key where the service runs
  # ($HEIMDALL_VERIFY_KEY_FILE); existing keys are kept.
  : "${HEIMDALL_SIGNING_KEY_FILE:?where the private key goes}" "${HEIMDALL_VERIFY_KEY_FILE:?where the public key goes}"
  exec python - "$HEIMDALL_SIGNING_KEY_FILE" "$HEIMDALL_VERIFY_KEY_FILE" <<'PY'
import os, sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

private_path, public_path = sys.argv[1:]
if os.path.exists(private_path):
    with open(private_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    print("keys: kept the signing key", private_path)
else:
    os.makedirs(os.path.dirname(private_path) or ".", exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with open(os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        f.write(pem)
    print("keys: made the signing key", private_path)
os.makedirs(os.path.dirname(public_path) or ".", exist_ok=True)
with open(public_path, "wb") as f:
    f.write(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
print("keys: the verify key", public_path)
PY
  ;;
s3)
  # SeaweedFS with its S3 gateway; the one identity is the AWS_* key pair. No telemetry, no metrics port.
  # Only the S3 API is reachable from elsewhere: SeaweedFS listens on the loopback alone (master, volume server,
  # filer, the gateway and their gRPC ports) and deploy/s3_front.py, which alone listens on $HOST, forwards
  # $S3_PORT to the gateway. Its filer and volume server also take reads and writes only when signed with keys
  # made at each start (SeaweedFS's JWT), so a process on the same loopback cannot go around the gateway either.
  mkdir -p "$DATA/s3/data" "$DATA/s3/logs"
  python - "$DATA/s3/identities.json" <<'PY'
import json, os, sys
identity = {"name": "heimdall", "actions": ["Admin", "Read", "Write", "List"],
            "credentials": [{"accessKey": os.environ["AWS_ACCESS_KEY_ID"],
                             "secretKey": os.environ["AWS_SECRET_ACCESS_KEY"]}]}
with open(os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
    json.dump({"identities": [identity]}, f)
PY
  WEED_JWT_SIGNING_KEY=$(secret) WEED_JWT_SIGNING_READ_KEY=$(secret) WEED_JWT_FILER_SIGNING_KEY=$(secret) \
    WEED_JWT_FILER_SIGNING_READ_KEY=$(secret)
  export WEED_JWT_SIGNING_KEY WEED_JWT_SIGNING_READ_KEY WEED_JWT_FILER_SIGNING_KEY WEED_JWT_FILER_SIGNING_READ_KEY
  inner=${WEED_S3_PORT:-8334}  # the gateway itself, on the loopback
  exec python "$here/s3_front.py" "$HOST:${S3_PORT:-8333}" "$inner" -- \
    weed -logdir "$DATA/s3/logs" server -dir="$DATA/s3/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="${WEED_MASTER_PORT:-9333}" -volume.port="${WEED_VOLUME_PORT:-8080}" \
    -filer.port="${WEED_FILER_PORT:-8888}" -s3 -s3.port="$inner" \
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
  # MLflow's basic-auth app: every request but /health needs the account $MLFLOW_TRACKING_USERNAME /
  # $MLFLOW_TRACKING_PASSWORD (made the admin on the first start; the clients send the same variables). Its users
  # live in $DATA/mlflow/basic_auth.db; a new user gets no permission until granted one.
  : "${MLFLOW_TRACKING_USERNAME:?the MLflow account}" "${MLFLOW_TRACKING_PASSWORD:?the password of the MLflow account}"
  mkdir -p "$DATA/mlflow"
  mlflow_data=$(cd "$DATA/mlflow" && pwd)
  cat >"$mlflow_data/basic_auth.ini" <<INI
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = sqlite:///$mlflow_data/basic_auth.db
admin_username = $MLFLOW_TRACKING_USERNAME
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
  export MLFLOW_DISABLE_TELEMETRY=true MLFLOW_AUTH_CONFIG_PATH="$mlflow_data/basic_auth.ini" \
    MLFLOW_AUTH_ADMIN_USERNAME="$MLFLOW_TRACKING_USERNAME" MLFLOW_AUTH_ADMIN_PASSWORD="$MLFLOW_TRACKING_PASSWORD" \
    MLFLOW_FLASK_SERVER_SECRET_KEY=${MLFLOW_FLASK_SERVER_SECRET_KEY:-$(secret)}
  exec mlflow server --app-name basic-auth \
    --backend-store-uri "${MLFLOW_BACKEND_STORE_URI:-sqlite:///$mlflow_data/mlflow.db}" \
    --serve-artifacts --artifacts-destination "s3://${MLFLOW_BUCKET:-mlflow}/artifacts" \
    --host "$HOST" --port "${MLFLOW_PORT:-5000}" --workers 1
  ;;
serve)
  # The registry's model ($HEIMDALL_ALIAS, default champion) through $MLFLOW_TRACKING_URI, served only when its
  # manifest is signed by the team's key: the public key $HEIMDALL_VERIFY_KEY_FILE (made by `keys`) is required.
  : "${HEIMDALL_VERIFY_KEY_FILE:?the public key models must be signed with (deploy/team.sh keys makes it)}"
  exec heimdall serve --host "$HOST" --port "${HEIMDALL_PORT:-8000}" --alias "${HEIMDALL_ALIAS:-champion}"
  ;;
*)
  echo "usage: $0 keys|s3|buckets|mlflow|serve" >&2
  exit 2
  ;;
esac
