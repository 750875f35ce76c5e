"""A source of transmissions for `heimdall import`, and the one writer of a store from any source.

A source (SigMF collections: heimdall.datasets.importer; power-reading tables: heimdall.datasets.power_import) reads
and checks its input, settles the final scenario (its receiver table) and the feature parameters, plans which split
each transmission goes to, then yields the transmissions of a split as `Block`s in the store's layout. A bad file or
row is a RecordingError naming the file, the field (or line and column) and what was expected; with
ImportOptions.skip_invalid the source reports it as a `Skipped` item instead and leaves that transmission out.

`write_store` does the rest, the same for every source: one StoreWriter per split, transmissions heard by fewer than
MIN_HEARD_STORED receivers left out (reported), every file written as ``.partial`` and all renamed only after the
whole import succeeded (any error aborts them all: nothing half-written is left), files of an older store removed
only after that, and the import report (REPORT_NAME) beside the store.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from heimdall.atomic import atomic_write_text, fsync_dir
from heimdall.budget import Progress
from heimdall.datasets.spec import ImportOptions
from heimdall.datasets.splits import SPLITS, UNLABELLED
from heimdall.datasets.store import StoreWriter, receiver_table, store_attrs
from heimdall.errors import DatasetError, NothingImported, RecordingError
from heimdall.features import MIN_HEARD_STORED, FeatureParams, heard_class
from heimdall.scenario.domain import Scenario

REPORT_NAME = "import-report.json"


@dataclass(frozen=True)
class Skipped:
    """A transmission (collection, or a table's rows) left out, and why (file and field as in the error)."""

    collection: str
    file: str
    field: str
    message: str

    @classmethod
    def of(cls, item: str | Path, exc: RecordingError) -> Skipped:
        """The skipped item `item` (a collection's path, a transmission id) for the error `exc`."""
        return cls(collection=str(item), file=exc.path, field=exc.field, message=exc.message)


@dataclass
class ImportSummary:
    """What an import wrote (transmissions per split) and what it skipped, and why."""

    out_dir: Path
    n_collections: int = 0  # transmissions read (SigMF collections, or a table's transmission ids)
    splits: dict[str, int] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    not_localisable: list[Skipped] = field(default_factory=list)
    by_receivers_heard: dict[str, int] = field(default_factory=dict)  # stored transmissions per HEARD_CLASSES
    new_receivers: list[str] = field(default_factory=list)
    resampled: int = 0
    retuned: int = 0
    n_rows: int = 0  # rows of a power-reading table (0 for SigMF)
    seconds: float = 0.0
    report: Path | None = None

    def to_json(self) -> str:
        """The summary as JSON text (the import report)."""
        d = dataclasses.asdict(self)
        d["out_dir"], d["report"] = str(self.out_dir), str(self.report) if self.report else None
        return json.dumps(d, indent=2)


@dataclass(frozen=True)
class Block:
    """Transmissions of one split in the store's layout (n transmissions, R receivers of the final scenario)."""

    names: np.ndarray  # object [n]: collection name or transmission id
    origins: np.ndarray  # object [n]: where each came from, for reports (a collection's file; table file and id)
    features: np.ndarray  # float32 [n, R, F]
    present: np.ndarray  # bool [n, R]: the receiver was recording
    heard: np.ndarray  # bool [n, R]: present and it heard the transmission
    tx_lat_lon: np.ndarray  # float64 [n, 2] degrees, NaN where unlabelled
    datetime: np.ndarray  # object [n]: ISO 8601 text ("" unknown)
    frequency_hz: np.ndarray  # float64 [n]
    iq: np.ndarray | None = None  # complex64 [n, R, window]: conformed IQ where the source has it


class Source(Protocol):
    """What `write_store` needs of a source, once it has read and checked its input."""

    description: str  # provenance written to every store file (attribute `source`)
    item: str  # what one transmission is called in messages: "collection", "transmission"
    unheard: str  # why a transmission heard by no receiver is not localisable (the report's message)
    scenario: Scenario  # the final scenario: its receivers are the store's receiver table
    params: FeatureParams  # the store's feature parameters

    @property
    def power_calibrated(self) -> np.ndarray | None:
        """Bool [R]: False where a receiver's power is in its own dB (None: all in dBm, the column not written)."""

    def planned(self, split: str) -> int:
        """Transmissions planned for `split` (0: the split is not written)."""

    def blocks(self, split: str, summary: ImportSummary) -> Iterator[Block]:
        """The transmissions of `split`, a block at a time; with skip_invalid a bad one goes to summary.skipped."""


def prepare_out(src: Path, out: Path, options: ImportOptions) -> list[Path]:
    """Check the options and where the store goes (outside an input folder, not onto an input file, no store there
    unless overwrite); returns an older store's files (removed once the new one is complete)."""
    if not 0 <= options.match_tolerance_m <= 100_000:
        raise DatasetError(f"match tolerance {options.match_tolerance_m} m: expected 0 to 100000 m")
    if out.resolve() == src.resolve() or (src.is_dir() and src.resolve() in out.resolve().parents):
        what = "folder" if src.is_dir() else "file"
        raise DatasetError(f"{out}: the store must be written outside the input {what} {src} (it is only read)")
    existing = sorted(out.glob("*.h5")) if out.is_dir() else []
    if existing and not options.overwrite:
        raise DatasetError(f"{out}: already holds a store ({existing[0].name}); choose another folder or overwrite")
    return existing


def write_store(
    source: Source,
    summary: ImportSummary,
    existing: list[Path],
    options: ImportOptions,
    what: Path,
    started: float,
    on_progress: Progress | None = None,
) -> ImportSummary:
    """Write the source's transmissions into a store in summary.out_dir, all files or none; `what` names the input
    in the error when nothing could be imported, `started` (time.perf_counter) when the import began.
    on_progress("import", done, total)."""
    out = summary.out_dir
    writers: dict[str, StoreWriter] = {}
    total = sum(source.planned(s) for s in (*SPLITS, UNLABELLED))
    done = 0
    try:
        for split in (*SPLITS, UNLABELLED):
            if not source.planned(split):
                continue
            attrs = store_attrs(
                source.scenario,
                source.params,
                split,
                shard="0/1",
                seed=options.seed,
                split_mode="import",
                source=source.description,
            )
            table = receiver_table(source.scenario)
            if source.power_calibrated is not None:
                table["power_calibrated"] = np.asarray(source.power_calibrated, bool)
            writers[split] = w = StoreWriter(out / f"{split}.h5", attrs, table)
            for block in source.blocks(split, summary):
                _append(w, block, source, summary, options.iq_per_split)
                done += len(block.names)
                if on_progress:
                    on_progress("import", min(done, total), total)
            summary.splits[split] = w.n_samples
        if not any(summary.splits.values()):
            raise NothingImported(
                f"{what}: no {source.item} could be imported ({len(summary.skipped)} invalid, "
                f"{len(summary.not_localisable)} heard by no receiver); see {out / REPORT_NAME}",
                summary,
            )
    except BaseException as exc:
        for w in writers.values():
            w.abort()
        if isinstance(exc, NothingImported):
            _write_report(summary, started)
        raise
    committed: set[Path] = set()
    try:
        for w in writers.values():
            committed.add(w.commit())
    except BaseException:
        for w in writers.values():
            if w.path not in committed:
                w.abort()
        raise
    for stale in set(existing) - committed:  # an older store's files that no new file replaced
        stale.unlink()
    fsync_dir(out)
    _write_report(summary, started)
    return summary


def _write_report(summary: ImportSummary, t0: float) -> None:
    summary.seconds = time.perf_counter() - t0
    summary.report = summary.out_dir / REPORT_NAME
    atomic_write_text(summary.report, summary.to_json())


def _append(w: StoreWriter, b: Block, source: Source, summary: ImportSummary, iq_per_split: int) -> None:
    """Append the transmissions of a block heard by at least MIN_HEARD_STORED receivers; note the others."""
    n_heard = b.heard.sum(axis=1)
    keep = n_heard >= MIN_HEARD_STORED
    for origin in b.origins[~keep]:
        summary.not_localisable.append(
            Skipped(collection=str(origin), file=str(origin), field="(signal)", message=source.unheard)
        )
    if not keep.any():
        return
    classes, counts = np.unique(heard_class(n_heard[keep]), return_counts=True)
    for cls, count in zip(classes.tolist(), counts.tolist(), strict=True):
        summary.by_receivers_heard[cls] = summary.by_receivers_heard.get(cls, 0) + count
    lat_lon = b.tx_lat_lon[keep]
    en = source.scenario.frame.to_local(lat_lon[:, 0], lat_lon[:, 1]).reshape(-1, 2)
    block = {
        "features": b.features[keep],
        "mask": b.heard[keep],
        "present": b.present[keep],
        "tx_lat_lon": lat_lon,
        "tx_position_m": np.where(np.isfinite(lat_lon), en, np.nan),
        "meta/collection": b.names[keep],
        "meta/datetime": b.datetime[keep],
        "meta/frequency_hz": b.frequency_hz[keep],
    }
    room = max(0, iq_per_split - w.n_iq)
    if room and b.iq is not None:
        block["iq"] = b.iq[keep][:room]
    w.append(block)
