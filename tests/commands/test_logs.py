"""What a training and its export show on the console and keep in train.log: Heimdall's messages and the warnings,
not the libraries' INFO chatter (the ONNX optimizer, Lightning, MLflow's database set-up); `--log-level debug` shows
that chatter too. Real runs in process, their real output."""

import pytest

from heimdall.cli import main
from heimdall.commands.logs import configure_logging
from tiny import tiny_train_args

CHATTER = ("Replaced initializer", "Skipping constant folding", "GPU available", "Creating initial MLflow database")


@pytest.mark.system  # two training runs: the second tier
def test_the_default_level_keeps_library_chatter_out_and_debug_shows_it(tiny_store, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HEIMDALL_WORKSPACE", str(tmp_path / "ws"))
    run_dir, uri = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    flags = ["--tracking-uri", uri, "--store", str(tmp_path / "models")]
    argv = tiny_train_args(tiny_store, run_dir, uri, "--store", str(tmp_path / "models"), "--val-split", "0.2")
    assert main([*argv, "--localizer", "network"]) == 0
    err, log = capsys.readouterr().err, (run_dir / "train.log").read_text()
    assert (run_dir / "model.onnx").is_file()
    for text in CHATTER:
        assert text not in err and text not in log, text
    # Heimdall's own warning on both; the libraries' warnings (Lightning's about its settings) in train.log only
    assert "--val-split 0.2 is not used" in err and "--val-split 0.2 is not used" in log
    library_warnings = [line.split(" py.warnings: ", 1)[1] for line in log.splitlines() if " py.warnings: " in line]
    assert library_warnings, log
    for warning in library_warnings:
        assert warning not in err

    try:  # the same export at debug: the ONNX optimizer's messages are shown
        assert (
            main(["train", "--export-only", "--checkpoint", str(run_dir / "best.ckpt"), *flags, "--log-level", "debug"])
            == 0
        )
        err = capsys.readouterr().err
    finally:
        configure_logging("info")
    assert "Replaced initializer" in err and "Skipping constant folding" in err
