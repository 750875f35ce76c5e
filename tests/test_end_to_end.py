"""The pipeline end to end in process, at a tiny size: `heimdall simulate` a few hundred transmissions, `train` a
tiny network for one epoch (export → model store → registry), then `predict` the test split with the stored model.
The localizer choice, which fits a radio map, has its own tests (release/test_choice.py); the system tier runs the
README's path with a real service (test_readme_path.py)."""

import csv
import json

import h5py
import numpy as np

from heimdall.cli import main
from tiny import tiny_train_args


def test_simulate_train_export_predict(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HEIMDALL_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store, models = tmp_path / "store", tmp_path / "models"
    assert main(["simulate", "-n", "400", "--out", str(store), "--workers", "1", "--seed", "5", "--quiet"]) == 0
    capsys.readouterr()

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = tiny_train_args(store, tmp_path / "run", uri, "--store", str(models), "--localizer", "network", "--json")
    assert main(argv) == 0
    shipped = json.loads(capsys.readouterr().out)["model"]
    assert shipped["store_version"] == 1 and shipped["registry"]["version"] == "1"

    answers = tmp_path / "answers.csv"
    assert main(["predict", str(store), "--store", str(models), "--out", str(answers), "--quiet"]) == 0
    assert "40 transmissions localized with heimdall-localizer 1" in capsys.readouterr().out
    rows = list(csv.DictReader(answers.open()))
    with h5py.File(store / "test.h5") as f:
        assert len(rows) == f["features"].shape[0] == 40
    position_m = np.array([[float(r["east_m"]), float(r["north_m"])] for r in rows])
    assert np.isfinite(position_m).all() and np.abs(position_m).max() < 300_000  # inside the scenario's region
