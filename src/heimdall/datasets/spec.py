"""What a dataset command is asked to make: the options of simulated generation (`DatasetSpec`) and of SigMF
import (`ImportOptions`). Their defaults are the commands' defaults: the CLI reads them from here, so this module
imports nothing heavy (numpy only where a method needs it)."""

from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "val", "test")
MATCH_TOLERANCE_M = 100.0  # default: a receiver given by position within this distance of a known one is that one
SPLIT_MODES = ("random", "spatial")
OUTPUT_FORMATS = ("store", "sigmf")


@dataclass(frozen=True)
class DatasetSpec:
    """What to generate. fractions: (train, val, test); shard: (i, N) — this process makes shard i of N."""

    n_transmissions: int = 100_000
    seed: int = 0
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    shard: tuple[int, int] = (0, 1)
    split_mode: str = "random"
    spatial_block_m: float = 20_000.0
    iq_per_split: int = 64

    def split_counts(self) -> dict[str, int]:
        """Transmissions of each split in this shard."""
        import numpy as np

        total = np.asarray(self.fractions) / sum(self.fractions) * self.n_transmissions
        counts = np.floor(total).astype(int)
        counts[0] += self.n_transmissions - counts.sum()  # rounding remainder goes to train
        i, n = self.shard
        return {s: int(c // n + (i < c % n)) for s, c in zip(SPLITS, counts, strict=False)}


@dataclass(frozen=True)
class ImportOptions:
    """fractions: (train, val, test) for collections not already under a split folder."""

    seed: int = 0
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    match_tolerance_m: float = MATCH_TOLERANCE_M
    new_receiver_height_m: float = 10.0
    skip_invalid: bool = False
    iq_per_split: int = 64
    overwrite: bool = False
