"""Labelled transmissions split by place: validation (or test) places away from every training label.

A random split puts a validation transmission beside a training one, so a localizer that only interpolates between
its labels looks as good as one that generalises. Here whole blocks of a square grid go to validation, and training
labels closer than a gap to any validation label are left out, so validation measures answers at places no label
covers. Block and gap follow the network's extent (`place_scales_m`): a campus gets blocks of a few hundred metres,
a region of tens of kilometres. Positions [n, 2] in metres (local east/north frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCKS_ACROSS = 5  # blocks across the receivers' extent
GAP_BLOCKS = 0.5  # the gap between validation and training labels, in blocks


@dataclass(frozen=True)
class PlaceSplit:
    """Row indices [k] of the training and validation transmissions (the rows within `gap_m` of a validation label
    are in neither), and the block and gap used (m)."""

    train: np.ndarray
    val: np.ndarray
    block_m: float
    gap_m: float


def place_scales_m(rx_position_m: np.ndarray) -> tuple[float, float]:
    """(block side, gap) in metres for a network with receivers at [R, 2] m: the larger side of their bounding box
    over BLOCKS_ACROSS, and GAP_BLOCKS of that."""
    extent = float(np.ptp(rx_position_m, axis=0).max()) if len(rx_position_m) > 1 else 0.0
    block = max(extent, 1.0) / BLOCKS_ACROSS
    return block, block * GAP_BLOCKS


def distance_to_nearest_m(points_m: np.ndarray, labels_m: np.ndarray) -> np.ndarray:
    """float64 [n]: each point's distance (m) to the nearest of the labels [k, 2] (inf when there are none)."""
    from scipy.spatial import cKDTree

    if len(labels_m) == 0:
        return np.full(len(points_m), np.inf)
    return cKDTree(labels_m).query(points_m)[0]


def split_by_place(
    position_m: np.ndarray, val_fraction: float, block_m: float, gap_m: float, seed: int = 0
) -> PlaceSplit:
    """Split the labelled positions [n, 2] m: block_m squares drawn at random to validation until they hold
    `val_fraction` of the transmissions, the rest to training less those within gap_m of a validation label."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction {val_fraction:g}: expected between 0 and 1")
    if not (block_m > 0 and gap_m >= 0):
        raise ValueError(f"block {block_m:g} m, gap {gap_m:g} m: expected a block > 0 and a gap ≥ 0")
    cell = np.floor(position_m / block_m).astype(np.int64)
    blocks, which = np.unique(cell, axis=0, return_inverse=True)
    which = which.ravel()
    counts = np.bincount(which, minlength=len(blocks))
    order = np.random.default_rng(seed).permutation(len(blocks))
    # blocks in random order until they hold val_fraction of the transmissions (one at least, never all)
    n_val = min(max(1, int(np.searchsorted(np.cumsum(counts[order]), val_fraction * len(which))) + 1), len(blocks) - 1)
    val_blocks = np.zeros(len(blocks), bool)
    val_blocks[order[:n_val]] = True
    is_val = val_blocks[which]
    val = np.flatnonzero(is_val)
    rest = np.flatnonzero(~is_val)
    train = rest[distance_to_nearest_m(position_m[rest], position_m[val]) >= gap_m]
    return PlaceSplit(train, val, block_m, gap_m)
