"""Power-reading tables as transmissions: the feature rows that `heimdall import` stores and `heimdall predict` answers
(one function, `readings`), and the table as a source of heimdall.datasets.source.

Per (transmission, receiver) row, in the store's layout with no spectral features (psd_bins 0): power, noise and SNR
(heimdall.features.SCALAR_FEATURES), `present` (the receiver was recording: not `not_recording`, and a row exists)
and `heard` (status heard and the power above the receiver's floor). A present receiver that did not hear is a
censored reading: its power and noise are its floor, its SNR 0. A receiver's floor is the row's floor, else the
median of the floors it gives, else (a `not_heard` row with a value) that value; where none is known, the lowest power
the receiver reported (else the table's lowest). Unknown noise: the noise from the SNR (power − SNR), else the floor,
else the lowest power the receiver reported (an estimate). In a store of power readings the column
`noise_density_dbm_hz` therefore holds that noise level in the channel (dBm, or the receiver's dB), not a density.

Receivers are matched by id: a known id is that receiver (a position given with it must lie within the match
tolerance of the table's, else the rows are refused as a disagreeing receiver), an id the table does not know joins
it when the rows give its position (receiver_lat, receiver_lon), else its rows are refused (unknown receiver).
Receivers may share a site. Bad rows: the import stops at the first (its line and column named), or with
ImportOptions.skip_invalid leaves out every transmission with a bad row, each reported (as SigMF import does with a
bad collection).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heimdall.budget import Progress
from heimdall.datasets.power_table import HEARD, NOT_HEARD, NOT_RECORDING, PowerTable, read_table
from heimdall.datasets.source import Block, ImportSummary, Skipped, prepare_out, write_store
from heimdall.datasets.spec import ImportOptions
from heimdall.datasets.splits import UNLABELLED, splits_of_names
from heimdall.errors import DatasetError, RecordingError
from heimdall.features import FeatureParams
from heimdall.geo import LocalFrame
from heimdall.scenario.domain import MAX_RECEIVERS, Receiver, Scenario
from heimdall.scenario.schema import scenario_from_dict

BLOCK_TRANSMISSIONS = 16_384


@dataclass(frozen=True)
class Matched:
    """The receiver of each row of a table in a receiver table extended by the receivers new to it."""

    index: np.ndarray  # int64 [n]: row → receiver (the table's R known ones first, then the new), -1 on a bad row
    new_ids: list[str]
    new_lat_lon: np.ndarray  # float64 [k, 2]
    calibrated: np.ndarray  # bool [R + k]: False where the receiver's rows are in its own dB
    table: PowerTable  # the table with the rows of unknown and disagreeing receivers marked bad


@dataclass(frozen=True)
class Readings:
    """A table's transmissions in the layout of R receivers (T transmissions)."""

    names: np.ndarray  # object [T]: transmission ids, in the order first seen
    first_line: np.ndarray  # int64 [T]: line of each transmission's first row
    features: np.ndarray  # float32 [T, R, 3]: power, noise, SNR (SCALAR_FEATURES)
    present: np.ndarray  # bool [T, R]
    heard: np.ndarray  # bool [T, R]
    tx_lat_lon: np.ndarray  # float64 [T, 2], NaN where unlabelled
    time_s: np.ndarray  # float64 [T]: Unix seconds of the earliest row
    frequency_hz: np.ndarray  # float64 [T], NaN where not given

    def iso_times(self) -> np.ndarray:
        """Object [T]: the times as ISO 8601 UTC text (milliseconds)."""
        ms = np.round(self.time_s * 1e3).astype(np.int64).astype("datetime64[ms]")
        return np.char.add(np.datetime_as_string(ms, unit="ms").astype(str), "Z").astype(object)


