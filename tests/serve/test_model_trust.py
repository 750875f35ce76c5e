"""Trusted models end to end: signed manifests from export to serve, tampering, models that read host files,
garbled metadata, the registry's downloads, S3 options and frames in `predict`."""

import hashlib
import json
import shutil
import tempfile
import time

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from heimdall.cli import main
from heimdall.errors import ModelLoadError
from heimdall.manifest import TrustPolicy, sidecar_path
from heimdall.release.registry import registry_client
from heimdall.serve.runtime import ModelSource, from_bytes
from heimdall.signing import VerifyKey
from s3server import ACCESS_KEY, SECRET_KEY, SeaweedS3
from test_signing import write_ed25519

NAME = "heimdall-localizer"


@pytest.fixture(scope="module")
def published(tiny_run, tmp_path_factory):
    """One signed export of the tiny model: to a file (with its manifest), a store and a fresh registry."""
    ws, _ = tiny_run
    out = tmp_path_factory.mktemp("published")
    private, public = write_ed25519(out)
    uri = f"sqlite:///{out / 'mlflow.db'}"
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(ws / "run" / "best.ckpt"),
                "--out",
                str(out / "model.onnx"),
                "--store",
                str(out / "store"),
                "--tracking-uri",
                uri,
                "--signing-key",
                str(private),
            ]
        )
        == 0
    )
    aliases = registry_client(uri).get_registered_model(NAME).aliases
    return {
        "dir": out,
        "file": out / "model.onnx",
        "store": out / "store",
        "uri": uri,
        "alias": next(iter(aliases)),
        "private": private,
        "key": VerifyKey.from_file(public),
        "public": public,
        "sha256": hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest(),
    }


def _sources(p, trust):
    return {
        "file": ModelSource(file=str(p["file"]), trust=trust),
        "store": ModelSource(store=str(p["store"]), trust=trust),
        "registry": ModelSource(registry_uri=p["uri"], alias=p["alias"], trust=trust),
    }


def _metadata(data: bytes) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load_from_string(data).metadata_props}


def _rewritten(data: bytes, **metadata) -> bytes:
    """The same model with metadata entries replaced (None: removed)."""
    proto = onnx.load_from_string(data)
    props = _metadata(data) | metadata
    del proto.metadata_props[:]
    for key, value in props.items():
        if value is not None:
            proto.metadata_props.add(key=key, value=value)
    return proto.SerializeToString()


def test_signed_models_verify_from_every_source(published, tmp_path):
    for source in _sources(published, TrustPolicy(verify_key=published["key"])).values():
        assert source.load().sha256 == published["sha256"]
    other = VerifyKey.from_file(write_ed25519(tmp_path, "other")[1])
    for source in _sources(published, TrustPolicy(verify_key=other)).values():
        with pytest.raises(ModelLoadError, match="not with the verify key"):
            source.load()
    for kind, source in _sources(published, TrustPolicy(sha256=published["sha256"])).items():
        assert source.load().sha256 == published["sha256"], kind
    with pytest.raises(ModelLoadError, match="is not the pinned " + "0" * 64):
        _sources(published, TrustPolicy(sha256="0" * 64))["registry"].load()
    manifest = json.loads(sidecar_path(published["file"]).read_text())
    assert manifest["sha256"] == published["sha256"] and manifest["signature"]["algorithm"] == "ed25519"


def test_tampered_files_and_store_versions_are_refused(published, tmp_path):
    key = TrustPolicy(verify_key=published["key"])
    # a valid Heimdall model with other bytes in place of the exported file: its manifest no longer matches
    shutil.copy(published["file"], tmp_path / "model.onnx")
    shutil.copy(sidecar_path(published["file"]), sidecar_path(tmp_path / "model.onnx"))
    (tmp_path / "model.onnx").write_bytes(_rewritten(published["file"].read_bytes(), heimdall_version="evil"))
    with pytest.raises(ModelLoadError, match="does not match the manifest"):
        ModelSource(file=str(tmp_path / "model.onnx")).load()
    # a store manifest edited after signing: integrity still holds, the signature does not
    store = tmp_path / "store"
    shutil.copytree(published["store"], store)
    path = store / NAME / "1" / "manifest.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), parent_run="someone-else")))
    assert ModelSource(store=str(store)).load().sha256 == published["sha256"]  # no key: integrity only
    with pytest.raises(ModelLoadError, match="bad signature"):
        ModelSource(store=str(store), trust=key).load()
    # an unsigned version, as anyone with write access to the store could add
    from heimdall.release.model_store import ModelStore

    ModelStore.open(store).publish(NAME, published["file"].read_bytes(), {})
    with pytest.raises(ModelLoadError, match=f"{NAME} version 2: the manifest is not signed"):
        ModelSource(store=str(store), trust=key).load()


