"""Learning is real: a short training on the default scenario beats the weighted centroid clearly."""

import json

import pytest

from heimdall.cli import main
from heimdall.datasets.generate import generate_dataset
from heimdall.datasets.spec import DatasetSpec


@pytest.mark.system
def test_default_scenario_model_beats_centroid_and_is_calibrated(nw_italy, tmp_path, monkeypatch):
    monkeypatch.setenv("HEIMDALL_WORKSPACE", str(tmp_path / "ws"))
    data = tmp_path / "data"
    generate_dataset(nw_italy, data, DatasetSpec(n_transmissions=30_000, seed=3, iq_per_split=0), workers=2)
    assert (
        main(
            [
                "train",
                "--data-dir",
                str(data),
                "--checkpoint-dir",
                str(tmp_path / "run"),
                "--max-time-minutes",
                "5",
                "--tracking-uri",
                f"sqlite:///{tmp_path / 'mlflow.db'}",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "run" / "best.ckpt"),
                "--data-dir",
                str(data),
                "--out",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())["estimators"]
    assert m["model"]["median_error_m"] < 0.5 * m["weighted_centroid"]["median_error_m"]
    assert m["model"]["median_error_m"] < 0.6 * m["classical_ml"]["median_error_m"]
    assert abs(m["model"]["coverage_1sigma"] - 0.393) < 0.05 and abs(m["model"]["coverage_2sigma"] - 0.865) < 0.05