def match_receivers(
    table: PowerTable, ids: list[str], positions_m: np.ndarray, frame: LocalFrame, tolerance_m: float
) -> Matched:
    """Match the table's receivers to a receiver table (ids, positions_m [R, 2] in `frame`); see the module doc."""
    import pandas as pd

    code, rx_ids = pd.factorize(table.receiver)
    first = np.full(len(rx_ids), len(code))
    np.minimum.at(first, code, np.arange(len(code)))
    lat, lon = table.numbers["receiver_lat"][first], table.numbers["receiver_lon"][first]
    index = np.full(len(rx_ids), -1, np.int64)
    new_ids: list[str] = []
    new_lat_lon: list[tuple[float, float]] = []
    refused: dict[int, tuple[str, str]] = {}  # receiver → (column, message)
    known = {rid: k for k, rid in enumerate(ids)}
    usable = np.zeros(len(rx_ids), bool)
    usable[code[~table.bad]] = True  # a receiver named only on bad rows joins nothing
    for k, rid in enumerate(rx_ids.tolist()):
        if not usable[k]:
            continue
        placed = bool(np.isfinite(lat[k]))
        if rid in known:
            index[k] = known[rid]
            if placed:
                d = float(np.linalg.norm(frame.to_local(lat[k], lon[k]).reshape(2) - positions_m[known[rid]]))
                if d > tolerance_m:
                    refused[k] = (
                        "receiver_lat",
                        f"receiver {rid!r} is {d:.0f} m from its position in the receiver table "
                        f"(tolerance {tolerance_m:g} m)",
                    )
        elif placed:
            index[k] = len(ids) + len(new_ids)
            new_ids.append(rid)
            new_lat_lon.append((float(lat[k]), float(lon[k])))
        else:
            refused[k] = (
                "receiver",
                f"unknown receiver {rid!r}: not in the receiver table, and its rows give no receiver_lat, receiver_lon",
            )
    if len(ids) + len(new_ids) > MAX_RECEIVERS:
        raise RecordingError(
            table.path, "column receiver", f"{len(ids) + len(new_ids)} receivers in all; at most {MAX_RECEIVERS}"
        )
    for k, (column, message) in refused.items():
        table = with_problem(table, code == k, column, message)
    row_index = np.where(table.bad, -1, index[code])
    calibrated = np.ones(len(ids) + len(new_ids), bool)
    has_level = np.zeros(len(code), bool)
    for values in table.levels.values():
        has_level |= np.isfinite(values)
    valid = (row_index >= 0) & has_level
    calibrated[row_index[valid]] = table.calibrated[valid]  # one unit per receiver (power_table checks)
    return Matched(row_index, new_ids, np.asarray(new_lat_lon, np.float64).reshape(-1, 2), calibrated, table)


def with_problem(table: PowerTable, mask: np.ndarray, column: str, message: str) -> PowerTable:
    """The table with the rows of `mask` not yet bad marked bad by a problem in `column`."""
    new = np.flatnonzero(mask & ~table.bad)
    if not len(new):
        return table
    added = [(i, RecordingError(table.path, f"line {table.line[i]}, column {column}", message)) for i in new.tolist()]
    problems = sorted([*table.problems, *added], key=lambda item: item[0])
    return dataclasses.replace(table, bad=table.bad | mask, problems=problems)


def bad_transmissions(table: PowerTable) -> np.ndarray:
    """Bool [n]: rows of a transmission that has a bad row (left out whole, as a bad SigMF collection is)."""
    import pandas as pd

    code = pd.factorize(table.transmission)[0]
    bad_tx = np.zeros(code.max() + 1, bool)
    bad_tx[code[table.bad]] = True
    return bad_tx[code]


