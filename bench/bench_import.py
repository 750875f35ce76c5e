"""`heimdall import` of a power-reading table: 100,000 rows (10,000 transmissions × 10 receivers) by default.

    python bench/bench_import.py                  # CSV, 10,000 transmissions × 10 receivers
    python bench/bench_import.py --format jsonl   # the same as JSON Lines

Writes a random table (receivers in a ~3 km campus, two of them on one roof, two reading in uncalibrated dB; a random
fraction of the readings not heard or not recording; 80 % of the transmissions labelled), then times the whole
`heimdall import` command (parse, checks, features, HDF5 store, report) in this process and prints the seconds,
rows/s and the ratio to the target (100,000 rows in 30 s on 2 cores), and the peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from heimdall.cli import main as heimdall

TARGET_S = 30.0
TARGET_ROWS = 100_000


def write_table(path: Path, n_tx: int, n_rx: int, fmt: str, seed: int = 0) -> int:
    """A random power table of n_tx transmissions × n_rx receivers at `path`; returns its rows."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    rx_lat = 45.07 + rng.uniform(-0.015, 0.015, n_rx)
    rx_lon = 7.68 + rng.uniform(-0.02, 0.02, n_rx)
    rx_lat[1], rx_lon[1] = rx_lat[0], rx_lon[0]  # two receivers on one roof
    tx_lat = 45.07 + rng.uniform(-0.015, 0.015, n_tx)
    tx_lon = 7.68 + rng.uniform(-0.02, 0.02, n_tx)
    d_m = np.hypot((tx_lat[:, None] - rx_lat) * 111_000, (tx_lon[:, None] - rx_lon) * 78_000) + 10.0
    power = -20.0 - 30.0 * np.log10(d_m) + rng.normal(0, 6, d_m.shape)  # [T, R] dBm
    floor = np.full(n_rx, -115.0)
    u = rng.random(power.shape)
    status = np.where(u < 0.05, "not_recording", np.where(power <= floor, "not_heard", "heard"))
    uncalibrated = np.zeros(n_rx, bool)
    uncalibrated[-2:] = True  # these two read in their own dB (an offset the map learns)
    t = np.repeat(np.arange(n_tx), n_rx)
    r = np.tile(np.arange(n_rx), n_tx)
    reading = np.where(status.ravel() == "heard", np.round(power.ravel(), 2), np.nan)
    labelled = rng.random(n_tx) < 0.8
    table = pd.DataFrame(
        {
            "transmission": np.char.add("tx", t.astype(str)),
            "time": 1_777_000_000 + t * 5,
            "receiver": np.char.add("rx", r.astype(str)),
            "receiver_lat": rx_lat[r],
            "receiver_lon": rx_lon[r],
            "power_dbm": np.where(uncalibrated[r], np.nan, reading),
            "power_db": np.where(uncalibrated[r], reading + 120.0, np.nan),
            "floor_dbm": np.where(uncalibrated[r], np.nan, floor[r]),
            "floor_db": np.where(uncalibrated[r], floor[r] + 120.0, np.nan),
            "status": status.ravel(),
            "lat": np.where(labelled[t], tx_lat[t], np.nan),
            "lon": np.where(labelled[t], tx_lon[t], np.nan),
            "frequency_hz": 433.92e6,
        }
    )
    if fmt == "csv":
        table.to_csv(path, index=False)
    else:
        with path.open("w") as f:
            for row in table.to_dict("records"):
                f.write(json.dumps({k: v for k, v in row.items() if not (isinstance(v, float) and np.isnan(v))}))
                f.write("\n")
    return len(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transmissions", type=int, default=10_000)
    ap.add_argument("--receivers", type=int, default=10)
    ap.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / f"readings.{args.format}"
        rows = write_table(table, args.transmissions, args.receivers, args.format)
        print(f"table: {rows:,} rows, {table.stat().st_size / 1e6:.1f} MB of {args.format}")
        t0 = time.perf_counter()
        code = heimdall(["import", str(table), "--out", str(Path(tmp) / "store"), "--quiet"])
        seconds = time.perf_counter() - t0
        if code != 0:
            raise SystemExit(f"heimdall import failed ({code})")
        report = json.loads((Path(tmp) / "store" / "import-report.json").read_text())
    scaled = seconds * TARGET_ROWS / rows
    print(
        f"heimdall import: {rows:,} rows in {seconds:.1f} s = {rows / seconds:,.0f} rows/s; stored "
        f"{sum(report['splits'].values()):,} transmissions ({report['splits']})"
    )
    print(
        f"100,000 rows: {scaled:.1f} s {'measured' if rows == TARGET_ROWS else 'scaled'} "
        f"(target {TARGET_S:.0f} s: ratio {TARGET_S / scaled:.2f})"
    )
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
