"""What a store file declares is not allocated on its word: a few kilobytes declaring 182 GiB (chunks never written
read as fill values) are refused before any read, whole reads are checked against the memory budget, and a subset
is read block by block."""

import shutil
import tracemalloc

import h5py
import numpy as np
import pytest

from heimdall.cli import main
from heimdall.datasets import loader
from heimdall.datasets.loader import StoreDataset
from heimdall.datasets.store import inspect_store
from heimdall.errors import DatasetError
from heimdall.evaluation.test_set import load_test_set

DECLARED_ROWS = 200_000_000  # features of 7 receivers × 35 values: 182 GiB


def forge(src, dst, rows=DECLARED_ROWS):
    """src's store file copied to dst with every per-sample dataset declaring `rows` rows (nothing more written)."""
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        per_sample = [n for n in ("features", "mask", "present", "tx_position_m", "tx_lat_lon") if n in f]
        per_sample += [f"{g}/{n}" for g in ("oracle", "meta") if g in f for n in f[g] if n != "gain_offset_db"]
        for name in per_sample:
            f[name].resize(rows, axis=0)
        f.attrs["n_samples"] = rows
    return dst


@pytest.fixture(scope="module")
def forged(tiny_store, tmp_path_factory):
    """A store folder whose three splits each declare 182 GiB of features in a file of a few hundred kilobytes."""
    out = tmp_path_factory.mktemp("forged")
    for split in ("train", "val", "test"):
        forge(tiny_store / f"{split}.h5", out / f"{split}.h5")
    return out


def test_a_file_declaring_more_than_it_stores_is_refused_before_any_read(forged):
    path = forged / "test.h5"
    assert path.stat().st_size < 5 * 1024**2
    with pytest.raises(DatasetError) as refused:
        inspect_store(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: dataset ") and "never written" in message
    assert "features" in message or "mask" in message or "tx_" in message or "oracle/" in message


def test_every_command_refuses_the_forged_store_naming_the_file(forged, tmp_path, capsys):
    commands = [
        ["evaluate", "--model", str(tmp_path / "none.onnx"), "--data-dir", str(forged), "--out", f"{tmp_path}/e"],
        ["simulate", "--like", str(forged), "--out", str(tmp_path / "twin"), "-n", "100"],
        [
            "train",
            "--data-dir",
            str(forged),
            "--checkpoint-dir",
            f"{tmp_path}/run",
            "--tracking-uri",
            f"sqlite:///{tmp_path}/m.db",
        ],
    ]
    for argv in commands:
        assert main([*argv, "--quiet"] if argv[0] != "train" else argv) == 2, argv
        err = capsys.readouterr().err
        assert f"{forged}/" in err and "never written" in err and "unexpected" not in err, (argv, err)


def test_map_fit_and_predict_refuse_the_forged_store(forged, model_file, tmp_path, capsys):
    for argv in (
        ["map", "fit", str(forged), "--model", str(model_file), "--out", str(tmp_path / "m.onnx"), "--quiet"],
        ["predict", str(forged), "--model-file", str(model_file), "--out", str(tmp_path / "p.csv"), "--quiet"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"{forged}/" in err and "never written" in err and "unexpected" not in err, (argv, err)


def test_a_whole_read_beyond_the_memory_budget_is_refused_naming_the_file(tiny_store, monkeypatch):
    monkeypatch.setenv("HEIMDALL_MEMORY_BUDGET_MB", "0.05")  # 50 KiB: less than the test split's features
    with pytest.raises(DatasetError, match=r"test\.h5: reading features.* MiB, more than the memory budget"):
        load_test_set(tiny_store)
    monkeypatch.setenv("HEIMDALL_MEMORY_BUDGET_MB", "100")
    assert len(load_test_set(tiny_store).target_m) == 150


def test_a_subset_is_read_block_by_block_not_as_the_span_it_covers(tiny_store, monkeypatch):
    monkeypatch.setattr(loader, "READ_BLOCK_ROWS", 64, raising=False)
    files = [tiny_store / "train.h5"]
    whole = StoreDataset(files).read_all("features")
    n = len(whole)
    subset = StoreDataset(files, np.array([0, n // 2, n - 1]))
    tracemalloc.start()
    try:
        rows = subset.read_all("features")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(rows, whole[[0, n // 2, n - 1]])
    assert peak < 0.2 * whole.nbytes, (peak, whole.nbytes)  # one block of 64 rows, not the 1,200 rows spanned
