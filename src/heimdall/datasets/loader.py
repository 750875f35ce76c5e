"""PyTorch access to training stores: batched, lazy reads with one HDF5 handle per process.

Only numpy arrays describe samples (file offsets, indices); the HDF5 files are opened on first use in
each process (handles must not cross a fork). Random row reads from compressed chunks cost ~0.3 ms a
row, so a file's model inputs are read whole on first use while they fit the dataset's memory budget
(files in order, the budget shared by all of them; the default dataset's 100,000 samples take ~100 MB);
the files beyond it are read row-wise through chunk caches that share what is left of the budget (at
least MIN_CHUNK_CACHE_BYTES each). Each reading process (the main process or a DataLoader worker) holds
its own copy: at most the budget, or MIN_CHUNK_CACHE_BYTES per file read from disk once it is spent.

The readers of a whole split or subset (`read_all`, `read_split`) check what they will allocate against the memory
budget (heimdall.memory) before reading, naming the file and dataset, and read READ_BLOCK_ROWS rows at a time: a
subset spread over a file never takes the whole file's rows at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from heimdall.datasets.store import StoreInfo, inspect_store, read_receivers
from heimdall.errors import DatasetError
from heimdall.features import FeatureParams
from heimdall.memory import over_budget

DEFAULT_MEMORY_BUDGET_BYTES = 1024**3
MAX_CHUNK_CACHE_BYTES = 512 * 1024**2
MIN_CHUNK_CACHE_BYTES = 16 * 1024**2
INPUTS = ("features", "mask", "tx_position_m")
READ_BLOCK_ROWS = 16 * 1024  # rows read at once by read_all (about 16 MB of default features)
OPTIONAL_INPUTS = ("present",)


@dataclass(frozen=True)
class StoreMeta:
    """What every file of a dataset must agree on."""

    scenario_sha256: str
    scenario_yaml: str
    feature_params_json: str
    receivers: dict[str, np.ndarray]

    @property
    def rx_position_m(self) -> np.ndarray:
        """float32 [R, 2] receiver east/north."""
        return np.stack([self.receivers["east_m"], self.receivers["north_m"]], axis=-1).astype(np.float32)

    @property
    def params(self) -> FeatureParams:
        """The feature parameters of the store (checked when the files were inspected)."""
        return FeatureParams.from_json(self.feature_params_json)


@dataclass(frozen=True)
class SplitArrays:
    """The model inputs and labels of a split (or of its first samples), in memory."""

    features: np.ndarray  # float32 [n, R, F]
    heard: np.ndarray  # bool [n, R]
    present: np.ndarray  # float32 [n, R], 1 where the receiver's recording is part of the transmission
    target_m: np.ndarray  # float64 [n, 2] east/north, NaN where unlabelled
    rx_position_m: np.ndarray  # float64 [R, 2]


def store_meta(infos: list[StoreInfo]) -> StoreMeta:
    """Check that store files belong together (same scenario, features, receivers) and describe them."""
    if not infos:
        raise DatasetError("no store files given")
    first = infos[0]
    receivers = read_receivers(first.path)
    for info in infos[1:]:
        if info.scenario_sha256 != first.scenario_sha256:
            raise DatasetError(
                f"{info.path}: store from another scenario (scenario_sha256 {info.scenario_sha256[:12]}…, "
                f"expected {first.scenario_sha256[:12]}… as in {first.path})"
            )
        if info.feature_params_json != first.feature_params_json:
            raise DatasetError(f"{info.path}: feature parameters differ from {first.path}")
        other = read_receivers(info.path)
        if list(other["id"]) != list(receivers["id"]):
            raise DatasetError(f"{info.path}: receiver table differs from {first.path}")
    return StoreMeta(
        scenario_sha256=first.scenario_sha256,
        scenario_yaml=str(first.attrs.get("scenario_yaml", "")),
        feature_params_json=first.feature_params_json,
        receivers=receivers,
    )


class StoreDataset(torch.utils.data.Dataset):
    """Samples of store files (a split or its shards), optionally a subset given by `indices`.

    A batch (`__getitems__`) is a dict of numpy arrays:
        features float32 [B, R, F]; heard bool [B, R]; present float32 [B, R] (1 where the receiver's
        recording is part of the sample); rx_position_m float32 [B, R, 2]; target_m float32 [B, 2].
    """

    def __init__(
        self,
        files: list[Path],
        indices: np.ndarray | None = None,
        memory_budget_bytes: float = DEFAULT_MEMORY_BUDGET_BYTES,
    ) -> None:
        self.infos = [inspect_store(f) for f in files]
        self.meta = store_meta(self.infos)
        self.offsets = np.cumsum([0] + [i.n_samples for i in self.infos])
        total = int(self.offsets[-1])
        self.indices = np.arange(total) if indices is None else np.asarray(indices, np.int64)
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= total):
            raise DatasetError(f"indices out of range for {total} samples")
        self._rx = self.meta.rx_position_m
        self.in_memory: list[bool] = []  # per file: model inputs read whole (else row-wise from disk)
        self.cached_bytes = 0
        for info in self.infos:
            size = sum(info.dataset_bytes.get(name, 0) for name in INPUTS + OPTIONAL_INPUTS)
            self.in_memory.append(self.cached_bytes + size <= memory_budget_bytes)
            self.cached_bytes += size if self.in_memory[-1] else 0
        left = (memory_budget_bytes - self.cached_bytes) / max(1, len(self.files_on_disk))
        self._chunk_cache_bytes = int(min(MAX_CHUNK_CACHE_BYTES, max(MIN_CHUNK_CACHE_BYTES, left)))
        self._handles: dict[int, dict] = {}
        self._pid = -1

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def files_on_disk(self) -> list[Path]:
        """The files read row-wise from disk: their model inputs did not fit the memory budget."""
        return [info.path for info, cached in zip(self.infos, self.in_memory, strict=False) if not cached]

    def _arrays(self, k: int) -> dict:
        """The model inputs of file k: numpy arrays within the memory budget, else h5py datasets."""
        if self._pid != os.getpid():  # a fresh process (DataLoader worker): never reuse a parent's handle
            self._handles, self._pid = {}, os.getpid()
        if k not in self._handles:
            f = h5py.File(self.infos[k].path, "r", rdcc_nbytes=self._chunk_cache_bytes, rdcc_nslots=100_003)
            names = [n for n in INPUTS + OPTIONAL_INPUTS if n in f]
            self._handles[k] = {name: (f[name][...] if self.in_memory[k] else f[name]) for name in names}
        return self._handles[k]

    def __getitems__(self, items: list[int]) -> dict[str, np.ndarray]:
        rows = self.indices[np.asarray(items, np.int64)]
        unique, inverse = np.unique(rows, return_inverse=True)  # sorted, no repeats: what HDF5 reads need
        file_of = np.searchsorted(self.offsets, unique, side="right") - 1
        parts: dict[str, list[np.ndarray]] = {"features": [], "heard": [], "present": [], "target_m": []}
        for k in np.unique(file_of):
            local = unique[file_of == k] - self.offsets[k]
            f = self._arrays(int(k))
            feats = f["features"][local]
            if not np.isfinite(feats).all():
                bad = local[~np.isfinite(feats).all(axis=(1, 2))][:5]
                raise DatasetError(f"{self.infos[k].path}: features of rows {bad.tolist()} are not finite (NaN/Inf)")
            parts["features"].append(feats)
            parts["heard"].append(f["mask"][local])
            parts["present"].append(
                f["present"][local].astype(np.float32)
                if "present" in f
                else np.ones((len(local), f["mask"].shape[1]), np.float32)
            )
            parts["target_m"].append(f["tx_position_m"][local].astype(np.float32))
        batch = {k: np.concatenate(v)[inverse] for k, v in parts.items()}
        batch["rx_position_m"] = np.broadcast_to(self._rx, (len(rows), *self._rx.shape)).copy()
        return batch

    def __getitem__(self, item: int) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.__getitems__([item]).items()}

    def _rows_by_file(self, limit: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(file index, local rows) of this subset, in order."""
        rows = self.indices if limit is None else self.indices[:limit]
        for k in range(len(self.infos)):
            sel = rows[(rows >= self.offsets[k]) & (rows < self.offsets[k + 1])] - self.offsets[k]
            if len(sel):
                yield k, sel

    def read_all(self, name: str, limit: int | None = None) -> np.ndarray:
        """A per-sample dataset (e.g. 'features', 'oracle/rx_power_dbm') over this subset, in order; DatasetError
        naming the file and dataset when it would take more than the memory budget."""
        self.check_budget([name], limit)
        out = []
        for k, sel in self._rows_by_file(limit):
            with h5py.File(self.infos[k].path, "r") as f:
                out.append(_rows(f[name], sel))
        return np.concatenate(out)

    def check_budget(self, names: list[str], limit: int | None = None) -> None:
        """DatasetError when reading the per-sample datasets `names` (those a file has) over this subset (its first
        `limit` samples) would allocate more than the memory budget; nothing is read but their shapes."""
        total, largest = 0, ("", "", 0)
        for k, sel in self._rows_by_file(limit):
            with h5py.File(self.infos[k].path, "r") as f:
                for name in names:
                    if isinstance(ds := f.get(name), h5py.Dataset):
                        n_bytes = len(sel) * int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize
                        total += n_bytes
                        largest = max(largest, (str(self.infos[k].path), name, n_bytes), key=lambda t: t[2])
        why = over_budget(total)
        if why is not None:
            path, name, _ = largest
            raise DatasetError(
                f"{path}: reading {', '.join(names)} of {len(self.indices[:limit])} transmissions takes {why}; the "
                f"largest part is dataset {name}"
            )

    def read_present(self, limit: int | None = None) -> np.ndarray:
        """float32 [n, R]: 1 where a receiver's recording is part of the sample (all 1 in simulated stores)."""
        out = []
        for k, sel in self._rows_by_file(limit):
            with h5py.File(self.infos[k].path, "r") as f:
                out.append(
                    _rows(f["present"], sel) if "present" in f else np.ones((len(sel), f["mask"].shape[1]), bool)
                )
        return np.concatenate(out).astype(np.float32)

    def read_split(self, limit: int | None = None) -> SplitArrays:
        """The model inputs and labels of this subset (its first `limit` samples), in order: the one reader of a
        whole split for evaluation, prediction, calibration and normalisation."""
        self.check_budget(["features", "mask", "present", "tx_position_m"], limit)
        return SplitArrays(
            features=self.read_all("features", limit),
            heard=self.read_all("mask", limit),
            present=self.read_present(limit),
            target_m=self.read_all("tx_position_m", limit).astype(np.float64),
            rx_position_m=self.meta.rx_position_m.astype(np.float64),
        )

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"], state["_pid"] = {}, -1
        return state


def _rows(ds: h5py.Dataset, sel: np.ndarray) -> np.ndarray:
    """ds[sel] for row indices sel (any order), read READ_BLOCK_ROWS rows at a time: besides the result, at most one
    block is in memory."""
    out = np.empty((len(sel), *ds.shape[1:]), ds.dtype)
    order = np.argsort(sel, kind="stable")
    rows = np.asarray(sel)[order]
    start = 0
    while start < len(rows):
        lo = int(rows[start])
        end = int(np.searchsorted(rows, lo + READ_BLOCK_ROWS, side="left"))
        block = ds[lo : int(rows[end - 1]) + 1]
        out[order[start:end]] = block[rows[start:end] - lo]
        start = end
    return out


def collate(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """DataLoader collate_fn for `__getitems__` batches: numpy → tensors."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}
