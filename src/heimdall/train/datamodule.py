"""The Lightning data module over a store folder (train / val splits, or train split by validation_split)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch

from heimdall.datasets.loader import DEFAULT_MEMORY_BUDGET_BYTES, StoreDataset, collate
from heimdall.datasets.store import split_files
from heimdall.errors import DatasetError

NORMALISATION_SAMPLES = 20_000


class StoreDataModule(L.LightningDataModule):
    """Train and val loaders over a store folder; memory_budget_bytes bounds the store data one reading process
    keeps in memory (train first, val from what is left; see heimdall.datasets.loader)."""

    def __init__(
        self,
        data_dir: str | Path,
        batch_size: int,
        num_workers: int,
        validation_split: float,
        seed: int,
        memory_budget_bytes: float = DEFAULT_MEMORY_BUDGET_BYTES,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.validation_split = validation_split
        self.seed = seed
        self.memory_budget_bytes = memory_budget_bytes
        self.train: StoreDataset | None = None
        self.val: StoreDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Open the train and validation datasets (once); DatasetError when the folder lacks them."""
        if self.train is not None:
            return
        if not self.data_dir.is_dir():
            raise DatasetError(f"{self.data_dir}: data folder not found (make one with `heimdall simulate --out ...`)")
        train_files = split_files(self.data_dir, "train")
        if not train_files:
            raise DatasetError(f"{self.data_dir}: no train.h5 (or train shards) in the data folder")
        val_files = split_files(self.data_dir, "val")
        budget = self.memory_budget_bytes
        if val_files:
            self.train = StoreDataset(train_files, memory_budget_bytes=budget)
            self.val = StoreDataset(val_files, memory_budget_bytes=budget - self.train.cached_bytes)
            if self.val.meta.scenario_sha256 != self.train.meta.scenario_sha256:
                raise DatasetError(f"{val_files[0]}: store from another scenario than {train_files[0]}")
        else:
            n = int(StoreDataset(train_files).offsets[-1])
            perm = np.random.default_rng(self.seed).permutation(n)
            n_val = max(1, int(round(n * self.validation_split)))
            if n_val >= n:
                raise DatasetError(f"{self.data_dir}: {n} samples are too few to split off a validation set")
            self.train = StoreDataset(train_files, np.sort(perm[n_val:]), budget)
            self.val = StoreDataset(train_files, np.sort(perm[:n_val]), budget - self.train.cached_bytes)

    def datasets(self) -> tuple[StoreDataset, StoreDataset]:
        """(train, val) datasets; sets the module up first."""
        self.setup()
        assert self.train is not None and self.val is not None  # setup sets both or raises
        return self.train, self.val

    def normalisation(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Feature mean/std per column over all receivers (one affine for every receiver: relative power
        between receivers is kept) and the position scale in metres, from the training split."""
        sample = self.datasets()[0].read_split(NORMALISATION_SAMPLES)
        feats, target = sample.features.astype(np.float64), sample.target_m
        flat = feats.reshape(-1, feats.shape[-1])
        scale = float(np.ceil(np.abs(target).max() / 1e4) * 1e4)
        return flat.mean(0).astype(np.float32), flat.std(0).astype(np.float32), scale

    def _loader(self, ds: StoreDataset, shuffle: bool) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate,  # type: ignore[arg-type]  # __getitems__ hands it one dict per batch, not a list
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        """Shuffled, seeded batches of the training split."""
        return self._loader(self.datasets()[0], shuffle=True)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        """Batches of the validation split, in order."""
        return self._loader(self.datasets()[1], shuffle=False)
