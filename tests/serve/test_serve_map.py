"""A model that carries a radio map (`heimdall map fit`), served by a real uvicorn process: hybrid answers with
modes and HPD regions; a model without a map answers as before."""

import json

import h5py
import httpx
import numpy as np
import onnx
import pytest

from heimdall.evaluation.grid_estimators import SPREAD_FLOORS_DB
from heimdall.radiomap.log_distance import LOG_DISTANCE_WEIGHTS
from heimdall.release.map_metadata import FIT_KEY, MAX_EXPONENT
from serve_bodies import features_body, in_geometry, power_body
from service_process import running_service

N_TRANSMISSIONS = 30


@pytest.fixture(scope="module")
def map_server(map_model_file):
    with running_service(map_model_file) as url:
        yield url


@pytest.fixture(scope="module")
def test_rows(tiny_store):
    """The first N_TRANSMISSIONS test transmissions: receiver ids, features, true (lat, lon)."""
    with h5py.File(tiny_store / "test.h5") as f:
        return {
            "ids": list(f["receivers/id"].asstr()[...]),
            "features": f["features"][:N_TRANSMISSIONS],
            "truth": f["tx_lat_lon"][:N_TRANSMISSIONS],
        }


@pytest.mark.system
def test_map_model_answers_with_modes_and_regions_that_hold_the_truth(map_server, test_rows):
    body = {"transmissions": [features_body(test_rows, k) for k in range(N_TRANSMISSIONS)]}
    r = httpx.post(f"{map_server}/v1/localize/batch", json=body, timeout=120)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    covered = 0
    for a, (lat, lon) in zip(results, test_rows["truth"], strict=True):
        assert a["map"] == "used"
        assert set(a["regions"]) == {"0.5", "0.95"}
        modes = a["modes"]
        assert modes and all(set(m) == {"probability", "lat", "lon"} for m in modes)
        probabilities = [m["probability"] for m in modes]
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0 + 1e-6
        assert in_geometry(modes[0]["lon"], modes[0]["lat"], a["regions"]["0.95"])
        covered += in_geometry(lon, lat, a["regions"]["0.95"])
        # position, covariance and ellipses come from the hybrid posterior, as for a network
        assert a["geojson"]["geometry"]["type"] == "Polygon" and len(a["ellipses"]) == 3
    assert covered >= 0.8 * N_TRANSMISSIONS, covered


@pytest.mark.system
def test_the_model_endpoint_describes_the_map(map_server, map_model_file):
    info = httpx.get(f"{map_server}/v1/model", timeout=30).json()["radio_map"]
    fit = json.loads({p.key: p.value for p in onnx.load(str(map_model_file)).metadata_props}[FIT_KEY])
    assert info["spacing_m"] == 2000.0 and 0 < info["alpha"] <= MAX_EXPONENT and info["n_labels"] > 0
    assert set(info["region_masses"]) == {"0.5", "0.95"} and 0 < info["region_masses"]["0.5"] <= 0.95
    assert info["spread_floor_db"] in SPREAD_FLOORS_DB and info["spread_floor_db"] == fit["spread_floor_db"]
    assert info["log_distance_weight"] in LOG_DISTANCE_WEIGHTS
    assert info["log_distance_weight"] == fit["log_distance_weight"]


@pytest.mark.system
def test_power_only_request_to_a_map_model_is_answered_by_the_map_alone(map_server, test_rows):
    r = httpx.post(f"{map_server}/v1/localize", json=power_body(test_rows, 0), timeout=30)
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["map"].startswith("used alone: power readings only")
    assert a["modes"] and set(a["regions"]) == {"0.5", "0.95"} and np.isfinite(a["lat"])


@pytest.mark.system
def test_a_model_without_a_map_answers_without_map_fields(model_file, test_rows):
    with running_service(model_file) as url:
        for body in (features_body(test_rows, 0), power_body(test_rows, 0)):
            a = httpx.post(f"{url}/v1/localize", json=body, timeout=30).json()
            assert "lat" in a and not {"map", "modes", "regions"} & set(a)
        assert "radio_map" not in httpx.get(f"{url}/v1/model", timeout=30).json()


def test_predict_writes_the_same_modes_and_regions(map_model_file, tiny_store, tmp_path):
    import csv
    import json

    from heimdall.cli import main

    args = ["predict", str(tiny_store), "--model-file", str(map_model_file), "--quiet"]
    assert main([*args, "--out", str(tmp_path / "p.json")]) == 0
    answers = json.loads((tmp_path / "p.json").read_text())
    assert len(answers) == 150 and all(a["map"] == "used" for a in answers)
    assert all(a["modes"] and set(a["regions"]) == {"0.5", "0.95"} for a in answers)
    assert main([*args, "--out", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [int(r["n_modes"]) for r in rows] == [len(a["modes"]) for a in answers]
    assert all(float(r["hpd95_area_km2"]) > 0 for r in rows)
    assert [r["lat"] for r in rows] == [f"{a['lat']:.6f}" for a in answers]
