"""Power-reading tables (docs/DATA.md, "Power readings"): CSV or JSON Lines, one row per (transmission, receiver).

Reading is vectorised (pandas parses, numpy checks every column at once): a 100,000-row table is read in about a
second. The file is untrusted: its size and line count are bounded before it is parsed (MAX_TABLE_BYTES,
MAX_TABLE_ROWS), ids and numbers are checked, and every problem names the file, the line (a CSV's header is line 1)
and the column. Problems of the whole table (a missing column, a receiver in two units, too many receivers) raise a
RecordingError at once; problems of single rows are collected (`PowerTable.problems`), so that the caller can stop at
the first or leave those transmissions out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from heimdall.errors import RecordingError
from heimdall.scenario.domain import MAX_NAME_CHARS, MAX_RECEIVERS

TABLE_FORMATS = {".csv": "csv", ".jsonl": "jsonl"}  # file suffix → format
MAX_TABLE_BYTES = 256 * 1024**2  # about 2.5 million rows of a typical table
MAX_TABLE_ROWS = 2_000_000
POWER_DBM_BOUNDS = (-200.0, 60.0)  # a received power (or noise, floor) in dBm
POWER_DB_BOUNDS = (-300.0, 300.0)  # the same in a receiver's own dB scale (RSSI, dBFS, S-meter dB)
SNR_DB_BOUNDS = (-100.0, 200.0)
UNIX_SECONDS_BOUNDS = (0.0, 1e10)  # 1970 to 2286
FREQUENCY_BOUNDS_HZ = (1.0, 300e9)
STATUSES = ("heard", "not_heard", "not_recording")
HEARD, NOT_HEARD, NOT_RECORDING = range(3)
REQUIRED = ("transmission", "time", "receiver")
# value column → the dBm column and the dB column it is read from (one of the two per row)
LEVELS = {"power": ("power_dbm", "power_db"), "noise": ("noise_dbm", "noise_db"), "floor": ("floor_dbm", "floor_db")}
NUMBERS = {
    "snr_db": SNR_DB_BOUNDS,
    "lat": (-90.0, 90.0),
    "lon": (-180.0, 180.0),
    "receiver_lat": (-90.0, 90.0),
    "receiver_lon": (-180.0, 180.0),
    "frequency_hz": FREQUENCY_BOUNDS_HZ,
}
COLUMNS = (*REQUIRED, "status", *(c for pair in LEVELS.values() for c in pair), *NUMBERS)
SAME_PLACE_DEG = 1e-5  # about 1 m: rows placing one receiver farther apart disagree


@dataclass(frozen=True)
class PowerTable:
    """The checked rows of a table (n rows, each array [n]); NaN where a value is not given."""

    path: Path
    line: np.ndarray  # int64: line of each row in the file
    transmission: np.ndarray  # object: ids
    receiver: np.ndarray  # object: ids
    time_s: np.ndarray  # float64: Unix seconds (UTC)
    status: np.ndarray  # int8: HEARD, NOT_HEARD, NOT_RECORDING
    calibrated: np.ndarray  # bool: the row's levels are in dBm (False: the receiver's own dB)
    levels: dict[str, np.ndarray]  # float64 "power", "noise", "floor" in the row's unit
    numbers: dict[str, np.ndarray]  # float64 per NUMBERS column
    bad: np.ndarray  # bool: the row has a problem
    problems: list[tuple[int, RecordingError]]  # (row, its first problem) per bad row, in line order

    def __len__(self) -> int:
        return len(self.line)


def table_format(path: Path, fmt: str | None = None) -> str:
    """The format of a table: `fmt` if given, else by the file's suffix; RecordingError when neither says."""
    if fmt is not None:
        if fmt not in TABLE_FORMATS.values():
            raise RecordingError(path, "format", f"unknown table format {fmt!r}; expected csv or jsonl")
        return fmt
    if path.suffix.lower() not in TABLE_FORMATS:
        raise RecordingError(path, "file", "not a power-reading table (expected a .csv or .jsonl file)")
    return TABLE_FORMATS[path.suffix.lower()]


def is_table(path: Path) -> bool:
    """Whether `path` is named as a power-reading table (.csv, .jsonl)."""
    return path.suffix.lower() in TABLE_FORMATS


