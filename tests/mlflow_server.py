"""A real MLflow tracking server for tests: `mlflow server` (the full `mlflow` package, dev extra) on 127.0.0.1,
sqlite backend, artifacts in a SeaweedFS bucket (tests/s3server.py).

Two artifact set-ups, as a team runs them: proxied (`--serve-artifacts --artifacts-destination s3://…`, clients
talk HTTP only) or direct (`--no-serve-artifacts --default-artifact-root s3://…`, clients write to S3 themselves
and need `s3_client_env`). Telemetry off; stopped with SIGTERM to its process group, then SIGKILL after a timeout.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from s3server import ACCESS_KEY, SECRET_KEY, SeaweedS3
from service_process import free_port


def mlflow_cli() -> str | None:
    """The `mlflow` command of this environment, when the full package (with its server) is installed."""
    try:
        import mlflow.server  # noqa: F401  (absent from mlflow-skinny)
    except ImportError:
        return None
    return shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")


def s3_client_env(s3: SeaweedS3) -> dict[str, str]:
    """What MLflow's S3 artifact client (boto3) needs to reach the SeaweedFS server."""
    return {
        "MLFLOW_S3_ENDPOINT_URL": s3.endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


class MlflowServer:
    def __init__(self, s3: SeaweedS3, bucket: str = "mlflow", proxied: bool = True) -> None:
        self.s3, self.bucket, self.proxied = s3, bucket, proxied
        self.dir = Path(tempfile.mkdtemp(prefix="heimdall-mlflow-"))
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.artifact_root = f"s3://{bucket}/artifacts"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 180.0) -> MlflowServer:
        cli = mlflow_cli()
        assert cli is not None, "the full mlflow package is not installed"
        if self.bucket not in [b["Name"] for b in self.s3.client().list_buckets().get("Buckets", [])]:
            self.s3.client().create_bucket(Bucket=self.bucket)
        artifacts = (
            ["--serve-artifacts", "--artifacts-destination", self.artifact_root]
            if self.proxied
            else ["--no-serve-artifacts", "--default-artifact-root", self.artifact_root]
        )
        env = {**os.environ, **s3_client_env(self.s3), "MLFLOW_DISABLE_TELEMETRY": "true"}
        self.log = open(self.dir / "server.log", "w")  # closed in stop()
        self.proc = subprocess.Popen(
            [
                cli,
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.dir / 'mlflow.db'}",
                *artifacts,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            env=env,
            cwd=self.dir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers are its children: one process group to stop
        )
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if httpx.get(f"{self.uri}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not come up in time: {self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        return (self.dir / "server.log").read_text(errors="replace")[-n:]

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None:
            try:  # workers that outlived the server
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
