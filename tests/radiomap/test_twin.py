"""`heimdall simulate --like STORE`: a twin of an imported store recovers the physics the recordings were made with,
and refuses stores it cannot take a twin of without writing anything."""

import contextlib
import dataclasses
import io
import json
import shutil

import h5py
import numpy as np
import pytest

from heimdall.cli import main
from heimdall.datasets.generate import generate_dataset
from heimdall.datasets.spec import DatasetSpec
from heimdall.radiomap.twin import build_twin
from heimdall.scenario.domain import ShadowingComponent
from heimdall.scenario.schema import scenario_from_text
from tiny import TINY_NETWORK

TRUE_SLOPE_DB_PER_DECADE = 4.0  # the network's loss grows this much faster than the scenario's model says
TRUE_SHADOWING = (ShadowingComponent(3.0, 20_000.0), ShadowingComponent(2.0, 4_000.0))


@pytest.fixture(scope="module")
def truth(nw_italy):
    """nw-italy's receivers (with their gain offsets and noise figures) in a world whose path loss has another
    slope and weaker shadowing: what the recordings are made with, unknown to the store."""
    env = nw_italy.environment
    return dataclasses.replace(
        nw_italy,
        environment=dataclasses.replace(
            env,
            path_loss=dataclasses.replace(env.path_loss, slope_correction_db_per_decade=TRUE_SLOPE_DB_PER_DECADE),
            # i.i.d.: one field realisation over 700 transmissions would tilt the fitted slope by itself
            shadowing=dataclasses.replace(env.shadowing, mode="iid", seed=7, components=TRUE_SHADOWING),
        ),
    )


@pytest.fixture(scope="module")
def source(truth, tmp_path_factory):
    """The truth's transmissions recorded as SigMF (ci16_le) and imported with the nominal nw-italy scenario."""
    root = tmp_path_factory.mktemp("twin-source")
    generate_dataset(
        truth, root / "sigmf", DatasetSpec(n_transmissions=700, seed=3), output="sigmf", sigmf_datatype="ci16_le"
    )
    assert main(["import", "--scenario", "nw-italy", str(root / "sigmf"), "--out", str(root / "store"), "--quiet"]) == 0
    return root / "store"


@pytest.fixture(scope="module")
def twin_run(source, tmp_path_factory):
    """(twin store folder, what the command printed)."""
    out = tmp_path_factory.mktemp("twin") / "store"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert (
            main(["simulate", "--like", str(source), "--out", str(out), "-n", "700", "--workers", "1", "--quiet"]) == 0
        )
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def twin(twin_run):
    return twin_run[0]


def _noise_medians(path):
    with h5py.File(path) as f:
        params = json.loads(f.attrs["feature_params"])
        noise = f["features"][..., params["psd_bins"] + 1]
        present = f["present"][...] if "present" in f else np.ones(noise.shape, bool)
    return np.array([np.median(noise[present[:, r], r]) for r in range(noise.shape[1])])


def test_twin_has_the_stores_network_and_noise(source, twin, truth):
    with h5py.File(source / "train.h5") as a, h5py.File(twin / "train.h5") as b:
        assert a.attrs["feature_params"] == b.attrs["feature_params"]  # channel, window, detection rule
        for col in ("id", "lat", "lon", "east_m", "north_m", "antenna_height_m"):
            np.testing.assert_array_equal(b["receivers"][col][...], a["receivers"][col][...])
        scenario = scenario_from_text(b.attrs["scenario_yaml"], "twin")
    assert scenario.frequency_hz == truth.frequency_hz
    assert scenario.name == "nw-italy-twin"
    np.testing.assert_allclose(_noise_medians(twin / "train.h5"), _noise_medians(source / "train.h5"), atol=0.3)


def test_twin_recovers_the_propagation_it_was_recorded_with(source, twin, truth):
    report = json.loads((twin / "twin.json").read_text())
    scenario = scenario_from_text(h5py.File(twin / "train.h5").attrs["scenario_yaml"], "twin")
    assert report["source"]["labels_used"] > 400
    assert report["propagation"]["shape"] == "scenario"
    slope = scenario.environment.path_loss.slope_correction_db_per_decade
    assert slope == pytest.approx(TRUE_SLOPE_DB_PER_DECADE, abs=1.5)
    assert scenario.environment.path_loss.model == truth.environment.path_loss.model
    # gains are known up to a constant the unknown transmit powers absorb: compare them centred
    gains = np.array([r.gain_offset_db for r in scenario.receivers])
    true_gains = np.array([r.gain_offset_db for r in truth.receivers])
    np.testing.assert_allclose(gains - gains.mean(), true_gains - true_gains.mean(), atol=1.5)
    sigma = scenario.environment.shadowing.sigma_db
    assert sigma == pytest.approx(np.hypot(*[c.sigma_db for c in TRUE_SHADOWING]), abs=1.0)
    # what it was calibrated from
    with h5py.File(source / "train.h5") as f:
        assert report["source"]["scenario_sha256"] == f.attrs["scenario_sha256"]
    assert report["source"]["store_files"] == ["train.h5", "val.h5"]
    assert report["source"]["store_sha256"] in scenario.description
    # the twin's scenario goes into every model trained on it: the store's name, not its path here
    assert report["source"]["store"] == source.name and str(source.resolve()) not in scenario.to_yaml()
    assert [r["id"] for r in report["receivers"]] == [r.id for r in truth.receivers]


