"""Simulation + feature throughput of the default scenario, and the time to write a dataset.

    python bench/bench_simulate.py            # 20,000 transmissions to a temporary folder
    python bench/bench_simulate.py --n 100000 # the full default dataset

Prints transmissions/s of IQ synthesis + features in one process, of the whole `simulate` pipeline
(workers + HDF5 writing) and the ratio to the targets (1,000 transmissions/s on 2 cores; 100,000 in 120 s),
and the peak resident memory of the main process and of the workers.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import numpy as np
from threadpoolctl import threadpool_limits

from heimdall.datasets.generate import generate_dataset
from heimdall.datasets.spec import DatasetSpec
from heimdall.scenario.builtin import load_scenario
from heimdall.sim.generator import build_world, simulate_block

TARGET_TX_PER_S = 1000.0
TARGET_100K_S = 120.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="nw-italy")
    ap.add_argument("--n", type=int, default=20_000, help="transmissions for the end-to-end run")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of the single-process measurement")
    args = ap.parse_args()

    scenario = load_scenario(args.scenario)
    world = build_world(scenario)
    rng = np.random.default_rng(0)
    with threadpool_limits(1):
        simulate_block(world, rng, 64)  # warm-up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            n += len(simulate_block(world, rng, 512)["features"])
        single = n / (time.perf_counter() - t0)
    print(
        f"scenario {scenario.name}: {world.n_rx} receivers, window {world.params.window_samples} samples "
        f"at {world.params.sample_rate_hz / 1e3:g} kHz"
    )
    print(f"IQ synthesis + features, 1 process: {single:8.0f} transmissions/s")

    with tempfile.TemporaryDirectory() as tmp:
        summary = generate_dataset(scenario, tmp, DatasetSpec(n_transmissions=args.n, seed=0), workers=args.workers)
    rate = summary.n_samples / summary.seconds
    print(
        f"simulate (workers={args.workers}, HDF5 written): {summary.n_samples} in {summary.seconds:.1f} s = "
        f"{rate:.0f} transmissions/s  (target {TARGET_TX_PER_S:.0f}/s: ratio {rate / TARGET_TX_PER_S:.2f})"
    )
    t100k = 100_000 / rate
    print(
        f"100,000-transmission dataset: {t100k:.0f} s {'measured' if args.n == 100_000 else 'extrapolated'} "
        f"(target {TARGET_100K_S:.0f} s: ratio {TARGET_100K_S / t100k:.2f})"
    )
    main_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak memory: main {main_mb:.0f} MiB, largest worker {child_mb:.0f} MiB")


if __name__ == "__main__":
    main()
