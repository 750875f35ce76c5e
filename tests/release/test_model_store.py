"""The model store against a local folder and a real S3 server process (SeaweedFS on 127.0.0.1)."""

import json
import logging
import threading

import pytest

from heimdall.errors import ModelStoreError
from heimdall.release.model_store import S3_ENVIRONMENT, ModelStore, S3Backend, s3_settings
from s3server import ACCESS_KEY, SECRET_KEY, SeaweedS3, running_s3

MODEL = b"onnx-bytes-" * 1000
META = {"format": "heimdall-onnx/1", "weights_sha256": "abc"}


@pytest.fixture(scope="module")
def s3():
    with running_s3("models") as server:
        yield server


def _s3_store(server, prefix="heimdall", secret=SECRET_KEY, bucket="models"):
    return ModelStore.open(
        f"s3://{bucket}/{prefix}", endpoint_url=server.endpoint, access_key=ACCESS_KEY, secret_key=secret
    )


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
    assert first.manifest["model"] == f"blobs/sha256-{first.manifest['sha256']}.onnx"
    assert (first.manifest["name"], first.manifest["version"]) == ("loc", 1)


def test_local_store_round_trip_and_verification(tmp_path):
    store = ModelStore.open(tmp_path / "models")
    _round_trip(store)
    # tampered bytes are refused
    (tmp_path / "models" / "loc" / store.fetch("loc", 1).manifest["model"]).write_bytes(MODEL[:-1] + b"X")
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
    # the manifest is untrusted input: it may not name a file outside the store, nor declare a huge size
    manifest_path = tmp_path / "models" / "loc" / "2" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps(dict(manifest, model="../../../etc/passwd")))
    with pytest.raises(ModelStoreError, match="field 'model'"):
        store.fetch("loc", 2)
    manifest_path.write_text(json.dumps(dict(manifest, size_bytes=1 << 40)))
    with pytest.raises(ModelStoreError, match="field 'size_bytes'.*outside"):
        store.fetch("loc", 2)
    with pytest.raises(ModelStoreError, match="model name '../x'"):
        store.publish("../x", MODEL, META)


def test_versions_written_before_blobs_stay_readable(tmp_path):
    import hashlib

    legacy = tmp_path / "models" / "loc" / "1"
    legacy.mkdir(parents=True)
    (legacy / "model.onnx").write_bytes(MODEL)
    (legacy / "manifest.json").write_text(
        json.dumps({"name": "loc", "version": 1, "size_bytes": len(MODEL), "sha256": hashlib.sha256(MODEL).hexdigest()})
    )
    store = ModelStore.open(tmp_path / "models")
    assert store.fetch("loc").data == MODEL
    assert store.publish("loc", MODEL + b"new", META) == 2


@pytest.mark.system
def test_s3_round_trip_and_verification(s3):
    store = _s3_store(s3, prefix="rt")
    _round_trip(store)
    blob = store.fetch("loc", 2).manifest["model"]
    s3.client().put_object(Bucket="models", Key=f"rt/loc/{blob}", Body=b"tampered")
    with pytest.raises(ModelStoreError, match="refusing a tampered or partial model"):
        store.fetch("loc", 2)
    keys = sorted(o["Key"] for o in s3.client().list_objects_v2(Bucket="models", Prefix="rt/loc/")["Contents"])
    assert keys == sorted(
        [
            "rt/loc/1/manifest.json",
            "rt/loc/2/manifest.json",
            f"rt/loc/{blob}",
            f"rt/loc/{store.fetch('loc', 1).manifest['model']}",
        ]
    )


@pytest.mark.system
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
        if key.endswith(".onnx"):
            self.server.kill()


@pytest.mark.system
def test_server_killed_mid_publish_leaves_no_version(tmp_path):
    server = SeaweedS3().start()
    try:
        server.client().create_bucket(Bucket="models")
        store = _s3_store(server)
        assert store.publish("loc", MODEL, META) == 1
        dying = ModelStore(
            _DiesAfterModelUpload(
                server,
                "s3://models/heimdall",
                endpoint_url=server.endpoint,
                access_key=ACCESS_KEY,
                secret_key=SECRET_KEY,
                timeout_s=3,
            )
        )
        with pytest.raises(ModelStoreError, match="failed: Could not connect"):
            dying.publish("loc", MODEL + b"new", META)
        # a large upload cut by the server's death fails too
        server.start()
        big = ModelStore(
            S3Backend(
                "s3://models/heimdall",
                endpoint_url=server.endpoint,
                access_key=ACCESS_KEY,
                secret_key=SECRET_KEY,
                timeout_s=3,
            )
        )
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


