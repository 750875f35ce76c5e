"""The training store: one chunked, compressed HDF5 file per split (and shard).

Layout of ``<split>.h5`` (or ``<split>-<i>-of-<N>.h5`` for shard i of N):
  features            float32 [n, R, F]  model input (heimdall.features.feature_matrix)
  mask                bool    [n, R]     receiver heard the transmission
  present             bool    [n, R]     receiver's recording is part of the sample (optional; absent: all)
  tx_position_m       float64 [n, 2]     label, east/north in the scenario's local frame
  tx_lat_lon          float64 [n, 2]     the same label in degrees
  oracle/<name>       per-sample truths (tx_power_dbm, rx_power_dbm, shadowing_db, ... see generator)
  oracle/gain_offset_db float64 [R]      per-receiver calibration errors (simulated stores)
  iq                  complex64 [k, R, N] raw IQ of the first k samples (optional)
  meta/<name>         per-sample provenance of imported recordings (collection, datetime, frequency_hz)
  receivers/<column>  the receiver table (id, name, lat, lon, east_m, north_m, antenna_height_m, noise_figure_db)
  attrs: format, format_version, split, shard, seed, scenario_yaml, scenario_sha256, heimdall_version,
         feature_params (JSON), feature_names (JSON), emission_names (JSON), n_samples

A file is written as ``<name>.partial`` and renamed when complete: a file with the final name is whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import heimdall
from heimdall.errors import DatasetError
from heimdall.features import FeatureParams
from heimdall.scenario import Scenario
from heimdall.sim.signals import EMISSION_CODES

STORE_FORMAT = "heimdall-store"
STORE_FORMAT_VERSION = 1
PER_SAMPLE_TOP = ("features", "mask", "tx_position_m", "tx_lat_lon")
OPTIONAL_TOP = ("present",)
CHUNK_SAMPLES = 1024


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
        "feature_names": repr(params.feature_names),
        "emission_names": repr(list(EMISSION_CODES)),
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
    if shard is None or shard == (0, 1):
        return f"{split}.h5"
    i, n = shard
    return f"{split}-{i:05d}-of-{n:05d}.h5"


class StoreWriter:
    """Appends blocks of samples to a new store file; `commit()` makes it visible under its final name."""

    def __init__(self, path: Path, attrs: dict[str, Any], receivers: dict[str, np.ndarray],
                 gain_offset_db: np.ndarray | None = None):
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
        return self._n

    @property
    def n_iq(self) -> int:
        return self._n_iq

    def commit(self) -> Path:
        self._f.attrs["n_samples"] = self._n
        self._f.close()
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the partial file (nothing that looks complete is left behind)."""
        try:
            self._f.close()
        finally:
            self.partial.unlink(missing_ok=True)


@dataclass(frozen=True)
class StoreInfo:
    """What a store file declares about itself."""

    path: Path
    split: str
    n_samples: int
    n_receivers: int
    n_features: int
    scenario_sha256: str
    attrs: dict[str, Any]

    @property
    def feature_params_json(self) -> str:
        return self.attrs["feature_params"]


def inspect_store(path: str | Path) -> StoreInfo:
    """Open a store file and check it is a complete Heimdall store; raises DatasetError naming the problem."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: store file not found")
    try:
        with h5py.File(p, "r") as f:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            if attrs.get("format") != STORE_FORMAT:
                raise DatasetError(f"{p}: not a Heimdall store (attribute format={attrs.get('format')!r})")
            if int(attrs.get("format_version", -1)) != STORE_FORMAT_VERSION:
                raise DatasetError(
                    f"{p}: store format_version {attrs.get('format_version')} , expected {STORE_FORMAT_VERSION}"
                )
            for name in PER_SAMPLE_TOP:
                if name not in f:
                    raise DatasetError(f"{p}: dataset {name!r} is missing")
            n = int(attrs.get("n_samples", -1))
            for name in PER_SAMPLE_TOP:
                if f[name].shape[0] != n:
                    raise DatasetError(f"{p}: {name} has {f[name].shape[0]} rows, expected n_samples={n}")
            shape = f["features"].shape
    except OSError as exc:
        raise DatasetError(f"{p}: cannot read as HDF5 ({exc})") from None
    return StoreInfo(
        path=p,
        split=str(attrs.get("split")),
        n_samples=n,
        n_receivers=int(shape[1]),
        n_features=int(shape[2]),
        scenario_sha256=str(attrs.get("scenario_sha256")),
        attrs=attrs,
    )


def split_files(data_dir: str | Path, split: str) -> list[Path]:
    """The complete files of one split in a store folder (whole split or its shards), sorted."""
    d = Path(data_dir)
    files = sorted(d.glob(f"{split}.h5")) + sorted(d.glob(f"{split}-*-of-*.h5"))
    return files


def read_receivers(path: str | Path) -> dict[str, np.ndarray]:
    """The receiver table of a store file as column arrays (strings decoded)."""
    with h5py.File(path, "r") as f:
        g = f["receivers"]
        return {
            k: (g[k].asstr()[...] if h5py.check_string_dtype(g[k].dtype) else g[k][...]) for k in g.keys()
        }