def readings(table: PowerTable, index: np.ndarray, n_rx: int, keep: np.ndarray) -> Readings:
    """The transmissions of the rows `keep` (bool [n]) with receiver `index` [n] in the layout of n_rx receivers."""
    import pandas as pd

    rows = np.flatnonzero(keep)
    rx = index[rows]
    tx, names = pd.factorize(table.transmission[rows])
    status = table.status[rows]
    power, noise, floor = (table.levels[k][rows] for k in ("power", "noise", "floor"))
    snr = table.numbers["snr_db"][rows]
    by_rx = pd.DataFrame({"rx": rx, "power": power, "floor": floor}).groupby("rx")
    rx_floor = np.full(n_rx, np.nan)
    rx_lowest = np.full(n_rx, np.nan)
    medians, lowest = by_rx["floor"].median(), by_rx["power"].min()
    rx_floor[medians.index.to_numpy()] = medians.to_numpy()
    rx_lowest[lowest.index.to_numpy()] = lowest.to_numpy()
    table_lowest = float(np.nanmin(power)) if np.isfinite(power).any() else 0.0
    rx_lowest = np.where(np.isnan(rx_lowest), table_lowest, rx_lowest)

    row_floor = np.where(np.isnan(floor), rx_floor[rx], floor)
    row_floor = np.where(np.isnan(row_floor) & (status == NOT_HEARD), power, row_floor)
    present = status != NOT_RECORDING
    with np.errstate(invalid="ignore"):
        heard = (status == HEARD) & np.isfinite(power) & ~(power <= row_floor)
    level = np.where(np.isnan(row_floor), rx_lowest[rx], row_floor)  # what a censored reading is set to
    noise = np.where(np.isnan(noise), power - snr, noise)
    noise = np.where(np.isnan(noise), level, noise)
    snr = np.where(np.isnan(snr), power - noise, snr)
    censored = present & ~heard
    values = np.stack(
        [np.where(censored, level, power), np.where(censored, level, noise), np.where(censored, 0.0, snr)], axis=-1
    )
    values[~present] = 0.0

    n_tx = len(names)
    features = np.zeros((n_tx, n_rx, values.shape[-1]), np.float32)
    features[tx, rx] = values
    present_tr = np.zeros((n_tx, n_rx), bool)
    heard_tr = np.zeros((n_tx, n_rx), bool)
    present_tr[tx, rx], heard_tr[tx, rx] = present, heard & present
    first = np.full(n_tx, len(rows))
    np.minimum.at(first, tx, np.arange(len(rows)))
    per_tx = pd.DataFrame({"tx": tx, "t": table.time_s[rows], "f": table.numbers["frequency_hz"][rows]}).groupby("tx")
    at = rows[first]
    return Readings(
        names=np.asarray(names, object),
        first_line=table.line[at],
        features=features,
        present=present_tr,
        heard=heard_tr,
        tx_lat_lon=np.stack([table.numbers["lat"][at], table.numbers["lon"][at]], axis=-1),
        time_s=per_tx["t"].min().to_numpy(np.float64),
        frequency_hz=per_tx["f"].first().reindex(range(n_tx)).to_numpy(np.float64),
    )


def table_problems(table: PowerTable, skip_invalid: bool) -> np.ndarray:
    """Bool [n]: the rows to keep; raises the first problem (by line) unless skip_invalid."""
    if table.problems and not skip_invalid:
        raise table.problems[0][1]
    return ~bad_transmissions(table)


def power_scenario(scenario: Scenario, new_ids: list[str], new_lat_lon: np.ndarray, height_m: float) -> Scenario:
    """The scenario of a store of power readings: psd_bins 0, and the receivers new to it added (name -imported)."""
    if not new_ids and scenario.features.psd_bins == 0:
        return scenario
    receivers = list(scenario.receivers) + [
        Receiver(id=rid, name=rid, lat=float(la), lon=float(lo), antenna_height_m=height_m)
        for rid, (la, lo) in zip(new_ids, new_lat_lon.tolist(), strict=True)
    ]
    name = f"{scenario.name}-imported" if new_ids else scenario.name
    d = dataclasses.replace(
        scenario,
        name=name,
        receivers=tuple(receivers),
        features=dataclasses.replace(scenario.features, psd_bins=0),
    ).to_dict()
    return scenario_from_dict(d)


