"""SigMF files as Heimdall reads them (docs/DATA.md, "Recordings: SigMF"); writing is heimdall.datasets.sigmf_writer.

One transmission = one ``<name>.sigmf-collection`` whose ``core:streams`` name the per-receiver
recordings (``<stream>.sigmf-meta`` + ``<stream>.sigmf-data``, single channel). Per recording:
``global.core:datatype`` (ci16_le, cf32_le, cu8, ci8), ``global.core:sample_rate`` (Hz), the receiver
position as a GeoJSON Point ``[lon, lat, alt_m]`` in ``captures[0].core:geolocation`` or
``global.core:geolocation``, ``captures[0].core:frequency`` (centre, Hz) and ``captures[0].core:datetime``;
optional ``global.heimdall:receiver_id``, ``global.heimdall:gain_offset_db`` and
``global.heimdall:power_calibration_dbm`` (the dBm that 0 dBFS, |x|² = 1, corresponds to). The
collection's ``heimdall:transmitter`` (GeoJSON Point) is the label when known.

Files come from outside: sizes, counts, numbers and nesting are bounded before any work, files reached
through a link that leads out of the folder being read are refused, and a data file's ``core:sha512`` is
checked when given. Every problem raises RecordingError naming the file and the field.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from heimdall.errors import RecordingError
from heimdall.scenario.domain import MAX_NAME_CHARS, MAX_RECEIVERS

COLLECTION_SUFFIX = ".sigmf-collection"
META_SUFFIX = ".sigmf-meta"
DATA_SUFFIX = ".sigmf-data"

MAX_METADATA_BYTES = 1024**2  # one .sigmf-meta or .sigmf-collection
MAX_DATA_BYTES = 256 * 1024**2  # one .sigmf-data (a feature window needs a few thousand samples)
MAX_JSON_DEPTH = 32
MAX_INTEGER_DIGITS = 19  # up to 2^63
MAX_SAMPLE_RATE_HZ = 10e9
MAX_FREQUENCY_HZ = 300e9
MAX_STREAM_NAME_CHARS = 255
_SHA512 = re.compile(r"^[0-9a-fA-F]{128}$")

# datatype → (numpy dtype of one real component, offset, scale): full-scale value = (raw - offset) * scale
DATATYPES: dict[str, tuple[np.dtype, float, float]] = {
    "cf32_le": (np.dtype("<f4"), 0.0, 1.0),
    "ci16_le": (np.dtype("<i2"), 0.0, 1 / 32768),
    "ci8": (np.dtype("i1"), 0.0, 1 / 128),
    "cu8": (np.dtype("u1"), 127.5, 1 / 127.5),
}


def sample_bytes(datatype: str) -> int:
    """Bytes of one complex sample of `datatype` (I and Q)."""
    return 2 * DATATYPES[datatype][0].itemsize


def decode_samples(raw: bytes, datatype: str) -> np.ndarray:
    """Bytes of `datatype` samples → complex64 [n] in full-scale units: the one IQ decoder of files and requests.

    Raises ValueError for bytes that are not whole samples and for NaN/Inf values.
    """
    kind, offset, scale = DATATYPES[datatype]
    if len(raw) % sample_bytes(datatype):
        raise ValueError(
            f"{len(raw)} bytes is not a whole number of {datatype} samples ({sample_bytes(datatype)} bytes each)"
        )
    values = np.frombuffer(raw, dtype=kind)
    if kind.kind == "f":
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(
                f"{int(bad.sum())} non-finite values (NaN or Inf), the first at sample "
                f"{int(np.flatnonzero(bad)[0]) // 2}"
            )
        return values.astype(np.float32).view(np.complex64)
    pairs = (values.astype(np.float32) - np.float32(offset)) * np.float32(scale)
    return pairs.view(np.complex64)


@dataclass(frozen=True)
class Recording:
    """One receiver's recording (metadata read and checked; samples read on demand)."""

    meta_path: Path
    data_path: Path
    datatype: str
    sample_rate_hz: float
    frequency_hz: float
    datetime: str | None
    lat: float
    lon: float
    alt_m: float | None
    receiver_id: str | None
    gain_offset_db: float
    power_calibration_dbm: float | None
    n_samples: int
    data_sha512: str | None = None  # global.core:sha512, checked whenever the samples are read

    def samples(self, count: int | None = None) -> np.ndarray:
        """The first `count` (default all) samples as complex64 [n] in full-scale units; NaN/Inf and a data file
        that does not match its core:sha512 are refused."""
        n = self.n_samples if count is None else min(count, self.n_samples)
        try:
            with open(self.data_path, "rb") as f:
                head = f.read(n * sample_bytes(self.datatype))
                digest = hashlib.sha512(head) if self.data_sha512 is not None else None
                if digest is not None:  # the whole file, one pass
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
        except OSError as exc:
            raise RecordingError(self.data_path, "data", f"cannot read ({exc.strerror})") from None
        if digest is not None and self.data_sha512 is not None and digest.hexdigest() != self.data_sha512.lower():
            raise RecordingError(
                self.meta_path,
                "global.core:sha512",
                f"sha512 of {self.data_path.name} does not match: the data changed after its metadata was written",
            )
        if len(head) < n * sample_bytes(self.datatype):
            raise RecordingError(
                self.data_path, "data", f"file ended after {len(head) // sample_bytes(self.datatype)} of {n} samples"
            )
        try:
            return decode_samples(head, self.datatype)
        except ValueError as exc:
            raise RecordingError(self.data_path, "data", str(exc)) from None


