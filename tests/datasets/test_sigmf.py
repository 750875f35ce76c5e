"""SigMF in and out: round trip against the direct store, conforming other rates and tunings, the broken
corpus, receivers new to the table, and import → train → evaluate → predict through the HTTP service."""

import base64
import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import h5py
import httpx
import numpy as np
import pytest
from scipy.signal import resample_poly

from heimdall.cli import main
from heimdall.datasets.conform import recording_features
from heimdall.datasets.generate import generate_dataset
from heimdall.datasets.importer import import_collections
from heimdall.datasets.sigmf_files import DATATYPES, read_collection
from heimdall.datasets.sigmf_writer import encode, write_collection, write_recording
from heimdall.datasets.spec import DatasetSpec
from heimdall.errors import RecordingError
from heimdall.features import FeatureParams, extract_features, feature_matrix
from service_process import running_service
from tiny import tiny_train_args

CORPUS = Path(__file__).parents[1] / "data" / "broken_sigmf"
CASES = json.loads((CORPUS / "cases.json").read_text())


def tree_digest(root: Path) -> str:
    """sha256 over every file's relative path and bytes (and mtime: the input must not even be touched)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
            h.update(str(p.stat().st_mtime_ns).encode())
    return h.hexdigest()


ROUND_TRIP = DatasetSpec(n_transmissions=400, seed=21)


@pytest.fixture(scope="module")
def direct_store(nw_italy, tmp_path_factory):
    """ROUND_TRIP's transmissions simulated straight into a store."""
    out = tmp_path_factory.mktemp("direct")
    generate_dataset(nw_italy, out, ROUND_TRIP)
    return out


@pytest.fixture(scope="module")
def sigmf_dir(nw_italy, tmp_path_factory):
    """The same transmissions (same spec) as SigMF collections in train/val/test folders."""
    out = tmp_path_factory.mktemp("sigmf")
    generate_dataset(nw_italy, out, ROUND_TRIP, output="sigmf")
    return out


@pytest.fixture(scope="module")
def imported(sigmf_dir, nw_italy, tmp_path_factory):
    before = tree_digest(sigmf_dir)
    out = tmp_path_factory.mktemp("imported")
    assert main(["import", "--scenario", "nw-italy", str(sigmf_dir), "--out", str(out), "--quiet"]) == 0
    assert tree_digest(sigmf_dir) == before, "the input folder was modified"
    return out


def test_round_trip_equals_direct_store(imported, direct_store):
    rows = {}
    for split in ("train", "val", "test"):
        with h5py.File(direct_store / f"{split}.h5") as a, h5py.File(imported / f"{split}.h5") as b:
            rows[split] = len(a["features"])
            assert a.attrs["scenario_sha256"] == b.attrs["scenario_sha256"]
            assert a.attrs["feature_params"] == b.attrs["feature_params"]
            np.testing.assert_allclose(b["features"][...], a["features"][...], rtol=0, atol=1e-4)
            np.testing.assert_array_equal(b["mask"][...], a["mask"][...])
            np.testing.assert_array_equal(b["tx_lat_lon"][...], a["tx_lat_lon"][...])  # labels exact
            np.testing.assert_allclose(b["tx_position_m"][...], a["tx_position_m"][...], rtol=0, atol=1e-6)
            assert b["present"][...].all()
            for col in a["receivers"]:
                np.testing.assert_array_equal(b["receivers"][col][...], a["receivers"][col][...])
            np.testing.assert_array_equal(b["iq"][: len(a["iq"])], a["iq"][...])
            names = b["meta/collection"].asstr()[...]
            assert names[0] == "tx-0000000" and len(set(names)) == len(names)
    report = json.loads((imported / "import-report.json").read_text())
    assert report["splits"] == rows and sum(rows.values()) == ROUND_TRIP.n_transmissions and report["skipped"] == []


def test_import_keeps_weakly_heard_transmissions_and_counts_each_class(imported):
    n_heard = np.concatenate([h5py.File(imported / f"{s}.h5")["mask"][...].sum(1) for s in ("train", "val", "test")])
    assert n_heard.min() == 1  # heard by one receiver: stored, not dropped
    counts = json.loads((imported / "import-report.json").read_text())["by_receivers_heard"]
    expected = {"1": n_heard == 1, "2": n_heard == 2, "3": n_heard == 3, "4+": n_heard >= 4}
    assert counts == {k: int(v.sum()) for k, v in expected.items() if v.any()}
    assert counts["1"] + counts["2"] > 0.2 * len(n_heard)


