"""MLflow registry (sqlite store): the champion moves only for a better, calibrated model."""

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from heimdall.cli import main
from heimdall.evaluation.test_set import load_test_set
from heimdall.release.export import export_checkpoint
from heimdall.release.registry import COVERAGE_TOLERANCE, decide, onnx_metrics, register
from heimdall.train.checkpoint import AtomicCheckpointIO, load_checkpoint


def test_decision_rule():
    good = {"median_error_m": 9000.0, "coverage_1sigma": 0.40, "coverage_2sigma": 0.87}
    worse = dict(good, median_error_m=12000.0)
    overconfident = dict(good, median_error_m=5000.0, coverage_1sigma=0.393 - COVERAGE_TOLERANCE - 0.01)
    assert decide(good, None) == (True, "there was no champion")
    assert decide(good, worse)[0] and not decide(worse, good)[0]
    assert "does not beat the champion's 9.00 km" in decide(worse, good)[1]
    wins, why = decide(overconfident, good)
    assert not wins and "coverage" in why


@pytest.fixture(scope="module")
def trained(tiny_run):
    return tiny_run


def _shifted(ckpt_path, out, shift_m, covariance_factor=1.0):
    """A worse copy of a model: every mean moved by shift_m metres east, covariances scaled."""
    ckpt = load_checkpoint(ckpt_path)
    scale = float(ckpt["state_dict"]["net.position_scale_m"])
    bias = ckpt["state_dict"]["net.head.2.bias"].view(-1, 6)
    bias[:, 0] += shift_m / scale
    ckpt["state_dict"]["net.head.2.bias"] = bias.view(-1)
    ckpt["state_dict"]["net.covariance_scale"] *= covariance_factor
    AtomicCheckpointIO().save_checkpoint(ckpt, out)
    return out


def test_champion_and_challenger(trained, tiny_store):
    ws, uri = trained
    best = ws / "run" / "best.ckpt"
    evalset = load_test_set(tiny_store / "val.h5")  # the split the covariance was calibrated on
    good = export_checkpoint(best, ws / "good.onnx").path.read_bytes()
    m_good = onnx_metrics(good, evalset)
    shift = 2.0 * m_good["median_error_m"]
    bad = export_checkpoint(_shifted(best, ws / "bad.ckpt", shift), ws / "bad.onnx").path.read_bytes()
    factor = onnx_metrics(bad, evalset)["mean_mahalanobis_sq"] / 2  # keep the worse model calibrated
    bad = export_checkpoint(_shifted(best, ws / "bad.ckpt", shift, factor), ws / "bad.onnx").path.read_bytes()
    m_bad = onnx_metrics(bad, evalset)
    assert m_bad["median_error_m"] > m_good["median_error_m"] * 1.05
    run_id = (ws / "run" / "config.yaml").read_text().split("mlflow_run_id: ")[1].split()[0]

    tol = 0.2  # a model trained for seconds is only roughly calibrated; the rule itself is tested above
    first = register(good, m_good, evalset, uri, run_id, tolerance=tol)
    assert decide(m_good, None, tol)[0], m_good
    assert first.alias == "champion" and first.reason == "there was no champion"
    client = MlflowClient(uri)
    second = register(bad, m_bad, evalset, uri, run_id, tolerance=tol)
    assert second.alias == "challenger"
    assert str(client.get_model_version_by_alias("heimdall-localizer", "challenger").version) == second.version
    assert "does not beat the champion" in second.reason or "coverage" in second.reason
    assert second.champion_metrics["median_error_m"] == pytest.approx(m_good["median_error_m"])
    assert str(client.get_model_version_by_alias("heimdall-localizer", "champion").version) == first.version
    # a better model takes over: the good one against the worse one as champion
    client.set_registered_model_alias("heimdall-localizer", "champion", second.version)
    third = register(good, m_good, evalset, uri, run_id, tolerance=tol)
    assert third.alias == "champion" and "beats the champion" in third.reason
    assert str(client.get_model_version_by_alias("heimdall-localizer", "champion").version) == third.version
    mv = client.get_model_version("heimdall-localizer", second.version)
    assert float(mv.tags["median_error_m"]) == pytest.approx(m_bad["median_error_m"], rel=1e-5)
    # the registered model carries its signature
    import mlflow.models

    info = mlflow.models.get_model_info(f"models:/heimdall-localizer/{first.version}")
    assert [i["name"] for i in info.signature.inputs.to_dict()] == ["features", "rx_position_m", "present"]


def test_export_command_publishes_to_the_store(trained, tiny_store, capsys):
    ws, uri = trained
    store = ws / "store"
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(ws / "run" / "best.ckpt"),
                "--out",
                str(ws / "cmd.onnx"),
                "--store",
                str(store),
                "--tracking-uri",
                uri,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "stored as version 1" in out and "registered heimdall-localizer version" in out
    from heimdall.release.model_store import ModelStore

    stored = ModelStore.open(store).fetch("heimdall-localizer")
    assert stored.data == (ws / "cmd.onnx").read_bytes()
    assert stored.manifest["metadata"]["scenario_sha256"]
    assert stored.manifest["parent_run"]
    import json

    embedded = json.loads(stored.manifest["metadata"]["metrics"])
    assert np.isfinite(embedded["median_error_m"]) and embedded["n_eval"] == 150
    # an unreachable S3 store: the command says so, keeps the local file, and nothing is half-done
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(ws / "run" / "best.ckpt"),
                "--out",
                str(ws / "kept.onnx"),
                "--store",
                "s3://models/x",
                "--s3-endpoint-url",
                "http://127.0.0.1:9",
                "--s3-access-key",
                "a",
                "--s3-secret-key",
                "b",
                "--no-register",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "Could not connect to the endpoint" in err and "kept at" in err
    assert (ws / "kept.onnx").is_file()


def test_parity_and_tampering(trained, tmp_path):
    ws, _ = trained
    from heimdall.errors import ExportError
    from heimdall.release.export import PARITY_TOLERANCE

    result = export_checkpoint(ws / "run" / "best.ckpt", tmp_path / "m.onnx")
    assert result.max_abs_diff <= PARITY_TOLERANCE
    import onnx

    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert not list(tmp_path.glob("*.data"))  # one self-contained file
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input]
    assert all(isinstance(d[0], str) and isinstance(d[1], str) for d in dims)  # dynamic batch and receivers
    # a corrupted checkpoint never produces a file
    broken = load_checkpoint(ws / "run" / "best.ckpt")
    broken["state_dict"]["net.head.2.weight"] = torch.full_like(broken["state_dict"]["net.head.2.weight"], float("nan"))
    AtomicCheckpointIO().save_checkpoint(broken, tmp_path / "nan.ckpt")
    with pytest.raises(ExportError):
        export_checkpoint(tmp_path / "nan.ckpt", tmp_path / "nan.onnx")
    assert not (tmp_path / "nan.onnx").exists() and not list(tmp_path.glob("*.partial"))
