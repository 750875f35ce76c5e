"""The training store: one chunked, compressed HDF5 file per split (and shard).

Layout of ``<split>.h5`` (or ``<split>-<i>-of-<N>.h5`` for shard i of N):
  features            float32 [n, R, F]  model input (heimdall.features.feature_matrix; F = 3 with psd_bins 0 for
                                         power readings: heimdall.datasets.power_import)
  mask                bool    [n, R]     receiver heard the transmission
  present             bool    [n, R]     receiver's recording is part of the sample (optional; absent: all)
  tx_position_m       float64 [n, 2]     label, east/north in the scenario's local frame
  tx_lat_lon          float64 [n, 2]     the same label in degrees
  oracle/<name>       per-sample truths (tx_power_dbm, rx_power_dbm, shadowing_db, ... see generator)
  oracle/gain_offset_db float64 [R]      per-receiver calibration errors (simulated stores)
  iq                  complex64 [k, R, N] raw IQ of the first k samples (optional)
  meta/<name>         per-sample provenance of imported recordings (collection, datetime, frequency_hz)
  receivers/<column>  the receiver table (id, name, lat, lon, east_m, north_m, antenna_height_m, noise_figure_db;
                      power_calibrated bool [R] in stores of power readings: False where a receiver's power is in
                      its own uncalibrated dB; absent: all dBm)
  attrs: format, format_version, split, shard, seed, scenario_yaml, scenario_sha256, heimdall_version,
         feature_params (JSON), feature_names (JSON), emission_names (JSON), n_samples

A file is written as ``<name>.partial`` and renamed when complete: a file with the final name is whole.

Reading an untrusted file: HDF5 reads a chunk that was never written as the dataset's fill value, so a file of a few
kilobytes can declare datasets of any size. `inspect_store` therefore refuses a dataset that declares more bytes
than its stored chunks can hold after decompression (COMPRESSION_BOUNDS: gzip at most 1032:1, lzf at most 100:1;
other filters are refused), and the readers (heimdall.datasets.loader) check what a whole read allocates against the
memory budget (heimdall.memory) before reading.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import heimdall
from heimdall.atomic import fsync_file, replace_durably
from heimdall.errors import DatasetError
from heimdall.features import FeatureParams
from heimdall.scenario.domain import MAX_RECEIVERS, Scenario
from heimdall.sim.signals import EMISSION_CODES

STORE_FORMAT = "heimdall-store"
STORE_FORMAT_VERSION = 1
PER_SAMPLE_TOP = ("features", "mask", "tx_position_m", "tx_lat_lon")
OPTIONAL_TOP = ("present",)
CHUNK_SAMPLES = 1024
MAX_ATTRIBUTE_BYTES = 4 * 1024**2
MAX_STORE_OBJECTS = 1000  # groups and datasets; a store has a few dozen
# HDF5 filter id → the most it can expand stored bytes: deflate's limit is 1032:1, lzf's 88:1 (264 bytes from a
# 3-byte back-reference); shuffle and fletcher32 leave the size as it is
COMPRESSION_BOUNDS = {1: 1032, 32000: 100, 2: 1, 3: 1}
FILTER_NAMES = {1: "gzip", 32000: "lzf", 2: "shuffle", 3: "fletcher32"}
SMALL_DATASET_BYTES = 1024  # declared sizes this small are never refused (scalars, tiny tables)
_KIND_NAMES = {
    "f": "float",
    "b": "bool",
    "c": "complex",
    "fiu": "numeric",
    "fiub": "numeric",
    "SOU": "text",
    "fiubSOU": "numeric or text",
}


def store_attrs(scenario: Scenario, params: FeatureParams, split: str, **extra: Any) -> dict[str, Any]:
    """The attributes every store file carries (plus `extra`, e.g. seed and shard of a simulation)."""
    return {
        "format": STORE_FORMAT,
        "format_version": STORE_FORMAT_VERSION,
        "split": split,
        "scenario_name": scenario.name,
        "scenario_yaml": scenario.to_yaml(),
        "scenario_sha256": scenario.sha256,
        "heimdall_version": heimdall.__version__,
        "feature_params": params.to_json(),
        "feature_names": json.dumps(params.feature_names),
        "emission_names": json.dumps(list(EMISSION_CODES)),
        "frame_origin_lat_lon": [scenario.frame.origin_lat, scenario.frame.origin_lon],
        **extra,
    }


def receiver_table(scenario: Scenario) -> dict[str, np.ndarray]:
    """The receiver table of a store (column arrays) for the scenario's receivers."""
    rx = scenario.receivers
    en = scenario.receiver_positions_m()
    return {
        "id": np.array([r.id for r in rx]),
        "name": np.array([r.name for r in rx]),
        "lat": np.array([r.lat for r in rx]),
        "lon": np.array([r.lon for r in rx]),
        "east_m": en[:, 0],
        "north_m": en[:, 1],
        "antenna_height_m": np.array([r.antenna_height_m for r in rx]),
        "noise_figure_db": np.array([r.noise_figure_db for r in rx]),
    }


