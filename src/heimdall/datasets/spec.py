"""What a dataset command is asked to make: the options of simulated generation (`DatasetSpec`) and of SigMF
import (`ImportOptions`). Their defaults are the commands' defaults: the CLI reads them from here, so this module
imports nothing heavy (numpy only where a method needs it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from heimdall.option_field import option, parse_fractions, parse_shard, positive_int

SPLITS = ("train", "val", "test")
MATCH_TOLERANCE_M = 100.0  # default: a receiver given by position within this distance of a known one is that one
SplitMode = Literal["random", "spatial"]
SPLIT_MODES: tuple[str, ...] = get_args(SplitMode)
OUTPUT_FORMATS = ("store", "sigmf")


@dataclass(frozen=True)
class DatasetSpec:
    """What to generate. fractions: (train, val, test); shard: (i, N) — this process makes shard i of N."""

    n_transmissions: int = option(
        100_000,
        "transmissions over all splits (each SigMF transmission is about 16 KiB per receiver in cf32_le)",
        short="-n",
        parse=positive_int,
    )
    seed: int = option(0, "dataset seed")
    fractions: tuple[float, float, float] = option(
        (0.8, 0.1, 0.1), "train,val,test fractions", flag="--splits", parse=parse_fractions
    )
    shard: tuple[int, int] = option(
        (0, 1), "make shard i of N (i/N) for cluster generation", parse=parse_shard, default_text=""
    )
    split_mode: SplitMode = option("random", "random, or spatial blocks (tests generalisation to unseen places)")
    spatial_block_m: float = option(20_000.0, "block size of the spatial split in metres")
    iq_per_split: int = option(64, "keep raw IQ of the first K transmissions of each split", flag="--iq-samples")

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

    seed: int = option(0, "seed of the split assignment")
    fractions: tuple[float, float, float] = option(
        (0.8, 0.1, 0.1),
        "train,val,test fractions for collections outside split folders",
        flag="--splits",
        parse=parse_fractions,
    )
    match_tolerance_m: float = option(
        MATCH_TOLERANCE_M, "a recording within this distance of a known receiver is that receiver (m)"
    )
    new_receiver_height_m: float = option(
        10.0, "antenna height above terrain given to receivers not in the scenario (m)"
    )
    skip_invalid: bool = option(
        False,
        "import the valid collections or table transmissions and report each invalid one (default: stop at the first)",
    )
    iq_per_split: int = option(
        64, "keep the conformed IQ of the first K transmissions of each split", flag="--iq-samples"
    )
    overwrite: bool = option(False, "replace a store already in --out")
