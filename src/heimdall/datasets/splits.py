"""Splits of a dataset: which of train/val/test a transmission belongs to. Splits never share a transmission.

Simulated random splits draw each split from its own seed stream (heimdall.datasets.generate); every other
assignment maps a transmission to a number u uniform in [0, 1) — a hash of its spatial block or of its path —
and `assign` turns u into a split by the fractions.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from heimdall.datasets.spec import SPLITS

UNLABELLED = "unlabelled"  # imported transmissions without a known position: for prediction only
_SPLIT_DIR = re.compile(r"^(train|val|test)(-\d+-of-\d+)?$")


def assign(u: np.ndarray, fractions: tuple[float, float, float]) -> np.ndarray:
    """Split index (0 train, 1 val, 2 test) of u [n] uniform in [0, 1), by the (train, val, test) fractions."""
    edges = np.cumsum(fractions) / sum(fractions)
    return np.searchsorted(edges[:-1], u, side="right")


def spatial_split_of(pos_m: np.ndarray, seed: int, block_m: float, fractions: tuple[float, float, float]) -> np.ndarray:
    """Split index of each position [n, 2] (m) for the spatial-block split: a whole block_m square goes to one split."""
    cell = np.floor(pos_m / block_m).astype(np.int64)
    h = (cell[:, 0] * 73856093) ^ (cell[:, 1] * 19349663) ^ (seed * 83492791)
    return assign((h % 1_000_003) / 1_000_003.0, fractions)


def split_of_path(relative: Path, labelled: bool, seed: int, fractions: tuple[float, float, float]) -> str:
    """The split of an imported collection at `relative` (path below the import folder): the split folder it is in
    (``train``, ``val``, ``test`` or a shard of one), else a seeded hash of its path; UNLABELLED without a label."""
    if not labelled:
        return UNLABELLED
    m = _SPLIT_DIR.match(relative.parts[0]) if len(relative.parts) > 1 else None
    if m:
        return m.group(1)
    return str(splits_of_names([relative.as_posix()], seed, fractions)[0])


def splits_of_names(names: list[str] | np.ndarray, seed: int, fractions: tuple[float, float, float]) -> np.ndarray:
    """The split (str [n]) of each labelled transmission named in `names` by a seeded hash of its name."""
    digests = (hashlib.sha256(f"{seed}:{name}".encode()).digest() for name in names)
    u = np.fromiter((int.from_bytes(h[:8], "little") / 2**64 for h in digests), np.float64, len(names))
    return np.asarray(SPLITS)[assign(u, fractions)]