def test_registry_checks_integrity(published, tmp_path):
    source = ModelSource(registry_uri=published["uri"], alias=published["alias"])
    assert source.load().sha256 == published["sha256"]
    client = registry_client(published["uri"])
    version = client.get_model_version_by_alias(NAME, published["alias"]).version
    stored = client.get_model_version_download_uri(NAME, version).removeprefix("file://")
    artifact = tmp_path.parent / "registry-artifact.onnx"
    shutil.copy(f"{stored}/model.onnx", artifact)
    try:  # someone with access to the artifact store swaps the registered bytes
        with open(f"{stored}/model.onnx", "wb") as f:
            f.write(_rewritten(artifact.read_bytes(), heimdall_version="evil"))
        with pytest.raises(ModelLoadError, match="does not match the manifest"):
            source.load()
    finally:
        shutil.copy(artifact, f"{stored}/model.onnx")
    assert source.load().sha256 == published["sha256"]


def _leaking(data: bytes, location: str) -> bytes:
    """A Heimdall model whose mean_m adds 2 float32 read from `location` by an If-branch initializer."""
    proto = onnx.load_from_string(data)
    producer = next(n for n in proto.graph.node if "mean_m" in n.output)
    producer.output[list(producer.output).index("mean_m")] = "mean_m_clean"
    leak = TensorProto(name="w0", data_type=TensorProto.FLOAT, dims=[2], data_location=TensorProto.EXTERNAL)
    for key, value in {"location": location, "offset": "0", "length": "8"}.items():
        leak.external_data.add(key=key, value=value)
    out = [helper.make_tensor_value_info("leak", TensorProto.FLOAT, [2])]
    then = helper.make_graph([helper.make_node("Identity", ["w0"], ["leak"])], "then", [], out, initializer=[leak])
    other = helper.make_graph(
        [helper.make_node("Constant", [], ["leak"], value=helper.make_tensor("z", TensorProto.FLOAT, [2], [0.0, 0.0]))],
        "else",
        [],
        out,
    )
    proto.graph.node.extend(
        [
            helper.make_node("Constant", [], ["yes"], value=helper.make_tensor("t", TensorProto.BOOL, [], [True])),
            helper.make_node("If", ["yes"], ["leak"], then_branch=then, else_branch=other),
            helper.make_node("Add", ["mean_m_clean", "leak"], ["mean_m"]),
        ]
    )
    return proto.SerializeToString()