@dataclass(frozen=True)
class Collection:
    """One transmission: its recordings and, when known, where the transmitter was."""

    path: Path
    recordings: tuple[Recording, ...]
    transmitter_lat_lon: tuple[float, float] | None

    @property
    def name(self) -> str:
        """The collection's name: its file name without the suffix."""
        return self.path.name[: -len(COLLECTION_SUFFIX)]


def find_collections(root: str | Path) -> list[Path]:
    """Every ``*.sigmf-collection`` under root, sorted by path (links to folders are not descended)."""
    return sorted(Path(root).rglob(f"*{COLLECTION_SUFFIX}"))


def _check_inside(path: Path, root: Path, field: str) -> None:
    """RecordingError unless `path`, links resolved, lies inside `root` (links leading out are refused)."""
    try:
        real = path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a loop of links
        raise RecordingError(path, field, "cannot resolve the link") from None
    if not real.is_relative_to(root.resolve()):
        raise RecordingError(path, field, f"a link leading out of the folder read ({root}) to {real}: refused")


def _read_bounded(path: Path, root: Path) -> bytes:
    """The bytes of a metadata file inside `root`, refused unread when larger than MAX_METADATA_BYTES."""
    _check_inside(path, root, "file")
    try:
        size = path.stat().st_size
        if size > MAX_METADATA_BYTES:
            raise RecordingError(path, "file", f"{size} bytes; metadata files have at most {MAX_METADATA_BYTES}")
        return path.read_bytes()
    except FileNotFoundError:
        raise RecordingError(path, "file", "not found") from None
    except OSError as exc:
        raise RecordingError(path, "file", f"cannot read ({exc.strerror})") from None


class _HugeInteger:
    """An integer literal too long to convert (json would spend quadratic time on it); refused by _check_tree."""

    def __init__(self, digits: str) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"<integer of {len(self.digits)} digits>"


def _json_integer(digits: str) -> int | _HugeInteger:
    return int(digits) if len(digits.lstrip("-")) <= MAX_INTEGER_DIGITS else _HugeInteger(digits)


