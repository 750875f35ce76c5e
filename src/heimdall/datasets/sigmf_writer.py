"""Simulated transmissions written as SigMF collections (`heimdall simulate --format sigmf`).

A split goes to ``<out>/<split>/`` (``<out>/<split>-<i>-of-<N>/`` for a shard), one collection per
transmission named ``tx-<index>``, every receiver of the scenario recorded (heard or not, as a real
network records). The folder is written as ``<split>.partial`` and renamed when complete.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import numpy as np

from heimdall.datasets.sigmf_files import safe_name, write_collection, write_recording
from heimdall.scenario.domain import Scenario

SIMULATION_EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


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
            )
            self._n += 1

    def commit(self) -> Path:
        """Move the finished folder into place (replacing an older one); returns its path."""
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        """Remove the unfinished folder."""
        shutil.rmtree(self.partial, ignore_errors=True)
