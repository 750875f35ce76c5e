"""Checkpoints are untrusted input: a malicious pickle runs nothing, through any entry point."""

import shutil

import pytest
import torch

from heimdall.cli import main
from heimdall.errors import CheckpointError
from heimdall.train.checkpoint import AtomicCheckpointIO, load_checkpoint
from heimdall.train.task import LocalizationTask, load_task


class _RunsCode:
    """Unpickling this object calls exec: what a crafted checkpoint does to whoever loads it unrestricted."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


@pytest.fixture(scope="module")
def malicious(tiny_run, tmp_path_factory):
    """A real Heimdall checkpoint with one extra entry whose unpickling writes a marker file."""
    ws, _ = tiny_run
    folder = tmp_path_factory.mktemp("malicious")
    ckpt = load_checkpoint(ws / "run" / "best.ckpt")
    ckpt["payload"] = _RunsCode(folder / "marker")
    torch.save(ckpt, folder / "evil.ckpt")
    return folder / "evil.ckpt", folder / "marker"


def _refused(capsys, evil, marker):
    err = capsys.readouterr().err
    assert f"{evil}: refused: it holds the Python object exec" in err and "Traceback" not in err
    assert not marker.exists(), "the checkpoint ran code"


def test_export_refuses_a_malicious_checkpoint(malicious, tmp_path, capsys):
    evil, marker = malicious
    assert (
        main(["export", "--checkpoint", str(evil), "--out", str(tmp_path / "m.onnx"), "--no-store", "--no-register"])
        == 2
    )
    _refused(capsys, evil, marker)
    assert not (tmp_path / "m.onnx").exists()


def test_export_only_refuses_a_malicious_checkpoint(malicious, tmp_path, capsys):
    evil, marker = malicious
    assert main(["train", "--export-only", "--checkpoint", str(evil), "--checkpoint-dir", str(tmp_path)]) == 2
    _refused(capsys, evil, marker)


def test_evaluate_refuses_a_malicious_checkpoint(malicious, tiny_store, tmp_path, capsys):
    evil, marker = malicious
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(evil),
                "--data-dir",
                str(tiny_store),
                "--out",
                str(tmp_path / "e"),
                "--max-samples",
                "20",
                "--no-mlflow",
            ]
        )
        == 2
    )
    _refused(capsys, evil, marker)


def test_resume_refuses_a_malicious_last_checkpoint(malicious, tiny_run, tmp_path, capsys):
    ws, _ = tiny_run
    evil, marker = malicious
    run = tmp_path / "run"
    shutil.copytree(ws / "run", run)
    shutil.copy(evil, run / "last.ckpt")
    assert main(["train", "--resume-training", "--checkpoint-dir", str(run), "--epochs", "5"]) == 2
    _refused(capsys, run / "last.ckpt", marker)


def test_lightning_loads_go_through_the_same_check(malicious):
    evil, marker = malicious
    for load in (
        lambda: LocalizationTask.load_from_checkpoint(evil, map_location="cpu"),
        lambda: AtomicCheckpointIO().load_checkpoint(evil, weights_only=False),
    ):
        with pytest.raises(CheckpointError, match="refused"):
            load()
    assert not marker.exists()


def test_hyper_parameters_that_do_not_fit_the_weights_are_refused_unallocated(tiny_run, tmp_path, capsys):
    ws, _ = tiny_run
    ckpt = load_checkpoint(ws / "run" / "best.ckpt")
    ckpt["hyper_parameters"]["net"]["d_model"] = 8192  # 200 M parameters if anyone allocated them
    AtomicCheckpointIO().save_checkpoint(ckpt, tmp_path / "huge.ckpt")
    assert main(["train", "--export-only", "--checkpoint", str(tmp_path / "huge.ckpt")]) == 2
    assert "huge.ckpt: state_dict[" in capsys.readouterr().err
    ckpt["hyper_parameters"]["net"] = {"n_features": 35, "n_heads": 0}
    AtomicCheckpointIO().save_checkpoint(ckpt, tmp_path / "heads.ckpt")
    with pytest.raises(CheckpointError, match="hyper_parameters do not describe a network"):
        load_task(tmp_path / "heads.ckpt")


def test_the_project_checkpoints_load_weights_only(tiny_run):
    ws, _ = tiny_run
    for name in ("best.ckpt", "last.ckpt"):
        assert torch.load(ws / "run" / name, weights_only=True)["heimdall"]["format"] == "heimdall-checkpoint"
        task = load_task(ws / "run" / name)
        assert all(t.device.type == "cpu" for t in task.state_dict().values())