@pytest.mark.parametrize("syncfs", [True, False], ids=["one-syncfs", "fsync-each-file"])
def test_a_simulated_split_is_made_durable_then_published(syncfs, nw_italy, tmp_path, monkeypatch):
    """Each split's files are written plainly into its .partial folder and made durable at once — one syncfs of its
    file system on Linux, else an fsync of each file and of the folder — then the folder is renamed into place and
    its parent fsynced: no temporary file, fsync and rename per file. A second run moves the older split aside
    before publishing and removes it after."""
    from heimdall import atomic

    if syncfs and atomic._syncfs is None:
        pytest.skip("syncfs is Linux's")
    events: list[tuple[str, ...]] = []
    real_syncfs, real_replace, real_fsync = atomic._syncfs, os.replace, os.fsync

    def recording_syncfs(fd: int) -> int:
        events.append(("syncfs", os.readlink(f"/proc/self/fd/{fd}")))
        return real_syncfs(fd)

    def replace(source, target) -> None:
        events.append(("replace", Path(source).name, Path(target).name))
        real_replace(source, target)

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(atomic, "_syncfs", recording_syncfs if syncfs else None)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)
    out = tmp_path / "out"
    spec = DatasetSpec(n_transmissions=20, seed=1)
    generate_dataset(nw_italy, out, spec, output="sigmf")
    files = {split: sorted(p for p in (out / split).iterdir()) for split in ("train", "val", "test")}
    assert sum(map(len, files.values())) == 20 * (2 * len(nw_italy.receivers) + 1)  # data and meta, collections

    expected: list[tuple[str, ...]] = []
    for split in files:
        partial = out / f"{split}.partial"
        if syncfs:
            expected.append(("syncfs", str(partial)))
        else:
            expected += [("fsync", str(partial / p.name)) for p in files[split]] + [("fsync", str(partial))]
        expected += [("replace", f"{split}.partial", split), ("fsync", str(out))]

    def per_file(event: tuple[str, ...]) -> bool:
        return event[0] == "fsync" and Path(event[1]).parent.name.endswith(".partial")

    assert [e for e in events if not per_file(e)] == [e for e in expected if not per_file(e)]
    assert sorted(filter(per_file, events)) == sorted(filter(per_file, expected))  # in rglob's order
    for split in files:  # each file before its folder is published
        published = events.index(("replace", f"{split}.partial", split))
        assert all(events.index(e) < published for e in expected if per_file(e) and f"/{split}.partial/" in e[1])
    # again over the same folder: the older split moved aside, the new one published, the older removed
    events.clear()
    generate_dataset(nw_italy, out, spec, output="sigmf")
    replaces = [e for e in events if e[0] == "replace"]
    splits = ("train", "val", "test")
    assert replaces == [e for s in splits for e in (("replace", s, f"{s}.old"), ("replace", f"{s}.partial", s))]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(splits)


def test_sigmf_package_reads_our_collections(sigmf_dir):
    import sigmf
    from sigmf import validate

    path = next((sigmf_dir / "test").glob("*.sigmf-collection"))
    col = sigmf.sigmffile.fromfile(str(path))
    col.verify_stream_hashes()
    assert len(col.get_stream_names()) == 7
    validate.validate(json.loads(read_collection(path).recordings[0].meta_path.read_text()))


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
def test_datatypes_decode_what_was_encoded(tmp_path, datatype):
    rng = np.random.default_rng(3)
    x = (rng.uniform(-0.9, 0.9, 500) + 1j * rng.uniform(-0.9, 0.9, 500)).astype(np.complex64)
    meta = write_recording(
        tmp_path,
        "r",
        x,
        datatype=datatype,
        sample_rate_hz=48e3,
        frequency_hz=145e6,
        datetime="2026-05-01T12:00:00Z",
        lat=45.0,
        lon=7.0,
        alt_m=300.0,
        receiver_id="a",
        power_calibration_dbm=-50.0,
    )
    write_collection(tmp_path, "c", [meta], None)
    rec = read_collection(tmp_path / "c.sigmf-collection").recordings[0]
    assert rec.n_samples == 500 and rec.datatype == datatype and rec.alt_m == 300.0
    lsb = DATATYPES[datatype][2]
    np.testing.assert_allclose(rec.samples(), x, rtol=0, atol=lsb if lsb < 1 else 1e-7)
    assert len(encode(x, datatype)) == 500 * 2 * DATATYPES[datatype][0].itemsize


