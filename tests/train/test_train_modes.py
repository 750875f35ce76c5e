"""The `train` command as the design's users meet it: its modes (export-only, resume), refusals, failures that end
the MLflow run, the JSON summary and the log, in-process through `main([...])` on the tiny store."""

import json
import shutil

import pytest
import torch
from mlflow.tracking import MlflowClient

from heimdall.cli import main
from heimdall.release.registry import EXPORT_EXPERIMENT, NO_EVALUATION
from heimdall.train.checkpoint import load_checkpoint
from tiny import TINY_NETWORK

SMALL = ["--batch-size", "128", *TINY_NETWORK]


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.setenv("HEIMDALL_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def test_checkpoint_without_a_mode_is_refused(ws, capsys):
    assert main(["train", "--checkpoint", str(ws / "best.ckpt")]) == 2
    err = capsys.readouterr().err
    assert "give --export-only (publish it) or --resume-training" in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--accelerator", "gpu"], "--accelerator gpu: no CUDA GPU is usable here"),
        (["--devices", "2"], "--devices 2 without a CUDA GPU: give --accelerator cpu"),
    ],
)
def test_gpu_flags_without_cuda_are_refused(tiny_store, ws, capsys, flags, message):
    run_dir = ws / "run"
    assert main(["train", "--data-dir", str(tiny_store), "--checkpoint-dir", str(run_dir), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not run_dir.exists()


def test_failure_after_the_run_started_ends_it_failed(tiny_store, ws, capsys):
    run_dir, uri = ws / "run", f"sqlite:///{ws / 'mlflow.db'}"
    argv = ["train", "--data-dir", str(tiny_store), "--checkpoint-dir", str(run_dir), "--tracking-uri", uri]
    assert main([*argv, *SMALL, "--strategy", "no-such-strategy"]) == 1  # Lightning refuses it after the run began
    err = capsys.readouterr().err
    assert "unexpected error" in err and "Traceback" not in err
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("heimdall").experiment_id])
    assert run.info.status == "FAILED"
    assert sorted(p.name for p in run_dir.iterdir()) == ["train.log"]  # no config.yaml of a run that never ran
    assert "Traceback" in (run_dir / "train.log").read_text()