def test_a_model_that_reads_a_host_file_is_refused(published, tiny_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the server's working folder
    secret = np.array([123456.0, -654321.0], np.float32)
    (tmp_path / "secret.txt").write_bytes(secret.tobytes())
    data = published["file"].read_bytes()
    tampered = _leaking(data, "secret.txt")
    inputs = {
        "features": np.zeros((1, 3, 35), np.float32),
        "rx_position_m": np.zeros((1, 3, 2), np.float32),
        "present": np.ones((1, 3), np.float32),
    }
    clean = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(["mean_m"], inputs)[0]
    leaked = ort.InferenceSession(tampered, providers=["CPUExecutionProvider"]).run(["mean_m"], inputs)[0]
    np.testing.assert_allclose(leaked - clean, secret[None], rtol=1e-6)  # ONNX Runtime alone answers the secret
    with pytest.raises(ModelLoadError, match="tensor 'w0' .* refers to external data 'secret.txt'.*refused"):
        from_bytes(tampered, "tampered", "1")
    from heimdall.evaluation.evaluate import onnx_predictions
    from heimdall.evaluation.test_set import load_test_set

    with pytest.raises(ModelLoadError, match="external data"):  # `heimdall evaluate --model tampered.onnx`
        onnx_predictions(tampered, load_test_set(tiny_store, 10))
    (tmp_path / "model.onnx").write_bytes(tampered)
    with pytest.raises(ModelLoadError, match="external data"):
        ModelSource(
            file=str(tmp_path / "model.onnx"), trust=TrustPolicy(sha256=hashlib.sha256(tampered).hexdigest())
        ).load()


GARBLED = [
    ("format", "heimdall-onnx/0", "not a Heimdall model"),
    ("receivers", None, "metadata 'receivers' is missing"),
    ("receivers", "{not json", "metadata 'receivers' is not valid JSON"),
    ("receivers", "[1, 2]", "metadata 'receivers': expected a JSON object, found list"),
    (
        "receivers",
        json.dumps({"id": ["a", "b"], "lat": [1.0], "lon": [1.0, 2.0], "east_m": [0, 1], "north_m": [0, 1]}),
        "expected equally long, non-empty lists",
    ),
    (
        "receivers",
        json.dumps({"id": ["a", "a"], "lat": [1, 1], "lon": [1, 2], "east_m": [0, 1], "north_m": [0, 1]}),
        "'id' must hold distinct",
    ),
    (
        "receivers",
        json.dumps({"id": ["a", "b"], "lat": [1, 1], "lon": [1, 2], "east_m": [0, "x"], "north_m": [0, 1]}),
        "'east_m' must hold finite numbers",
    ),
    (
        "receivers",
        '{"id": ["a"], "lat": [1], "lon": [1], "east_m": [NaN], "north_m": [0]}',
        "'east_m' must hold finite",
    ),
    ("feature_params", None, "metadata 'feature_params' is missing"),
    ("feature_params", '{"psd_bins": 32}', "metadata 'feature_params': expected an object with exactly the keys"),
    ("feature_params", "[]", "metadata 'feature_params': expected an object"),
    ("feature_params", '{"sample_rate_hz": 48000', "metadata 'feature_params': Expecting"),
    ("metrics", "{bad", "metadata 'metrics' is not valid JSON"),
    ("scenario_yaml", None, "metadata 'scenario_yaml'"),
    ("scenario_yaml", "receivers: [1, 2", "metadata 'scenario_yaml'"),
    ("scenario_yaml", "just a string", "metadata 'scenario_yaml'"),
]


@pytest.mark.parametrize("key,value,message", GARBLED, ids=[f"{g[0]}-{i}" for i, g in enumerate(GARBLED)])
def test_garbled_metadata_is_a_load_error_naming_the_field(published, key, value, message):
    with pytest.raises(ModelLoadError, match=message.replace("(", r"\(").replace("[", r"\[")):
        from_bytes(_rewritten(published["file"].read_bytes(), **{key: value}), "garbled", "1")


def test_feature_params_out_of_range_and_wrong_graph(published):
    data = published["file"].read_bytes()
    params = json.loads(_metadata(data)["feature_params"])
    for change, message in [
        ({"psd_bins": 7}, "psd_bins: 7 does not divide segment_samples 256"),
        ({"psd_bins": 16}, "input 'features' takes 35 values per receiver, metadata 'feature_params' gives 19"),
        ({"sample_rate_hz": "fast"}, "sample_rate_hz: 'fast' is not a number"),
        ({"window_samples": 1 << 30}, "window_samples: 1073741824 is not an integer in"),
    ]:
        with pytest.raises(ModelLoadError, match=f"metadata 'feature_params': {message}|{message}"):
            from_bytes(_rewritten(data, feature_params=json.dumps(params | change)), "garbled", "1")


def test_reload_refuses_a_tampered_model_and_keeps_serving(published, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from heimdall.serve.app import create_app

    monkeypatch.setenv("HEIMDALL_ADMIN_TOKEN", "t")
    path = tmp_path / "model.onnx"
    shutil.copy(published["file"], path)
    shutil.copy(sidecar_path(published["file"]), sidecar_path(path))
    source = ModelSource(file=str(path), trust=TrustPolicy(verify_key=published["key"]))
    with TestClient(create_app(source)) as client:
        path.write_bytes(_rewritten(published["file"].read_bytes(), heimdall_version="evil"))
        r = client.post("/v1/admin/reload", headers={"authorization": "Bearer t"})
        detail = r.json()["detail"][0]
        assert (
            r.status_code == 503 and detail["field"] == "model" and "does not match the manifest" in detail["message"]
        )
        assert "still serving" in detail["message"]
        assert client.get("/readyz").json()["status"] == "ready"
        assert client.get("/v1/model").json()["sha256"] == published["sha256"]


def _store_copy(tiny_store, folder, edit):
    folder.mkdir()
    shutil.copy(tiny_store / "test.h5", folder / "test.h5")
    with h5py.File(folder / "test.h5", "r+") as f:
        edit(f)
    return folder


def test_predict_refuses_a_store_in_another_frame(published, tiny_store, tmp_path, capsys):
    model = ["--model-file", str(published["file"]), "--out", str(tmp_path / "p.csv")]
    assert main(["predict", str(tiny_store), *model]) == 0

    def shift_origin(f):
        f.attrs["frame_origin_lat_lon"] = f.attrs["frame_origin_lat_lon"] + np.array([0.5, 0.0])

    def move_receiver(f):
        f["receivers/east_m"][2] += 5000.0

    assert main(["predict", str(_store_copy(tiny_store, tmp_path / "origin", shift_origin)), *model]) == 2
    assert "attribute frame_origin_lat_lon is" in capsys.readouterr().err
    assert main(["predict", str(_store_copy(tiny_store, tmp_path / "moved", move_receiver)), *model]) == 2
    err = capsys.readouterr().err
    assert "receivers/east_m, north_m: receiver 'torino' is 5000.0 m from where model" in err


@pytest.fixture(scope="module")
def s3():
    server = SeaweedS3().start()
    for bucket in ("models", "mlflow"):
        server.client().create_bucket(Bucket=bucket)
    yield server
    server.stop()


@pytest.mark.system
def test_s3_options_and_signatures_from_the_command_line(
    published, tiny_run, tiny_store, s3, tmp_path, monkeypatch, capsys, caplog
):
    ws, _ = tiny_run
    store = ["--store", "s3://models/heimdall", "--s3-endpoint-url", s3.endpoint]
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(ws / "run" / "best.ckpt"),
                "--out",
                str(tmp_path / "m.onnx"),
                *store,
                "--s3-access-key",
                ACCESS_KEY,
                "--s3-secret-key",
                SECRET_KEY,
                "--no-register",
                "--signing-key",
                str(published["private"]),
            ]
        )
        == 0
    )
    assert "--s3-secret-key is visible to other users" in capsys.readouterr().err
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    out = ["--out", str(tmp_path / "p.csv")]
    assert main(["predict", str(tiny_store), *store, "--verify-key", str(published["public"]), *out]) == 0
    assert "visible to other users" not in capsys.readouterr().err
    other = write_ed25519(tmp_path, "other")[1]
    assert main(["predict", str(tiny_store), *store, "--verify-key", str(other), *out]) == 2
    assert "s3://models/heimdall heimdall-localizer version 1: signed with ed25519 key" in capsys.readouterr().err
    with caplog.at_level("WARNING", logger="heimdall.manifest"):
        assert main(["predict", str(tiny_store), *store, *out]) == 0
    assert "authenticity is not checked" in caplog.text