def split_filename(split: str, shard: tuple[int, int] | None) -> str:
    """File name of a split, or of shard (i, N) of it (`train-0-of-4.h5`)."""
    if shard is None or shard == (0, 1):
        return f"{split}.h5"
    i, n = shard
    return f"{split}-{i:05d}-of-{n:05d}.h5"


class StoreWriter:
    """Appends blocks of samples to a new store file; `commit()` makes it visible under its final name."""

    def __init__(
        self,
        path: Path,
        attrs: dict[str, Any],
        receivers: dict[str, np.ndarray],
        gain_offset_db: np.ndarray | None = None,
    ) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = h5py.File(self.partial, "w", track_order=False)
        self._n = 0
        self._n_iq = 0
        for k, v in attrs.items():
            self._f.attrs[k] = v
        g = self._f.create_group("receivers")
        for k, v in receivers.items():
            v = np.asarray(v)
            if v.dtype.kind in "UO":
                g.create_dataset(k, data=v.astype(object), dtype=h5py.string_dtype())
            else:
                g.create_dataset(k, data=v)
        if gain_offset_db is not None:
            self._f.create_dataset("oracle/gain_offset_db", data=np.asarray(gain_offset_db, np.float64))

    def _append(self, name: str, data: np.ndarray, start: int) -> None:
        if data.dtype.kind in "UO":
            data = data.astype(object)
        if name not in self._f:
            chunk_rows = CHUNK_SAMPLES if name != "iq" else 1
            self._f.create_dataset(
                name,
                shape=(0, *data.shape[1:]),
                maxshape=(None, *data.shape[1:]),
                dtype=h5py.string_dtype() if data.dtype.kind == "O" else data.dtype,
                chunks=(chunk_rows, *data.shape[1:]),
                compression="gzip",
                compression_opts=1,
                shuffle=True,
            )
        ds = self._f[name]
        ds.resize(start + len(data), axis=0)
        ds[start:] = data

    def append(self, block: dict[str, np.ndarray]) -> None:
        """Append samples: every per-sample array of one block (others than the model's go under oracle/,
        unless already named meta/...)."""
        n = len(block["features"])
        for k, v in block.items():
            if k == "iq":
                continue
            name = k if k in PER_SAMPLE_TOP + OPTIONAL_TOP or k.startswith("meta/") else f"oracle/{k}"
            self._append(name, np.asarray(v), self._n)
        if "iq" in block and len(block["iq"]):
            self._append("iq", block["iq"], self._n_iq)
            self._n_iq += len(block["iq"])
        self._n += n

    @property
    def n_samples(self) -> int:
        """Transmissions written so far."""
        return self._n

    @property
    def n_iq(self) -> int:
        """Transmissions with raw IQ kept so far."""
        return self._n_iq

    def commit(self) -> Path:
        """Close, fsync and rename the file to its final name (durably: the folder is fsynced too)."""
        self._f.attrs["n_samples"] = self._n
        self._f.close()
        fsync_file(self.partial)
        replace_durably(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the partial file (nothing that looks complete is left behind)."""
        try:
            self._f.close()
        finally:
            self.partial.unlink(missing_ok=True)


@dataclass(frozen=True)
class StoreInfo:
    """What a store file declares about itself (checked by inspect_store)."""

    path: Path
    split: str
    n_samples: int
    n_receivers: int
    n_features: int
    scenario_sha256: str
    attrs: dict[str, Any]
    dataset_bytes: dict[str, int]  # top-level dataset → bytes when read whole (decompressed)

    @property
    def feature_params_json(self) -> str:
        """The store's feature parameters as JSON text."""
        return self.attrs["feature_params"]


def inspect_store(path: str | Path) -> StoreInfo:
    """Open a store file and check it is a complete Heimdall store whose layout can be read safely: attributes,
    dtypes and shapes as documented, no links, virtual datasets or external storage (they would read other
    files). Raises DatasetError naming the file, the dataset or attribute, and what was expected."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: store file not found")
    try:
        with h5py.File(p, "r") as f:
            _check_storage(p, f)
            attrs = _attributes(p, f)
            n, r, k = _check_layout(p, f, attrs)
            top = {name: int(f[name].size * f[name].dtype.itemsize) for name in f if isinstance(f[name], h5py.Dataset)}
    except DatasetError:
        raise
    except OSError as exc:
        raise DatasetError(f"{p}: cannot read as HDF5 ({exc})") from None
    except (KeyError, ValueError, TypeError, AttributeError, RuntimeError) as exc:  # h5py on damaged structures
        raise DatasetError(f"{p}: not a readable Heimdall store ({type(exc).__name__}: {exc})") from None
    return StoreInfo(
        path=p,
        split=attrs["split"],
        n_samples=n,
        n_receivers=r,
        n_features=k,
        scenario_sha256=attrs["scenario_sha256"],
        attrs=attrs,
        dataset_bytes=top,
    )


def _check_storage(p: Path, f: h5py.File) -> None:
    """DatasetError for soft/external links, virtual datasets and external raw storage anywhere in the file, and for
    a dataset that declares more than its stored bytes can hold (_check_declared_size)."""
    stack, seen = [("", f)], 0
    while stack:
        prefix, group = stack.pop()
        for name in group:
            where = f"{prefix}{name}"
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise DatasetError(
                    f"{p}: {where} is an external link to {link.filename}:{link.path}; a store is "
                    "one self-contained file"
                )
            if isinstance(link, h5py.SoftLink):
                raise DatasetError(f"{p}: {where} is a soft link to {link.path}; a store holds no links")
            seen += 1
            if seen > MAX_STORE_OBJECTS:
                raise DatasetError(f"{p}: more than {MAX_STORE_OBJECTS} groups and datasets")
            obj = group[name]
            if isinstance(obj, h5py.Group):
                stack.append((f"{where}/", obj))
            elif isinstance(obj, h5py.Dataset) and (obj.is_virtual or obj.id.get_create_plist().get_external_count()):
                raise DatasetError(
                    f"{p}: dataset {where} stores its data in other files (virtual or external); "
                    "a store is one self-contained file"
                )
            elif isinstance(obj, h5py.Dataset):
                _check_declared_size(p, where, obj)


def _check_declared_size(p: Path, name: str, ds: h5py.Dataset) -> None:
    """DatasetError unless the dataset's declared size (shape × item size) fits what its stored bytes decompress to:
    chunks never written read as fill values, so without this a small file could make a reader allocate any size."""
    declared = int(ds.size) * ds.dtype.itemsize
    if declared <= SMALL_DATASET_BYTES:
        return
    plist = ds.id.get_create_plist()
    bound = 1
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in COMPRESSION_BOUNDS:
            raise DatasetError(
                f"{p}: dataset {name} uses HDF5 filter {code}; a store's datasets use only "
                f"{', '.join(FILTER_NAMES.values())} (whose expansion is bounded)"
            )
        bound *= COMPRESSION_BOUNDS[code]
    stored = min(ds.id.get_storage_size(), p.stat().st_size)  # what the file's index claims, at most the file
    if declared > stored * bound:
        raise DatasetError(
            f"{p}: dataset {name} declares {ds.dtype} {ds.shape} ({declared:,} bytes) but the file stores {stored:,} "
            f"bytes of it, which decompress to at most {stored * bound:,}; the rest was never written (a damaged or "
            "forged store)"
        )


def _attributes(p: Path, f: h5py.File) -> dict[str, Any]:
    """The file attributes (bounded in size, strings decoded), with the ones readers rely on checked."""
    attrs = {}
    for name in f.attrs:
        size = f.attrs.get_id(name).get_storage_size()
        if size > MAX_ATTRIBUTE_BYTES:
            raise DatasetError(f"{p}: attribute {name} holds {size} bytes, at most {MAX_ATTRIBUTE_BYTES}")
        value = f.attrs[name]
        attrs[name] = value.decode() if isinstance(value, bytes) else value
    if attrs.get("format") != STORE_FORMAT:
        raise DatasetError(f"{p}: not a Heimdall store (attribute format={attrs.get('format')!r:.60})")
    for name in ("format_version", "n_samples"):
        value = attrs.get(name)
        if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)) or value < 0:
            raise DatasetError(f"{p}: attribute {name} must be a non-negative integer, got {value!r:.60}")
        attrs[name] = int(value)
    if attrs["format_version"] != STORE_FORMAT_VERSION:
        raise DatasetError(f"{p}: store format_version {attrs['format_version']}, expected {STORE_FORMAT_VERSION}")
    for name in ("split", "scenario_sha256", "feature_params", "scenario_yaml"):
        if not isinstance(attrs.get(name, ""), str):
            raise DatasetError(f"{p}: attribute {name} must be text, got {type(attrs[name]).__name__}")
    for name in ("split", "scenario_sha256", "feature_params"):
        if name not in attrs:
            raise DatasetError(f"{p}: attribute {name} is missing")
    try:
        FeatureParams.from_json(attrs["feature_params"])
    except (ValueError, TypeError, KeyError, AttributeError):
        raise DatasetError(f"{p}: attribute feature_params is not the JSON of feature parameters") from None
    return attrs


def _dataset(p: Path, f: h5py.File, name: str, kinds: str, shape: tuple) -> h5py.Dataset:
    """f[name], checked: a dataset of dtype kind in `kinds` and the given shape (None: any length)."""
    ds = f.get(name)
    if not isinstance(ds, h5py.Dataset):
        raise DatasetError(f"{p}: dataset {name!r} is missing")
    ok_shape = len(ds.shape) == len(shape) and all(
        want is None or got == want for got, want in zip(ds.shape, shape, strict=False)
    )
    if ds.dtype.kind not in kinds or not ok_shape:
        want = " × ".join("any" if d is None else str(d) for d in shape)
        raise DatasetError(f"{p}: dataset {name} is {ds.dtype} {ds.shape}, expected {_KIND_NAMES[kinds]} [{want}]")
    return ds


def _check_layout(p: Path, f: h5py.File, attrs: dict[str, Any]) -> tuple[int, int, int]:
    """(n_samples, receivers, features) after checking every dataset readers use."""
    n = attrs["n_samples"]
    features = _dataset(p, f, "features", "f", (n, None, None))
    _, r, k = features.shape
    if not 1 <= r <= MAX_RECEIVERS or k != FeatureParams.from_json(attrs["feature_params"]).n_features:
        raise DatasetError(
            f"{p}: features has {r} receivers and {k} features; expected 1 to {MAX_RECEIVERS} "
            "receivers and the features that attribute feature_params describes"
        )
    _dataset(p, f, "mask", "b", (n, r))
    _dataset(p, f, "tx_position_m", "f", (n, 2))
    _dataset(p, f, "tx_lat_lon", "f", (n, 2))
    if "present" in f:
        _dataset(p, f, "present", "b", (n, r))
    if "iq" in f:
        iq = _dataset(p, f, "iq", "c", (None, r, None))
        if iq.shape[0] > n:
            raise DatasetError(f"{p}: iq has {iq.shape[0]} rows, more than n_samples={n}")
    if not isinstance(f.get("receivers"), h5py.Group):
        raise DatasetError(f"{p}: group 'receivers' (the receiver table) is missing")
    for column in f["receivers"]:
        kinds = "SOU" if column in ("id", "name") else "fiub"
        _dataset(p, f, f"receivers/{column}", kinds, (r,))
    for column in ("id", "east_m", "north_m"):
        _dataset(p, f, f"receivers/{column}", "SOU" if column == "id" else "fiu", (r,))
    for group, kinds in (("oracle", "fiub"), ("meta", "fiubSOU")):
        if group in f and not isinstance(f[group], h5py.Group):
            raise DatasetError(f"{p}: {group} must be a group of per-sample datasets")
        for name in f.get(group, ()):
            full = f"{group}/{name}"
            ndim = f[full].ndim if isinstance(f[full], h5py.Dataset) else 1
            rows = (r,) if full == "oracle/gain_offset_db" else (n,) + (None,) * max(ndim - 1, 0)
            _dataset(p, f, full, kinds, rows)
    return n, r, k


def split_files(data_dir: str | Path, split: str) -> list[Path]:
    """The complete files of one split in a store folder (whole split or its shards), sorted."""
    d = Path(data_dir)
    files = sorted(d.glob(f"{split}.h5")) + sorted(d.glob(f"{split}-*-of-*.h5"))
    return files


def read_receivers(path: str | Path) -> dict[str, np.ndarray]:
    """The receiver table of a store file as column arrays (strings decoded)."""
    with h5py.File(path, "r") as f:
        g = f["receivers"]
        return {k: (g[k].asstr()[...] if h5py.check_string_dtype(g[k].dtype) else g[k][...]) for k in g.keys()}
