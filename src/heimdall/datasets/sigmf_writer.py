"""SigMF files as Heimdall writes them: recordings and collections (the format of heimdall.datasets.sigmf_files), and
simulated transmissions written as SigMF collections (`heimdall simulate --format sigmf`).

A split goes to ``<out>/<split>/`` (``<out>/<split>-<i>-of-<N>/`` for a shard), one collection per
transmission named ``tx-<index>``, every receiver of the scenario recorded (heard or not, as a real
network records). The folder is written as ``<split>.partial``, its files plainly (nothing reads it before it is
complete), then made durable at once (heimdall.atomic.sync_folder) and renamed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from heimdall.atomic import atomic_write_bytes, fsync_dir, sync_folder
from heimdall.datasets.sigmf_files import COLLECTION_SUFFIX, DATA_SUFFIX, DATATYPES, META_SUFFIX
from heimdall.scenario.domain import Scenario

SIMULATION_EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SIGMF_VERSION = "1.2.0"
HEIMDALL_EXTENSION = {"name": "heimdall", "version": "1.0.0", "optional": True}


def encode(iq: np.ndarray, datatype: str) -> bytes:
    """Complex [n] full-scale samples → bytes of `datatype` (integers rounded and clipped)."""
    kind, offset, scale = DATATYPES[datatype]
    pairs = np.asarray(iq, np.complex64).view(np.float32)
    if kind.kind == "f":
        return pairs.astype(kind).tobytes()
    info = np.iinfo(kind)
    return np.clip(np.round(pairs / scale + offset), info.min, info.max).astype(kind).tobytes()


def _write(path: Path, data: bytes, atomic: bool) -> None:
    """`data` to `path`: atomically (heimdall.atomic), or plainly into a folder not yet published."""
    if atomic:
        atomic_write_bytes(path, data)
    else:
        path.write_bytes(data)


def point(lat: float, lon: float, alt_m: float | None = None) -> dict:
    """A GeoJSON point (SigMF core:geolocation) at lat/lon degrees and optional altitude (m)."""
    return {"type": "Point", "coordinates": [float(lon), float(lat)] + ([float(alt_m)] if alt_m is not None else [])}


def safe_name(text: str) -> str:
    """A file-name-safe form of an identifier."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"


def write_recording(
    folder: Path,
    stem: str,
    iq: np.ndarray,
    *,
    datatype: str,
    sample_rate_hz: float,
    frequency_hz: float,
    datetime: str,
    lat: float,
    lon: float,
    alt_m: float | None,
    receiver_id: str,
    power_calibration_dbm: float,
    description: str = "",
    extra_global: dict | None = None,
    atomic: bool = True,
) -> Path:
    """Write ``<stem>.sigmf-data`` then ``<stem>.sigmf-meta`` (each atomically; atomic=False: plainly, into a folder
    published later as a whole); returns the meta path."""
    data = encode(iq, datatype)
    meta = {
        "global": {
            "core:datatype": datatype,
            "core:sample_rate": float(sample_rate_hz),
            "core:version": SIGMF_VERSION,
            "core:num_channels": 1,
            "core:sha512": hashlib.sha512(data).hexdigest(),
            "core:description": description,
            "core:recorder": "heimdall",
            "core:extensions": [HEIMDALL_EXTENSION],
            "core:geolocation": point(lat, lon, alt_m),
            "heimdall:receiver_id": receiver_id,
            "heimdall:power_calibration_dbm": float(power_calibration_dbm),
            **(extra_global or {}),
        },
        "captures": [{"core:sample_start": 0, "core:frequency": float(frequency_hz), "core:datetime": datetime}],
        "annotations": [{"core:sample_start": 0, "core:sample_count": len(iq)}],
    }
    _write(folder / f"{stem}{DATA_SUFFIX}", data, atomic)
    path = folder / f"{stem}{META_SUFFIX}"
    _write(path, json.dumps(meta, indent=1).encode(), atomic)
    return path