def test_other_rate_and_tuning_give_the_same_features(nw_italy, tmp_path):
    """A 192 kHz recording tuned 30 kHz below the channel gives the features of the 48 kHz original."""
    p = FeatureParams.from_scenario(nw_italy)
    fs_dbm = nw_italy.receiver_chain.full_scale_dbm
    rng = np.random.default_rng(5)
    n = 4 * p.window_samples
    t = np.arange(n) / p.sample_rate_hz
    x48 = (
        0.02 * np.exp(2j * np.pi * 2_000 * t) + 3e-4 * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
    ).astype(np.complex64)
    offset_hz = 30_000.0
    x192 = resample_poly(x48, 4, 1)
    x192 = (x192 * np.exp(2j * np.pi * offset_hz * np.arange(len(x192)) / 192e3)).astype(np.complex64)
    meta = write_recording(
        tmp_path,
        "r",
        x192,
        datatype="cf32_le",
        sample_rate_hz=192e3,
        frequency_hz=nw_italy.frequency_hz - offset_hz,
        datetime="2026-05-01T12:00:00Z",
        lat=45.0,
        lon=7.0,
        alt_m=None,
        receiver_id="a",
        power_calibration_dbm=fs_dbm,
    )
    write_collection(tmp_path, "c", [meta], None)
    rec = read_collection(tmp_path / "c.sigmf-collection").recordings[0]
    got, window = recording_features([rec], p, nw_italy.frequency_hz, fs_dbm)
    want = feature_matrix(extract_features(x48[None, 1000 : 1000 + p.window_samples], p, fs_dbm))
    assert window.shape == (1, p.window_samples)
    assert abs(got[0, -3] - want[0, -3]) < 0.2  # power, dBm
    assert abs(got[0, -2] - want[0, -2]) < 0.5  # noise density, dBm/Hz
    assert abs(got[0, -1] - want[0, -1]) < 0.5  # SNR, dB


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_collection_names_file_and_field(case, nw_italy, tmp_path):
    file, field, phrase = CASES[case]
    before = tree_digest(CORPUS / case)
    out = tmp_path / "store"
    with pytest.raises(RecordingError) as err:
        import_collections(CORPUS / case, out, nw_italy)
    assert Path(err.value.path).name == file and err.value.field == field, str(err.value)
    assert phrase in err.value.message and file in str(err.value)
    assert not out.exists() or not any(out.iterdir()), "a failed import left files behind"
    assert tree_digest(CORPUS / case) == before


def test_skip_invalid_imports_the_rest_and_reports_each(tmp_path, capsys):
    out = tmp_path / "store"
    assert main(["import", "--scenario", "nw-italy", str(CORPUS), "--out", str(out), "--skip-invalid", "--quiet"]) == 0
    report = json.loads((out / "import-report.json").read_text())
    assert sum(report["splits"].values()) == 1
    skipped = {Path(s["collection"]).parent.name: (Path(s["file"]).name, s["field"]) for s in report["skipped"]}
    assert skipped == {case: (file, field) for case, (file, field, _) in CASES.items()}
    assert f"skipped (invalid): {len(CASES)}" in capsys.readouterr().out
    assert (
        main(["import", "--scenario", "nw-italy", str(CORPUS / "valid"), "--out", str(out), "--quiet"]) == 2
    )  # refuses to overwrite
    assert "already holds a store" in capsys.readouterr().err


