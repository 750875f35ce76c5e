"""Training stores (HDF5) from outside: malformed layouts, links to other files, durable commits, safe
replacement by an import, and the loader's memory budget."""

import hashlib
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from heimdall.cli import main
from heimdall.datasets.importer import import_collections
from heimdall.datasets.spec import ImportOptions
from heimdall.datasets.store import StoreWriter, inspect_store
from tiny import tiny_train_args

VALID_SIGMF = Path(__file__).parents[1] / "data" / "broken_sigmf" / "valid"


def _recreate(name, **kwargs):
    def edit(f):
        data = f[name][...]
        del f[name]
        f.create_dataset(name, **{"data": data, **kwargs})

    return edit


def _replace(name, value):
    def edit(f):
        del f[name]
        f[name] = value

    return edit


def _set_attr(name, value):
    def edit(f):
        if value is None:
            del f.attrs[name]
        else:
            f.attrs[name] = value

    return edit


def _external_link(f):
    other = Path(f.filename).with_name("other.h5")
    with h5py.File(other, "w") as g:
        g["features"] = f["features"][...]
    del f["features"]
    f["features"] = h5py.ExternalLink(other.name, "/features")


def _virtual(f):
    data = f["features"][...]
    other = Path(f.filename).with_name("other.h5")
    with h5py.File(other, "w") as g:
        g["features"] = data
    layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
    layout[...] = h5py.VirtualSource(other.name, "features", shape=data.shape)
    del f["features"]
    f.create_virtual_dataset("features", layout)


def _external_storage(f):
    data = f["features"][...]
    raw = Path(f.filename).with_name("features.raw")
    raw.write_bytes(data.tobytes())
    del f["features"]
    f.create_dataset("features", shape=data.shape, dtype=data.dtype, external=[(raw.name, 0, data.nbytes)])


def _soft_link(f):
    f["features_copy"] = f["features"][...]
    del f["features"]
    f["features"] = h5py.SoftLink("/features_copy")


MALFORMED = [
    (
        "features of integers",
        _recreate("features", dtype="i4"),
        "dataset features is int32 (150, 7, 35), expected float [150 × any × any]",
    ),
    (
        "features without receivers axis",
        _replace("features", np.zeros((150, 35), np.float32)),
        "dataset features is float32 (150, 35)",
    ),
    (
        "mask of another shape",
        _replace("mask", np.zeros((150, 8), bool)),
        "dataset mask is bool (150, 8), expected bool [150 × 7]",
    ),
    ("oracle of another length", _replace("oracle/tx_height_m", np.zeros(149)), "dataset oracle/tx_height_m"),
    ("receiver table of another length", _replace("receivers/east_m", np.zeros(6)), "dataset receivers/east_m"),
    ("no n_samples", _set_attr("n_samples", None), "attribute n_samples must be a non-negative integer"),
    ("garbage format_version", _set_attr("format_version", "abc"), "attribute format_version must be a non-negative"),
    ("garbage feature_params", _set_attr("feature_params", "{"), "attribute feature_params is not the JSON"),
    (
        "scenario with aliases",
        _set_attr("scenario_yaml", "a: &a [1, 2]\nname: *a\n"),
        "attribute scenario_yaml: not valid YAML",
    ),
    (
        "scenario with a 400-digit number",
        _set_attr("scenario_yaml", "name: x\nfrequency_hz: " + "9" * 400 + "\n"),
        "attribute scenario_yaml: not valid YAML: an integer of 400 characters",
    ),
    ("external link", _external_link, "features is an external link to other.h5:/features"),
    ("virtual dataset", _virtual, "dataset features stores its data in other files"),
    ("external storage", _external_storage, "dataset features stores its data in other files"),
    ("soft link", _soft_link, "features is a soft link"),
]


@pytest.mark.parametrize("case,edit,message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_stores_are_clear_errors(case, edit, message, tiny_store, tmp_path, capsys):
    bad = tmp_path / "test.h5"
    shutil.copy(tiny_store / "test.h5", bad)
    with h5py.File(bad, "r+") as f:
        edit(f)
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "none.ckpt"),
                "--data-dir",
                str(bad),
                "--out",
                str(tmp_path / "eval"),
                "--no-mlflow",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert f"{bad}: " in err and message in err and "Traceback" not in err, err


def test_a_commit_is_durable(tmp_path, nw_italy, request):
    """The HDF5 file is fsynced before its rename, and its folder after."""
    from heimdall.datasets.store import receiver_table, store_attrs
    from heimdall.features import FeatureParams

    writer = StoreWriter(
        tmp_path / "train.h5",
        store_attrs(nw_italy, FeatureParams.from_scenario(nw_italy), "train"),
        receiver_table(nw_italy),
    )
    fsynced = request.getfixturevalue("fsynced")  # from here on: the writer's set-up is not observed
    writer.commit()
    assert fsynced == [str(tmp_path / "train.h5.partial"), str(tmp_path)]


def _sigmf_splits(root, splits, labelled=True):
    """The corpus' valid transmission once under each split folder (or at the top, unlabelled)."""
    for split in splits:
        folder = root / split
        folder.mkdir(parents=True)
        for p in VALID_SIGMF.iterdir():
            shutil.copy(p, folder / p.name)
        if not labelled:
            doc = json.loads((folder / "tx.sigmf-collection").read_text())
            del doc["collection"]["heimdall:transmitter"]
            (folder / "tx.sigmf-collection").write_text(json.dumps(doc))
    return root


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.h5"))}


def test_a_new_import_replaces_the_old_store_only_once_committed(nw_italy, tmp_path, monkeypatch):
    out = tmp_path / "store"
    import_collections(_sigmf_splits(tmp_path / "old", ["train", "val", "test"]), out, nw_italy)
    old = _digests(out)
    assert set(old) == {"train.h5", "val.h5", "test.h5"}
    new_src = _sigmf_splits(tmp_path / "new", ["train", "unlabelled"], labelled=True)
    shutil.rmtree(new_src / "unlabelled")
    _sigmf_splits(new_src / "field", ["x"], labelled=False)

    # the second commit fails (a full disk, a crash): nothing of the old store is lost
    real_commit = StoreWriter.commit
    calls = []

    def failing_second_commit(self):
        calls.append(self.path.name)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_commit(self)

    monkeypatch.setattr(StoreWriter, "commit", failing_second_commit)
    with pytest.raises(OSError, match="No space left"):
        import_collections(new_src, out, nw_italy, ImportOptions(overwrite=True))
    after = _digests(out)
    assert set(after) == set(old) and after["val.h5"] == old["val.h5"] and after["test.h5"] == old["test.h5"]
    for name in after:  # each file whole: the old one, or (train.h5, committed first) the new one
        assert inspect_store(out / name).n_samples == 1
    assert not list(out.glob("*.partial"))

    monkeypatch.setattr(StoreWriter, "commit", real_commit)
    import_collections(new_src, out, nw_italy, ImportOptions(overwrite=True))
    assert set(_digests(out)) == {"train.h5", "unlabelled.h5"}  # the old val and test were not replaced: removed


def test_training_says_which_files_exceed_the_loader_budget(tiny_store, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = tiny_train_args(tiny_store, tmp_path / "run", uri, "--no-export", "--loader-memory-mb", "0.5")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "train: 1 of 1 store files do not fit --loader-memory-mb 0.5 and are read from disk" in out
    assert "val:" not in out  # 150 samples fit what is left
