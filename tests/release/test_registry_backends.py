"""Tracking and registry beyond the workspace's sqlite file.

A real `mlflow server` (sqlite backend, artifacts in SeaweedFS S3): training logs to it, its artifacts land where
the server says (never in a local folder), the model is registered, and serve and predict find the champion through
the server alone. A real PostgreSQL server as the tracking store (the `postgres` extra)."""

import contextlib
import csv
import hashlib
import io
import json
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient

from heimdall.cli import main
from heimdall.release import CHAMPION, MODEL_NAME
from mlflow_server import MlflowServer, mlflow_cli, s3_client_env
from pgserver import PostgresServer, unusable_reason
from s3server import ACCESS_KEY, SECRET_KEY, running_s3
from serve_bodies import features_body
from service_process import running_service
from tiny import TINY_NETWORK

pytestmark = pytest.mark.system

needs_mlflow_server = pytest.mark.skipif(
    mlflow_cli() is None, reason="no `mlflow server`: the full mlflow package (dev extra) is not installed"
)


@pytest.fixture(scope="module")
def s3():
    with running_s3("models") as server:
        yield server


@pytest.fixture(scope="module")
def proxied(s3):
    """A server that proxies artifacts (`--serve-artifacts --artifacts-destination s3://mlflow/artifacts`)."""
    server = MlflowServer(s3, proxied=True).start()
    yield server
    server.stop()


def _s3_store_env(s3):
    """The model store's S3 settings, as a team sets them (docs/DEPLOY.md)."""
    return {"AWS_ENDPOINT_URL": s3.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}


@pytest.fixture(scope="module")
def trained(tiny_store, held_out_store, proxied, s3, tmp_path_factory):
    """A tiny training run against the proxied server, published to S3 and registered (judged on held-out
    transmissions: the champion rule decides on no fewer than 200)."""
    ws = tmp_path_factory.mktemp("server-ws")
    with pytest.MonkeyPatch.context() as mp:
        _client_env(mp, {**_s3_store_env(s3), "HEIMDALL_WORKSPACE": str(ws / "workspace")})
        args = ["train", "--data-dir", str(tiny_store), "--checkpoint-dir", str(ws / "run")]
        args += ["--tracking-uri", proxied.uri, "--store", "s3://models/heimdall"]
        args += ["--eval-data", str(held_out_store)]
        # the network alone: what is tested is where runs, artifacts and versions go and how they are resolved; a
        # map's calibration on so small a store is too near the champion rule's tolerance to decide the alias
        args += [
            "--epochs",
            "8",
            "--batch-size",
            "64",
            *TINY_NETWORK,
            "--localizer",
            "network",
            "--log-level",
            "warning",
        ]
        with contextlib.redirect_stdout(io.StringIO()) as stdout:
            assert main([*args, "--json"]) == 0
    return ws, json.loads(stdout.getvalue())  # stdout holds the JSON summary alone, a server's run links or not


def _client_env(mp, variables):
    """Set `variables` until the end of `mp`, and restore the tracking URIs MLflow sets in-process."""
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        mp.setenv(variable, "")
        mp.delenv(variable)
    for key, value in {**variables, "MLFLOW_DISABLE_TELEMETRY": "true"}.items():
        mp.setenv(key, value)


def _objects(s3, bucket):
    listed = s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    return [o["Key"] for o in listed]


