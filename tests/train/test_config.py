"""Training configurations are files from outside: every bad one is a ConfigError naming the file and the key."""

import pytest

from heimdall.cli import main
from heimdall.train.config import TrainConfig, from_mapping, load_yaml


@pytest.mark.parametrize(
    "case,text,message",
    [
        (
            "alias bomb",
            "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nrun_name: *b\n",
            "aliases (*name) are not allowed",
        ),
        ("400-digit integer", "epochs: " + "9" * 400 + "\n", "an integer of 400 characters"),
        ("infinite epochs", "epochs: .inf\n", "epochs = inf is not a valid int"),
        ("infinite learning rate", "learning_rate: .inf\n", "learning_rate = inf is not a valid float"),
        ("zero heads", "n_heads: 0\n", "n_heads must be in [1, 256]"),
        ("mapping as a path", "data_dir: {a: 1}\n", "data_dir = {'a': 1} is not a valid"),
        ("list of options", "- epochs\n", "expected a mapping of option: value"),
        ("deep nesting", "epochs: " + "[" * 100 + "]" * 100 + "\n", "nested deeper than 32 levels"),
    ],
)
def test_bad_config_files_are_clear_errors(tmp_path, capsys, case, text, message):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    assert main(["train", "--config", str(path), "--data-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "cfg.yaml" in err and message in err and "Traceback" not in err


def test_a_huge_config_file_is_refused_unread(tmp_path, capsys):
    path = tmp_path / "big.yaml"
    with path.open("wb") as f:
        f.truncate(1024**3)  # sparse
    assert main(["train", "--config", str(path)]) == 2
    assert "big.yaml: 1073741824 bytes; at most 65536 characters are read" in capsys.readouterr().err


def test_saved_configs_round_trip_through_the_plain_loader(tmp_path):
    cfg = TrainConfig(data_dir=str(tmp_path / "data"), epochs=7, learning_rate=1e-3, run_name="r")
    cfg.save(tmp_path / "config.yaml")
    assert from_mapping(load_yaml(tmp_path / "config.yaml"), "saved") == cfg


def test_a_broken_run_config_stops_evaluate_clearly(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data_dir: &d [1, 2]\nrun_name: *d\n")
    assert main(["evaluate", "--model", str(run / "best.ckpt"), "--no-mlflow"]) == 2
    err = capsys.readouterr().err
    assert "run/config.yaml: not valid YAML" in err and "aliases" in err
