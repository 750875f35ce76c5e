"""`heimdall import` of SigMF: a folder of SigMF collections → a training store, as a source of
heimdall.datasets.source (which writes the store).

Two passes. The first reads and checks every collection's metadata and matches its recordings to
receivers (by `heimdall:receiver_id`, else by position within a tolerance; receivers not in the scenario
join the receiver table). The second reads the samples, brings each recording to the extractor's window
(heimdall.datasets.conform) and computes features with the same function as the simulator.

Splits: a collection under a folder named ``train``, ``val`` or ``test`` (or a shard ``train-00000-of-00004``)
keeps that split; any other labelled collection is assigned by a seeded hash of its path; unlabelled
collections go to the ``unlabelled`` split (for prediction only). The store is written all or nothing
(heimdall.datasets.source.write_store). The input folder is only read, and no file outside it is
(links leading out are refused). Every malformed collection is one RecordingError (with --skip-invalid:
one reported, skipped item); the receiver table is bounded (scenario.MAX_RECEIVERS).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heimdall.datasets.conform import check_recording, recording_features
from heimdall.datasets.receivers import GEOLOCATION_FIELD, RECEIVER_ID_FIELD, resolve_recordings
from heimdall.datasets.sigmf_files import Collection, Recording, find_collections, read_collection
from heimdall.datasets.source import REPORT_NAME, Block, ImportSummary, Skipped, prepare_out, write_store
from heimdall.datasets.spec import ImportOptions
from heimdall.datasets.splits import split_of_path
from heimdall.errors import DatasetError, RecordingError
from heimdall.features import FeatureParams, heard
from heimdall.scenario.domain import MAX_RECEIVERS, Receiver, Scenario
from heimdall.scenario.schema import scenario_from_dict

__all__ = ["REPORT_NAME", "ImportSummary", "import_collections"]
BLOCK = 256


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
        """RecordingError unless a receiver at en_m [2] named new_id can join the table (room, an id of its own;
        receivers may share a site)."""
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

    def scenario(self) -> Scenario:
        """The base scenario, with the new receivers when there are any (validated)."""
        if not self.new_ids:
            return self.base
        d = dataclasses.replace(self.base, name=f"{self.base.name}-imported", receivers=tuple(self.receivers)).to_dict()
        return scenario_from_dict(d)


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


class SigMFSource:
    """SigMF collections as a heimdall.datasets.source.Source: the first pass (metadata read and checked, recordings
    matched to receivers, splits planned) on construction, the samples read and featurised block by block."""

    item = "collection"
    power_calibrated = None

    def __init__(
        self,
        src: Path,
        paths: list[Path],
        scenario: Scenario,
        options: ImportOptions,
        summary: ImportSummary,
        on_progress: Callable[[str, int, int], None] | None,
    ) -> None:
        self.description = f"sigmf import of {src.resolve()}"
        self.params = p = FeatureParams.from_scenario(scenario)
        self.unheard = f"heard by no receiver (SNR ≥ {p.detection_snr_db:g} dB at none)"
        self.options = options
        table = _ReceiverTable(scenario, options.match_tolerance_m, options.new_receiver_height_m)
        self.plans: list[_Planned] = []
        for i, path in enumerate(paths):
            try:
                col = read_collection(path, src)
                for rec in col.recordings:
                    check_recording(rec, p, scenario.frequency_hz)
                index = table.match(col)
            except RecordingError as exc:
                if not options.skip_invalid:
                    raise
                summary.skipped.append(Skipped.of(path, exc))
            else:
                split = split_of_path(
                    path.relative_to(src), col.transmitter_lat_lon is not None, options.seed, options.fractions
                )
                self.plans.append(_Planned(col, split, index))
                summary.resampled += sum(r.sample_rate_hz != p.sample_rate_hz for r in col.recordings)
                summary.retuned += sum(r.frequency_hz != scenario.frequency_hz for r in col.recordings)
            if on_progress:
                on_progress("check", i + 1, len(paths))
        self.scenario = table.scenario()
        summary.new_receivers = list(table.new_ids)

    def planned(self, split: str) -> int:
        """Collections planned for `split`."""
        return sum(pl.split == split for pl in self.plans)

    def blocks(self, split: str, summary: ImportSummary) -> Iterator[Block]:
        """The collections of `split`, BLOCK at a time: samples read, conformed and featurised."""
        todo = [pl for pl in self.plans if pl.split == split]
        p, n_rx = self.params, len(self.scenario.receivers)
        for s in range(0, len(todo), BLOCK):
            rows = []
            for plan in todo[s : s + BLOCK]:
                try:
                    rows.append((plan, *_row(plan, self.scenario, p, n_rx)))
                except RecordingError as exc:
                    if not self.options.skip_invalid:
                        raise
                    summary.skipped.append(Skipped.of(plan.collection.path, exc))
            if rows:
                yield _block(rows, p)


def _block(rows: list[tuple[_Planned, np.ndarray, np.ndarray, np.ndarray]], p: FeatureParams) -> Block:
    """The Block of featurised collections (plan, features [R, F], present [R], iq [R, window] each)."""
    feats = np.stack([r[1] for r in rows])
    present = np.stack([r[2] for r in rows])
    cols = [r[0].collection for r in rows]
    labels = [c.transmitter_lat_lon for c in cols]
    return Block(
        names=np.array([c.name for c in cols], object),
        origins=np.array([str(c.path) for c in cols], object),
        features=feats,
        present=present,
        heard=heard(feats[..., p.snr_index], p) & present,
        tx_lat_lon=np.array([ll if ll is not None else (np.nan, np.nan) for ll in labels], np.float64),
        datetime=np.array([c.recordings[0].datetime or "" for c in cols], object),
        frequency_hz=np.array([c.recordings[0].frequency_hz for c in cols]),
        iq=np.stack([r[3] for r in rows]),
    )


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
    started = time.perf_counter()
    src, out = Path(in_dir), Path(out_dir)
    if not src.is_dir():
        raise DatasetError(f"{src}: input folder not found")
    existing = prepare_out(src, out, options)
    paths = find_collections(src)
    if not paths:
        raise DatasetError(f"{src}: no *.sigmf-collection files found")
    summary = ImportSummary(out_dir=out, n_collections=len(paths))
    source = SigMFSource(src, paths, scenario, options, summary, on_progress)
    return write_store(source, summary, existing, options, src, started, on_progress)
