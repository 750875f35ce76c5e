"""`heimdall import`: a folder of SigMF collections → a training store.

Two passes. The first reads and checks every collection's metadata and matches its recordings to
receivers (by `heimdall:receiver_id`, else by position within a tolerance; receivers not in the scenario
join the receiver table). The second reads the samples, brings each recording to the extractor's window
(heimdall.datasets.conform) and computes features with the same function as the simulator.

Splits: a collection under a folder named ``train``, ``val`` or ``test`` (or a shard ``train-00000-of-00004``)
keeps that split; any other labelled collection is assigned by a seeded hash of its path; unlabelled
collections go to the ``unlabelled`` split (for prediction only). Every store file is written as
``.partial`` and all are renamed only after the whole import succeeded; files of an older store are removed
only after that, when no new file replaced them. The input folder is only read, and no file outside it is
(links leading out are refused). Every malformed collection is one RecordingError (with --skip-invalid:
one reported, skipped item); the receiver table is bounded (scenario.MAX_RECEIVERS).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from heimdall.atomic import atomic_write_text, fsync_dir
from heimdall.datasets.conform import check_recording, recording_features
from heimdall.datasets.receivers import GEOLOCATION_FIELD, RECEIVER_ID_FIELD, resolve_recordings
from heimdall.datasets.sigmf_files import Collection, Recording, find_collections, read_collection
from heimdall.datasets.spec import ImportOptions
from heimdall.datasets.splits import SPLITS, UNLABELLED, split_of_path
from heimdall.datasets.store import StoreWriter, receiver_table, store_attrs
from heimdall.errors import DatasetError, NothingImported, RecordingError
from heimdall.features import MIN_HEARD_STORED, FeatureParams, heard, heard_class
from heimdall.scenario.domain import MAX_RECEIVERS, MIN_RECEIVER_SEPARATION_M, Receiver, Scenario
from heimdall.scenario.schema import scenario_from_dict

REPORT_NAME = "import-report.json"
BLOCK = 256


@dataclass(frozen=True)
class Skipped:
    """A collection left out, and why (file and field as in the error)."""

    collection: str
    file: str
    field: str
    message: str


@dataclass
class ImportSummary:
    """What an import wrote (transmissions per split) and what it skipped, and why."""

    out_dir: Path
    n_collections: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    not_localisable: list[Skipped] = field(default_factory=list)
    by_receivers_heard: dict[str, int] = field(default_factory=dict)  # stored transmissions per HEARD_CLASSES
    new_receivers: list[str] = field(default_factory=list)
    resampled: int = 0
    retuned: int = 0
    seconds: float = 0.0
    report: Path | None = None

    def to_json(self) -> str:
        """The summary as JSON text (the import report)."""
        d = dataclasses.asdict(self)
        d["out_dir"], d["report"] = str(self.out_dir), str(self.report) if self.report else None
        return json.dumps(d, indent=2)


@dataclass(frozen=True)
class _Planned:
    """A checked collection: its split and the receiver index of each recording."""

    collection: Collection
    split: str
    receiver_index: tuple[int, ...]


class _ReceiverTable:
    """The scenario's receivers plus those met in the recordings; positions in the base scenario's frame."""

    def __init__(self, scenario: Scenario, tolerance_m: float, new_height_m: float) -> None:
        self.base = scenario
        self.receivers = list(scenario.receivers)
        self.tolerance_m = tolerance_m
        self.new_height_m = new_height_m
        self._en = [scenario.frame.to_local(r.lat, r.lon).reshape(2) for r in self.receivers]
        self.new_ids: list[str] = []

    def match(self, col: Collection) -> tuple[int, ...]:
        """Receiver index of each recording (heimdall.datasets.receivers); receivers new to the table are added
        only if all match."""
        rows, en = resolve_recordings(
            col.recordings, self.base.frame, [r.id for r in self.receivers], np.asarray(self._en), self.tolerance_m
        )
        receivers, positions = list(self.receivers), list(self._en)
        added: list[str] = []
        index = rows.tolist()
        for i, rec in enumerate(col.recordings):
            if index[i] < 0:
                new_id = rec.receiver_id or f"rx_{rec.lat:.4f}_{rec.lon:.4f}"
                field = GEOLOCATION_FIELD if rec.receiver_id is None else RECEIVER_ID_FIELD
                self._check_room(rec, field, new_id, en[i], receivers, positions)
                receivers.append(
                    Receiver(id=new_id, name=new_id, lat=rec.lat, lon=rec.lon, antenna_height_m=self.new_height_m)
                )
                positions.append(en[i])
                added.append(new_id)
                index[i] = len(receivers) - 1
        self.receivers, self._en = receivers, positions
        self.new_ids += added
        return tuple(index)

    @staticmethod
    def _check_room(
        rec: Recording, field: str, new_id: str, en_m: np.ndarray, receivers: list[Receiver], positions: list
    ) -> None:
        """RecordingError unless a receiver at en_m [2] named new_id can join the table (see scenario rules)."""
        if len(receivers) >= MAX_RECEIVERS:
            raise RecordingError(
                rec.meta_path,
                field,
                f"matches none of the {len(receivers)} receivers of the table, which is full (at most {MAX_RECEIVERS})",
            )
        if new_id in (r.id for r in receivers):
            raise RecordingError(
                rec.meta_path, field, f"receiver {new_id!r} is already in the table at another position"
            )
        d = np.linalg.norm(np.asarray(positions) - en_m, axis=1)
        k = int(np.argmin(d))
        if d[k] < MIN_RECEIVER_SEPARATION_M:
            raise RecordingError(
                rec.meta_path,
                field,
                f"{d[k]:.0f} m from receiver {receivers[k].id!r}: closer than "
                f"{MIN_RECEIVER_SEPARATION_M:.0f} m but beyond the match "
                "tolerance",
            )

    def scenario(self) -> Scenario:
        """The base scenario, with the new receivers when there are any (validated)."""
        if not self.new_ids:
            return self.base
        d = dataclasses.replace(self.base, name=f"{self.base.name}-imported", receivers=tuple(self.receivers)).to_dict()
        return scenario_from_dict(d)


def _skip(col_path: Path, exc: RecordingError) -> Skipped:
    return Skipped(collection=str(col_path), file=exc.path, field=exc.field, message=exc.message)


def _row(plan: _Planned, scenario: Scenario, p: FeatureParams, n_rx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features float32 [R, F], present bool [R], iq complex64 [R, window] of one collection."""
    feats, windows = recording_features(
        list(plan.collection.recordings), p, scenario.frequency_hz, scenario.receiver_chain.full_scale_dbm
    )
    out = np.zeros((n_rx, p.n_features), np.float32)
    present = np.zeros(n_rx, bool)
    iq = np.zeros((n_rx, p.window_samples), np.complex64)
    idx = list(plan.receiver_index)
    out[idx], present[idx], iq[idx] = feats, True, windows
    return out, present, iq


