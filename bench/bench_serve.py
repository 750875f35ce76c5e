"""Load test of `heimdall serve` on loopback: latency and throughput, the health probe under saturation, memory
under an oversized body.

    python bench/bench_serve.py [--model-file model.onnx] [--requests 2000] [--seconds 20] [--skip-python-client]
                                [--map]

Starts the service (uvicorn, one process) on 127.0.0.1; without --model-file a model of the default architecture
with random weights is exported (speed does not depend on the weights). Every line says which client measured it.

1. Python client (a minimal keep-alive HTTP/1.1 client in this process, uvloop when installed): a bounded number
   of distinct requests (200 unmeasured warm-up requests first) at concurrency 1 and 32, for full feature
   vectors, power only and raw IQ, then concurrency 32 with micro-batching off (--max-batch 1) for the gain.
   Targets: features p50 ≤ 5 ms at concurrency 1; ≥ 500 requests/s at concurrency 32 with p99 ≤ 100 ms; raw IQ
   (7 receivers, default window) p50 ≤ 30 ms. It waits for each answer before sending the next on a connection
   and so hides part of the tail.
2. wrk (when installed; apt-get install wrk): 32 connections, one wrk thread, a new random body per request
   (bench/wrk/localize.lua, no cache hits), latency percentiles from wrk --latency.
   Target: p99 ≤ 50 ms at ≥ 900 requests/s (features).
3. /healthz while 8 connections send batches of 1,024 distinct transmissions (bench/wrk/batch.lua; most are
   refused 429 by admission, after their parse): the probe (bench/wrk/probe.lua, one request per 20 ms) must keep
   p99 ≤ 50 ms. Without wrk, the Python client plays both parts.
4. Peak RSS of a fresh server while a chunked body of 4× the body limit arrives: target ≤ 1.2 × idle RSS + limit.
5. The radio map (wrk; --map: this part only): the same simulated transmissions (bench/wrk/bodies.lua, no cache)
   sent by 32 connections to the plain model and to the same model carrying the scenario's physics map on the
   default 500 m grid (α = 1, β = 0.5), both in the same run: req/s and p99 of both, the map model's req/s as a
   share of the plain model's (target ≥ 50 %) and its p99 (target ≤ 50 ms); meanwhile a /healthz probe every
   20 ms (target p99 ≤ 50 ms). The server's CPU time (all its threads) per request and the cores it used say what
   the rate costs, apart from what else runs on the machine. Then one map answer's CPU, stage by stage, in this
   process.

On a 2-core machine every client shares the cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

WARMUP_REQUESTS = 200
WRK_DIR = Path(__file__).parent / "wrk"
TARGET_P50_C1_MS = 5.0
TARGET_RATE_C32 = 500.0
TARGET_P99_C32_MS = 100.0
TARGET_IQ_P50_C1_MS = 30.0
TARGET_WRK_RATE = 900.0
TARGET_WRK_P99_MS = 50.0
TARGET_HEALTHZ_P99_MS = 50.0
RSS_TARGET_FACTOR = 1.2
BODY_LIMIT_MB = 16
SATURATING_CONNECTIONS = 8
BATCH_TRANSMISSIONS = 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model_file: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "heimdall", "serve", "--model-file", str(model_file), "--port", str(port), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the service did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(10)


def model_shape(url: str) -> tuple[list[str], int]:
    """(receiver ids, feature count) of the served model."""
    info = httpx.get(f"{url}/v1/model").json()
    return [r["id"] for r in info["receivers"]], info["feature_params"]["psd_bins"] + 3


def bodies(kind: str, n: int, ids: list[str], n_features: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if kind == "features":
            feats = rng.normal(-120, 10, (len(ids), n_features))
            out.append({"features": [{"id": i, "features": f.tolist()} for i, f in zip(ids, feats, strict=False)]})
        elif kind == "power":
            power = rng.normal(-100, 10, len(ids))
            out.append({"features": [{"id": i, "power_dbm": float(p)} for i, p in zip(ids, power, strict=False)]})
        else:
            iq = (rng.standard_normal((len(ids), 2048)) + 1j * rng.standard_normal((len(ids), 2048))) * 0.01
            out.append(
                {
                    "iq": [
                        {
                            "id": i,
                            "datatype": "ci16_le",
                            "sample_rate_hz": 48000.0,
                            "center_frequency_hz": 145e6,
                            "samples_base64": base64.b64encode(
                                np.stack([x.real, x.imag], -1).ravel().__mul__(32767).astype("<i2").tobytes()
                            ).decode(),
                        }
                        for i, x in zip(ids, iq, strict=False)
                    ]
                }
            )
    return [json.dumps(b).encode() for b in out]


class _Connection:
    """A minimal keep-alive HTTP/1.1 client (one request at a time): far less CPU per request than a full
    client library, so that on a shared 2-core machine the figures describe the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> _Connection:
        host, port = url.removeprefix("http://").split(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def request(self, method: str, path: str, body: bytes = b"") -> int:
        self.writer.write(
            b"%s %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (method.encode(), path.encode(), len(body), body)
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = int(
            next(line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
        )
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
                status = await conn.request("POST", "/v1/localize", body)
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


def ratio(value: float, target: float, at_least: bool) -> str:
    """'(target ≥ T: ratio R)', R ≥ 1 when the target is met."""
    r = value / target if at_least else target / max(value, 1e-9)
    return f"(target {'≥' if at_least else '≤'} {target:g}: ratio {r:.2f})"


def python_client_figures(model_file: Path, n_requests: int, seconds: float) -> None:
    print("== client: Python (closed loop, one request at a time per connection)")
    rates, p50s = {}, {}
    for batching, extra in (("on", ()), ("off", ("--max-batch", "1"))):
        proc, url = start(model_file, *extra)
        try:
            ids, nf = model_shape(url)
            for kind in ("features", "power", "iq"):
                for conc in (1, 32):
                    if batching == "off" and (conc == 1 or kind == "power"):
                        continue
                    n = n_requests if kind != "iq" else n_requests // 4
                    # warm-up (not measured, other bodies so the answer cache stays cold): the first
                    # requests of a configuration pay for thread-pool start and allocations
                    run(load(url, bodies(kind, WARMUP_REQUESTS, ids, nf, seed=1), conc, seconds))
                    lat, rate, err = run(load(url, bodies(kind, n, ids, nf), conc, seconds))
                    ms = np.array(lat) * 1e3
                    p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
                    rates[(batching, kind, conc)], p50s[(kind, conc)] = rate, p50
                    print(
                        f"python  {kind:8s} concurrency {conc:2d} batching {batching:3s} n={len(ms):5d}  "
                        f"p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  {rate:7.0f} req/s  errors {err}"
                    )
                    if batching == "on" and kind == "features" and conc == 32:
                        print(
                            f"python  features at 32: {rate:.0f} req/s {ratio(rate, TARGET_RATE_C32, True)}, "
                            f"p99 {p99:.1f} ms {ratio(p99, TARGET_P99_C32_MS, False)}"
                        )
        finally:
            stop(proc)
    print(
        f"python  features p50 at 1: {p50s[('features', 1)]:.2f} ms "
        f"{ratio(p50s[('features', 1)], TARGET_P50_C1_MS, False)}; raw IQ p50 at 1: {p50s[('iq', 1)]:.2f} ms "
        f"{ratio(p50s[('iq', 1)], TARGET_IQ_P50_C1_MS, False)}"
    )
    for kind in ("features", "iq"):
        gain = rates[("on", kind, 32)] / rates[("off", kind, 32)]
        print(f"python  micro-batching gain at concurrency 32 ({kind}): {gain:.2f}×")


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wrk_command(url: str, script: str, args: list[str], connections: int, seconds: float) -> list[str]:
    """The wrk command line: one thread, --latency, a Lua script of bench/wrk with its arguments."""
    return [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "-s",
        str(WRK_DIR / script),
        url,
        "--",
        *args,
    ]


def wrk(url: str, script: str, args: list[str], connections: int, seconds: float) -> dict:
    """Run wrk (one thread) and parse its --latency report: p50/p75/p90/p99 in ms, rate, requests, non-2xx."""
    cmd = wrk_command(url, script, args, connections, seconds)
    return wrk_figures_of(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def wrk_figures_of(out: str) -> dict:
    """p50/p75/p90/p99 in ms, rate, requests and non-2xx of a wrk --latency report."""
    figures = {
        f"p{p}": float(v) * _UNITS_MS[u]
        for p, v, u in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\b", out, re.M)
    }
    figures["rate"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    figures["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    figures["non_2xx"] = int(non_2xx.group(1)) if non_2xx else 0
    return figures


def wrk_figures(model_file: Path, seconds: float) -> None:
    print("== client: wrk (1 thread, 32 connections, a new random body per request)")
    proc, url = start(model_file)
    try:
        ids, nf = model_shape(url)
        for kind in ("features", "power"):
            args = [kind, ",".join(ids), str(nf)]
            wrk(url, "localize.lua", args, 32, 5)  # warm-up, not measured
            f = wrk(url, "localize.lua", args, 32, seconds)
            print(
                f"wrk     {kind:8s} connections 32  n={f['requests']:6d}  p50 {f['p50']:6.2f} ms  "
                f"p90 {f['p90']:6.2f} ms  p99 {f['p99']:6.2f} ms  {f['rate']:7.0f} req/s  non-2xx {f['non_2xx']}"
            )
            if kind == "features":
                print(
                    f"wrk     features at 32: {f['rate']:.0f} req/s {ratio(f['rate'], TARGET_WRK_RATE, True)}, "
                    f"p99 {f['p99']:.1f} ms {ratio(f['p99'], TARGET_WRK_P99_MS, False)}"
                )
    finally:
        stop(proc)


MAP_CONNECTIONS = 32
MAP_BODIES = 500
TARGET_MAP_SHARE = 0.5  # of the plain model's req/s


def map_model(model_file: Path, out: Path) -> Path:
    """model_file with the scenario's physics map (nw-italy, the default 500 m grid) attached, α = 1, β = 0.5: a
    map-carrying model whose answers cost what a fitted map's do (same grid, same receivers)."""
    from heimdall.radiomap.fit import physics_map
    from heimdall.release.map_attach import attach_map, read_network
    from heimdall.scenario.builtin import load_scenario

    fit = {"alpha": 1.0, "beta": 0.5, "how": "the scenario's physics (bench)"}
    return attach_map(read_network(model_file, out), physics_map(load_scenario("nw-italy")), fit, out).path


def simulated_bodies(path: Path, n: int) -> Path:
    """n single-transmission bodies (one JSON per line) of simulated nw-italy transmissions, full feature vectors."""
    from heimdall.scenario.builtin import load_scenario
    from heimdall.sim.generator import build_world, simulate_block

    scenario = load_scenario("nw-italy")
    block = simulate_block(build_world(scenario), np.random.default_rng(7), 2 * n)
    ids = [r.id for r in scenario.receivers]
    lines = [
        json.dumps({"features": [{"id": rid, "features": row.tolist()} for rid, row in zip(ids, feats, strict=True)]})
        for feats in block["features"][:n]
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def answer_stages(map_file: Path, bodies: Path) -> None:
    """CPU (thread time, one thread, in this process) per map answer, stage by stage, as the service computes it:
    what each millisecond of the map's part of an answer is spent on (the network's part is the plain model's)."""
    import gc

    from heimdall.radiomap.hybrid import answer
    from heimdall.serve.hybrid_answers import MODE_PROBABILITY, REGION_PROBABILITIES, MapPart, map_input, map_members
    from heimdall.serve.inputs import to_model_inputs
    from heimdall.serve.runtime import from_bytes
    from heimdall.serve.schemas import LocalizeRequest

    model = from_bytes(map_file.read_bytes(), "bench", "1")
    served, frame = model.radio_map, model.frame
    rows = []
    for line in bodies.read_text().splitlines():
        req = LocalizeRequest.model_validate_json(line)
        feats, pos, labels = to_model_inputs(req, model, 2**20, 100.0)
        rows.append((feats, pos, map_input(model.params, model.receiver_ids, feats, labels, req.features)))
    feats = np.stack([r[0] for r in rows])
    mean, cov = model.predict(feats, np.stack([r[1] for r in rows]), np.ones(feats.shape[:2], np.float32))
    gc.collect()
    gc.freeze()  # as the service does once its model is loaded
    spent: dict[str, float] = {}

    def timed(stage: str, fn: Callable[[], Any]) -> Any:
        t0 = time.thread_time()
        out = fn()
        spent[stage] = spent.get(stage, 0.0) + time.thread_time() - t0
        return out

    radio_map, points, worst_m = served.radio_map, [0], [0.0, 0.0]
    for i, (_, _, inp) in enumerate(rows):
        post = timed(
            "posterior (kernel.localize)",
            lambda inp=inp: radio_map.localize(inp.snr_db, inp.noise_dbm, inp.present, inp.heard),
        )
        post = timed("hybrid product (hybrid.answer)", lambda p=post, i=i: answer(p, mean[i], cov[i], served.weights))
        timed("moments, MAP (box_summary)", lambda p=post: p.cov_m2)
        modes = timed("HPD levels, modes (hpd_levels, hpd_parts)", lambda p=post: p.modes(MODE_PROBABILITY))
        drawn = timed("50 %/95 % regions (contourpy)", lambda p=post: p.regions((0.5, 0.95)))
        area = timed("95 % area", lambda p=post: p.hpd_area_km2(0.95))
        regions = {key: drawn[float(key)] for key in REGION_PROBABILITIES}
        part = MapPart(post.mean_m, post.cov_m2, modes, regions, area)
        timed("modes, regions: lat/lon, JSON (map_members)", lambda p=part: map_members(p, served.lattice))
        rings = np.concatenate([ring for polygons in regions.values() for polygon in polygons for ring in polygon])
        points[0] += len(rings)
        lat_lon = timed("  of which lat/lon of the regions' points", lambda r=rings: served.lattice.to_geodetic(r))
        exact = timed("  (PROJ's exact conversion instead)", lambda r=rings: frame.to_geodetic(r))
        worst_m[0] = max(worst_m[0], float(np.abs(frame.to_local(*lat_lon.T) - rings).max()))
        worst_m[1] = max(worst_m[1], float(np.abs(lat_lon - exact).max()))
    n = len(rows)
    print(f"== one map answer, stage by stage (CPU, one thread, mean of {n} transmissions)")
    for stage, seconds in spent.items():
        print(f"answer  {stage:46s} {seconds / n * 1e3:6.3f} ms")
    total = sum(v for k, v in spent.items() if not k.startswith(" "))
    print(f"answer  {'all':46s} {total / n * 1e3:6.3f} ms  ({points[0] / n:.0f} region points per answer)")
    print(
        f"answer  the regions' points interpolated on the lattice of the map's cells: at most "
        f"{worst_m[0] * 1e3:.1f} mm east or north from where they were drawn, {worst_m[1]:.1e}° from PROJ's lat/lon"
    )


def map_figures(model_file: Path, seconds: float, tmp: Path) -> None:
    """wrk on the same simulated transmissions (no cache), the plain model against the same model carrying a map."""
    print(f"== client: wrk (1 thread, {MAP_CONNECTIONS} connections, {MAP_BODIES} simulated transmissions, no cache)")
    bodies = simulated_bodies(tmp / "bodies.jsonl", MAP_BODIES)
    map_file = map_model(model_file, tmp / "model-map.onnx")
    figures = {}
    for kind, path in (("plain", model_file), ("map", map_file)):
        proc, url = start(path, "--cache-size", "0")
        try:
            wrk(url, "bodies.lua", [str(bodies)], MAP_CONNECTIONS, 5)  # warm-up, not measured
            cmd = wrk_command(url, "bodies.lua", [str(bodies)], MAP_CONNECTIONS, seconds + 2)
            loader = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            time.sleep(1.0)  # the load first
            cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
            probe = wrk(url, "probe.lua", [], 1, seconds)
            cpu, wall = cpu_seconds(proc.pid) - cpu0, time.perf_counter() - t0
            f = figures[kind] = wrk_figures_of(loader.communicate()[0])
            print(
                f"wrk     {kind:5s} model  connections {MAP_CONNECTIONS}  n={f['requests']:6d}  "
                f"p50 {f['p50']:7.2f} ms  p99 {f['p99']:7.2f} ms  {f['rate']:7.0f} req/s  non-2xx {f['non_2xx']};  "
                f"/healthz meanwhile p50 {probe['p50']:.1f} ms, p99 {probe['p99']:.1f} ms "
                f"{ratio(probe['p99'], TARGET_HEALTHZ_P99_MS, False)}"
            )
            print(
                f"server  {kind:5s} model  CPU {cpu / wall:.2f} cores while measured, "
                f"{cpu / (f['rate'] * wall) * 1e3:.2f} ms CPU per request"
            )
        finally:
            stop(proc)
    plain, with_map = figures["plain"], figures["map"]
    share = with_map["rate"] / plain["rate"]
    print(
        f"wrk     map model: {share:.1%} of the plain model's req/s {ratio(share, TARGET_MAP_SHARE, True)}, "
        f"p99 {with_map['p99']:.1f} ms {ratio(with_map['p99'], TARGET_WRK_P99_MS, False)} "
        f"({with_map['p99'] / plain['p99']:.1f}× the plain model's)"
    )
    answer_stages(map_file, bodies)


def _batch_template(ids: list[str], n_features: int, n_tx: int) -> bytes:
    """A batch body with a %f slot for the first value of each transmission (filled anew for every request)."""
    rng = np.random.default_rng(7)
    slot = 12345.678  # a value no feature takes, replaced by the slot
    tx = []
    for _ in range(n_tx):
        feats = rng.normal(-120, 10, (len(ids), n_features)).round(3)
        feats[0, 0] = slot
        tx.append(
            json.dumps(
                {"features": [{"id": i, "features": f.tolist()} for i, f in zip(ids, feats, strict=False)]}
            ).replace(str(slot), "%f", 1)
        )
    return ('{"transmissions": [' + ", ".join(tx) + "]}").encode()


async def _python_saturation(url: str, template: bytes, seconds: float) -> tuple[list[float], int, int]:
    """(healthz latencies s, batches answered 200, batches refused) with the Python client playing both parts."""
    probe: list[float] = []
    outcome = {"ok": 0, "refused": 0}
    t_end = time.perf_counter() + seconds
    n_slots = template.count(b"%f")

    async def saturate() -> None:
        conn = await _Connection.open(url)
        try:
            while time.perf_counter() < t_end:
                body = template % tuple(random.uniform(-131, -129) for _ in range(n_slots))
                status = await conn.request("POST", "/v1/localize/batch", body)
                outcome["ok" if status == 200 else "refused"] += 1
        finally:
            conn.close()

    async def health() -> None:
        conn = await _Connection.open(url)
        try:
            await asyncio.sleep(1.0)  # the load first
            while time.perf_counter() < t_end:
                t0 = time.perf_counter()
                await conn.request("GET", "/healthz")
                probe.append(time.perf_counter() - t0)
                await asyncio.sleep(0.02)
        finally:
            conn.close()

    await asyncio.gather(health(), *(saturate() for _ in range(SATURATING_CONNECTIONS)))
    return probe, outcome["ok"], outcome["refused"]


def healthz_under_saturation(model_file: Path, seconds: float, use_wrk: bool) -> None:
    client = "wrk" if use_wrk else "python"
    print(
        f"== client: {client} ({SATURATING_CONNECTIONS} connections sending batches of {BATCH_TRANSMISSIONS} "
        f"distinct transmissions, and a /healthz probe every 20 ms)"
    )
    proc, url = start(model_file)
    try:
        ids, nf = model_shape(url)
        if use_wrk:
            loader = subprocess.Popen(
                [
                    "wrk",
                    "-t1",
                    f"-c{SATURATING_CONNECTIONS}",
                    f"-d{seconds + 2:g}s",
                    "--latency",
                    "-s",
                    str(WRK_DIR / "batch.lua"),
                    url,
                    "--",
                    ",".join(ids),
                    str(nf),
                    str(BATCH_TRANSMISSIONS),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(2.0)  # the load first
            f = wrk(url, "probe.lua", [], 1, seconds)
            load_out = loader.communicate()[0]
            batches = int(re.search(r"(\d+) requests in", load_out).group(1))
            refused = re.search(r"Non-2xx or 3xx responses: (\d+)", load_out)
            refused = int(refused.group(1)) if refused else 0
            p50, p99, n = f["p50"], f["p99"], f["requests"]
        else:
            lat, ok, refused = run(_python_saturation(url, _batch_template(ids, nf, BATCH_TRANSMISSIONS), seconds))
            batches = ok + refused
            p50, p99, n = np.percentile(lat, 50) * 1e3, np.percentile(lat, 99) * 1e3, len(lat)
        print(f"{client:7s} batches sent {batches}, answered {batches - refused}, refused {refused} (429: admission)")
        print(
            f"{client:7s} /healthz under saturation n={n}: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
            f"{ratio(p99, TARGET_HEALTHZ_P99_MS, False)}"
        )
    finally:
        stop(proc)


def _memory_mib(pid: int) -> tuple[float, float]:
    """(resident, peak resident) MiB of a process (Linux /proc)."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def rss_under_oversized_chunked_body(model_file: Path) -> None:
    print(
        f"== client: python raw socket (a chunked body of {4 * BODY_LIMIT_MB} MiB against the {BODY_LIMIT_MB} MiB "
        "limit, on a fresh server)"
    )
    proc, url = start(model_file, "--max-body-mb", str(BODY_LIMIT_MB))
    try:
        ids, nf = model_shape(url)
        run(load(url, bodies("features", WARMUP_REQUESTS, ids, nf, seed=1), 4, 30))  # idle = after some work
        idle, _ = _memory_mib(proc.pid)
        host, port = url.removeprefix("http://").split(":")
        chunk = b"[" + b"1," * (512 * 1024)  # 1 MiB of JSON that would parse into a long list
        sent, answer = 0, b""
        with socket.create_connection((host, int(port)), timeout=60) as s:
            s.sendall(
                b"POST /v1/localize HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            try:
                while sent < 4 * BODY_LIMIT_MB * 2**20 and not answer:
                    s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sent += len(chunk)
                    s.setblocking(False)
                    try:
                        answer = s.recv(65536)
                    except BlockingIOError:
                        pass
                    s.setblocking(True)
                if not answer:
                    s.sendall(b"0\r\n\r\n")  # the whole body sent: a server that waited for it answers now
            except OSError:
                pass  # the server may close while the rest is on its way
            answer = answer or s.recv(65536)
        _, peak = _memory_mib(proc.pid)
        status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
        target = RSS_TARGET_FACTOR * idle + BODY_LIMIT_MB
        print(
            f"python  answer '{status}' after {sent / 2**20:.0f} MiB sent; RSS idle {idle:.0f} MiB, "
            f"peak {peak:.0f} MiB (target ≤ {RSS_TARGET_FACTOR:g} × idle + {BODY_LIMIT_MB} = {target:.0f} MiB: "
            f"ratio {target / peak:.2f})"
        )
    finally:
        stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-file", type=Path)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--skip-python-client", action="store_true", help="only the wrk, saturation and memory parts")
    ap.add_argument("--map", action="store_true", help="only the radio map's part: a map-carrying model vs plain (wrk)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_file = args.model_file
        if model_file is None:
            from heimdall.release.export import export_checkpoint
            from heimdall.scenario.builtin import load_scenario
            from heimdall.train.task import untrained_checkpoint

            model_file = export_checkpoint(
                untrained_checkpoint(load_scenario("nw-italy"), Path(tmp) / "random.ckpt"), Path(tmp) / "model.onnx"
            ).path
        if args.map:
            map_figures(model_file, args.seconds, Path(tmp))
            return
        if not args.skip_python_client:
            python_client_figures(model_file, args.requests, args.seconds)
        use_wrk = shutil.which("wrk") is not None
        if use_wrk:
            wrk_figures(model_file, args.seconds)
            map_figures(model_file, args.seconds, Path(tmp))
        else:
            print(
                "== wrk is not installed (apt-get install wrk): no open-loop tail figures; the Python client plays "
                "the saturation part"
            )
        healthz_under_saturation(model_file, args.seconds, use_wrk)
        rss_under_oversized_chunked_body(model_file)


if __name__ == "__main__":
    main()
