"""The HTTP service against a real uvicorn process on 127.0.0.1 (and its app in-process for one case)."""

import base64
import threading
import time

import h5py
import httpx
import numpy as np
import pytest
import torch

from heimdall.export import export_checkpoint
from heimdall.train.task import LocalizationTask
from service_process import running_service

TOKEN = "test-admin-token"


@pytest.fixture(scope="module")
def model_file(tiny_run, tmp_path_factory):
    ws, _ = tiny_run
    return export_checkpoint(ws / "run" / "best.ckpt", tmp_path_factory.mktemp("srv") / "model.onnx").path


@pytest.fixture(scope="module")
def server(model_file):
    with running_service(model_file, "--max-body-mb", "1", env={"HEIMDALL_ADMIN_TOKEN": TOKEN}) as url:
        yield url


@pytest.fixture(scope="module")
def rows(tiny_store):
    with h5py.File(tiny_store / "test.h5") as f:
        ids = list(f["receivers/id"].asstr()[...])
        return {"ids": ids, "features": f["features"][:8], "iq": f["iq"][:8],
                "rx": np.stack([f["receivers/east_m"][...], f["receivers/north_m"][...]], -1).astype(np.float32)}


def _torch_answer(tiny_run, rows, k, power_only=False):
    ws, _ = tiny_run
    net = LocalizationTask.load_from_checkpoint(ws / "run" / "best.ckpt", map_location="cpu").net.eval()
    features = rows["features"][k:k + 1].copy()
    if power_only:
        features[..., :-3] = np.nan
        features[..., -2:] = np.nan
    with torch.no_grad():
        mean, cov = net.predict_m(torch.from_numpy(features), torch.from_numpy(rows["rx"][None]),
                                  torch.ones(1, len(rows["ids"])))
    return mean[0].numpy(), cov[0].numpy(), float(net.position_scale_m)


def _features_body(rows, k, drop=()):
    return {"features": [{"id": rid, "features": rows["features"][k, i].tolist()}
                         for i, rid in enumerate(rows["ids"]) if i not in drop]}


def _iq_body(rows, k):
    return {"iq": [{"id": rid, "datatype": "cf32_le", "sample_rate_hz": 48000.0, "center_frequency_hz": 145e6,
                    "samples_base64": base64.b64encode(rows["iq"][k, i].astype("<c8").tobytes()).decode()}
                   for i, rid in enumerate(rows["ids"])]}


def test_features_and_raw_iq_match_pytorch(server, rows, tiny_run):
    for k in range(3):
        mean, cov, scale = _torch_answer(tiny_run, rows, k)
        for body in (_features_body(rows, k), _iq_body(rows, k)):
            r = httpx.post(f"{server}/v1/localize", json=body, timeout=30)
            assert r.status_code == 200, r.text
            a = r.json()
            # within 1e-4 in normalised units
            assert np.abs(np.array([a["east_m"], a["north_m"]]) - mean).max() / scale <= 1e-4
            assert np.abs(np.array(a["covariance_m2"]) - cov).max() / scale**2 <= 1e-4
            assert -90 <= a["lat"] <= 90 and a["geojson"]["geometry"]["type"] == "Polygon"
            assert [e["probability"] for e in a["ellipses"]] == [0.5, 0.68, 0.95]
            assert a["ellipses"][2]["semi_major_m"] > a["ellipses"][0]["semi_major_m"] > 0
            assert a["receivers_used"] == rows["ids"] and a["model"]["version"] == "file"


def test_power_only_matches_pytorch_with_missing_features(server, rows, tiny_run):
    for k in range(2):
        mean, cov, scale = _torch_answer(tiny_run, rows, k, power_only=True)
        body = {"features": [{"id": rid, "power_dbm": float(rows["features"][k, i, -3])}
                             for i, rid in enumerate(rows["ids"])]}
        r = httpx.post(f"{server}/v1/localize", json=body, timeout=30)
        assert r.status_code == 200, r.text
        a = r.json()
        assert np.abs(np.array([a["east_m"], a["north_m"]]) - mean).max() / scale <= 1e-4
        assert np.abs(np.array(a["covariance_m2"]) - cov).max() / scale**2 <= 1e-4
        full = httpx.post(f"{server}/v1/localize", json=_features_body(rows, k), timeout=30).json()
        assert (a["east_m"], a["north_m"]) != (full["east_m"], full["north_m"])


