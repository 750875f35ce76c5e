"""The estimator table drives the evaluation, the console table, the plots and the report: every estimator scored is
shown with its colour, and one not scored is named with the reason."""

import json

import numpy as np
import pytest
from rich.console import Console

from heimdall.baselines import Grid, fit_log_distance, log_distance_model, rss_ml
from heimdall.commands.evaluate import print_table
from heimdall.evaluation.estimators import ESTIMATORS, NEEDS
from heimdall.evaluation.evaluate import evaluate, map_splits
from heimdall.evaluation.report import write_report
from heimdall.evaluation.test_set import load_test_set
from heimdall.radiomap.fit import MapOptions

GRID_SPACING_M = 8_000.0
MAP = MapOptions(spacing_m=4_000.0)


def _classical_model(calibration):
    """A real localizer standing in the model's place: log-distance ML fitted on the training split, with its
    curvature covariance (the table's wiring is under test, not a network)."""
    fit = fit_log_distance(calibration.power_dbm, calibration.heard, calibration.target_m, calibration.rx_position_m)

    def predict(test):
        grid = Grid(test.scenario.area_bounds_m(), GRID_SPACING_M)
        model = log_distance_model(test.rx_position_m, fit.exponent, fit.offsets_db)
        return rss_ml(test.power_dbm, test.heard, model, grid, fit.sigma_db)

    return predict


def _console_text(metrics):
    console = Console(record=True, width=240)
    print_table(console, metrics)
    return console.export_text()


@pytest.fixture(scope="module")
def with_model(tiny_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-model")
    test = load_test_set(tiny_store, 60)
    calibration, validation = map_splits(tiny_store)
    metrics = evaluate(
        _classical_model(calibration),
        test,
        calibration,
        out,
        GRID_SPACING_M,
        model="log-distance ML as the model",
        validation=validation.head(40),
        map_options=MAP,
    )
    return out, metrics


def test_the_table_is_complete():
    colours = [e.colour for e in ESTIMATORS.values()]
    assert len(set(colours)) == len(colours)  # one colour each, none shared
    for name, e in ESTIMATORS.items():
        assert e.name == name and e.label and e.doc and set(e.needs) <= set(NEEDS)


def test_every_scored_estimator_is_shown_and_coloured(with_model):
    out, metrics = with_model
    assert metrics == json.loads((out / "metrics.json").read_text())
    scored = set(metrics["estimators"])
    assert scored == set(ESTIMATORS) - {"model_network"}  # a model without a radio map of its own
    assert metrics["provenance"]["not_evaluated"] == {"model_network": "the model carries no radio map"}
    text = _console_text(metrics)
    rows = {line.split()[1] for line in text.splitlines() if line.startswith("│ ")}
    assert scored <= rows
    assert "not evaluated: model_network (the model carries no radio map)" in text
    assert all(ESTIMATORS[name].colour for name in scored)
    page = write_report(out, metrics).read_text()
    assert all(f"<td>{name}</td>" in page for name in scored)
    assert "<b>model_network</b>: not evaluated (the model carries no radio map)" in page
    assert f"({ESTIMATORS['classical_ml'].label})" in page
    for plot in ("error_cdf.png", "calibration.png", "map.png", "error_map.png"):
        assert (out / plot).stat().st_size > 10_000


def test_an_absent_model_and_map_are_stated(tiny_store, tmp_path):
    test = load_test_set(tiny_store, 40)
    calibration, _ = map_splits(tiny_store)
    metrics = evaluate(None, test, calibration, tmp_path, GRID_SPACING_M, map_options=None)
    assert set(metrics["estimators"]) == {"weighted_centroid", "classical_ml", "crlb"}
    missing = metrics["provenance"]["not_evaluated"]
    assert missing == {
        "model": "no model given",
        "model_network": "no model given",
        "model_power_only": "no model given",
        "radio_map": NEEDS["radio map"].missing,
        "hybrid": "no model given",
        "oracle": NEEDS["map grid"].missing,
    }
    text = _console_text(metrics)
    for name, reason in missing.items():
        assert f"not evaluated: {name} ({reason})" in text
    assert np.isfinite(metrics["estimators"]["classical_ml"]["median_error_m"])
