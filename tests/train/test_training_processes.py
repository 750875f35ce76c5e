"""Training in separate processes: killed mid-epoch, and DDP with two CPU processes (and its resumption)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from heimdall.cli import main
from heimdall.datasets.generate import generate_dataset
from heimdall.datasets.spec import DatasetSpec
from heimdall.train.checkpoint import load_checkpoint
from tiny import tiny_train_args

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def store(nw_italy, tmp_path_factory):
    out = tmp_path_factory.mktemp("proc")
    generate_dataset(nw_italy, out, DatasetSpec(n_transmissions=4000, seed=8, iq_per_split=0))
    return out


def _cmd(store, run_dir, uri, *extra, epochs):
    """The tiny training as a `python -m heimdall` command line."""
    return [
        sys.executable,
        "-m",
        "heimdall",
        *tiny_train_args(store, run_dir, uri, "--batch-size", "32", "--no-export", *extra, epochs=epochs),
    ]


def _env(tmp_path):
    return {**os.environ, "HEIMDALL_WORKSPACE": str(tmp_path / "ws"), "PYTHONUNBUFFERED": "1"}


def test_sigkill_mid_epoch_then_resume(store, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.Popen(
        _cmd(store, run_dir, uri, "--threads", "1", epochs=200),
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 400
        while not (run_dir / "last.ckpt").exists():
            assert proc.poll() is None, "training ended before writing a checkpoint"
            assert time.time() < deadline, "no checkpoint within the time limit"
            time.sleep(0.5)
        first = os.stat(run_dir / "last.ckpt").st_mtime_ns
        while os.stat(run_dir / "last.ckpt").st_mtime_ns == first:  # wait for the next save, then kill
            assert time.time() < deadline
            time.sleep(0.05)
        time.sleep(0.7)  # inside the following epoch
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # every checkpoint file left behind is complete and readable
    for ckpt in run_dir.glob("*.ckpt"):
        load_checkpoint(ckpt)
    epoch = torch.load(run_dir / "last.ckpt", weights_only=True)["epoch"]
    monkeypatch.setenv("HEIMDALL_WORKSPACE", str(tmp_path / "ws"))
    assert (
        main(
            [
                "train",
                "--resume-training",
                "--checkpoint-dir",
                str(run_dir),
                "--epochs",
                str(epoch + 2),
                "--threads",
                "2",
            ]
        )
        == 0
    )
    assert torch.load(run_dir / "last.ckpt", weights_only=True)["epoch"] == epoch + 1
    assert not list(run_dir.glob(".*.tmp"))


def test_ddp_two_cpu_processes_then_resume(store, tmp_path):
    run_dir = tmp_path / "ddp"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # --log-level debug: Lightning's line naming each rank that joined is library INFO, off the console otherwise
    ddp = ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--threads", "1", "--log-level", "debug"]
    done = subprocess.run(
        _cmd(store, run_dir, uri, *ddp, epochs=1),
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run_dir / "last.ckpt").is_file()
    assert "MEMBER: 2/2" in done.stderr + done.stdout  # the second rank joined
    ckpt = load_checkpoint(run_dir / "last.ckpt")
    assert ckpt["epoch"] == 0
    run_id = ckpt["heimdall"]["config"]["mlflow_run_id"]
    assert f"mlflow_run_id: {run_id}" in (run_dir / "config.yaml").read_text()  # rank 1 wrote no config of its own

    # stopped by its epoch count: resumed from last.ckpt with DDP again, it goes on counting epochs
    resume = [
        sys.executable,
        "-m",
        "heimdall",
        "train",
        "--checkpoint",
        str(run_dir / "last.ckpt"),
        "--resume-training",
    ]
    done = subprocess.run(
        [*resume, "--epochs", "3", *ddp], env=_env(tmp_path), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MEMBER: 2/2" in done.stderr + done.stdout
    ckpt = load_checkpoint(run_dir / "last.ckpt")
    assert ckpt["epoch"] == 2 and ckpt["heimdall"]["config"]["mlflow_run_id"] == run_id
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    history = client.get_metric_history(run_id, "val_loss")  # one value per epoch, all in the one run
    assert len({m.step for m in history}) == len(history) == 3
    assert [r.info.run_id for r in client.search_runs([client.get_run(run_id).info.experiment_id])] == [run_id]
    assert not list(run_dir.glob(".*.tmp"))