def read_table(path: str | Path, fmt: str | None = None) -> PowerTable:
    """Read and check a power-reading table; table-wide problems raise RecordingError, row problems are collected."""
    path = Path(path)
    kind = table_format(path, fmt)
    data = _read_bounded(path)
    frame, lines = _parse_csv(path, data) if kind == "csv" else _parse_jsonl(path, data)
    return _check(path, frame, lines)


def _read_bounded(path: Path) -> bytes:
    """The file's bytes, refused unread beyond MAX_TABLE_BYTES and unparsed beyond MAX_TABLE_ROWS lines."""
    try:
        size = path.stat().st_size
        if size > MAX_TABLE_BYTES:
            raise RecordingError(path, "file", f"{size} bytes; a power-reading table has at most {MAX_TABLE_BYTES}")
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecordingError(path, "file", "not found") from None
    except OSError as exc:
        raise RecordingError(path, "file", f"cannot read ({exc.strerror})") from None
    lines = data.count(b"\n")
    if lines > MAX_TABLE_ROWS + 1:
        raise RecordingError(path, "file", f"{lines} lines; a power-reading table has at most {MAX_TABLE_ROWS} rows")
    return data


def _parse_csv(path: Path, data: bytes) -> tuple[Any, np.ndarray]:
    """(DataFrame of text cells, line of each row) of CSV bytes with a header row."""
    import io

    import pandas as pd

    try:
        frame = pd.read_csv(
            io.BytesIO(data), dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig", engine="c"
        )
    except UnicodeDecodeError as exc:
        raise RecordingError(path, "file", f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except pd.errors.EmptyDataError:
        raise RecordingError(path, "header", "empty file: expected a header row naming the columns") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise RecordingError(path, "CSV", f"malformed: {str(exc).strip()[:200]}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame, np.arange(len(frame), dtype=np.int64) + 2


def _parse_jsonl(path: Path, data: bytes) -> tuple[Any, np.ndarray]:
    """(DataFrame of text cells, line of each row) of JSON Lines bytes: one object of strings, numbers or nulls a
    line; blank lines are skipped."""
    import pandas as pd

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordingError(path, "file", f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    rows: list[dict[str, str]] = []
    lines: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError, ValueError) as exc:
            raise RecordingError(path, f"line {number}", f"not a JSON object ({str(exc)[:120]})") from None
        if not isinstance(obj, dict):
            raise RecordingError(path, f"line {number}", f"expected a JSON object, got {type(obj).__name__}")
        row = {}
        for key, value in obj.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise RecordingError(
                    path, f"line {number}, column {key[:60]}", f"expected a string or a number, got {value!r:.60}"
                )
            row[key] = value if isinstance(value, str) else repr(value)
        rows.append(row)
        lines.append(number)
    if not rows:
        raise RecordingError(path, "file", "no rows (expected one JSON object a line)")
    frame = pd.DataFrame.from_records(rows).fillna("")
    return frame, np.asarray(lines, np.int64)


class _Problems:
    """Row problems: the first of each row kept, in line order."""

    def __init__(self, path: Path, lines: np.ndarray) -> None:
        self.path, self.lines = path, lines
        self.bad = np.zeros(len(lines), bool)
        self.found: dict[int, RecordingError] = {}

    def add(self, mask: np.ndarray, column: str, message: str | Any) -> None:
        """Rows where `mask`: a problem in `column`; message is text or a function of the row index."""
        for i in np.flatnonzero(mask & ~self.bad).tolist():
            text = message(i) if callable(message) else message
            self.found[i] = RecordingError(self.path, f"line {self.lines[i]}, column {column}", text)
        self.bad |= mask

    def sorted(self) -> list[tuple[int, RecordingError]]:
        """(row, problem), one per bad row, in line order."""
        return sorted(self.found.items())


def _check(path: Path, frame: Any, lines: np.ndarray) -> PowerTable:
    unknown = [c for c in frame.columns if c not in COLUMNS]
    if unknown:
        raise RecordingError(path, f"column {unknown[0][:60]}", f"unknown column; the columns are {', '.join(COLUMNS)}")
    for column in REQUIRED:
        if column not in frame.columns:
            raise RecordingError(path, f"column {column}", "missing (required: transmission, time, receiver)")
    if not any(c in frame.columns for pair in (LEVELS["power"],) for c in pair):
        raise RecordingError(path, "column power_dbm", "missing: give power_dbm (calibrated) or power_db")
    n = len(frame)
    if n == 0:
        raise RecordingError(path, "file", "no rows")
    problems = _Problems(path, lines)

    def text(column: str) -> np.ndarray:
        return frame[column].str.strip().to_numpy(object) if column in frame.columns else np.full(n, "", object)

    transmission, receiver = text("transmission"), text("receiver")
    for column, ids in (("transmission", transmission), ("receiver", receiver)):
        problems.add(ids == "", column, "missing (an id is required)")
        long = np.fromiter((len(s) > MAX_NAME_CHARS for s in ids), bool, n)
        problems.add(long, column, f"longer than {MAX_NAME_CHARS} characters")
    time_s = _times(text("time"), problems)
    status_text = text("status")
    status = np.full(n, HEARD, np.int8)
    for code, name in enumerate(STATUSES):
        status[status_text == name] = code
    known = (status_text == "") | np.isin(status_text, STATUSES)
    problems.add(~known, "status", lambda i: f"{status_text[i]!r:.40} is not one of {', '.join(STATUSES)}")

    numbers = {c: _numbers(text(c), c, NUMBERS[c], problems) for c in NUMBERS}
    levels, calibrated = _levels(frame, text, problems)
    power = levels["power"]
    problems.add(
        (status == HEARD) & np.isnan(power) & ~problems.bad,
        "power_dbm" if "power_dbm" in frame.columns else "power_db",
        "missing: a heard reading needs its power (power_dbm or power_db), else give status not_heard or not_recording",
    )
    for a, b in (("lat", "lon"), ("receiver_lat", "receiver_lon")):
        one = np.isnan(numbers[a]) != np.isnan(numbers[b])
        problems.add(one & np.isnan(numbers[a]), a, f"missing while {b} is given (give both or neither)")
        problems.add(one & np.isnan(numbers[b]), b, f"missing while {a} is given (give both or neither)")

    import pandas as pd

    tx_code = pd.factorize(transmission)[0]
    rx_code, rx_ids = pd.factorize(receiver)
    if len(rx_ids) > MAX_RECEIVERS:
        raise RecordingError(path, "column receiver", f"{len(rx_ids)} receivers; at most {MAX_RECEIVERS}")
    pairs = pd.DataFrame({"t": tx_code, "r": rx_code}).duplicated().to_numpy()
    problems.add(
        pairs,
        "receiver",
        lambda i: (
            f"receiver {receiver[i]!r} appears twice in transmission "
            f"{transmission[i]!r} (a transmission has one row per receiver)"
        ),
    )
    _check_units(path, lines, rx_code, rx_ids, calibrated, levels, problems.bad)
    _check_same(numbers, "receiver_lat", "receiver_lon", rx_code, receiver, "receiver", problems)
    _check_same(numbers, "lat", "lon", tx_code, transmission, "transmission", problems)
    return PowerTable(
        path=path,
        line=lines,
        transmission=transmission,
        receiver=receiver,
        time_s=time_s,
        status=status,
        calibrated=calibrated,
        levels=levels,
        numbers=numbers,
        bad=problems.bad,
        problems=problems.sorted(),
    )


def _numbers(cells: np.ndarray, column: str, bounds: tuple[float, float], problems: _Problems) -> np.ndarray:
    """float64 values of a text column (NaN where empty); unparsable or out-of-bounds cells are problems."""
    import pandas as pd

    values = pd.to_numeric(pd.Series(cells), errors="coerce").to_numpy(np.float64, copy=True)
    given = cells != ""
    unparsable = given & ~np.isfinite(values)
    problems.add(unparsable, column, lambda i: f"expected a finite number, got {cells[i]!r:.40}")
    lo, hi = bounds
    outside = given & np.isfinite(values) & ((values < lo) | (values > hi))
    problems.add(outside, column, lambda i: f"{values[i]:g} is outside [{lo:g}, {hi:g}]")
    values[unparsable | outside] = np.nan
    return values


def _times(cells: np.ndarray, problems: _Problems) -> np.ndarray:
    """Unix seconds of ISO 8601 times (UTC without an offset) or numbers of seconds; NaN where missing or bad."""
    import pandas as pd

    problems.add(cells == "", "time", "missing (ISO 8601, e.g. 2026-05-01T12:00:00Z, or Unix seconds)")
    seconds = pd.to_numeric(pd.Series(cells), errors="coerce").to_numpy(np.float64, copy=True)
    iso = (cells != "") & np.isnan(seconds)
    if iso.any():
        parsed = pd.to_datetime(pd.Series(cells[iso]), format="ISO8601", utc=True, errors="coerce")
        ns = parsed.to_numpy("datetime64[ns]").astype("int64")
        seconds[iso] = np.where(parsed.isna().to_numpy(), np.nan, ns / 1e9)
        problems.add(
            iso & np.isnan(seconds),
            "time",
            lambda i: f"expected an ISO 8601 time like 2026-05-01T12:00:00Z or Unix seconds, got {cells[i]!r:.40}",
        )
    lo, hi = UNIX_SECONDS_BOUNDS
    outside = np.isfinite(seconds) & ((seconds < lo) | (seconds > hi))
    problems.add(outside, "time", lambda i: f"{seconds[i]:g} s is outside the years 1970 to 2286")
    seconds[outside] = np.nan
    return seconds


def _levels(frame: Any, text: Any, problems: _Problems) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(power, noise and floor [n] in each row's unit, calibrated [n]): a row gives its levels in dBm or in dB."""
    n = len(frame)
    dbm_given = np.zeros(n, bool)
    db_given = np.zeros(n, bool)
    parsed: dict[str, np.ndarray] = {}
    for dbm, db in LEVELS.values():
        parsed[dbm] = _numbers(text(dbm), dbm, POWER_DBM_BOUNDS, problems)
        parsed[db] = _numbers(text(db), db, POWER_DB_BOUNDS, problems)
        dbm_given |= text(dbm) != ""
        db_given |= text(db) != ""
    problems.add(dbm_given & db_given, "power_db", "a row gives its levels in dBm or in dB, not both")
    calibrated = ~db_given
    levels = {name: np.where(calibrated, parsed[dbm], parsed[db]) for name, (dbm, db) in LEVELS.items()}
    return levels, calibrated


def _check_units(
    path: Path,
    lines: np.ndarray,
    rx_code: np.ndarray,
    rx_ids: Any,
    calibrated: np.ndarray,
    levels: dict[str, np.ndarray],
    bad: np.ndarray,
) -> None:
    """RecordingError when one receiver has rows in dBm and rows in dB (its scale would be undefined): names the
    first row in the unit other than the receiver's first (rows with a problem of their own aside)."""
    given = ~bad
    given &= np.isfinite(levels["power"]) | np.isfinite(levels["noise"]) | np.isfinite(levels["floor"])
    idx = np.flatnonzero(given)
    if not len(idx):
        return
    order = idx[np.argsort(rx_code[idx], kind="stable")]
    starts = np.r_[0, np.flatnonzero(np.diff(rx_code[order])) + 1]
    first_of = np.full(len(rx_ids), -1)
    first_of[rx_code[order[starts]]] = order[starts]
    differs = given & (calibrated != calibrated[first_of[rx_code]])
    if differs.any():
        i = int(np.flatnonzero(differs)[0])
        j = int(first_of[rx_code[i]])
        unit, other = ("dBm", "dB") if calibrated[i] else ("dB", "dBm")
        column = "power_dbm" if calibrated[i] else "power_db"
        raise RecordingError(
            path,
            f"line {lines[i]}, column {column}",
            f"receiver {rx_ids[rx_code[i]]!r} in {unit} here but in {other} on line {lines[j]}: one unit per "
            "receiver (dBm when calibrated, else its own dB)",
        )


def _check_same(
    numbers: dict[str, np.ndarray],
    lat: str,
    lon: str,
    code: np.ndarray,
    ids: np.ndarray,
    what: str,
    problems: _Problems,
) -> None:
    """Rows of one group (receiver, transmission) giving another position than the group's first: problems; the
    first given position of each group is then set on every row of the group (NaN: none given)."""
    import pandas as pd

    frame = pd.DataFrame({"lat": numbers[lat], "lon": numbers[lon]})
    first = frame.groupby(code).transform("first").to_numpy(np.float64)  # first non-NaN of each group
    given = np.isfinite(numbers[lat])
    far = given & (np.abs(numbers[lat] - first[:, 0]) + np.abs(numbers[lon] - first[:, 1]) > SAME_PLACE_DEG)
    problems.add(
        far,
        lat,
        lambda i: (
            f"{what} {ids[i]!r} at ({numbers[lat][i]:.6f}, {numbers[lon][i]:.6f}) here but at "
            f"({first[i, 0]:.6f}, {first[i, 1]:.6f}) on an earlier line"
        ),
    )
    numbers[lat], numbers[lon] = first[:, 0].copy(), first[:, 1].copy()