def test_corpus_is_reproducible(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_broken_sigmf", CORPUS.parent / "make_broken_sigmf.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.make(tmp_path / "c")
    ours = {p.relative_to(tmp_path / "c"): p.read_bytes() for p in (tmp_path / "c").rglob("*") if p.is_file()}
    committed = {p.relative_to(CORPUS): p.read_bytes() for p in CORPUS.rglob("*") if p.is_file()}
    assert ours == committed


def _copy_collection(src: Path, dst: Path, label: bool = True, move_rx: str | None = None) -> Path:
    """Copy a collection into dst; optionally drop its label, and move one receiver 5 km north without its id."""
    dst.mkdir(parents=True, exist_ok=True)
    col = read_collection(src)
    metas = []
    for rec in col.recordings:
        shutil.copy(rec.data_path, dst / rec.data_path.name)
        doc = json.loads(rec.meta_path.read_text())
        if rec.receiver_id == move_rx:
            doc["global"]["core:geolocation"]["coordinates"][1] += 0.045
            del doc["global"]["heimdall:receiver_id"]
        (dst / rec.meta_path.name).write_text(json.dumps(doc))
        metas.append(dst / rec.meta_path.name)
    return write_collection(dst, col.name, metas, col.transmitter_lat_lon if label else None)


def test_new_receiver_joins_table_and_unlabelled_go_to_their_split(nw_italy, tmp_path):
    src = CORPUS / "valid" / "tx.sigmf-collection"
    _copy_collection(src, tmp_path / "in" / "a")
    _copy_collection(src, tmp_path / "in" / "b", label=False, move_rx="torino")
    s = import_collections(tmp_path / "in", tmp_path / "store", nw_italy)
    assert len(s.new_receivers) == 1 and s.new_receivers[0].startswith("rx_45.")
    with h5py.File(tmp_path / "store" / "unlabelled.h5") as f:
        ids = list(f["receivers/id"].asstr()[...])
        assert ids[:7] == [r.id for r in nw_italy.receivers] and ids[7] == s.new_receivers[0]
        assert np.isnan(f["tx_position_m"][...]).all()
        present = f["present"][0]
        assert present.sum() == 3 and present[7] and not present[ids.index("torino")]
        assert "nw-italy-imported" in f.attrs["scenario_yaml"]


@pytest.mark.system
def test_import_train_evaluate_predict_through_the_service(imported, sigmf_dir, nw_italy, tmp_path):
    ws = tmp_path / "ws"
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    assert main(tiny_train_args(imported, ws / "run", uri, "--no-export", epochs=2)) == 0
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(ws / "run" / "best.ckpt"),
                "--data-dir",
                str(imported),
                "--out",
                str(ws / "eval"),
                "--max-samples",
                "100",
            ]
        )
        == 0
    )
    metrics = json.loads((ws / "eval" / "metrics.json").read_text())
    assert {"model", "weighted_centroid", "classical_ml"} <= set(metrics["estimators"])
    assert "oracle" not in metrics["estimators"]  # imported data has no simulation truths
    from heimdall.release.export import export_checkpoint

    model = export_checkpoint(ws / "run" / "best.ckpt", ws / "model.onnx").path

    # three field recordings without a known position
    field = tmp_path / "field"
    for src in sorted((sigmf_dir / "test").glob("*.sigmf-collection"))[:3]:
        _copy_collection(src, field, label=False)
    assert main(["predict", str(field), "--model-file", str(model), "--out", str(ws / "p.csv"), "--quiet"]) == 0
    cli = list(csv.DictReader((ws / "p.csv").open()))
    assert [r["transmission"] for r in cli] == ["tx-0000000", "tx-0000001", "tx-0000002"]
    assert main(["import", "--scenario", "nw-italy", str(field), "--out", str(ws / "field-store"), "--quiet"]) == 0
    assert (
        main(
            [
                "predict",
                str(ws / "field-store"),
                "--split",
                "unlabelled",
                "--model-file",
                str(model),
                "--out",
                str(ws / "q.csv"),
            ]
        )
        == 0
    )
    from_store = list(csv.DictReader((ws / "q.csv").open()))
    with running_service(model) as url:
        for row, stored in zip(cli, from_store, strict=False):
            col = read_collection(field / f"{row['transmission']}.sigmf-collection")
            body = {
                "iq": [
                    {
                        "id": r.receiver_id,
                        "datatype": r.datatype,
                        "sample_rate_hz": r.sample_rate_hz,
                        "center_frequency_hz": r.frequency_hz,
                        "samples_base64": base64.b64encode(r.data_path.read_bytes()).decode(),
                    }
                    for r in col.recordings
                ]
            }
            answer = httpx.post(f"{url}/v1/localize", json=body, timeout=30)
            assert answer.status_code == 200, answer.text
            a = answer.json()
            for other in (row, stored):
                assert other["transmission"] == row["transmission"]
                assert abs(a["lat"] - float(other["lat"])) < 2e-6 and abs(a["lon"] - float(other["lon"])) < 2e-6