def import_collections(
    in_dir: str | Path,
    out_dir: str | Path,
    scenario: Scenario,
    options: ImportOptions = ImportOptions(),
    on_progress: Callable[[str, int, int], None] | None = None,
) -> ImportSummary:
    """Import every collection under in_dir into a store in out_dir; returns what was imported and skipped.

    on_progress(stage, done, total) with stage "check" (first pass) or "import" (second).
    Raises RecordingError at the first invalid collection unless options.skip_invalid.
    """
    t0 = time.perf_counter()
    src, out = Path(in_dir), Path(out_dir)
    if not src.is_dir():
        raise DatasetError(f"{src}: input folder not found")
    if not 0 <= options.match_tolerance_m <= 100_000:
        raise DatasetError(f"match tolerance {options.match_tolerance_m} m: expected 0 to 100000 m")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise DatasetError(f"{out}: the store must be written outside the input folder {src} (it is only read)")
    existing = sorted(out.glob("*.h5")) if out.is_dir() else []
    if existing and not options.overwrite:
        raise DatasetError(f"{out}: already holds a store ({existing[0].name}); choose another folder or overwrite")
    paths = find_collections(src)
    if not paths:
        raise DatasetError(f"{src}: no *.sigmf-collection files found")
    summary = ImportSummary(out_dir=out, n_collections=len(paths))
    p = FeatureParams.from_scenario(scenario)
    table = _ReceiverTable(scenario, options.match_tolerance_m, options.new_receiver_height_m)

    plans: list[_Planned] = []
    for i, path in enumerate(paths):
        try:
            col = read_collection(path, src)
            for rec in col.recordings:
                check_recording(rec, p, scenario.frequency_hz)
            index = table.match(col)
        except RecordingError as exc:
            if not options.skip_invalid:
                raise
            summary.skipped.append(_skip(path, exc))
        else:
            split = split_of_path(
                path.relative_to(src), col.transmitter_lat_lon is not None, options.seed, options.fractions
            )
            plans.append(_Planned(col, split, index))
            summary.resampled += sum(r.sample_rate_hz != p.sample_rate_hz for r in col.recordings)
            summary.retuned += sum(r.frequency_hz != scenario.frequency_hz for r in col.recordings)
        if on_progress:
            on_progress("check", i + 1, len(paths))

    final = table.scenario()
    summary.new_receivers = list(table.new_ids)
    n_rx = len(final.receivers)
    writers: dict[str, StoreWriter] = {}
    done = 0
    try:
        for split in (*SPLITS, UNLABELLED):
            todo = [pl for pl in plans if pl.split == split]
            if not todo:
                continue
            attrs = store_attrs(
                final,
                p,
                split,
                shard="0/1",
                seed=options.seed,
                split_mode="import",
                source=f"sigmf import of {src.resolve()}",
            )
            writers[split] = w = StoreWriter(out / f"{split}.h5", attrs, receiver_table(final))
            for s in range(0, len(todo), BLOCK):
                rows = []
                for plan in todo[s : s + BLOCK]:
                    try:
                        rows.append((plan, *_row(plan, final, p, n_rx)))
                    except RecordingError as exc:
                        if not options.skip_invalid:
                            raise
                        summary.skipped.append(_skip(plan.collection.path, exc))
                    done += 1
                    if on_progress:
                        on_progress("import", done, len(plans))
                _append(w, rows, final, p, summary, options.iq_per_split)
            summary.splits[split] = w.n_samples
        if not any(summary.splits.values()):
            raise NothingImported(
                f"{src}: no collection could be imported ({len(summary.skipped)} invalid, "
                f"{len(summary.not_localisable)} heard by no receiver); see {out / REPORT_NAME}",
                summary,
            )
    except BaseException as exc:
        for w in writers.values():
            w.abort()
        if isinstance(exc, NothingImported):
            _write_report(summary, t0)
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
    _write_report(summary, t0)
    return summary


