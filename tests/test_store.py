"""The model store against a local folder and a real S3 server process (SeaweedFS on 127.0.0.1)."""

import threading

import pytest

from heimdall.store import ModelStore, ModelStoreError, S3Backend
from s3server import ACCESS_KEY, SECRET_KEY, SeaweedS3

MODEL = b"onnx-bytes-" * 1000
META = {"format": "heimdall-onnx/1", "weights_sha256": "abc"}


@pytest.fixture(scope="module")
def s3():
    server = SeaweedS3().start()
    server.client().create_bucket(Bucket="models")
    yield server
    server.stop()


def _s3_store(server, prefix="heimdall", secret=SECRET_KEY, bucket="models"):
    return ModelStore.open(f"s3://{bucket}/{prefix}", endpoint_url=server.endpoint, access_key=ACCESS_KEY,
                           secret_key=secret)


def _round_trip(store):
    assert store.versions("loc") == []
    assert store.publish("loc", MODEL, META, parent_run="run-1") == 1
    assert store.publish("loc", MODEL + b"2", META) == 2
    assert store.versions("loc") == [1, 2]
    latest = store.fetch("loc")
    assert latest.version == 2 and latest.data == MODEL + b"2"
    first = store.fetch("loc", 1)
    assert first.data == MODEL and first.manifest["parent_run"] == "run-1"
    assert first.manifest["metadata"] == META and first.manifest["size_bytes"] == len(MODEL)


def test_local_store_round_trip_and_verification(tmp_path):
    store = ModelStore.open(tmp_path / "models")
    _round_trip(store)
    # tampered bytes are refused
    (tmp_path / "models" / "loc" / "1" / "model.onnx").write_bytes(MODEL[:-1] + b"X")
    with pytest.raises(ModelStoreError, match="does not match the manifest"):
        store.fetch("loc", 1)
    # a model without a manifest is not a version
    (tmp_path / "models" / "loc" / "3").mkdir()
    (tmp_path / "models" / "loc" / "3" / "model.onnx").write_bytes(MODEL)
    assert store.versions("loc") == [1, 2]
    with pytest.raises(ModelStoreError, match="no manifest"):
        store.fetch("loc", 3)
    with pytest.raises(ModelStoreError, match="no committed version"):
        store.fetch("other")


def test_s3_round_trip_and_verification(s3):
    store = _s3_store(s3, prefix="rt")
    _round_trip(store)
    s3.client().put_object(Bucket="models", Key="rt/loc/2/model.onnx", Body=b"tampered")
    with pytest.raises(ModelStoreError, match="refusing a tampered or partial model"):
        store.fetch("loc", 2)
    assert sorted(o["Key"] for o in s3.client().list_objects_v2(Bucket="models", Prefix="rt/loc/1/")["Contents"]) == [
        "rt/loc/1/manifest.json", "rt/loc/1/model.onnx"]


def test_s3_wrong_credentials_and_missing_bucket(s3):
    with pytest.raises(ModelStoreError, match="wrong secret key"):
        _s3_store(s3, prefix="creds", secret="not-the-secret").publish("loc", MODEL, META)
    with pytest.raises(ModelStoreError, match="bucket 'nobucket' does not exist"):
        _s3_store(s3, bucket="nobucket").publish("loc", MODEL, META)
    assert _s3_store(s3, prefix="creds").versions("loc") == []


class _DiesAfterModelUpload(S3Backend):
    """A real S3 backend whose server is killed right after the model bytes arrive."""

    def __init__(self, server, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.server = server

    def put(self, key, data):
        super().put(key, data)
        if key.endswith("model.onnx"):
            self.server.kill()


def test_server_killed_mid_publish_leaves_no_version(tmp_path):
    server = SeaweedS3().start()
    try:
        server.client().create_bucket(Bucket="models")
        store = _s3_store(server)
        assert store.publish("loc", MODEL, META) == 1
        dying = ModelStore(_DiesAfterModelUpload(server, "s3://models/heimdall", endpoint_url=server.endpoint,
                                                 access_key=ACCESS_KEY, secret_key=SECRET_KEY, timeout_s=3))
        with pytest.raises(ModelStoreError, match="upload of loc/2/manifest.json failed"):
            dying.publish("loc", MODEL + b"new", META)
        # a large upload cut by the server's death fails too
        server.start()
        big = ModelStore(S3Backend("s3://models/heimdall", endpoint_url=server.endpoint, access_key=ACCESS_KEY,
                                   secret_key=SECRET_KEY, timeout_s=3))
        errors = []
        worker = threading.Thread(target=lambda: _publish_expecting_failure(big, errors))
        worker.start()
        server.kill()
        worker.join(60)
        server.start()
        assert store.versions("loc") == [1]  # neither attempt committed a version
        assert store.fetch("loc").data == MODEL
        assert store.publish("loc", MODEL + b"again", META) == 2  # the store keeps working
    finally:
        server.stop()


def _publish_expecting_failure(store, errors):
    try:
        store.publish("loc", b"x" * (200 * 1024 * 1024), META)
        errors.append("no error")
    except ModelStoreError as exc:
        errors.append(str(exc))