class TableSource:
    """A power-reading table as a heimdall.datasets.source.Source: read, checked, matched and featurised on
    construction (it is small: 100,000 rows take a few MB), written split by split."""

    item = "transmission"
    unheard = "heard by no receiver (every reading not heard, at or below its floor, or not recording)"

    def __init__(self, table: PowerTable, scenario: Scenario, options: ImportOptions, summary: ImportSummary) -> None:
        self.description = f"power table import of {table.path.resolve()}"
        base = scenario
        matched = match_receivers(
            table, [r.id for r in base.receivers], base.receiver_positions_m(), base.frame, options.match_tolerance_m
        )
        table = matched.table
        keep = table_problems(table, options.skip_invalid)
        self._skip(table, keep, summary)
        self.scenario = power_scenario(base, matched.new_ids, matched.new_lat_lon, options.new_receiver_height_m)
        self.params = FeatureParams.from_scenario(self.scenario)
        self.power_calibrated = matched.calibrated
        summary.new_receivers = list(matched.new_ids)
        summary.n_rows = len(table)
        self.path = table.path
        self.readings = readings(table, matched.index, len(self.scenario.receivers), keep)
        labelled = np.isfinite(self.readings.tx_lat_lon).all(axis=1)
        self.split = np.full(len(labelled), UNLABELLED, object)
        self.split[labelled] = splits_of_names(self.readings.names[labelled], options.seed, options.fractions)

    @staticmethod
    def _skip(table: PowerTable, keep: np.ndarray, summary: ImportSummary) -> None:
        """Report each transmission left out, with its first problem."""
        reported: set[str] = set()
        for row, exc in table.problems:
            tx = str(table.transmission[row])
            if tx not in reported:
                reported.add(tx)
                summary.skipped.append(Skipped.of(f"{table.path}: transmission {tx}", exc))
        summary.n_collections = len(set(table.transmission[keep].tolist())) + len(reported)

    def planned(self, split: str) -> int:
        """Transmissions planned for `split`."""
        return int((self.split == split).sum())

    def blocks(self, split: str, summary: ImportSummary) -> Iterator[Block]:
        """The transmissions of `split`, BLOCK_TRANSMISSIONS at a time."""
        r = self.readings
        chosen = np.flatnonzero(self.split == split)
        times = r.iso_times()
        frequency = np.where(np.isnan(r.frequency_hz), self.scenario.frequency_hz, r.frequency_hz)
        for s in range(0, len(chosen), BLOCK_TRANSMISSIONS):
            i = chosen[s : s + BLOCK_TRANSMISSIONS]
            yield Block(
                names=r.names[i],
                origins=np.array([f"{self.path}: line {n}" for n in r.first_line[i].tolist()], object),
                features=r.features[i],
                present=r.present[i],
                heard=r.heard[i],
                tx_lat_lon=r.tx_lat_lon[i],
                datetime=times[i],
                frequency_hz=frequency[i],
            )


def import_table(
    path: str | Path,
    out_dir: str | Path,
    scenario: Scenario | None,
    options: ImportOptions = ImportOptions(),
    fmt: str | None = None,
    on_progress: Progress | None = None,
) -> tuple[ImportSummary, Scenario]:
    """Import a power-reading table into a store in out_dir; returns what was imported and skipped, and the store's
    scenario (built from the table's receivers when `scenario` is None). fmt: "csv" or "jsonl" (default: by the
    file's suffix). Raises RecordingError at the first bad row unless options.skip_invalid."""
    from heimdall.datasets.scenario_from_recordings import scenario_from_table

    started = time.perf_counter()
    src, out = Path(path), Path(out_dir)
    if not src.is_file():
        raise DatasetError(f"{src}: power-reading table not found")
    existing = prepare_out(src, out, options)
    table = read_table(src, fmt)
    if on_progress:
        on_progress("check", len(table), len(table))
    if scenario is None:
        scenario = scenario_from_table(table, options.new_receiver_height_m)
    summary = ImportSummary(out_dir=out)
    source = TableSource(table, scenario, options, summary)
    return write_store(source, summary, existing, options, src, started, on_progress), source.scenario