def _write_report(summary: ImportSummary, t0: float) -> None:
    summary.seconds = time.perf_counter() - t0
    summary.report = summary.out_dir / REPORT_NAME
    atomic_write_text(summary.report, summary.to_json())


def _append(
    w: StoreWriter, rows: list, scenario: Scenario, p: FeatureParams, summary: ImportSummary, iq_per_split: int
) -> None:
    """Append the rows of a block heard by at least MIN_HEARD_STORED receivers; note the others."""
    keep = []
    for plan, feats, present, iq in rows:
        n_heard = int((heard(feats[:, p.snr_index], p) & present).sum())
        if n_heard >= MIN_HEARD_STORED:
            keep.append((plan, feats, present, iq))
            cls = str(heard_class(n_heard))
            summary.by_receivers_heard[cls] = summary.by_receivers_heard.get(cls, 0) + 1
        else:
            summary.not_localisable.append(
                Skipped(
                    collection=str(plan.collection.path),
                    file=str(plan.collection.path),
                    field="(signal)",
                    message=f"heard by no receiver (SNR ≥ {p.detection_snr_db:g} dB at none)",
                )
            )
    if not keep:
        return
    feats = np.stack([k[1] for k in keep])
    present = np.stack([k[2] for k in keep])
    labelled = [k[0].collection.transmitter_lat_lon for k in keep]
    lat_lon = np.array([ll if ll is not None else (np.nan, np.nan) for ll in labelled], np.float64)
    block = {
        "features": feats,
        "mask": heard(feats[..., p.snr_index], p) & present,
        "present": present,
        "tx_lat_lon": lat_lon,
        "tx_position_m": np.where(np.isfinite(lat_lon), scenario.frame.to_local(lat_lon[:, 0], lat_lon[:, 1]), np.nan),
        "meta/collection": np.array([k[0].collection.name for k in keep], object),
        "meta/datetime": np.array([k[0].collection.recordings[0].datetime or "" for k in keep], object),
        "meta/frequency_hz": np.array([k[0].collection.recordings[0].frequency_hz for k in keep]),
    }
    room = max(0, iq_per_split - w.n_iq)
    if room:
        block["iq"] = np.stack([k[3] for k in keep[:room]])
    w.append(block)
