"""Power readings sent to a model that carries a radio map (in process): the map answers them with its posterior,
modes and regions; bad readings are 422 naming the field."""

import h5py
import numpy as np
import pytest

from serve_bodies import in_geometry

N_TRANSMISSIONS = 12


@pytest.fixture(scope="module")
def client(map_model_file):
    from fastapi.testclient import TestClient

    from heimdall.serve.app import create_app
    from heimdall.serve.runtime import ModelSource

    with TestClient(create_app(ModelSource(file=str(map_model_file)))) as c:
        yield c


@pytest.fixture(scope="module")
def readings(tiny_store):
    """The first test transmissions as power readings: power and noise (dBm) per receiver, the weak ones as
    "not heard" at their noise floor; and the true (lat, lon)."""
    with h5py.File(tiny_store / "test.h5") as f:
        ids = list(f["receivers/id"].asstr()[...])
        features = f["features"][:N_TRANSMISSIONS].astype(np.float64)
        truth = f["tx_lat_lon"][:N_TRANSMISSIONS]
    power, snr = features[..., -3], features[..., -1]
    bodies = []
    for k in range(N_TRANSMISSIONS):
        items = []
        for i, rid in enumerate(ids):
            noise = power[k, i] - snr[k, i]
            if snr[k, i] < 0.0:
                items.append({"id": rid, "power_dbm": noise, "status": "not_heard"})
            else:
                items.append({"id": rid, "power_dbm": power[k, i], "noise_dbm": noise})
        bodies.append({"features": items})
    return bodies, truth


def test_power_readings_are_answered_by_the_map_alone_with_regions(client, readings):
    """The model's network reads spectral features: power readings (some not heard) are answered by the map alone,
    with its modes and regions, and say so."""
    bodies, truth = readings
    r = client.post("/v1/localize/batch", json={"transmissions": bodies})
    assert r.status_code == 200, r.text
    covered = 0
    for a, (lat, lon) in zip(r.json()["results"], truth, strict=True):
        assert a["map"].startswith("used alone: power readings only")
        assert set(a["regions"]) == {"0.5", "0.95"} and a["modes"]
        assert in_geometry(a["modes"][0]["lon"], a["modes"][0]["lat"], a["regions"]["0.95"])
        covered += in_geometry(lon, lat, a["regions"]["0.95"])
    assert covered >= 0.75 * N_TRANSMISSIONS, covered


def test_a_not_heard_reading_changes_the_answer(client, readings):
    """A receiver that did not hear is evidence: leaving it out of the request moves the answer."""
    bodies, _ = readings
    body = next(b for b in bodies if any(it.get("status") == "not_heard" for it in b["features"]))
    without = {"features": [it for it in body["features"] if it.get("status") != "not_heard"]}
    a, b = (client.post("/v1/localize", json=x).json() for x in (body, without))
    assert a["map"].startswith("used alone") and b["map"].startswith("used alone")
    assert (a["lat"], a["lon"]) != (b["lat"], b["lon"])


BAD = [
    ("unknown status", lambda it: it.update(status="maybe"), "features.0.status"),
    ("noise out of range", lambda it: it.update(noise_dbm=500.0), "features.0.noise_dbm"),
    ("noise with features", lambda it: it.update(power_dbm=None, features=[0.0], noise_dbm=-100.0), "features.0"),
    ("no power", lambda it: it.update(power_dbm=None), "features.0"),
]


@pytest.mark.parametrize("case,edit,field", BAD, ids=[b[0] for b in BAD])
def test_bad_readings_are_422_naming_the_field(client, readings, case, edit, field):
    bodies, _ = readings
    body = {"features": [dict(it) for it in bodies[0]["features"]]}
    edit(body["features"][0])
    r = client.post("/v1/localize", json=body)
    assert r.status_code == 422, r.text
    assert any(d["field"] == field for d in r.json()["detail"]), r.json()
