import hashlib

import h5py
import numpy as np
import pytest

from heimdall.datasets.generate import generate_dataset
from heimdall.datasets.spec import DatasetSpec
from heimdall.datasets.splits import spatial_split_of
from heimdall.datasets.store import inspect_store, read_receivers, split_files
from heimdall.errors import DatasetError


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def small(nw_italy, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    summary = generate_dataset(nw_italy, out, DatasetSpec(n_transmissions=700, seed=5, iq_per_split=10), workers=1)
    return out, summary


def test_store_contents(small, nw_italy, world):
    out, summary = small
    assert [s.split for s in summary.splits] == ["train", "val", "test"]
    assert [s.n_samples for s in summary.splits] == [560, 70, 70]
    info = inspect_store(out / "train.h5")
    assert (info.n_samples, info.n_receivers, info.n_features) == (560, 7, world.params.n_features)
    assert info.scenario_sha256 == nw_italy.sha256
    with h5py.File(out / "train.h5") as f:
        assert f["features"].dtype == np.float32 and f["features"].chunks is not None
        assert f["features"].compression == "gzip"
        assert f["iq"].shape == (10, 7, world.params.window_samples)
        for name in ["tx_power_dbm", "rx_power_dbm", "shadowing_db", "mean_rx_power_dbm", "gain_offset_db"]:
            assert f"oracle/{name}" in f
        np.testing.assert_allclose(f["oracle/gain_offset_db"][...], world.gain_offset_db)
        pos, latlon = f["tx_position_m"][...], f["tx_lat_lon"][...]
        assert f.attrs["seed"] == 5 and "nw-italy" in f.attrs["scenario_yaml"]
    np.testing.assert_allclose(nw_italy.frame.to_local(latlon[:, 0], latlon[:, 1]), pos, atol=1e-3)
    e0, n0, e1, n1 = nw_italy.area_bounds_m()
    assert (pos[:, 0] >= e0).all() and (pos[:, 0] <= e1).all() and (pos[:, 1] >= n0).all() and (pos[:, 1] <= n1).all()
    rx = read_receivers(out / "train.h5")
    assert list(rx["id"]) == [r.id for r in nw_italy.receivers]


def test_splits_never_share_a_transmission(small):
    out, _ = small
    seen = []
    for split in ["train", "val", "test"]:
        with h5py.File(out / f"{split}.h5") as f:
            seen.append({tuple(p) for p in np.round(f["tx_position_m"][...], 3)})
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])


@pytest.mark.system  # worker processes (the second tier)
def test_byte_identical_whatever_the_worker_count(nw_italy, tmp_path):
    spec = DatasetSpec(n_transmissions=1200, seed=11, iq_per_split=4)
    generate_dataset(nw_italy, tmp_path / "w1", spec, workers=1)
    generate_dataset(nw_italy, tmp_path / "w2", spec, workers=2)
    for name in ["train.h5", "val.h5", "test.h5"]:
        assert _digest(tmp_path / "w1" / name) == _digest(tmp_path / "w2" / name)
    generate_dataset(nw_italy, tmp_path / "other", DatasetSpec(n_transmissions=1200, seed=12, iq_per_split=4))
    assert _digest(tmp_path / "w1" / "train.h5") != _digest(tmp_path / "other" / "train.h5")


def test_shards_are_disjoint_and_reproducible(nw_italy, tmp_path):
    for i in range(2):
        generate_dataset(nw_italy, tmp_path, DatasetSpec(n_transmissions=301, seed=3, shard=(i, 2), iq_per_split=0))
    files = split_files(tmp_path, "train")
    assert [f.name for f in files] == ["train-00000-of-00002.h5", "train-00001-of-00002.h5"]
    sizes = [inspect_store(f).n_samples for f in files]
    assert sum(sizes) == DatasetSpec(n_transmissions=301).split_counts()["train"]
    with h5py.File(files[0]) as a, h5py.File(files[1]) as b:
        pa, pb = a["tx_position_m"][...], b["tx_position_m"][...]
    assert not ({tuple(p) for p in pa} & {tuple(p) for p in pb})
    before = _digest(files[1])
    generate_dataset(nw_italy, tmp_path, DatasetSpec(n_transmissions=301, seed=3, shard=(1, 2), iq_per_split=0))
    assert _digest(files[1]) == before


