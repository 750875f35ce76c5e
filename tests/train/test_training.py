"""End to end through `main([...])` in-process (torchgeo style), on a tiny simulated store."""

import contextlib
import io
import json
import shutil

import h5py
import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from heimdall.cli import main
from heimdall.datasets.generate import generate_dataset
from heimdall.datasets.spec import DatasetSpec
from tiny import tiny_train_args


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.setenv("HEIMDALL_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def _train_args(store, run_dir, uri, *extra, epochs=1):
    return tiny_train_args(store, run_dir, uri, "--batch-size", "128", *extra, epochs=epochs)


@pytest.fixture(scope="module")
def pipeline(tiny_store, tmp_path_factory):
    """One run shared by the steps below, each step a test: train → resume → export → evaluate. A step's fixture
    runs the step once; a failing step fails its own test and errors the steps after it."""
    ws = tmp_path_factory.mktemp("pipeline")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEIMDALL_WORKSPACE", str(ws / "ws"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield {"ws": ws, "store": tiny_store, "run_dir": ws / "run", "uri": f"sqlite:///{ws / 'mlflow.db'}"}


def _run(argv):
    """(exit code, stdout) of main(argv): module-scoped steps cannot use capsys."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def trained(pipeline):
    p = pipeline
    # the network alone is shipped: the localizer choice has its own tests (release/test_choice.py)
    code, out = _run(_train_args(p["store"], p["run_dir"], p["uri"], "--localizer", "network", epochs=2))
    assert code == 0, out
    saved = yaml.safe_load((p["run_dir"] / "config.yaml").read_text())
    return {**p, "out": out, "run_id": saved["mlflow_run_id"], "client": MlflowClient(p["uri"])}


@pytest.fixture(scope="module")
def resumed(trained):
    # resume: continues at epoch 3 in the same MLflow run, with the saved configuration
    code, out = _run(["train", "--resume-training", "--checkpoint-dir", str(trained["run_dir"]), "--epochs", "3"])
    assert code == 0, out
    return trained


@pytest.fixture(scope="module")
def exported(resumed):
    ws, run_dir = resumed["ws"], resumed["run_dir"]
    code, out = _run(
        ["train", "--export-only", "--checkpoint", str(run_dir / "best.ckpt"), "--checkpoint-dir", str(ws)]
    )
    assert code == 0, out
    onnx_path = ws / "exported.onnx"
    (ws / "model.onnx").rename(onnx_path)
    return {**resumed, "onnx": onnx_path}


@pytest.fixture(scope="module")
def evaluated(resumed):
    ws, run_dir, store = resumed["ws"], resumed["run_dir"], resumed["store"]
    argv = ["evaluate", "--model", str(run_dir / "best.ckpt"), "--data-dir", str(store), "--out", str(ws / "eval")]
    code, table = _run([*argv, "--grid-spacing-m", "4000"])
    assert code == 0, table
    return {**resumed, "table": table, "metrics": json.loads((ws / "eval" / "metrics.json").read_text())}


@pytest.mark.system  # a training run and what follows it: the second tier
def test_training_writes_the_run_folder_and_its_mlflow_run(trained):
    run_dir, run_id, client = trained["run_dir"], trained["run_id"], trained["client"]
    out = trained["out"]
    assert "val median error (model" in out and "weighted centroid" in out
    for name in ["last.ckpt", "best.ckpt", "config.yaml", "model.onnx"]:
        assert (run_dir / name).is_file(), name
    run = client.get_run(run_id)
    for key in [
        "val_loss",
        "train_loss",
        "val_median_error_m",
        "val_p90_error_m",
        "val_coverage_1sigma",
        "val_coverage_2sigma",
        "val_weighted_centroid_median_error_m",
    ]:
        assert key in run.data.metrics, key
    assert len(client.get_metric_history(run_id, "val_median_error_m")) == 2
    assert run.data.tags["scenario_sha256"] and run.data.tags["dataset_sha256"]
    assert run.data.params["cfg.epochs"] == "2"
    assert torch.load(run_dir / "last.ckpt", weights_only=True)["epoch"] == 1  # 0-based: the 2nd epoch


@pytest.mark.system  # a training run and what follows it: the second tier
def test_resumed_run_goes_on_in_the_same_mlflow_run(resumed):
    run_dir, run_id, client = resumed["run_dir"], resumed["run_id"], resumed["client"]
    assert torch.load(run_dir / "last.ckpt", weights_only=True)["epoch"] == 2  # the 3rd epoch
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["mlflow_run_id"] == run_id
    assert len(client.get_metric_history(run_id, "val_median_error_m")) == 3
    experiment = client.get_experiment_by_name("heimdall")
    assert len(client.search_runs([experiment.experiment_id])) == 1


@pytest.mark.system  # a training run and what follows it: the second tier
def test_export_only_writes_a_model_onnx_runtime_runs(exported):
    # export-only loads the checkpoint and writes a model ONNX Runtime can run
    session = ort.InferenceSession(str(exported["onnx"]), providers=["CPUExecutionProvider"])
    with h5py.File(exported["store"] / "test.h5") as f:
        feats = f["features"][:3]
        rx = np.stack([f["receivers/east_m"][...], f["receivers/north_m"][...]], -1).astype(np.float32)
    mean_m, cov = session.run(
        ["mean_m", "cov_m2"],
        {
            "features": feats,
            "rx_position_m": np.broadcast_to(rx, (3, 7, 2)).copy(),
            "present": np.ones((3, 7), np.float32),
        },
    )
    assert mean_m.shape == (3, 2) and np.isfinite(cov).all()
    code, out = _run(["inspect", str(exported["onnx"])])
    assert code == 0
    assert "weights_sha256" in out


@pytest.mark.system  # a training run and what follows it: the second tier
def test_evaluation_reports_every_estimator_metric_and_plot(evaluated):
    # evaluation: every estimator, every metric, the plots, and the numbers in the training run
    table, metrics, ws = evaluated["table"], evaluated["metrics"], evaluated["ws"]
    assert "classical_ml" in table and "oracle" in table
    assert metrics["n_test"] == 150
    assert set(metrics["estimators"]) == {
        "model",
        "model_power_only",
        "weighted_centroid",
        "classical_ml",
        "radio_map",
        "hybrid",
        "oracle",
        "crlb",
    }
    for name in ["model", "classical_ml", "radio_map", "hybrid", "oracle"]:
        m = metrics["estimators"][name]
        for key in [
            "median_error_m",
            "mean_error_m",
            "p90_error_m",
            "cep50_m",
            "r95_m",
            "coverage_1sigma",
            "coverage_2sigma",
            "coverage_95",
            "mean_mahalanobis_sq",
            "nll",
        ]:
            assert np.isfinite(m[key]), (name, key)
        assert m["inside_hull"]["n"] + m["outside_hull"]["n"] == 150
        assert sum(v["n"] for v in m["by_receivers_heard"].values()) == 150
        assert set(m["by_receivers_heard"]) <= {"1", "2", "3", "4+"} and m["answered"] == 1.0
    for name in ["radio_map", "hybrid", "oracle"]:  # grid posteriors: their own NLL and HPD regions
        m = metrics["estimators"][name]
        assert 0 < m["coverage_hpd50"] <= m["coverage_hpd95"] <= 1 and m["median_area_hpd95_km2"] > 0
    scored = metrics["provenance"]["radio_map"]  # a checkpoint carries no map: one is fitted for the evaluation
    assert scored["map"] == "fitted for this evaluation" and scored["fitted_on"].endswith("/train.h5")
    assert scored["n_labels"] > 0 and scored["spacing_m"] == 500.0
    nll = {k: v["nll"] for k, v in metrics["estimators"].items() if "nll" in v}
    assert min(nll, key=nll.get) == "oracle", nll  # the oracle is a floor on simulated data
    for plot in ["error_cdf.png", "calibration.png", "map.png", "error_map.png"]:
        assert (ws / "eval" / plot).stat().st_size > 10_000, plot
    assert "test_model_median_error_m" in evaluated["client"].get_run(evaluated["run_id"]).data.metrics


@pytest.mark.system  # a training run and what follows it: the second tier
def test_the_exported_model_evaluates_as_its_checkpoint(evaluated, exported):
    # the same evaluation from the exported model gives the same model numbers
    ws = exported["ws"]
    argv = [
        "evaluate",
        "--model",
        str(exported["onnx"]),
        "--data-dir",
        str(exported["store"]),
        "--out",
        str(ws / "eval2"),
    ]
    code, out = _run([*argv, "--grid-spacing-m", "4000", "--map-spacing-m", "0", "--no-mlflow"])  # the model alone
    assert code == 0, out
    onnx_metrics = json.loads((ws / "eval2" / "metrics.json").read_text())["estimators"]["model"]
    expected = evaluated["metrics"]["estimators"]["model"]["median_error_m"]
    assert onnx_metrics["median_error_m"] == pytest.approx(expected, abs=1.0)


def test_resuming_a_finished_run_folder_is_refused(tiny_store, ws, capsys):
    run_dir = ws / "run"
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    assert main(_train_args(tiny_store, run_dir, uri, "--no-export")) == 0
    assert main(_train_args(tiny_store, run_dir, uri)) == 2
    assert "already holds a run; use --resume-training" in capsys.readouterr().err


def test_export_only_rejects_bad_checkpoints(ws, capsys):
    assert main(["train", "--export-only", "--checkpoint", str(ws / "missing.ckpt")]) == 2
    assert "missing.ckpt: checkpoint not found" in capsys.readouterr().err
    foreign = ws / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    assert main(["train", "--export-only", "--checkpoint", str(foreign)]) == 2
    assert "not a Heimdall checkpoint" in capsys.readouterr().err
    garbage = ws / "garbage.ckpt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    assert main(["train", "--export-only", "--checkpoint", str(garbage)]) == 2
    assert "cannot read as a PyTorch checkpoint" in capsys.readouterr().err
    assert main(["train", "--export-only"]) == 2
    assert "--export-only needs --checkpoint" in capsys.readouterr().err


def test_bad_data_gives_clear_errors(tiny_store, ws, tmp_path, capsys):
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    assert main(_train_args(tmp_path / "nowhere", ws / "r0", uri)) == 2
    assert "nowhere: data folder not found" in capsys.readouterr().err

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "train.h5").write_bytes((tiny_store / "train.h5").read_bytes()[:4096])
    assert main(_train_args(corrupt, ws / "r1", uri)) == 2
    assert "corrupt/train.h5: cannot read as HDF5" in capsys.readouterr().err

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(tiny_store / "train.h5", mixed / "train.h5")
    from heimdall.scenario.builtin import load_scenario

    generate_dataset(
        load_scenario("randstad-70cm"), tmp_path / "other", DatasetSpec(n_transmissions=60, iq_per_split=0)
    )
    shutil.copy(tmp_path / "other" / "val.h5", mixed / "val.h5")
    assert main(_train_args(mixed, ws / "r2", uri)) == 2
    assert "store from another scenario" in capsys.readouterr().err

    nan = tmp_path / "nan"
    shutil.copytree(tiny_store, nan)
    with h5py.File(nan / "train.h5", "r+") as f:
        f["features"][7, 2, 4] = np.nan
    assert main(_train_args(nan, ws / "r3", uri, "--validation-split", "0.1")) == 2
    err = capsys.readouterr().err
    assert "nan/train.h5: features of rows [7] are not finite" in err
