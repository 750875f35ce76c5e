"""Hot swap between two different models under load, and a reload that fails, against a real uvicorn process."""

import base64
import json
import os
import random
import threading
import time

import httpx
import numpy as np
import pytest

from heimdall.features import extract_features, feature_matrix
from heimdall.release.export import export_checkpoint
from heimdall.scenario.schema import scenario_from_dict
from heimdall.serve.runtime import from_bytes
from heimdall.train.task import untrained_checkpoint
from serve_bodies import features_body, iq_body, power_body
from service_process import running_service

pytestmark = pytest.mark.system

TOKEN = "reload-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def other_model_file(nw_italy, tmp_path_factory):
    """A model unlike tiny_run's: random weights, 16 PSD bins (19 features), every receiver 0.25° (28 km) north."""
    d = nw_italy.to_dict()
    d["features"]["psd_bins"] = 16
    for r in d["receivers"]:
        r["lat"] += 0.25
    folder = tmp_path_factory.mktemp("other")
    return export_checkpoint(
        untrained_checkpoint(scenario_from_dict(d), folder / "other.ckpt"), folder / "other.onnx"
    ).path


@pytest.fixture(scope="module")
def swappable(model_file, tmp_path_factory):
    """(url, served file): a service whose model file the test replaces before each reload; transmissions wait
    20 ms for company in the batcher, so that swaps land between their building and their model call."""
    served = tmp_path_factory.mktemp("swap") / "served.onnx"
    served.write_bytes(model_file.read_bytes())
    with running_service(served, "--max-wait-ms", "20", env={"HEIMDALL_ADMIN_TOKEN": TOKEN}) as url:
        yield url, served


def _replace(path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _expected(model, body: dict) -> tuple[np.ndarray, np.ndarray]:
    """The model's own answer to a request naming every receiver of its table: power only, or raw IQ at the
    model's channel (features by heimdall.features, as in training)."""
    p = model.params
    if "iq" in body:
        iq = np.stack([np.frombuffer(base64.b64decode(r["samples_base64"]), "<c8") for r in body["iq"]])
        feats = feature_matrix(extract_features(iq, p, model.full_scale_dbm))[None]
    else:
        feats = np.full((1, len(body["features"]), p.n_features), np.nan, np.float32)
        feats[0, :, p.feature_names.index("power_dbm")] = [r["power_dbm"] for r in body["features"]]
    mean, cov = model.predict(feats, model.rx_position_m[None], np.ones(feats.shape[:2], np.float32))
    return mean[0], cov[0]


def test_hot_swap_under_load_answers_each_request_with_one_model(swappable, model_file, other_model_file, store_rows):
    url, served = swappable
    files = [model_file.read_bytes(), other_model_file.read_bytes()]
    models = {m.sha256: m for m in (from_bytes(data, "m", "file") for data in files)}
    assert len({m.n_features for m in models.values()}) == 2
    # valid for both models (repeated, so answered from the cache too); raw IQ is built off the event loop
    power = [power_body(store_rows, k) for k in range(4)] + [iq_body(store_rows, k) for k in range(2)]
    full = [features_body(store_rows, k) for k in range(2)]  # 35 features: the first model only
    expected = {(sha, k): _expected(m, body) for sha, m in models.items() for k, body in enumerate(power)}
    answers, stop = [], threading.Event()

    def load(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                k = rng.randrange(len(power) + len(full))
                body = power[k] if k < len(power) else full[k - len(power)]
                r = client.post(f"{url}/v1/localize", json=body)
                answers.append((k, r.status_code, r.text))

    threads = [threading.Thread(target=load, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    reloads = []
    try:
        for swap in range(16):
            _replace(served, files[(swap + 1) % 2])
            reloads.append(httpx.post(f"{url}/v1/admin/reload", headers=AUTH, timeout=60).status_code)
            time.sleep(0.15)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert reloads == [200] * 16
    assert len(answers) > 200 and not [a for a in answers if a[1] >= 500], [a for a in answers if a[1] >= 500][:3]
    answers = [(k, status, json.loads(text)) for k, status, text in answers]
    for k, status, answer in answers:
        if status == 422:  # a 35-feature request that met the 19-feature model
            assert k >= len(power) and answer["detail"][0]["field"] == "features[0].features", answer
            continue
        assert status == 200, answer
        sha = answer["model"]["sha256"]
        if k >= len(power):
            assert models[sha].n_features == 35
            continue
        mean, cov = expected[(sha, k)]
        # the answer of the model it names, whether computed now or taken from the cache
        assert np.abs(np.array([answer["east_m"], answer["north_m"]]) - mean).max() < 1.0, (answer, mean)
        assert np.allclose(answer["covariance_m2"], cov, rtol=1e-4)
    named = {a[2]["model"]["sha256"] for a in answers if a[1] == 200}
    assert named == set(models) and any(a[2].get("cached") for a in answers if a[1] == 200)


def test_a_failed_reload_says_why_and_keeps_the_model(swappable, model_file, store_rows):
    url, served = swappable
    _replace(served, model_file.read_bytes())
    assert httpx.post(f"{url}/v1/admin/reload", headers=AUTH, timeout=60).status_code == 200
    serving = httpx.get(f"{url}/v1/model").json()["sha256"]
    for damage, reason in (
        (lambda: _replace(served, b"not an onnx model"), "not an ONNX model"),
        (served.unlink, "model file not found"),
    ):
        damage()
        r = httpx.post(f"{url}/v1/admin/reload", headers=AUTH, timeout=60)
        assert r.status_code == 503, r.text
        detail = r.json()["detail"][0]
        assert detail["field"] == "model" and reason in detail["message"] and "still serving" in detail["message"]
        assert httpx.get(f"{url}/v1/model").json()["sha256"] == serving
        answer = httpx.post(f"{url}/v1/localize", json=features_body(store_rows, 0), timeout=30)
        assert answer.status_code == 200 and answer.json()["model"]["sha256"] == serving