class _ListInLockstep:
    """A real backend on which the first version listing of each publisher waits for the other publishers:
    all of them read the same latest version before any writes, so they all try the same number."""

    def __init__(self, backend, publishers):
        self.backend = backend
        self.barrier = threading.Barrier(publishers)
        self.listed = threading.local()

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def list(self, prefix):
        keys = self.backend.list(prefix)
        if not getattr(self.listed, "done", False):
            self.listed.done = True
            self.barrier.wait(60)
        return keys


def _publish_at_once(backend, n=2):
    """n publishers of n different models at the same moment: {model bytes: version} (raises what they raised)."""
    shared = ModelStore(_ListInLockstep(backend, n))
    models = [MODEL + bytes([65 + i]) * (i + 1) for i in range(n)]
    results, errors = {}, []

    def publish(data):
        try:
            results[data] = shared.publish("race", data, META)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return results


def _assert_distinct_and_intact(store, results):
    """Every publisher got its own version, and each version holds that publisher's bytes; the versions."""
    versions = sorted(results.values())
    assert len(set(versions)) == len(results) and store.versions("race") == versions  # none lost
    for data, version in results.items():
        assert store.fetch("race", version).data == data
    return versions


def test_concurrent_publishers_get_distinct_versions_in_a_folder(tmp_path):
    store = ModelStore.open(tmp_path / "models")
    assert _assert_distinct_and_intact(store, _publish_at_once(store.backend, 3)) == [1, 2, 3]


@pytest.mark.system
def test_concurrent_publishers_get_distinct_versions_on_s3(s3):
    store = _s3_store(s3, prefix="race")
    assert store.backend._probe_conditional_writes()  # this SeaweedFS honours If-None-Match
    assert _assert_distinct_and_intact(store, _publish_at_once(store.backend, 3)) == [1, 2, 3]


@pytest.mark.system
def test_concurrent_publishers_on_a_server_ignoring_if_none_match(s3, caplog):
    """The fallback: the condition is stripped from every request, as a server that ignores it would."""
    store = _s3_store(s3, prefix="race-unconditional")

    def strip(request, **_):
        if "If-None-Match" in request.headers:
            del request.headers["If-None-Match"]

    store.backend.client.meta.events.register("before-sign.s3.PutObject", strip)
    with caplog.at_level(logging.WARNING, logger="heimdall.release.model_store"):
        results = _publish_at_once(store.backend, 3)
    assert "does not honour If-None-Match" in caplog.text
    _assert_distinct_and_intact(store, results)  # a version number may be skipped when claims collide


def test_readers_never_see_another_publishers_bytes(tmp_path):
    """Publishers in a loop and a reader of the latest version: every version read is whole and the one
    its publisher was told it got."""
    store = ModelStore.open(tmp_path / "models")
    published, seen, errors, done = {}, [], [], threading.Event()

    def publisher(k):
        for i in range(6):
            data = MODEL + f"{k}-{i}".encode()
            published[store.publish("race", data, META)] = data

    def reader():
        while not done.is_set():
            try:
                got = store.fetch("race")
                seen.append((got.version, got.data))
            except ModelStoreError as exc:
                if "no committed version" not in str(exc):
                    errors.append(exc)

    read = threading.Thread(target=reader)
    read.start()
    writers = [threading.Thread(target=publisher, args=(k,)) for k in range(3)]
    for t in writers:
        t.start()
    for t in writers:
        t.join(120)
    done.set()
    read.join(60)
    assert not errors, errors[:3]
    assert sorted(published) == list(range(1, 19))
    assert seen and all(published[v] == data for v, data in seen)


def test_s3_settings_take_the_value_given_then_the_aws_variable_then_the_minio_one(monkeypatch):
    for names in S3_ENVIRONMENT.values():
        for name in names:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MINIO_ENDPOINT", "minio:9000")  # MinIO's host:port, read as http
    monkeypatch.setenv("MINIO_ACCESS_KEY", "minio-key")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "aws-key")
    assert s3_settings() == {"endpoint_url": "http://minio:9000", "access_key": "aws-key", "secret_key": None}
    given = s3_settings("https://s3.example.org", "flag-key", "flag-secret")
    assert given == {"endpoint_url": "https://s3.example.org", "access_key": "flag-key", "secret_key": "flag-secret"}
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://not-read:1")  # not one of Heimdall's settings
    monkeypatch.delenv("MINIO_ENDPOINT")
    assert s3_settings()["endpoint_url"] is None