def write_collection(
    folder: Path,
    name: str,
    meta_paths: list[Path],
    transmitter_lat_lon: tuple[float, float] | None,
    description: str = "",
    atomic: bool = True,
) -> Path:
    """Write ``<name>.sigmf-collection`` naming the given recordings (with their sha512; atomic as write_recording)."""
    col: dict[str, Any] = {
        "core:version": SIGMF_VERSION,
        "core:extensions": [HEIMDALL_EXTENSION],
        "core:description": description,
        "core:streams": [
            {"name": p.name[: -len(META_SUFFIX)], "hash": hashlib.sha512(p.read_bytes()).hexdigest()}
            for p in meta_paths
        ],
    }
    if transmitter_lat_lon is not None:
        col["heimdall:transmitter"] = point(*transmitter_lat_lon)
    path = folder / f"{name}{COLLECTION_SUFFIX}"
    _write(path, json.dumps({"collection": col}, indent=1).encode(), atomic)
    return path


class SigMFSplitWriter:
    """Same interface as data.store.StoreWriter: append(block), n_samples, n_iq, commit(), abort()."""

    def __init__(self, folder: Path, scenario: Scenario, datatype: str = "cf32_le") -> None:
        self.path = Path(folder)
        self.partial = self.path.with_name(self.path.name + ".partial")
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True)
        self.scenario = scenario
        self.datatype = datatype
        self._stems = [f"{safe_name(r.id)}" for r in scenario.receivers]
        self._n = 0

    @property
    def n_samples(self) -> int:
        """Transmissions written so far."""
        return self._n

    @property
    def n_iq(self) -> int:
        """Transmissions with IQ written so far (all of them: SigMF holds IQ)."""
        return self._n

    def append(self, block: dict[str, np.ndarray]) -> None:
        """Write every transmission of a simulated block; the block must carry IQ for all of them."""
        n = len(block["features"])
        if len(block.get("iq", ())) != n:
            raise ValueError("SigMF output needs the IQ of every transmission (iq_per_split ≥ transmissions)")
        sc, ch = self.scenario, self.scenario.receiver_chain
        for j in range(n):
            name = f"tx-{self._n:07d}"
            when = (SIMULATION_EPOCH + dt.timedelta(seconds=self._n)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            metas = [
                write_recording(
                    self.partial,
                    f"{name}_{stem}",
                    block["iq"][j, r],
                    datatype=self.datatype,
                    sample_rate_hz=ch.sample_rate_hz,
                    frequency_hz=sc.frequency_hz,
                    datetime=when,
                    lat=rx.lat,
                    lon=rx.lon,
                    alt_m=rx.antenna_height_m,
                    receiver_id=rx.id,
                    power_calibration_dbm=ch.full_scale_dbm,
                    description=f"simulated {sc.name}: receiver {rx.name}",
                    atomic=False,
                )
                for r, (rx, stem) in enumerate(zip(sc.receivers, self._stems, strict=False))
            ]
            lat, lon = block["tx_lat_lon"][j]
            write_collection(
                self.partial,
                name,
                metas,
                (float(lat), float(lon)),
                description=f"simulated {sc.name} transmission {self._n}",
                atomic=False,
            )
            self._n += 1

    def commit(self) -> Path:
        """Make the finished folder's files durable, move it into place and make the rename durable; an older folder
        of that name is moved aside first and removed last (never half-deleted under the name). Returns its path."""
        sync_folder(self.partial)
        older = self.path.with_name(self.path.name + ".old")
        if self.path.exists():
            shutil.rmtree(older, ignore_errors=True)
            os.replace(self.path, older)
        os.replace(self.partial, self.path)
        fsync_dir(self.path.parent)
        shutil.rmtree(older, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        """Remove the unfinished folder."""
        shutil.rmtree(self.partial, ignore_errors=True)
