"""`heimdall serve` as a real uvicorn process on 127.0.0.1, for end-to-end tests."""

import contextlib
import os
import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_service(model_file, *extra_args, env=None, cwd=None, ready_timeout_s=120):
    """Start `heimdall serve --model-file model_file` (no model flag when model_file is None: the registry's
    champion) and yield its base URL once /readyz answers 200. `env` adds variables; None removes one."""
    port = free_port()
    model = [] if model_file is None else ["--model-file", str(model_file)]
    environment = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    proc = subprocess.Popen(
        [sys.executable, "-m", "heimdall", "serve", *model, "--port", str(port), *extra_args],
        env=environment,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + ready_timeout_s
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "server did not become ready"
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