@pytest.mark.system
def test_registry_on_s3_artifacts_leaves_no_download_behind(published, tiny_run, s3, tmp_path, monkeypatch):
    """Registered versions whose artifacts live on S3 are downloaded for every load; nothing may pile up."""
    ws, _ = tiny_run
    for variable, value in (
        ("MLFLOW_S3_ENDPOINT_URL", s3.endpoint),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
    ):
        monkeypatch.setenv(variable, value)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry_client(uri).create_experiment("heimdall-export", artifact_location="s3://mlflow/artifacts")
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(ws / "run" / "best.ckpt"),
                "--out",
                str(tmp_path / "m.onnx"),
                "--no-store",
                "--tracking-uri",
                uri,
                "--signing-key",
                str(published["private"]),
            ]
        )
        == 0
    )
    alias = next(iter(registry_client(uri).get_registered_model(NAME).aliases))
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    source = ModelSource(registry_uri=uri, alias=alias, trust=TrustPolicy(verify_key=published["key"]))
    for _ in range(3):  # as hot reloads do
        assert source.load().sha256 == hashlib.sha256((tmp_path / "m.onnx").read_bytes()).hexdigest()
    assert list(temporary.iterdir()) == []


@pytest.mark.system
def test_serve_says_at_start_that_registry_writers_pick_the_model_without_a_verify_key(published, tmp_path):
    import subprocess
    import sys

    import httpx

    from service_process import free_port

    def started_with(*flags):
        port = free_port()
        with (tmp_path / "stderr.log").open("w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "heimdall", "serve", "--tracking-uri", published["uri"], "--alias"]
                + [published["alias"], "--port", str(port), *flags],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        try:
            for _ in range(600):
                assert proc.poll() is None, (tmp_path / "stderr.log").read_text()
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
        finally:
            proc.terminate()
            proc.wait(30)
        return (tmp_path / "stderr.log").read_text()

    unverified = started_with()
    assert f"WARNING: no --verify-key: any writer of the registry {published['uri']}" in unverified
    assert "picks the model this service answers with" in unverified
    verified = started_with("--verify-key", str(published["public"]))
    assert "no --verify-key" not in verified and "authenticity is not checked" not in verified
