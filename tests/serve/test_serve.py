"""The HTTP service against a real uvicorn process on 127.0.0.1 (and its app in-process for one case)."""

import base64
import json
import socket
import threading
import time

import httpx
import numpy as np
import pytest
import torch

from heimdall.train.task import LocalizationTask
from serve_bodies import features_body, iq_body, power_body
from service_process import running_service

TOKEN = "test-admin-token"


@pytest.fixture(scope="module")
def server(model_file):
    with running_service(model_file, "--max-body-mb", "1", env={"HEIMDALL_ADMIN_TOKEN": TOKEN}) as url:
        yield url


def _torch_answer(tiny_run, store_rows, k, power_only=False):
    ws, _ = tiny_run
    net = LocalizationTask.load_from_checkpoint(ws / "run" / "best.ckpt", map_location="cpu").net.eval()
    features = store_rows["features"][k : k + 1].copy()
    if power_only:
        features[..., :-3] = np.nan
        features[..., -2:] = np.nan
    with torch.no_grad():
        mean, cov = net.predict_m(
            torch.from_numpy(features), torch.from_numpy(store_rows["rx"][None]), torch.ones(1, len(store_rows["ids"]))
        )
    return mean[0].numpy(), cov[0].numpy(), float(net.position_scale_m)


@pytest.mark.system
def test_features_and_raw_iq_match_pytorch(server, store_rows, tiny_run):
    for k in range(3):
        mean, cov, scale = _torch_answer(tiny_run, store_rows, k)
        for body in (features_body(store_rows, k), iq_body(store_rows, k)):
            r = httpx.post(f"{server}/v1/localize", json=body, timeout=30)
            assert r.status_code == 200, r.text
            a = r.json()
            # within 1e-4 in normalised units
            assert np.abs(np.array([a["east_m"], a["north_m"]]) - mean).max() / scale <= 1e-4
            assert np.abs(np.array(a["covariance_m2"]) - cov).max() / scale**2 <= 1e-4
            assert -90 <= a["lat"] <= 90 and a["geojson"]["geometry"]["type"] == "Polygon"
            assert [e["probability"] for e in a["ellipses"]] == [0.5, 0.68, 0.95]
            assert a["ellipses"][2]["semi_major_m"] > a["ellipses"][0]["semi_major_m"] > 0
            assert a["receivers_used"] == store_rows["ids"] and a["model"]["version"] == "file"


@pytest.mark.system
def test_answers_carry_each_receivers_snr_and_detection(server, store_rows):
    info = httpx.get(f"{server}/v1/model").json()
    column, threshold_db = info["feature_columns"]["snr_db"], info["feature_params"]["detection_snr_db"]
    heard_any = set()
    for k in range(4):
        stored_snr = store_rows["features"][k, :, column]  # computed from the stored IQ when the store was made
        for body in (features_body(store_rows, k), iq_body(store_rows, k)):
            a = httpx.post(f"{server}/v1/localize", json=body, timeout=30).json()
            reports = a["receivers"]
            assert [r["id"] for r in reports] == a["receivers_used"] == store_rows["ids"]
            snr = np.array([r["snr_db"] for r in reports])
            assert snr == pytest.approx(stored_snr, abs=0.01)  # raw IQ: the service's extractor computed it
            assert [r["heard"] for r in reports] == [bool(v >= threshold_db) for v in snr]
            heard_any.update(r["heard"] for r in reports)
    assert heard_any == {True, False}  # both kinds of receiver were checked
    power_only = httpx.post(f"{server}/v1/localize", json=power_body(store_rows, 0), timeout=30).json()
    assert all(r["snr_db"] is None and r["heard"] is None for r in power_only["receivers"])
    schema = httpx.get(f"{server}/openapi.json").json()["components"]["schemas"]
    assert "receivers" in schema["LocalizeResponse"]["required"] and "heard" in schema["ReceiverReport"]["properties"]


@pytest.mark.system
def test_power_only_matches_pytorch_with_missing_features(server, store_rows, tiny_run):
    for k in range(2):
        mean, cov, scale = _torch_answer(tiny_run, store_rows, k, power_only=True)
        r = httpx.post(f"{server}/v1/localize", json=power_body(store_rows, k), timeout=30)
        assert r.status_code == 200, r.text
        a = r.json()
        assert np.abs(np.array([a["east_m"], a["north_m"]]) - mean).max() / scale <= 1e-4
        assert np.abs(np.array(a["covariance_m2"]) - cov).max() / scale**2 <= 1e-4
        full = httpx.post(f"{server}/v1/localize", json=features_body(store_rows, k), timeout=30).json()
        assert (a["east_m"], a["north_m"]) != (full["east_m"], full["north_m"])