def test_export_only_publishes_and_registers_without_the_training_data(tiny_run, tiny_store, ws, capsys):
    run_ws, _ = tiny_run
    # the checkpoint as another machine sees it: the training store it names is not there
    ckpt = load_checkpoint(run_ws / "run" / "best.ckpt")
    ckpt["heimdall"]["config"]["data_dir"] = str(ws / "elsewhere" / "store")
    moved = ws / "moved" / "best.ckpt"
    moved.parent.mkdir()
    torch.save(ckpt, moved)
    uri, store = f"sqlite:///{ws / 'team.db'}", ws / "models"
    argv = ["train", "--export-only", "--checkpoint", str(moved), "--tracking-uri", uri, "--store", str(store)]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["model"]
    assert out["onnx"] == str(moved.with_name("model.onnx")) and moved.with_name("model.onnx").is_file()
    assert out["store_version"] == 1 and (store / "heimdall-localizer").is_dir()
    assert out["registry"]["version"] == "1" and out["registry"]["alias"] == "challenger"
    assert out["registry"]["reason"] == NO_EVALUATION and out["eval_metrics"] is None
    client = MlflowClient(uri)
    assert str(client.get_model_version_by_alias("heimdall-localizer", "challenger").version) == "1"
    (run,) = client.search_runs([client.get_experiment_by_name(EXPORT_EXPERIMENT).experiment_id])
    assert run.info.status == "FINISHED"

    # with an evaluation set the champion rule judges it
    assert main([*argv, "--eval-data", str(tiny_store), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["model"]
    assert out["store_version"] == 2 and out["registry"]["version"] == "2"
    assert out["eval_metrics"]["n_eval"] == 150 and out["registry"]["reason"] != NO_EVALUATION


def test_resume_as_the_design_writes_it(tiny_store, ws, capsys):
    run_dir, uri = ws / "run", f"sqlite:///{ws / 'mlflow.db'}"
    argv = ["train", "--data-dir", str(tiny_store), "--checkpoint-dir", str(run_dir), "--tracking-uri", uri]
    assert main([*argv, *SMALL, "--epochs", "1", "--no-export", "--val-split", "0.2", "--log-level", "info"]) == 0
    err = capsys.readouterr().err
    assert "--val-split 0.2 is not used" in err and "has a validation split (val.h5)" in err
    assert "--val-split 0.2 is not used" in (run_dir / "train.log").read_text()
    client = MlflowClient(uri)
    run_id = load_checkpoint(run_dir / "last.ckpt")["heimdall"]["config"]["mlflow_run_id"]
    assert any(k.startswith("lr-") for k in client.get_run(run_id).data.metrics)  # LearningRateMonitor

    last = str(run_dir / "last.ckpt")
    for flags, named in ((["--batch-size", "64"], "--batch-size 64 (run: 128)"), (["--d-model", "64"], "--d-model")):
        assert main(["train", "--checkpoint", last, "--resume-training", *flags]) == 2
        err = capsys.readouterr().err
        assert named in err and "cannot change when resuming" in err
    assert main(["train", "--checkpoint", str(run_dir / "best.ckpt"), "--resume-training"]) == 2
    assert "resumes from its last.ckpt" in capsys.readouterr().err

    # a run its time budget stopped: the checkpoint says the whole budget is spent
    ckpt = load_checkpoint(run_dir / "last.ckpt")
    timers = [k for k in ckpt["callbacks"] if "Timer" in k]
    assert timers
    for key in timers:
        ckpt["callbacks"][key]["time_elapsed"]["train"] = 1e6
    torch.save(ckpt, run_dir / "last.ckpt")
    shutil.copy(run_dir / "last.ckpt", ws / "spent.ckpt")
    assert main(["train", "--checkpoint", last, "--resume-training", "--epochs", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert torch.load(run_dir / "last.ckpt", weights_only=True)["epoch"] == 1  # it trained its second epoch
    assert summary["mlflow_run_id"] == run_id and summary["epochs_completed"] == 2
    assert summary["last_checkpoint"] == last and summary["model"] is None
    assert client.get_run(run_id).info.status == "FINISHED"


@pytest.mark.system
def test_minio_environment_names_reach_the_s3_model_store(tiny_run, ws, monkeypatch, capsys):
    from heimdall.release.model_store import ModelStore
    from s3server import ACCESS_KEY, SECRET_KEY, SeaweedS3

    server = SeaweedS3().start()
    try:
        server.client().create_bucket(Bucket="team-models")
        for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SHARED_CREDENTIALS_FILE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_CONFIG_FILE", str(ws / "none"))
        monkeypatch.setenv("MINIO_ENDPOINT", server.endpoint.removeprefix("http://"))  # MinIO style: host:port
        monkeypatch.setenv("MINIO_ACCESS_KEY", ACCESS_KEY)
        monkeypatch.setenv("MINIO_SECRET_KEY", SECRET_KEY)
        monkeypatch.setenv("MINIO_BUCKET", "team-models")
        checkpoint = str(tiny_run[0] / "run" / "best.ckpt")
        argv = ["train", "--export-only", "--checkpoint", checkpoint, "--checkpoint-dir", str(ws), "--json"]
        assert main([*argv, "--tracking-uri", f"sqlite:///{ws / 'team.db'}"]) == 0
        model = json.loads(capsys.readouterr().out)["model"]
        assert model["store"] == "s3://team-models" and model["store_version"] == 1
        store = ModelStore.open(
            "s3://team-models", endpoint_url=server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY
        )
        assert store.fetch("heimdall-localizer").manifest["sha256"] == model["sha256"]
    finally:
        server.stop()


def test_init_from_starts_a_new_run_from_a_checkpoints_weights(tiny_run, tiny_store, ws, capsys):
    source = tiny_run[0] / "run" / "best.ckpt"
    run_dir, uri = ws / "tuned", f"sqlite:///{ws / 'mlflow.db'}"
    argv = ["train", "--data-dir", str(tiny_store), "--checkpoint-dir", str(run_dir), "--tracking-uri", uri]
    assert main([*argv, "--init-from", str(source), "--epochs", "1", "--no-export"]) == 2
    err = capsys.readouterr().err
    assert "its network does not fit this run" in err and "d_model: checkpoint 32, this run 96" in err
    assert not run_dir.exists()

    # a learning rate too small to move the weights: what the run saves is what it started from
    tune = ["--init-from", str(source), "--learning-rate", "1e-12", "--epochs", "1", "--no-export", "--json"]
    assert main([*argv, *SMALL, *tune]) == 0
    summary = json.loads(capsys.readouterr().out)
    before, after = load_checkpoint(source)["state_dict"], load_checkpoint(run_dir / "last.ckpt")["state_dict"]
    weights = [k for k in before if k.endswith("weight")]
    assert weights and all(torch.allclose(before[k], after[k], atol=1e-6) for k in weights)
    saved = load_checkpoint(run_dir / "last.ckpt")["heimdall"]["config"]
    assert saved["init_from"] == str(source)
    assert summary["mlflow_run_id"] != load_checkpoint(source)["heimdall"]["mlflow_run_id"]  # a new run