def test_without_labels_the_twin_keeps_the_scenarios_physics(source, nw_italy, tmp_path):
    store = tmp_path / "unlabelled-only"
    store.mkdir()
    shutil.copy(source / "val.h5", store / "unlabelled.h5")
    twin = build_twin(store)
    assert twin.report["propagation"] == {"fitted": False}
    assert twin.scenario.environment.path_loss == nw_italy.environment.path_loss
    assert twin.scenario.environment.shadowing == nw_italy.environment.shadowing
    measured = np.array([r["measured_noise_dbm_hz"] for r in twin.report["receivers"]])
    implied = np.array([-173.975 + r.noise_figure_db + r.gain_offset_db for r in twin.scenario.receivers])
    np.testing.assert_allclose(implied, measured, atol=0.01)


def test_the_command_prints_the_calibration(twin_run):
    out, text = twin_run
    report = json.loads((out / "twin.json").read_text())
    assert report["source"]["store_sha256"][:12] in text
    assert "slope correction" in text and "giaveno" in text


def _refused(args, capsys, out, *expected):
    assert main(["simulate", *args, "--out", str(out), "-n", "60", "--workers", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    for e in expected:
        assert e in err
    assert not out.exists()


def test_refuses_what_it_cannot_take_a_twin_of(source, tmp_path, capsys):
    out = tmp_path / "never"
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(["--like", str(empty)], capsys, out, "no recordings")
    test_only = tmp_path / "test-only"
    test_only.mkdir()
    shutil.copy(source / "test.h5", test_only / "test.h5")
    _refused(["--like", str(test_only)], capsys, out, "no recordings", "left for evaluation")
    _refused(["--like", str(tmp_path / "missing")], capsys, out, "not a store folder")
    _refused(["--like", str(source), "--scenario", "randstad-70cm"], capsys, out, "not the network of", "receivers")
    no_scenario = tmp_path / "no-scenario"
    no_scenario.mkdir()
    shutil.copy(source / "train.h5", no_scenario / "train.h5")
    with h5py.File(no_scenario / "train.h5", "a") as f:
        del f.attrs["scenario_yaml"]
    _refused(["--like", str(no_scenario)], capsys, out, "no scenario_yaml attribute")


def test_refuses_to_write_the_twin_over_its_store(source, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in source.iterdir()}
    assert main(["simulate", "--like", str(source), "--out", str(source), "-n", "60", "--quiet"]) == 2
    assert "is the store the twin is taken from" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in source.iterdir()} == before


def test_a_scenario_of_the_same_network_gives_the_physics(source, nw_italy, tmp_path):
    store = tmp_path / "unlabelled-only"
    store.mkdir()
    shutil.copy(source / "val.h5", store / "unlabelled.h5")
    given = dataclasses.replace(nw_italy, transmitter=dataclasses.replace(nw_italy.transmitter, mobile_fraction=0.9))
    twin = build_twin(store, given)
    assert twin.scenario.transmitter.mobile_fraction == 0.9


def test_transfer_path_pretrain_on_the_twin_then_fine_tune_on_the_store(source, twin, tmp_path):
    """simulate --like → train on the twin → train --init-from on the store's labels → evaluate on its test split."""
    import torch

    from heimdall.metrics import covariance_scale_for, mahalanobis_sq
    from heimdall.train.checkpoint import load_checkpoint
    from heimdall.train.task import load_task, predict_numpy

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tiny = ["--tracking-uri", uri, "--epochs", "2", *TINY_NETWORK, "--no-export"]
    assert main(["train", "--data-dir", str(twin), "--checkpoint-dir", str(tmp_path / "pre"), *tiny]) == 0
    pre_ckpt = tmp_path / "pre" / "best.ckpt"
    fine_dir = tmp_path / "fine"
    assert (
        main(
            ["train", "--init-from", str(pre_ckpt), "--data-dir", str(source), "--checkpoint-dir", str(fine_dir), *tiny]
        )
        == 0
    )
    fine_ckpt = fine_dir / "best.ckpt"
    assert load_checkpoint(fine_ckpt)["heimdall"]["config"]["init_from"] == str(pre_ckpt)
    assert "init_from" in (fine_dir / "config.yaml").read_text()

    pre, fine = load_task(pre_ckpt), load_task(fine_ckpt)
    assert float(fine.net.covariance_scale) != pytest.approx(float(pre.net.covariance_scale), rel=0.01)
    # the fine-tuned scale is the one the store's validation split asks for
    with h5py.File(source / "val.h5") as f:
        params = json.loads(f.attrs["feature_params"])
        features, present, truth = f["features"][...], f["present"][...], f["tx_position_m"][...]
        rx = np.stack([f["receivers/east_m"][...], f["receivers/north_m"][...]], -1).astype(np.float32)
    assert params["psd_bins"] == 32
    scale = float(fine.net.covariance_scale)
    fine.net.covariance_scale = torch.tensor(1.0)
    mean, cov = predict_numpy(
        fine.net, features, np.broadcast_to(rx, (len(truth), *rx.shape)).copy(), present.astype(np.float32)
    )
    assert scale == pytest.approx(covariance_scale_for(mahalanobis_sq(mean, cov, truth)), rel=1e-3)

    out = tmp_path / "evaluation"
    args = ["evaluate", "--model", str(fine_ckpt), "--data-dir", str(source), "--out", str(out), "--map-spacing-m", "0"]
    assert main([*args, "--no-mlflow", "--quiet"]) == 0
    assert (out / "metrics.json").is_file()
