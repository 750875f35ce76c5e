"""A real PostgreSQL server for tests, on 127.0.0.1 and a free port, in a temporary folder.

PostgreSQL refuses to run as root: as root, initdb and the server run as the `postgres` user (setpriv execs, so
the process started is the server itself). Local connections are trusted; stopped with SIGINT (fast shutdown),
then SIGKILL after a timeout.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from service_process import free_port

USER = "heimdall"


def postgres_bin() -> Path | None:
    """The folder of `postgres` and `initdb` (Debian keeps them under /usr/lib/postgresql/<major>/bin)."""
    for candidate in [shutil.which("initdb"), *sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)]:
        if candidate and (Path(candidate).parent / "postgres").exists():
            return Path(candidate).resolve().parent
    return None


def unusable_reason() -> str | None:
    """Why no server can be started here, or None."""
    if postgres_bin() is None:
        return "no PostgreSQL server binaries (initdb, postgres) on this machine"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run PostgreSQL as"
    return None


class PostgresServer:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="heimdall-pg-"))
        self.port = free_port()
        self.uri = f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"
        self.proc: subprocess.Popen | None = None

    def _as_owner(self, cmd: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return cmd
        return ["setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups", "--", *cmd]

    def start(self, timeout_s: float = 60.0) -> PostgresServer:
        import psycopg2

        binaries = postgres_bin()
        assert binaries is not None
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        data = self.dir / "data"
        subprocess.run(
            self._as_owner([str(binaries / "initdb"), "-D", str(data), "-U", USER, "-A", "trust", "--no-sync"]),
            check=True,
            capture_output=True,
        )
        self.proc = subprocess.Popen(
            self._as_owner(
                [str(binaries / "postgres"), "-D", str(data), "-k", str(self.dir), "-c", "fsync=off"]
                + ["-h", "127.0.0.1", "-p", str(self.port)]
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}")
            try:
                psycopg2.connect(self.uri, connect_timeout=2).close()
                return self
            except psycopg2.OperationalError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("PostgreSQL did not come up in time")

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