@pytest.mark.system
def test_batch_and_cache(server, store_rows):
    body = {"transmissions": [features_body(store_rows, k) for k in range(5)]}
    r = httpx.post(f"{server}/v1/localize/batch", json=body, timeout=30)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 5
    for k in range(5):
        single = httpx.post(f"{server}/v1/localize", json=features_body(store_rows, k), timeout=30).json()
        assert single["cached"] is True  # answered from the LRU cache filled by the batch
        assert single["east_m"] == pytest.approx(results[k]["east_m"])
    subset = httpx.post(f"{server}/v1/localize", json=features_body(store_rows, 0, drop=(5, 6)), timeout=30)
    assert subset.status_code == 200 and len(subset.json()["receivers_used"]) == 5
    metrics = httpx.get(f"{server}/metrics").text
    assert 'heimdall_cache_total{result="hit"}' in metrics and "heimdall_batch_size_bucket" in metrics
    assert 'heimdall_requests_total{endpoint="/v1/localize",status="200"}' in metrics
    info = httpx.get(f"{server}/v1/model").json()
    assert [r["id"] for r in info["receivers"]] == store_rows["ids"] and info["sha256"]


BAD = [
    ("unknown receiver", lambda b: b["features"][0].update(id="atlantis"), "features[0].id", "unknown receiver"),
    ("wrong length", lambda b: b["features"][1]["features"].pop(), "features[1].features", "values, the model"),
    ("no receivers", lambda b: b.update(features=[]), "features", "at least 1"),
    ("both kinds", lambda b: b.update(iq=[]), "body", "exactly one"),
    ("extra key", lambda b: b.update(colour="red"), "colour", "Extra inputs"),
    ("duplicate receiver", lambda b: b["features"][1].update(id=b["features"][0]["id"]), "features[1]", "twice"),
    ("features and power", lambda b: b["features"][2].update(power_dbm=-90.0), "features.2", "exactly one"),
    (
        "power out of range",
        lambda b: b["features"][2].update(features=None, power_dbm=500.0),
        "features.2.power_dbm",
        "less than or equal",
    ),
]


