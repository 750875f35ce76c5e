"""The test set every estimator is evaluated on, read from a store, and the predictor type they share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np

from heimdall.datasets.loader import StoreDataset
from heimdall.datasets.store import split_files
from heimdall.errors import DatasetError
from heimdall.features import FeatureParams
from heimdall.scenario.domain import Scenario
from heimdall.scenario.schema import scenario_from_text


@dataclass
class TestSet:
    """The transmissions every estimator is evaluated on (arrays over n samples, R receivers)."""

    features: np.ndarray  # float32 [n, R, F]
    heard: np.ndarray  # bool [n, R]
    present: np.ndarray  # float32 [n, R], 1 where the receiver's recording is part of the transmission
    target_m: np.ndarray  # float64 [n, 2]
    rx_position_m: np.ndarray  # float64 [R, 2]
    params: FeatureParams
    scenario: Scenario | None
    gain_offset_db: np.ndarray | None  # oracle, simulated stores only
    tx_height_m: np.ndarray | None  # oracle, simulated stores only
    source: str
    power_calibrated: np.ndarray | None = None  # bool [R], stores of power readings: False for uncalibrated dB

    def head(self, n: int) -> TestSet:
        """The first n transmissions (all when there are fewer)."""
        rows = slice(0, n)
        return replace(
            self,
            features=self.features[rows],
            heard=self.heard[rows],
            present=self.present[rows],
            target_m=self.target_m[rows],
            tx_height_m=None if self.tx_height_m is None else self.tx_height_m[rows],
        )

    @property
    def power_dbm(self) -> np.ndarray:
        """float64 [n, R] measured in-band power, dBm."""
        return self.features[..., self.params.power_index].astype(np.float64)


def short_source(source: str) -> str:
    """A test set's `source` (comma-separated file paths) as folder/name of each file: no absolute paths of the
    machine that read it."""
    return ", ".join("/".join(Path(p.strip()).parts[-2:]) for p in source.split(",") if p.strip())


Predict = Callable[[TestSet], tuple[np.ndarray, np.ndarray]]  # a model: test set → mean [n, 2] m, cov [n, 2, 2] m²


def load_test_set(path: str | Path, max_samples: int | None = None) -> TestSet:
    """A test split: a store folder (its test split) or one store file."""
    p = Path(path)
    files = split_files(p, "test") if p.is_dir() else [p]
    if not files:
        raise DatasetError(f"{p}: no test.h5 (or test shards) in the folder")
    ds = StoreDataset(files)
    if max_samples:
        ds = StoreDataset(files, np.arange(min(max_samples, len(ds))))
    if len(ds) == 0:
        raise DatasetError(f"{files[0]}: no transmissions to evaluate on")
    scenario = None
    if ds.meta.scenario_yaml:
        scenario = scenario_from_text(ds.meta.scenario_yaml, f"{files[0]}: attribute scenario_yaml")
        if [r.id for r in scenario.receivers] != list(ds.meta.receivers["id"]):
            raise DatasetError(f"{files[0]}: the receivers of attribute scenario_yaml differ from the receiver table")
    with h5py.File(files[0], "r") as f:
        gains = f["oracle/gain_offset_db"][...] if "oracle/gain_offset_db" in f else None
        simulated = "oracle/tx_height_m" in f
        calibrated = f["receivers/power_calibrated"][...].astype(bool) if "receivers/power_calibrated" in f else None
    arrays = ds.read_split()
    return TestSet(
        features=arrays.features,
        heard=arrays.heard,
        present=arrays.present,
        target_m=arrays.target_m,
        rx_position_m=arrays.rx_position_m,
        params=ds.meta.params,
        scenario=scenario,
        gain_offset_db=gains,
        tx_height_m=ds.read_all("oracle/tx_height_m") if simulated else None,
        source=", ".join(str(f) for f in files),
        power_calibrated=calibrated,
    )
