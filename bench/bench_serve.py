"""Load test of `heimdall serve` on loopback: latency and throughput, features-only and raw IQ.

    python bench/bench_serve.py [--model-file model.onnx] [--requests 2000] [--seconds 20]

Starts the service (uvicorn, one process) on 127.0.0.1, sends a bounded number of requests (each distinct, so
the answer cache does not help; 200 unmeasured warm-up requests first in each configuration) at concurrency 1 and 32, and prints p50 / p99 latency and requests/s; then
repeats concurrency 32 with micro-batching off (--max-batch 1) for the gain. Kinds: full feature vectors,
power only (power_dbm per receiver) and raw IQ. The client is a minimal keep-alive HTTP/1.1 client in this
process (uvloop when installed); on a 2-core machine it shares the cores with the server. Without --model-file a model of
the default architecture with random weights is exported (speed does not depend on the weights).
Targets on 2 cores: features-only p50 ≤ 5 ms at concurrency 1, ≥ 500 requests/s at concurrency 32 with
p99 ≤ 100 ms; raw IQ (7 receivers, default window) p50 ≤ 30 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np


WARMUP_REQUESTS = 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model_file: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "heimdall", "serve", "--model-file", str(model_file),
                             "--port", str(port), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the service did not start")


def bodies(kind: str, n: int, ids: list[str], n_features: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if kind == "features":
            feats = rng.normal(-120, 10, (len(ids), n_features))
            out.append({"features": [{"id": i, "features": f.tolist()} for i, f in zip(ids, feats)]})
        elif kind == "power":
            power = rng.normal(-100, 10, len(ids))
            out.append({"features": [{"id": i, "power_dbm": float(p)} for i, p in zip(ids, power)]})
        else:
            iq = (rng.standard_normal((len(ids), 2048)) + 1j * rng.standard_normal((len(ids), 2048))) * 0.01
            out.append({"iq": [{"id": i, "datatype": "ci16_le", "sample_rate_hz": 48000.0,
                                "center_frequency_hz": 145e6,
                                "samples_base64": base64.b64encode(
                                    np.stack([x.real, x.imag], -1).ravel().__mul__(32767).astype("<i2").tobytes()
                                ).decode()} for i, x in zip(ids, iq)]})
    return [json.dumps(b).encode() for b in out]


class _Connection:
    """A minimal keep-alive HTTP/1.1 client (one request at a time): far less CPU per request than a full
    client library, so that on a shared 2-core machine the figures describe the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> "_Connection":
        host, port = url.removeprefix("http://").split(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def post(self, path: str, body: bytes) -> int:
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")))
        await self.reader.readexactly(length)
        return int(head[9:12])

    def close(self) -> None:
        self.writer.close()


async def load(url: str, reqs: list[bytes], concurrency: int, seconds: float) -> tuple[list[float], float, int]:
    latencies: list[float] = []
    errors = 0
    queue = list(reversed(reqs))
    t_end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        conn = await _Connection.open(url)
        try:
            while queue and time.perf_counter() < t_end:
                body = queue.pop()
                t0 = time.perf_counter()
                status = await conn.post("/v1/localize", body)
                latencies.append(time.perf_counter() - t0)
                errors += status != 200
        finally:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    return latencies, len(latencies) / wall, errors


def run(coroutine):
    """asyncio.run, on uvloop when it is installed (a cheaper client)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def report(label: str, lat: list[float], rate: float, errors: int) -> None:
    ms = np.array(lat) * 1e3
    print(f"{label:<34} n={len(ms):5d}  p50 {np.percentile(ms, 50):7.2f} ms  p99 {np.percentile(ms, 99):7.2f} ms  "
          f"{rate:7.0f} req/s  errors {errors}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-file", type=Path)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_file = args.model_file
        if model_file is None:
            from heimdall.export import export_checkpoint
            from heimdall.scenario import load_scenario
            from heimdall.train.checkpoint import untrained_checkpoint

            model_file = export_checkpoint(untrained_checkpoint(load_scenario("nw-italy"), Path(tmp) / "random.ckpt"),
                                           Path(tmp) / "model.onnx").path
        results = {}
        for batching, extra in (("on", ()), ("off", ("--max-batch", "1"))):
            proc, url = start(model_file, *extra)
            try:
                info = httpx.get(f"{url}/v1/model").json()
                ids = [r["id"] for r in info["receivers"]]
                nf = len(info["feature_params"]) and info["feature_params"]["psd_bins"] + 3
                for kind in ("features", "power", "iq"):
                    for conc in (1, 32):
                        if batching == "off" and (conc == 1 or kind == "power"):
                            continue
                        n = args.requests if kind != "iq" else args.requests // 4
                        # warm-up (not measured, other bodies so the answer cache stays cold): the first
                        # requests of a configuration pay for thread-pool start and allocations
                        run(load(url, bodies(kind, WARMUP_REQUESTS, ids, nf, seed=1), conc, args.seconds))
                        lat, rate, err = run(load(url, bodies(kind, n, ids, nf), conc, args.seconds))
                        results[(batching, kind, conc)] = rate
                        report(f"{kind:8s} concurrency {conc:2d} batching {batching}", lat, rate, err)
            finally:
                proc.terminate()
                proc.wait(10)
        for kind in ("features", "iq"):
            gain = results[("on", kind, 32)] / results[("off", kind, 32)]
            print(f"micro-batching gain at concurrency 32 ({kind}): {gain:.2f}×")


if __name__ == "__main__":
    main()
