"""Labelled transmissions split by place: validation places away from every training label."""

import numpy as np
import pytest

from heimdall.datasets.place_split import distance_to_nearest_m, place_scales_m, split_by_place


def test_validation_places_are_whole_blocks_at_least_the_gap_from_every_training_label():
    rng = np.random.default_rng(3)
    rx = rng.uniform(0, 2500, (15, 2))
    block, gap = place_scales_m(rx)
    assert gap == pytest.approx(block / 2) and 350 < block < 510  # a campus: blocks of a few hundred metres
    pos = rng.uniform(-200, 2700, (3000, 2))
    split = split_by_place(pos, 0.2, block, gap, seed=1)
    assert len(np.intersect1d(split.train, split.val)) == 0 and 0.1 < len(split.val) / len(pos) < 0.35
    assert distance_to_nearest_m(pos[split.val], pos[split.train]).min() >= gap
    blocks = lambda rows: {tuple(c) for c in np.floor(pos[rows] / block).astype(int)}  # noqa: E731
    assert not blocks(split.val) & blocks(split.train)
    # left out: only the training places within the gap of a validation label
    left = np.setdiff1d(np.arange(len(pos)), np.concatenate([split.train, split.val]))
    assert len(left) and distance_to_nearest_m(pos[left], pos[split.val]).max() < gap
    # the same seed, the same split; a region's receivers give tens of kilometres
    assert np.array_equal(split_by_place(pos, 0.2, block, gap, seed=1).val, split.val)
    assert place_scales_m(rx * 100)[0] == pytest.approx(block * 100)
    with pytest.raises(ValueError, match="val_fraction"):
        split_by_place(pos, 1.0, block, gap)