def _field(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def _check_tree(path: Path, doc: Any) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH and integers beyond 2^63, naming the field."""
    stack = [(doc, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise RecordingError(path, where, f"nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, _HugeInteger):
            raise RecordingError(
                path, where, f"an integer of {len(value.digits)} digits (at most {MAX_INTEGER_DIGITS})"
            )
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
            raise RecordingError(path, where, f"an integer beyond ±2^63 ({value:.3e})")
        children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        stack.extend((v, _field(where, k), depth + 1) for k, v in children)


def _parse_json(path: Path, data: bytes) -> dict:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordingError(path, "JSON", f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        doc = json.loads(text, parse_int=_json_integer)
    except json.JSONDecodeError as exc:
        raise RecordingError(path, "JSON", f"malformed at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise RecordingError(path, "JSON", f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    if not isinstance(doc, dict):
        raise RecordingError(path, "JSON", f"expected an object at the top level, got {type(doc).__name__}")
    _check_tree(path, doc)
    return doc


@functools.lru_cache(maxsize=1)
def _meta_validator() -> Any:
    import jsonschema
    from sigmf import schema

    return jsonschema.Draft202012Validator(schema.get_schema(schema_file=schema.SCHEMA_META))


def _check_schema(path: Path, doc: dict) -> None:
    """Validate recording metadata against the SigMF JSON schema (sigmf package); reports the first problem."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_meta_validator().iter_errors(doc))
    if error is not None:
        field = functools.reduce(_field, error.absolute_path, "") or "(top level)"
        raise RecordingError(path, field, f"SigMF schema: {error.message[:200]}")


def _number(
    path: Path, field: str, value: Any, lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecordingError(path, field, f"expected a finite number, got {value!r:.60}")
    if value < lo or value > hi or (lo_open and value <= lo):
        bound = (f"> {lo:g}" + ("" if math.isinf(hi) else f" and ≤ {hi:g}")) if lo_open else f"in [{lo:g}, {hi:g}]"
        raise RecordingError(path, field, f"expected a value {bound}, got {value!r:.40}")
    return float(value)


def _integer(path: Path, field: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise RecordingError(path, field, f"expected an integer in [{lo}, {hi}], got {value!r:.40}")
    return value


def _point(path: Path, field: str, value: Any) -> tuple[float, float, float | None]:
    """A GeoJSON Point → (lat, lon, alt_m or None)."""
    if not isinstance(value, dict) or value.get("type") != "Point":
        raise RecordingError(
            path,
            field,
            f'expected a GeoJSON Point {{"type": "Point", "coordinates": [lon, lat, alt_m]}}, got {value!r:.80}',
        )
    c = value.get("coordinates")
    if not isinstance(c, list) or len(c) not in (2, 3):
        raise RecordingError(path, f"{field}.coordinates", f"expected [lon, lat] or [lon, lat, alt_m], got {c!r:.80}")
    lon = _number(path, f"{field}.coordinates[0] (longitude)", c[0], -180, 180)
    lat = _number(path, f"{field}.coordinates[1] (latitude)", c[1], -90, 90)
    alt = _number(path, f"{field}.coordinates[2] (altitude, m)", c[2], -500, 10_000) if len(c) == 3 else None
    return lat, lon, alt


def _datetime(path: Path, field: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > 64:
        raise RecordingError(path, field, f"expected an ISO 8601 UTC time string, got {value!r:.60}")
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        raise RecordingError(
            path, field, f"expected an ISO 8601 time like 2026-05-01T12:00:00Z, got {value!r:.60}"
        ) from None
    return value


def _segments(path: Path, key: str, items: Any, n: int, data_path: Path) -> None:
    """Captures or annotations: objects whose samples [core:sample_start, + core:sample_count) lie in the data."""
    if not isinstance(items, list):
        raise RecordingError(path, key, f"expected a list of objects, got {type(items).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise RecordingError(path, f"{key}[{i}]", f"expected an object, got {type(item).__name__}")
        start = _integer(path, f"{key}[{i}].core:sample_start", item.get("core:sample_start", 0), 0, 2**63 - 1)
        count = _integer(path, f"{key}[{i}].core:sample_count", item.get("core:sample_count", 0), 0, 2**63 - 1)
        if start + count > n or start >= max(n, 1):
            raise RecordingError(
                data_path,
                f"{key}[{i}]",
                f"metadata describes samples up to {start + count} but "
                f"the data file holds {n}: data shorter than the metadata",
            )


def _recording(path: Path, meta_bytes: bytes, root: Path) -> Recording:
    doc = _parse_json(path, meta_bytes)
    g, captures = doc.get("global"), doc.get("captures")
    if not isinstance(g, dict):
        raise RecordingError(path, "global", "missing (expected an object)")
    datatype = g.get("core:datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise RecordingError(
            path, "global.core:datatype", f"unsupported {datatype!r:.40}; expected one of {', '.join(DATATYPES)}"
        )
    if "core:sample_rate" not in g:
        raise RecordingError(path, "global.core:sample_rate", "missing (samples per second, Hz)")
    rate = _number(path, "global.core:sample_rate", g["core:sample_rate"], 0.0, MAX_SAMPLE_RATE_HZ, lo_open=True)
    if g.get("core:num_channels", 1) != 1:
        raise RecordingError(
            path, "global.core:num_channels", f"expected 1 channel, got {g['core:num_channels']!r:.40}"
        )
    if not isinstance(captures, list) or not captures or not isinstance(captures[0], dict):
        raise RecordingError(path, "captures", "expected at least one capture segment")
    c0 = captures[0]
    if "core:frequency" not in c0:
        raise RecordingError(path, "captures[0].core:frequency", "missing (centre frequency, Hz)")
    freq = _number(path, "captures[0].core:frequency", c0["core:frequency"], 0.0, MAX_FREQUENCY_HZ, lo_open=True)
    when = _datetime(path, "captures[0].core:datetime", c0["core:datetime"]) if "core:datetime" in c0 else None
    if "core:geolocation" in c0:
        lat, lon, alt = _point(path, "captures[0].core:geolocation", c0["core:geolocation"])
    elif "core:geolocation" in g:
        lat, lon, alt = _point(path, "global.core:geolocation", g["core:geolocation"])
    else:
        raise RecordingError(
            path,
            "global.core:geolocation",
            "missing: the receiver position is needed (GeoJSON Point [lon, lat, alt_m])",
        )
    rx_id = g.get("heimdall:receiver_id")
    if rx_id is not None and (not isinstance(rx_id, str) or not rx_id.strip() or len(rx_id) > MAX_NAME_CHARS):
        raise RecordingError(
            path,
            "global.heimdall:receiver_id",
            f"expected a non-empty string of at most {MAX_NAME_CHARS} characters, got {rx_id!r:.60}",
        )
    gain = _number(path, "global.heimdall:gain_offset_db", g.get("heimdall:gain_offset_db", 0.0), -30, 30)
    cal = g.get("heimdall:power_calibration_dbm")
    if cal is not None:
        cal = _number(path, "global.heimdall:power_calibration_dbm", cal, -200, 100)
    sha512 = g.get("core:sha512")
    if sha512 is not None and (not isinstance(sha512, str) or not _SHA512.match(sha512)):
        raise RecordingError(path, "global.core:sha512", f"expected 128 hexadecimal digits, got {sha512!r:.60}")
    _check_schema(path, doc)

    data_path = path.with_name(path.name[: -len(META_SUFFIX)] + DATA_SUFFIX)
    _check_inside(data_path, root, "data")
    if not data_path.is_file():
        raise RecordingError(data_path, "data", f"data file not found (named by {path.name})")
    file_bytes = data_path.stat().st_size
    if file_bytes > MAX_DATA_BYTES:
        raise RecordingError(data_path, "data", f"{file_bytes} bytes; a data file has at most {MAX_DATA_BYTES}")
    sample_bytes = 2 * DATATYPES[datatype][0].itemsize
    size = file_bytes - _integer(path, "global.core:trailing_bytes", g.get("core:trailing_bytes", 0), 0, file_bytes)
    if size % sample_bytes:
        raise RecordingError(
            data_path,
            "data",
            f"{size} bytes is not a whole number of {datatype} samples ({sample_bytes} bytes each): truncated?",
        )
    n = size // sample_bytes
    _segments(path, "captures", captures, n, data_path)
    _segments(path, "annotations", doc.get("annotations", []), n, data_path)
    return Recording(
        meta_path=path,
        data_path=data_path,
        datatype=datatype,
        sample_rate_hz=rate,
        frequency_hz=freq,
        datetime=when,
        lat=lat,
        lon=lon,
        alt_m=alt,
        receiver_id=rx_id.strip() if rx_id else None,
        gain_offset_db=gain,
        power_calibration_dbm=cal,
        n_samples=int(n),
        data_sha512=sha512,
    )


def _stream_name(path: Path, field: str, name: Any) -> str:
    if (
        not isinstance(name, str)
        or not name
        or len(name) > MAX_STREAM_NAME_CHARS
        or "\0" in name
        or Path(name).is_absolute()
        or ".." in Path(name).parts
    ):
        raise RecordingError(path, field, f"expected the base name of a recording, got {name!r:.60}")
    return name


def read_collection(path: str | Path, root: str | Path | None = None) -> Collection:
    """Read a collection and every recording it names (hashes checked when given); every file must lie inside
    `root` (default: the collection's folder)."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    doc = _parse_json(path, _read_bounded(path, root))
    col = doc.get("collection")
    if not isinstance(col, dict):
        raise RecordingError(path, "collection", "missing (expected an object)")
    streams = col.get("core:streams")
    if not isinstance(streams, list) or not 1 <= len(streams) <= MAX_RECEIVERS:
        raise RecordingError(
            path,
            "collection.core:streams",
            f"expected a list of 1 to {MAX_RECEIVERS} recordings, "
            f"got {len(streams) if isinstance(streams, list) else 0}",
        )
    tx = None
    if col.get("heimdall:transmitter") is not None:
        lat, lon, _ = _point(path, "collection.heimdall:transmitter", col["heimdall:transmitter"])
        tx = (lat, lon)
    # The sigmf package's collection schema wants [name, hash] pairs while the specification and the
    # package itself write {"name", "hash"} objects: both are accepted and checked here, not by the schema.
    recordings = []
    for i, s in enumerate(streams):
        field = f"collection.core:streams[{i}]"
        if isinstance(s, list) and len(s) in (1, 2):
            s = {"name": s[0], "hash": s[1] if len(s) == 2 else None}
        name = _stream_name(path, f"{field}.name", s.get("name") if isinstance(s, dict) else None)
        meta = path.parent / f"{name}{META_SUFFIX}"
        if not meta.is_file():
            raise RecordingError(path, f"{field}.name", f"recording metadata {meta.name} not found")
        expected = s.get("hash")
        if expected is not None and (not isinstance(expected, str) or not _SHA512.match(expected)):
            raise RecordingError(path, f"{field}.hash", f"expected 128 hexadecimal digits, got {expected!r:.60}")
        meta_bytes = _read_bounded(meta, root)
        if expected is not None and hashlib.sha512(meta_bytes).hexdigest() != expected.lower():
            raise RecordingError(
                path,
                f"{field}.hash",
                f"sha512 of {meta.name} does not match: the recording changed after the collection was written",
            )
        recordings.append(_recording(meta, meta_bytes, root))
    return Collection(path=path, recordings=tuple(recordings), transmitter_lat_lon=tx)