@needs_mlflow_server
def test_training_logs_to_the_server_and_serve_and_predict_resolve_its_champion(
    trained, proxied, s3, tiny_store, store_rows, tmp_path
):
    trained, summary = trained
    client = MlflowClient(proxied.uri)
    experiment = client.get_experiment_by_name("heimdall")
    assert experiment.artifact_location.startswith("mlflow-artifacts:/"), experiment.artifact_location
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.artifact_uri.startswith(experiment.artifact_location)
    assert run.data.metrics["best_val_median_error_m"] > 0
    # the artifacts are in the server's bucket, none in the workspace
    keys = _objects(s3, proxied.bucket)
    assert any(k.startswith("artifacts/") and k.endswith("/model.onnx") for k in keys), keys
    assert any(k.endswith("/config.yaml") for k in keys), keys
    assert not (trained / "workspace" / "mlartifacts").exists()
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    assert summary["model"]["registry"] == {
        "name": MODEL_NAME,
        "version": champion.version,
        "alias": CHAMPION,
        "reason": "there was no champion",
    }
    assert summary["model"]["store"].startswith("s3://models/heimdall") and summary["model"]["store_version"] == 1
    shipped = summary["model"]["onnx"]
    model_sha = hashlib.sha256(Path(shipped).read_bytes()).hexdigest()

    # serve and predict with a workspace that has no tracking store: the server is the only registry
    empty = {"HEIMDALL_WORKSPACE": str(tmp_path / "elsewhere"), "MLFLOW_DISABLE_TELEMETRY": "true"}
    with running_service(None, "--tracking-uri", proxied.uri, env=empty) as url:
        info = httpx.get(f"{url}/v1/model").json()
        assert (info["name"], info["version"], info["sha256"]) == (MODEL_NAME, champion.version, model_sha)
        answer = httpx.post(f"{url}/v1/localize", json=features_body(store_rows, 0), timeout=30)
        assert answer.status_code == 200 and {"lat", "lon"} <= answer.json().keys()

    with pytest.MonkeyPatch.context() as mp:
        _client_env(mp, empty)
        base = ["predict", str(tiny_store), "--quiet", "--format", "csv"]
        assert main([*base, "--tracking-uri", proxied.uri, "--out", str(tmp_path / "registry.csv")]) == 0
        assert main([*base, "--model-file", shipped, "--out", str(tmp_path / "f.csv")]) == 0
    via_server = list(csv.DictReader((tmp_path / "registry.csv").open()))
    assert len(via_server) == 150 and via_server == list(csv.DictReader((tmp_path / "f.csv").open()))


@needs_mlflow_server
def test_direct_s3_artifact_root(trained, s3, tiny_store, held_out_store, tmp_path):
    trained, _ = trained
    """A server with `--no-serve-artifacts --default-artifact-root s3://…`: clients write the artifacts to S3
    themselves (MLFLOW_S3_ENDPOINT_URL and the AWS keys), where the server says."""
    direct = MlflowServer(s3, bucket="mlflow-direct", proxied=False).start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            _client_env(mp, {**s3_client_env(s3), "HEIMDALL_WORKSPACE": str(tmp_path / "ws")})
            publish = ["train", "--export-only", "--checkpoint", str(trained / "run" / "best.ckpt")]
            publish += ["--tracking-uri", direct.uri, "--eval-data", str(held_out_store)]
            assert main([*publish, "--log-level", "warning"]) == 0
            experiment = MlflowClient(direct.uri).get_experiment_by_name("heimdall-export")
            assert experiment.artifact_location.startswith(f"{direct.artifact_root}/"), experiment.artifact_location
            assert any(k.endswith("/model.onnx") for k in _objects(s3, direct.bucket))
            assert not (tmp_path / "ws" / "mlartifacts").exists()
            out = tmp_path / "p.csv"
            # the alias the champion rule gave it (champion, or challenger when its calibration was off)
            alias = MlflowClient(direct.uri).get_model_version(MODEL_NAME, "1").aliases[0]
            predict = ["predict", str(tiny_store), "--quiet", "--tracking-uri", direct.uri, "--alias", alias]
            assert main([*predict, "--out", str(out)]) == 0
            assert len(list(csv.DictReader(out.open()))) == 150
    finally:
        direct.stop()


@pytest.mark.skipif(unusable_reason() is not None, reason=str(unusable_reason()))
def test_postgres_tracking_store(tiny_store, tmp_path, monkeypatch):
    """`--tracking-uri postgresql://…` (the `postgres` extra's driver): a training run and its registered model
    in PostgreSQL, artifacts in the workspace (a store opened directly has no server to say otherwise)."""
    server = PostgresServer().start()
    try:
        _client_env(monkeypatch, {"HEIMDALL_WORKSPACE": str(tmp_path / "ws")})
        args = ["train", "--data-dir", str(tiny_store), "--checkpoint-dir", str(tmp_path / "run")]
        args += ["--tracking-uri", server.uri, "--eval-data", str(tiny_store / "val.h5"), "--json"]
        args += ["--epochs", "2", *TINY_NETWORK, "--log-level", "warning"]
        assert main(args) == 0
        client = MlflowClient(server.uri)
        experiment = client.get_experiment_by_name("heimdall")
        assert experiment.artifact_location == (tmp_path / "ws" / "mlartifacts").resolve().as_uri()
        assert [str(v.version) for v in client.search_model_versions(f"name='{MODEL_NAME}'")] == ["1"]
        (alias,) = client.get_registered_model(MODEL_NAME).aliases  # champion or challenger: calibration decides
        out = tmp_path / "p.csv"
        predict = ["predict", str(tiny_store), "--quiet", "--tracking-uri", server.uri, "--alias", alias]
        assert main([*predict, "--out", str(out)]) == 0
        assert len(list(csv.DictReader(out.open()))) == 150
    finally:
        server.stop()