def test_batch_and_cache(server, rows):
    body = {"transmissions": [_features_body(rows, k) for k in range(5)]}
    r = httpx.post(f"{server}/v1/localize/batch", json=body, timeout=30)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 5
    for k in range(5):
        single = httpx.post(f"{server}/v1/localize", json=_features_body(rows, k), timeout=30).json()
        assert single["cached"] is True  # answered from the LRU cache filled by the batch
        assert single["east_m"] == pytest.approx(results[k]["east_m"])
    subset = httpx.post(f"{server}/v1/localize", json=_features_body(rows, 0, drop=(5, 6)), timeout=30)
    assert subset.status_code == 200 and len(subset.json()["receivers_used"]) == 5
    metrics = httpx.get(f"{server}/metrics").text
    assert 'heimdall_cache_total{result="hit"}' in metrics and "heimdall_batch_size_bucket" in metrics
    assert 'heimdall_requests_total{endpoint="/v1/localize",status="200"}' in metrics
    info = httpx.get(f"{server}/v1/model").json()
    assert [r["id"] for r in info["receivers"]] == rows["ids"] and info["sha256"]


BAD = [
    ("unknown receiver", lambda b: b["features"][0].update(id="atlantis"), "features[0].id", "unknown receiver"),
    ("wrong length", lambda b: b["features"][1]["features"].pop(), "features[1].features", "values, the model"),
    ("too few receivers", lambda b: b.update(features=b["features"][:2]), "features", "at least 3"),
    ("both kinds", lambda b: b.update(iq=[]), "body", "exactly one"),
    ("extra key", lambda b: b.update(colour="red"), "colour", "Extra inputs"),
    ("duplicate receiver", lambda b: b["features"][1].update(id=b["features"][0]["id"]), "features", "twice"),
    ("features and power", lambda b: b["features"][2].update(power_dbm=-90.0), "features.2", "exactly one"),
    ("power out of range", lambda b: b["features"][2].update(features=None, power_dbm=500.0),
     "features.2.power_dbm", "less than or equal"),
]