@pytest.mark.system  # worker processes (the second tier)
def test_shards_simulated_as_separate_jobs_equal_one_run_of_both(nw_italy, tmp_path):
    """Two cluster jobs (`heimdall simulate --shard 0/2` and `1/2`, each in its own folder, different worker counts)
    collected into one folder give the files, and the training reader the rows, of one run making both shards."""
    import shutil

    from heimdall.cli import main
    from heimdall.datasets.loader import StoreDataset

    base = ["simulate", "-n", "500", "--seed", "9", "--iq-samples", "2", "--quiet"]
    assert main([*base, "--shard", "0/2", "--out", str(tmp_path / "job0"), "--workers", "1"]) == 0
    assert main([*base, "--shard", "1/2", "--out", str(tmp_path / "job1"), "--workers", "2"]) == 0
    collected = tmp_path / "collected"
    collected.mkdir()
    for job in ("job0", "job1"):
        for f in (tmp_path / job).glob("*.h5"):
            shutil.copy(f, collected / f.name)
    for i in range(2):
        spec = DatasetSpec(n_transmissions=500, seed=9, shard=(i, 2), iq_per_split=2)
        generate_dataset(nw_italy, tmp_path / "one", spec, workers=1)
    for split, expected in DatasetSpec(n_transmissions=500).split_counts().items():
        jobs, one = split_files(collected, split), split_files(tmp_path / "one", split)
        assert [f.name for f in jobs] == [f.name for f in one] == [f"{split}-0000{i}-of-00002.h5" for i in range(2)]
        assert [_digest(f) for f in jobs] == [_digest(f) for f in one]
        read = StoreDataset(jobs).read_split()
        assert len(read.features) == expected  # every transmission of the split, once
        with h5py.File(one[0]) as a, h5py.File(one[1]) as b:
            np.testing.assert_array_equal(read.features, np.concatenate([a["features"][...], b["features"][...]]))
            np.testing.assert_array_equal(read.heard, np.concatenate([a["mask"][...], b["mask"][...]]))
            targets = np.concatenate([a["tx_position_m"][...], b["tx_position_m"][...]])
        np.testing.assert_array_equal(read.target_m, targets)
        assert len({tuple(p) for p in targets}) == expected  # the shards share no transmission


def test_spatial_split_keeps_places_apart(nw_italy, tmp_path):
    spec = DatasetSpec(n_transmissions=600, seed=2, split_mode="spatial", spatial_block_m=20_000, iq_per_split=0)
    generate_dataset(nw_italy, tmp_path, spec)
    for i, split in enumerate(["train", "val", "test"]):
        with h5py.File(tmp_path / f"{split}.h5") as f:
            pos = f["tx_position_m"][...]
        assert (spatial_split_of(pos, 2, 20_000, spec.fractions) == i).all()


def test_interrupted_run_leaves_nothing_that_looks_complete(nw_italy, tmp_path):
    def stop(split, done, total):
        if split == "val":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_dataset(nw_italy, tmp_path, DatasetSpec(n_transmissions=600, iq_per_split=0), on_progress=stop)
    assert (tmp_path / "train.h5").exists()  # finished before the interruption, complete
    assert inspect_store(tmp_path / "train.h5").n_samples == 480
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.h5"]  # no val.h5, no *.partial


def test_broken_store_files_are_reported(small, tmp_path):
    out, _ = small
    with pytest.raises(DatasetError, match="store file not found"):
        inspect_store(tmp_path / "nope.h5")
    truncated = tmp_path / "train.h5"
    truncated.write_bytes((out / "train.h5").read_bytes()[:5000])
    with pytest.raises(DatasetError, match="train.h5: cannot read as HDF5"):
        inspect_store(truncated)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(DatasetError, match="not a Heimdall store"):
        inspect_store(other)


def test_bad_specs(nw_italy, tmp_path):
    with pytest.raises(DatasetError, match="shard"):
        generate_dataset(nw_italy, tmp_path, DatasetSpec(n_transmissions=10, shard=(2, 2)))
    with pytest.raises(DatasetError, match="split_mode"):
        generate_dataset(nw_italy, tmp_path, DatasetSpec(n_transmissions=10, split_mode="diagonal"))


def test_loader_batches_in_any_order_with_repeats_within_its_memory_budget(small):
    from heimdall.datasets.loader import StoreDataset

    out, _ = small
    files = [out / "train.h5", out / "val.h5"]
    train_inputs = sum(StoreDataset(files[:1]).infos[0].dataset_bytes[k] for k in ("features", "mask", "tx_position_m"))
    # both files in memory; only the first (the budget is shared by the files, in order); none: row reads
    for budget, in_memory in ((2**40, [True, True]), (train_inputs, [True, False]), (0, [False, False])):
        ds = StoreDataset(files, memory_budget_bytes=budget)
        assert ds.in_memory == in_memory and ds.cached_bytes <= budget
        assert ds.files_on_disk == [f for f, cached in zip(files, in_memory, strict=False) if not cached]
        with h5py.File(out / "train.h5") as f:
            t = f["tx_position_m"][...]
        with h5py.File(out / "val.h5") as f:
            v = f["tx_position_m"][...]
        every = np.concatenate([t, v]).astype(np.float32)
        items = [600, 3, 3, 559, 0, 560]  # across both files, unsorted, with a repeat (DDP padding does this)
        batch = ds.__getitems__(items)
        np.testing.assert_array_equal(batch["target_m"], every[items])
        assert batch["features"].shape == (6, 7, ds.infos[0].n_features)
        assert [isinstance(ds._arrays(k)["features"], np.ndarray) for k in (0, 1)] == in_memory
