"""Generate a simulated training store: train/val/test splits, in parallel, reproducibly.

Each split is generated as a sequence of blocks of candidate transmissions; block b of split s in shard
i/N draws from ``SeedSequence(seed, spawn_key=(s, i, N, b))`` and the blocks are written in order, so the
output is byte-identical whatever the number of worker processes. Different splits and shards use
different keys, so they never share a transmission.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from threadpoolctl import threadpool_limits

from heimdall.datasets.spec import OUTPUT_FORMATS, SPLIT_MODES, DatasetSpec
from heimdall.datasets.splits import SPLITS, spatial_split_of
from heimdall.datasets.store import StoreWriter, receiver_table, split_filename, store_attrs
from heimdall.errors import DatasetError
from heimdall.scenario.domain import Scenario
from heimdall.sim.generator import World, build_world, simulate_block
from heimdall.sim.signals import EMISSION_CODES

if TYPE_CHECKING:
    from multiprocessing.pool import Pool

    from heimdall.datasets.sigmf_writer import SigMFSplitWriter

BLOCK_CANDIDATES = 512


@dataclass
class SplitSummary:
    """What one split of a generated dataset holds and where."""

    split: str
    path: Path
    n_samples: int
    heard_fraction: np.ndarray  # float [R]
    mean_heard: float
    emissions: dict[str, int]
    n_iq: int


@dataclass
class DatasetSummary:
    """What a generation wrote: the folder, its splits and the time it took (s)."""

    out_dir: Path
    splits: list[SplitSummary] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_samples(self) -> int:
        """Transmissions over all splits."""
        return sum(s.n_samples for s in self.splits)


# --- worker side: the world is built once per process -----------------------------------------------

_WORLD: World | None = None


def _init_worker(scenario: Scenario) -> None:
    global _WORLD
    threadpool_limits(1)
    _WORLD = build_world(scenario)


def _keep_for(spec: DatasetSpec, split_index: int) -> Callable[[np.ndarray], np.ndarray] | None:
    if spec.split_mode == "random":
        return None
    return lambda pos: spatial_split_of(pos, spec.seed, spec.spatial_block_m, spec.fractions) == split_index


def _run_block(spec: DatasetSpec, split_index: int, block: int, max_iq: int) -> dict[str, np.ndarray]:
    i, n = spec.shard
    seq = np.random.SeedSequence(entropy=spec.seed, spawn_key=(split_index, i, n, block))
    rng = np.random.Generator(np.random.PCG64(seq))
    assert _WORLD is not None, "the pool's initializer builds the world"
    return simulate_block(_WORLD, rng, BLOCK_CANDIDATES, max_iq, _keep_for(spec, split_index))


# --- orchestration -------------------------------------------------------------------------------------


def dataset_fingerprint(paths: list[Path]) -> str:
    """sha256 over the bytes of the given store files (the dataset hash recorded by training runs)."""
    h = hashlib.sha256()
    for p in sorted(paths):
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def generate_dataset(
    scenario: Scenario,
    out_dir: str | Path,
    spec: DatasetSpec,
    workers: int = 1,
    on_progress: Callable[[str, int, int], None] | None = None,
    output: str = "store",
    sigmf_datatype: str = "cf32_le",
) -> DatasetSummary:
    """Simulate and write every split of `spec` into out_dir; returns what was written.

    output "store": one HDF5 store file per split; "sigmf": one folder of SigMF collections per split
    (heimdall.datasets.sigmf_writer), the same transmissions as the store for the same spec.
    on_progress(split, done, total) is called after each block. Existing complete outputs are replaced;
    an interruption leaves only ``*.partial`` files, which are removed.
    """
    if output not in OUTPUT_FORMATS:
        raise DatasetError(f"format: expected one of {', '.join(OUTPUT_FORMATS)}, got {output!r}")
    if spec.n_transmissions < 1:
        raise DatasetError(f"n_transmissions: expected ≥ 1, got {spec.n_transmissions}")
    if spec.split_mode not in SPLIT_MODES:
        raise DatasetError(f"split_mode: expected one of {', '.join(SPLIT_MODES)}, got {spec.split_mode!r}")
    i, n = spec.shard
    if not (n >= 1 and 0 <= i < n):
        raise DatasetError(f"shard: expected i/N with 0 ≤ i < N, got {i}/{n}")
    out = Path(out_dir)
    t0 = time.perf_counter()
    world = build_world(scenario)
    summary = DatasetSummary(out_dir=out)
    # one BLAS thread per process: the parallelism is the processes (threads would oversubscribe the cores)
    with threadpool_limits(1):
        pool = mp.get_context("fork").Pool(workers, _init_worker, (scenario,)) if workers > 1 else None
        global _WORLD
        _WORLD = world
        try:
            for split_index, split in enumerate(SPLITS):
                count = spec.split_counts()[split]
                if count == 0:
                    continue
                writer = _writer(scenario, world, spec, out, split, output, sigmf_datatype)
                summary.splits.append(
                    _generate_split(
                        scenario,
                        world,
                        spec,
                        writer,
                        split_index,
                        split,
                        count,
                        pool,
                        workers,
                        on_progress,
                        iq_per_split=count if output == "sigmf" else spec.iq_per_split,
                    )
                )
        finally:
            _WORLD = None
            if pool is not None:
                pool.terminate()
                pool.join()
    summary.seconds = time.perf_counter() - t0
    return summary


def _writer(
    scenario: Scenario, world: World, spec: DatasetSpec, out: Path, split: str, output: str, sigmf_datatype: str
) -> StoreWriter | SigMFSplitWriter:
    """Where a split goes: a store file, or a folder of SigMF collections."""
    if output == "sigmf":
        from heimdall.datasets.sigmf_writer import SigMFSplitWriter

        return SigMFSplitWriter(out / split_filename(split, spec.shard).removesuffix(".h5"), scenario, sigmf_datatype)
    attrs = store_attrs(
        scenario,
        world.params,
        split,
        shard=f"{spec.shard[0]}/{spec.shard[1]}",
        seed=spec.seed,
        split_mode=spec.split_mode,
    )
    return StoreWriter(out / split_filename(split, spec.shard), attrs, receiver_table(scenario), world.gain_offset_db)


def _generate_split(
    scenario: Scenario,
    world: World,
    spec: DatasetSpec,
    writer: StoreWriter | SigMFSplitWriter,
    split_index: int,
    split: str,
    count: int,
    pool: Pool | None,
    workers: int,
    on_progress: Callable[[str, int, int], None] | None,
    iq_per_split: int,
) -> SplitSummary:
    """Fill one writer (store file or SigMF folder) with `count` transmissions, the first iq_per_split with IQ."""
    try:
        pending: deque = deque()
        next_block, candidates, iq_asked = 0, 0, 0
        heard = np.zeros(world.n_rx)
        emissions = np.zeros(len(EMISSION_CODES), np.int64)
        while writer.n_samples < count:
            while len(pending) < max(1, 2 * workers):
                # every transmission's IQ when all are wanted; else the first iq_per_split asked for
                max_iq = BLOCK_CANDIDATES if iq_per_split >= count else max(0, iq_per_split - iq_asked)
                iq_asked += max_iq
                args = (spec, split_index, next_block, max_iq)
                pending.append(pool.apply_async(_run_block, args) if pool else _run_block(*args))
                next_block += 1
            res = pending.popleft()
            block = res.get() if pool else res
            candidates += BLOCK_CANDIDATES
            take = min(len(block["features"]), count - writer.n_samples)
            if take == 0 and next_block > 200 and writer.n_samples == 0:
                raise DatasetError(
                    f"scenario {scenario.name!r}: no transmission heard by any receiver in {candidates} candidates; "
                    "check transmitter power, area and receiver heights"
                )
            room_iq = iq_per_split - writer.n_iq
            block = {k: (v[: min(take, room_iq)] if k == "iq" else v[:take]) for k, v in block.items()}
            block["tx_lat_lon"] = scenario.frame.to_geodetic(block["tx_position_m"])
            writer.append(block)
            heard += block["mask"].sum(0)
            emissions += np.bincount(block["emission"], minlength=len(EMISSION_CODES))
            if on_progress:
                on_progress(split, writer.n_samples, count)
        path = writer.commit()
    except BaseException:
        writer.abort()
        raise
    return SplitSummary(
        split=split,
        path=path,
        n_samples=count,
        heard_fraction=heard / count,
        mean_heard=float(heard.sum() / count),
        emissions={name: int(emissions[c]) for name, c in EMISSION_CODES.items()},
        n_iq=writer.n_iq,
    )