@pytest.mark.system
@pytest.mark.parametrize("case,edit,field,message", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_are_4xx_naming_the_field(server, store_rows, case, edit, field, message):
    body = features_body(store_rows, 0)
    edit(body)
    r = httpx.post(f"{server}/v1/localize", json=body, timeout=30)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert any(d["field"] == field and message in d["message"] for d in detail), detail


@pytest.mark.system
def test_bad_iq_and_limits(server, store_rows):
    body = iq_body(store_rows, 0)
    body["iq"][2]["samples_base64"] = "not base64!!"
    r = httpx.post(f"{server}/v1/localize", json=body, timeout=30)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "iq[2].samples_base64"
    body = iq_body(store_rows, 0)
    body["iq"][0]["sample_rate_hz"] = 44100
    r = httpx.post(f"{server}/v1/localize", json=body, timeout=30)
    assert r.status_code == 422 and "expects 48000 Hz" in r.text
    body = iq_body(store_rows, 0)
    body["iq"][1]["samples_base64"] = base64.b64encode(np.zeros(100, "<c8").tobytes()).decode()
    assert "at least 2048" in httpx.post(f"{server}/v1/localize", json=body, timeout=30).text
    nan = np.zeros(2048, "<c8")
    nan[5] = np.nan
    body = iq_body(store_rows, 0)
    body["iq"][3]["samples_base64"] = base64.b64encode(nan.tobytes()).decode()
    assert "NaN or Inf" in httpx.post(f"{server}/v1/localize", json=body, timeout=30).text
    raw = '{"features": [{"id": "giaveno", "features": [NaN]}]}'
    r = httpx.post(f"{server}/v1/localize", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422
    big = httpx.post(
        f"{server}/v1/localize", content=b"x" * (2 * 1024 * 1024), headers={"content-type": "application/json"}
    )
    assert big.status_code == 413
    batch = {"transmissions": [features_body(store_rows, 0), {"features": [{"id": "nowhere", "features": [0.0]}] * 3}]}
    r = httpx.post(f"{server}/v1/localize/batch", json=batch, timeout=30)
    assert r.status_code == 422 and r.json()["detail"][0]["field"].startswith("transmissions[1].features")


@pytest.mark.system
def test_admin_tokens_and_hot_reload_under_load(server, store_rows):
    assert httpx.post(f"{server}/v1/admin/reload").status_code == 401
    assert httpx.post(f"{server}/v1/admin/reload", headers={"authorization": "Bearer nope"}).status_code == 403
    statuses, stop = [], threading.Event()

    def load(k):
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                body = features_body(store_rows, k % 8)
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


def _post_chunked(url: str, chunks: list[bytes], final: bool, timeout_s: float = 20) -> tuple[int, dict]:
    """POST chunks with Transfer-Encoding: chunked over a raw socket (no final empty chunk unless `final`);
    (status, JSON body) of the answer, read without closing the request."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout_s) as s:
        s.sendall(
            b"POST /v1/localize HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for chunk in chunks:
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        if final:
            s.sendall(b"0\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += s.recv(65536)
        head, body = answer.split(b"\r\n\r\n", 1)
        length = int(
            next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        )
        while len(body) < length:
            body += s.recv(65536)
    return int(head.split()[1]), json.loads(body)


@pytest.mark.system
def test_chunked_body_is_counted_as_it_arrives(server, store_rows):
    # 1.5 MiB of JSON whitespace against the 1 MiB limit, and the body never ends: the answer must come anyway
    status, answer = _post_chunked(server, [b" " * 65536] * 24, final=False)
    assert status == 413 and answer["detail"][0]["field"] == "body" and "limit" in answer["detail"][0]["message"]
    # under the limit, a chunked body is answered as any other
    body = json.dumps(features_body(store_rows, 3)).encode()
    status, chunked = _post_chunked(server, [body[i : i + 1000] for i in range(0, len(body), 1000)], final=True)
    plain = httpx.post(f"{server}/v1/localize", content=body, headers={"content-type": "application/json"}).json()
    assert status == 200 and (chunked["east_m"], chunked["north_m"]) == (plain["east_m"], plain["north_m"])


@pytest.mark.system
def test_recordings_are_retuned_to_the_model_channel_or_refused(server, store_rows):
    original = httpx.post(f"{server}/v1/localize", json=iq_body(store_rows, 0), timeout=30).json()
    # the channel 1 kHz above the recording's centre: shifted back before the features, as on SigMF import
    shifted = httpx.post(f"{server}/v1/localize", json=iq_body(store_rows, 0, shift_hz=1000.0), timeout=30)
    assert shifted.status_code == 200, shifted.text
    assert abs(shifted.json()["east_m"] - original["east_m"]) < 1.0
    assert abs(shifted.json()["north_m"] - original["north_m"]) < 1.0
    for centre_hz in (2.4e9, 145e6 + 10e3):  # another band; the channel too near the recording's edge
        body = iq_body(store_rows, 0)
        body["iq"][2]["center_frequency_hz"] = centre_hz
        r = httpx.post(f"{server}/v1/localize", json=body, timeout=30)
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["field"] == "iq[2].center_frequency_hz"
        assert "the feature extractor needs 145000000 Hz" in r.json()["detail"][0]["message"]


def _near(receiver: dict, metres_north: float) -> dict:
    return {"lat": receiver["lat"] + metres_north / 111_195.0, "lon": receiver["lon"]}


@pytest.mark.system
def test_receivers_by_id_and_position_must_agree(server, store_rows):
    table = {r["id"]: r for r in httpx.get(f"{server}/v1/model").json()["receivers"]}
    by_id = features_body(store_rows, 1)
    expected = httpx.post(f"{server}/v1/localize", json=by_id, timeout=30).json()

    def post(edit):
        body = features_body(store_rows, 1)
        edit(body["features"])
        return httpx.post(f"{server}/v1/localize", json=body, timeout=30)

    first = by_id["features"][0]["id"]
    # id and its position (within the tolerance): the same receiver, the same answer
    same = post(lambda f: f[0].update(_near(table[first], 30.0)))
    assert same.status_code == 200 and same.json()["east_m"] == expected["east_m"]
    # an ad-hoc position 30 m from a table receiver is that receiver
    ad_hoc = post(lambda f: (f[0].pop("id"), f[0].update(_near(table[first], 30.0))))
    assert ad_hoc.status_code == 200 and ad_hoc.json()["receivers_used"] == expected["receivers_used"]
    assert ad_hoc.json()["east_m"] == expected["east_m"]
    refused = [
        (lambda f: f[0].update(_near(table[first], 20_000.0)), "features[0]", "from its position"),
        (lambda f: f[0].update(lat=table[first]["lat"]), "features.0", "both lat and lon"),
        (lambda f: f[1].update(id=None, **_near(table[first], 50.0)), "features[1]", f"{first!r} appears twice"),
        (
            lambda f: f.extend(
                [
                    {**_near(table[first], 5000.0), "features": f[0]["features"]},
                    {**_near(table[first], 5060.0), "features": f[1]["features"]},
                ]
            ),
            "features[8]",
            "appears twice (also features[7]",
        ),
    ]
    for edit, field, message in refused:
        r = post(edit)
        assert r.status_code == 422, r.text
        assert any(d["field"] == field and message in d["message"] for d in r.json()["detail"]), r.text


# --- fuzzing: no input, however malformed or however sent, gets a 5xx or a traceback ------------------
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

IDS = ["giaveno", "montanaro", "torino", "coazze", "giovi", "genova", "milano", "nowhere"]
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=25,
)
_receiver = st.fixed_dictionaries(
    {}, optional={"id": st.sampled_from(IDS), "lat": st.floats(-100, 100), "lon": st.floats(-200, 200)}
)
_features = st.builds(
    lambda r, f: {**r, "features": f},
    _receiver,
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=0, max_size=40),
)
_power = st.builds(lambda r, p: {**r, "power_dbm": p}, _receiver, st.floats(-300, 200, allow_nan=False))
_iq = st.builds(
    lambda r, d, rate, f, s: {
        **r,
        "datatype": d,
        "sample_rate_hz": rate,
        "center_frequency_hz": f,
        "samples_base64": s,
    },
    _receiver,
    st.sampled_from(["ci16_le", "cf32_le", "cu8"]),
    st.sampled_from([48000.0, 0.0, -1.0, 1e12]),
    st.sampled_from([145e6, 145.0015e6, 2.4e9, 1.0, -5.0]),
    st.one_of(st.text(max_size=40), st.binary(max_size=20000).map(lambda b: base64.b64encode(b).decode())),
)
_transmission = st.one_of(
    st.fixed_dictionaries({"features": st.lists(_features | _power, max_size=9)}),
    st.fixed_dictionaries({"iq": st.lists(_iq, max_size=8)}),
)
_bodies = st.one_of(
    _json,
    _transmission,
    st.fixed_dictionaries({"transmissions": st.lists(_transmission, max_size=3)}),
)
_payloads = st.one_of(
    _bodies.map(lambda b: json.dumps(b).encode()),
    st.binary(max_size=64),
    st.sampled_from([b"[" * 5000, b'{"transmissions": [' + b"{}," * 2000 + b"{}]}", b"NaN", b""]),
)


@pytest.mark.system
@given(
    payload=_payloads,
    path=st.sampled_from(["/v1/localize", "/v1/localize/batch"]),
    sent=st.sampled_from(["plain", "chunked", "oversized", "oversized chunked"]),
)
@example(payload=b'{"": null}', path="/v1/localize/batch", sent="plain")  # an empty key still names a field
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_never_5xx_always_a_named_field(server, payload, path, sent):
    if sent.startswith("oversized"):  # JSON whitespace past the server's 1 MiB limit
        payload += b" " * ((1 << 20) + 1)
    content = iter([payload[i : i + 4096] for i in range(0, len(payload), 4096)]) if "chunked" in sent else payload
    r = httpx.post(f"{server}{path}", content=content, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code < 500 and "Traceback" not in r.text, (payload[:300], r.text)
    answer = r.json()
    if r.status_code >= 400:
        assert r.status_code in (413, 422, 429), r.text
        assert answer["detail"] and all(
            isinstance(d["field"], str) and d["field"] and isinstance(d["message"], str) and d["message"]
            for d in answer["detail"]
        ), r.text
    if sent.startswith("oversized"):
        assert r.status_code == 413 and answer["detail"][0]["field"] == "body"


def test_predict_command_writes_csv(model_file, tiny_store, tmp_path, capsys):
    import csv

    from heimdall.cli import main

    out = tmp_path / "pred.csv"
    assert main(["predict", str(tiny_store), "--model-file", str(model_file), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 150 and float(rows[0]["semi_major_95_m"]) > 0
    assert "median error" in capsys.readouterr().out