@pytest.mark.parametrize("case,edit,field,message", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_are_4xx_naming_the_field(server, rows, case, edit, field, message):
    body = _features_body(rows, 0)
    edit(body)
    r = httpx.post(f"{server}/v1/localize", json=body, timeout=30)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert any(d["field"] == field and message in d["message"] for d in detail), detail


def test_bad_iq_and_limits(server, rows):
    body = _iq_body(rows, 0)
    body["iq"][2]["samples_base64"] = "not base64!!"
    r = httpx.post(f"{server}/v1/localize", json=body, timeout=30)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "iq[2].samples_base64"
    body = _iq_body(rows, 0)
    body["iq"][0]["sample_rate_hz"] = 44100
    r = httpx.post(f"{server}/v1/localize", json=body, timeout=30)
    assert r.status_code == 422 and "expects 48000 Hz" in r.text
    body = _iq_body(rows, 0)
    body["iq"][1]["samples_base64"] = base64.b64encode(np.zeros(100, "<c8").tobytes()).decode()
    assert "at least 2048" in httpx.post(f"{server}/v1/localize", json=body, timeout=30).text
    nan = np.zeros(2048, "<c8")
    nan[5] = np.nan
    body = _iq_body(rows, 0)
    body["iq"][3]["samples_base64"] = base64.b64encode(nan.tobytes()).decode()
    assert "NaN or Inf" in httpx.post(f"{server}/v1/localize", json=body, timeout=30).text
    raw = '{"features": [{"id": "giaveno", "features": [NaN]}]}'
    r = httpx.post(f"{server}/v1/localize", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422
    big = httpx.post(f"{server}/v1/localize", content=b"x" * (2 * 1024 * 1024),
                     headers={"content-type": "application/json"})
    assert big.status_code == 413
    batch = {"transmissions": [_features_body(rows, 0), {"features": [{"id": "nowhere", "features": [0.0]}] * 3}]}
    r = httpx.post(f"{server}/v1/localize/batch", json=batch, timeout=30)
    assert r.status_code == 422 and r.json()["detail"][0]["field"].startswith("transmissions[1].features")


def test_admin_tokens_and_hot_reload_under_load(server, rows):
    assert httpx.post(f"{server}/v1/admin/reload").status_code == 401
    assert httpx.post(f"{server}/v1/admin/reload", headers={"authorization": "Bearer nope"}).status_code == 403
    statuses, stop = [], threading.Event()

    def load(k):
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                body = _features_body(rows, k % 8)
                body["features"][0]["features"][0] += np.random.rand()  # defeat the cache
                statuses.append(c.post(f"{server}/v1/localize", json=body).status_code)

    threads = [threading.Thread(target=load, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    r = httpx.post(f"{server}/v1/admin/reload", headers={"authorization": f"Bearer {TOKEN}"}, timeout=60)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    assert r.status_code == 200 and r.json()["current"] == "file"
    assert len(statuses) > 50 and set(statuses) == {200}  # no request dropped across the swap
    assert "heimdall_reloads_total 1.0" in httpx.get(f"{server}/metrics").text


def test_admin_disabled_without_a_token(model_file, monkeypatch):
    from fastapi.testclient import TestClient

    from heimdall.serve.app import create_app
    from heimdall.serve.runtime import ModelSource

    monkeypatch.delenv("HEIMDALL_ADMIN_TOKEN", raising=False)
    with TestClient(create_app(ModelSource(file=str(model_file)))) as client:
        r = client.post("/v1/admin/reload", headers={"authorization": "Bearer anything"})
        assert r.status_code == 403 and "disabled" in r.text


# --- fuzzing: no input, however malformed, gets a 5xx --------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

IDS = ["giaveno", "montanaro", "torino", "coazze", "giovi", "genova", "milano", "nowhere"]
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=25,
)
_receiver = st.fixed_dictionaries({}, optional={
    "id": st.sampled_from(IDS), "lat": st.floats(-100, 100), "lon": st.floats(-200, 200)})
_features = st.builds(lambda r, f: {**r, "features": f}, _receiver,
                      st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=0, max_size=40))
_iq = st.builds(lambda r, d, rate, s: {**r, "datatype": d, "sample_rate_hz": rate, "center_frequency_hz": 145e6,
                                       "samples_base64": s}, _receiver, st.sampled_from(["ci16_le", "cf32_le", "cu8"]),
                st.sampled_from([48000.0, 0.0, -1.0, 1e12]),
                st.one_of(st.text(max_size=40), st.binary(max_size=20000).map(lambda b: base64.b64encode(b).decode())))
_bodies = st.one_of(
    _json,
    st.fixed_dictionaries({"features": st.lists(_features, max_size=9)}),
    st.fixed_dictionaries({"iq": st.lists(_iq, max_size=8)}),
    st.fixed_dictionaries({"transmissions": st.lists(st.fixed_dictionaries({"features": st.lists(_features,
                                                                                                  max_size=8)}),
                                                     max_size=3)}),
)


@given(body=_bodies, path=st.sampled_from(["/v1/localize", "/v1/localize/batch"]))
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_never_5xx(server, body, path):
    r = httpx.post(f"{server}{path}", json=body, timeout=30)
    assert r.status_code < 500, (body, r.text)


def test_predict_command_writes_csv(model_file, tiny_store, tmp_path, capsys):
    import csv

    from heimdall.cli import main

    out = tmp_path / "pred.csv"
    assert main(["predict", str(tiny_store), "--model-file", str(model_file), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 150 and float(rows[0]["semi_major_95_m"]) > 0
    assert "median error" in capsys.readouterr().out
