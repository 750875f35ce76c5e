"""The model store: versioned ONNX models in a local folder or any S3-compatible bucket.

Layout under the store root, per model name:
  ``<name>/blobs/sha256-<hex>.onnx``   the model bytes, named by their sha256 (written first)
  ``<name>/<version>/manifest.json``   the version: sha256, size, the blob it names (``model``), metadata,
                                       created, parent run, and a signature when signed (heimdall.manifest)
The manifest is the commit point and the version claim at once: it is created only if that version has
no manifest yet (S3 ``PutObject`` with ``If-None-Match: *``; in a folder a hard link, which fails when the
name exists), and a publisher that loses the race tries the next number. So two publishers never share a
version, and a reader only ever sees a complete manifest naming bytes that match it. A server that
ignores ``If-None-Match`` is detected and versions are claimed with marker objects instead (see
S3Backend.create). Versions written before blobs existed keep their bytes at ``<name>/<version>/model.onnx``.
Locations: a folder path (default ``<workspace>/models``) or ``s3://bucket/prefix`` with the endpoint and
credentials from arguments, else the environment (`s3_settings`), else the AWS credentials file (path-style
addressing; checksums only when required, which MinIO and SeaweedFS accept).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heimdall.atomic import atomic_write_bytes
from heimdall.errors import ModelStoreError
from heimdall.manifest import MAX_MANIFEST_BYTES, decode_manifest, encode_manifest, integrity_problem, new_manifest
from heimdall.onnx_guard import check_model_size
from heimdall.signing import SigningKey

LEGACY_MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
MAX_PUBLISH_ATTEMPTS = 32
MAX_BACKOFF_S = 0.5  # the longest random wait between two tries of a version claim
CONDITIONAL_WRITE_PROBE = ".heimdall-conditional-write-probe"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_BLOB = re.compile(r"blobs/sha256-[0-9a-f]{64}\.onnx")
log = logging.getLogger(__name__)


class _Backend:
    """Minimal object storage: whole objects by key."""

    description: str

    def put(self, key: str, data: bytes) -> None:
        """Write `key` (replacing it)."""
        raise NotImplementedError

    def create(self, key: str, data: bytes) -> bool:
        """Write `key` only if it does not exist yet (atomically); False when it already does."""
        raise NotImplementedError

    def get(self, key: str, max_bytes: int) -> bytes:
        """The bytes of `key`; ModelStoreError when missing or larger than max_bytes."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        """Whether `key` exists."""
        raise NotImplementedError

    def list(self, prefix: str) -> list[str]:
        """Keys under `prefix`."""
        raise NotImplementedError


def _too_large(where: str, size: int, max_bytes: int) -> ModelStoreError:
    return ModelStoreError(f"{where}: {size} bytes, more than the {max_bytes} expected")


class LocalBackend(_Backend):
    """Objects as files under a local folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.description = str(self.root)

    def put(self, key: str, data: bytes) -> None:
        """Write `key` (replacing it)."""
        atomic_write_bytes(self.root / key, data)

    def create(self, key: str, data: bytes) -> bool:
        """Write `key` only if it does not exist yet (atomically); False when it already does."""
        # written and synced under a temporary name, then hard-linked: link() fails if the name exists,
        # and a reader never sees the file before it is complete
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            return True
        finally:
            os.unlink(tmp)

    def get(self, key: str, max_bytes: int) -> bytes:
        """The bytes of `key`; ModelStoreError when missing or larger than max_bytes."""
        path = self.root / key
        if not path.is_file():
            raise ModelStoreError(f"{path}: not found in the model store")
        if path.stat().st_size > max_bytes:
            raise _too_large(str(path), path.stat().st_size, max_bytes)
        return path.read_bytes()

    def exists(self, key: str) -> bool:
        """Whether `key` exists."""
        return (self.root / key).is_file()

    def list(self, prefix: str) -> list[str]:
        """Keys under `prefix`."""
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")
        )


# Each S3 setting: the value given (a flag) wins, then the AWS variable, then the MinIO variable (docs/DEPLOY.md).
S3_ENVIRONMENT = {
    "endpoint_url": ("AWS_ENDPOINT_URL", "MINIO_ENDPOINT"),
    "access_key": ("AWS_ACCESS_KEY_ID", "MINIO_ACCESS_KEY"),
    "secret_key": ("AWS_SECRET_ACCESS_KEY", "MINIO_SECRET_KEY"),
}


def s3_settings(
    endpoint_url: str | None = None, access_key: str | None = None, secret_key: str | None = None
) -> dict[str, str | None]:
    """The S3 endpoint and credentials: each value given, else its S3_ENVIRONMENT variables in order (None: boto3
    reads the AWS credentials file). An endpoint without a scheme (MinIO's `host:port`) is http."""
    given = {"endpoint_url": endpoint_url, "access_key": access_key, "secret_key": secret_key}
    out = {
        key: given[key] or next((os.environ[v] for v in names if os.environ.get(v)), None)
        for key, names in S3_ENVIRONMENT.items()
    }
    endpoint = out["endpoint_url"]
    if endpoint and "://" not in endpoint:
        out["endpoint_url"] = f"http://{endpoint}"
    return out


class S3Backend(_Backend):
    """Objects in an S3 bucket under a prefix (s3://bucket/prefix)."""

    def __init__(
        self,
        url: str,
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        import boto3
        from botocore.config import Config

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ModelStoreError(f"{url}: expected s3://bucket[/prefix]")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.description = url
        settings = s3_settings(endpoint_url, access_key, secret_key)
        self.client = boto3.client(
            "s3",
            endpoint_url=settings["endpoint_url"],
            aws_access_key_id=settings["access_key"],
            aws_secret_access_key=settings["secret_key"],
            region_name=region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
                retries={"max_attempts": 2},
            ),
        )
        self._conditional_writes: bool | None = None  # found out on the first create()

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _failure(self, what: str, exc: Exception) -> ModelStoreError:
        """The error to report for a failed request, in words."""
        from botocore.exceptions import ClientError

        if not isinstance(exc, ClientError):
            return ModelStoreError(f"{self.description}: {what} failed: {exc}")
        err = exc.response.get("Error", {})
        code = err.get("Code", "?")
        hint = {
            "InvalidAccessKeyId": "the access key is not known to the server",
            "SignatureDoesNotMatch": "wrong secret key",
            "AccessDenied": "the credentials may not do this",
            "NoSuchBucket": f"bucket {self.bucket!r} does not exist",
        }.get(code, err.get("Message", ""))
        return ModelStoreError(f"{self.description}: {what} failed: {code} ({hint})")

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._failure(what, exc) from None

    @staticmethod
    def _code(exc: Exception) -> tuple[str, int]:
        """(error code, HTTP status) of a failed request."""
        response = getattr(exc, "response", {})
        return response.get("Error", {}).get("Code", ""), response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)

    def put(self, key: str, data: bytes) -> None:
        """Write `key` (replacing it)."""
        self._call(f"upload of {key}", self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data)

    def create(self, key: str, data: bytes) -> bool:
        """Create `key` unless it exists: a conditional PutObject (If-None-Match: *).

        On a server that ignores the condition (found out once by a probe) the claim is made with marker
        objects instead: each publisher writes its own `<key>.claims/<random>` and then lists them; it
        wins only if it sees no other claim, and only the winner writes `key`. With the read-after-write
        and list-after-write consistency of S3, MinIO and SeaweedFS two publishers cannot both win: the
        one that lists second sees the other's claim. Both may lose; each then tries the next version."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self._conditional_writes is None:
            self._conditional_writes = self._probe_conditional_writes()
        if not self._conditional_writes:
            return self._create_by_claim(key, data)
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
            return True
        except ClientError as exc:
            # 412: the key exists; 409: another conditional write of it is in flight (AWS)
            if self._code(exc)[0] in ("PreconditionFailed", "ConditionalRequestConflict") or self._code(exc)[1] in (
                409,
                412,
            ):
                return False
            raise self._failure(f"upload of {key}", exc) from None
        except BotoCoreError as exc:
            raise self._failure(f"upload of {key}", exc) from None

    def _probe_conditional_writes(self) -> bool:
        """Whether the server refuses a conditional PutObject on a key that exists (a fixed probe object)."""
        from botocore.exceptions import ClientError

        probe = self._key(CONDITIONAL_WRITE_PROBE)
        self._call(
            "upload of the conditional-write probe",
            self.client.put_object,
            Bucket=self.bucket,
            Key=probe,
            Body=b"heimdall: does this server honour If-None-Match?",
        )
        try:
            self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"overwritten", IfNoneMatch="*")
        except ClientError as exc:
            code, status = self._code(exc)
            if code == "PreconditionFailed" or status == 412:
                return True
            if code not in ("NotImplemented", "InvalidArgument", "InvalidRequest") and status not in (400, 501):
                raise self._failure("conditional-write probe", exc) from None
        log.warning(
            "heimdall: warning: %s does not honour If-None-Match; versions are claimed with marker "
            "objects (safe on a store with read-after-write consistency)",
            self.description,
        )
        return False

    def _create_by_claim(self, key: str, data: bytes) -> bool:
        claims = f"{key}.claims/"
        mine = f"{claims}{secrets.token_hex(16)}"
        self.put(mine, b"")
        if [k for k in self.list(claims) if k != mine] or self.exists(key):
            return False
        self.put(key, data)
        return True

    def get(self, key: str, max_bytes: int) -> bytes:
        """The bytes of `key`; ModelStoreError when missing or larger than max_bytes."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if self._code(exc)[0] in ("NoSuchKey", "404"):
                raise ModelStoreError(f"{self.description}/{key}: not found in the model store") from None
            raise self._failure(f"download of {key}", exc) from None
        except BotoCoreError as exc:
            raise self._failure(f"download of {key}", exc) from None
        with obj["Body"] as body:
            if obj.get("ContentLength", 0) > max_bytes:
                raise _too_large(f"{self.description}/{key}", obj["ContentLength"], max_bytes)
            data = body.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise _too_large(f"{self.description}/{key}", len(data), max_bytes)
        return data

    def exists(self, key: str) -> bool:
        """Whether `key` exists."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if self._code(exc)[0] in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._failure(f"lookup of {key}", exc) from None
        except BotoCoreError as exc:
            raise self._failure(f"lookup of {key}", exc) from None

    def list(self, prefix: str) -> list[str]:
        """Keys under `prefix`."""
        keys, token = [], None
        while True:
            kwargs = {"Bucket": self.bucket, "Prefix": self._key(prefix)}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("listing", self.client.list_objects_v2, **kwargs)
            strip = len(self.prefix) + 1 if self.prefix else 0
            keys += [o["Key"][strip:] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return sorted(keys)
            token = page["NextContinuationToken"]


@dataclass(frozen=True)
class StoredModel:
    """One version of a model in the store: its manifest and the ONNX bytes it names."""

    name: str
    version: int
    manifest: dict[str, Any]
    data: bytes


class ModelStore:
    """Versioned models on a backend; see the module docstring for the layout and the commit rule."""

    def __init__(self, backend: _Backend) -> None:
        self.backend = backend

    @classmethod
    def open(cls, location: str | Path, **s3_options: Any) -> ModelStore:
        """The store at a folder or s3://bucket/prefix (s3_options: endpoint, region, credentials)."""
        loc = str(location)
        if loc.startswith("s3://"):
            return cls(S3Backend(loc, **s3_options))
        return cls(LocalBackend(loc))

    def versions(self, name: str) -> list[int]:
        """Committed versions (those with a manifest), ascending."""
        out = set()
        for key in self.backend.list(f"{_checked(name)}/"):
            parts = key.split("/")
            if len(parts) == 3 and parts[2] == MANIFEST_FILE and parts[1].isdigit():
                out.add(int(parts[1]))
        return sorted(out)

    def publish(
        self,
        name: str,
        model_bytes: bytes,
        metadata: dict[str, Any],
        parent_run: str | None = None,
        signer: SigningKey | None = None,
    ) -> int:
        """Store a model as the next free version (signed by `signer` if given) and return the version.

        The bytes go first, under their sha256; the manifest naming them then claims a version number,
        the next one up after each conflict with a concurrent publisher. After a conflict the publisher waits a
        random time (growing with each try, at most MAX_BACKOFF_S) so that publishers claiming by marker objects,
        who may all lose the same version at once, fall out of step."""
        version = self._next_version(name)  # first: a listing fails clearly on a missing bucket, a PUT may create it
        blob = f"blobs/sha256-{hashlib.sha256(model_bytes).hexdigest()}.onnx"
        self.backend.put(f"{name}/{blob}", model_bytes)
        for attempt in range(MAX_PUBLISH_ATTEMPTS):
            manifest = new_manifest(name, version, model_bytes, parent_run, metadata=metadata, model=blob)
            if signer is not None:
                manifest = signer.sign(manifest)
            if self.backend.create(f"{name}/{version}/{MANIFEST_FILE}", encode_manifest(manifest)):
                return version
            if attempt + 1 < MAX_PUBLISH_ATTEMPTS:
                time.sleep(secrets.randbelow(1000) / 1000 * min(MAX_BACKOFF_S, 0.01 * 2**attempt))
                version = max(version + 1, self._next_version(name))
        raise ModelStoreError(
            f"{self.backend.description}: no free version of {name} after {MAX_PUBLISH_ATTEMPTS} "
            "tries (too many concurrent publishers); the bytes are stored, publish again"
        )

    def _next_version(self, name: str) -> int:
        return (self.versions(name) or [0])[-1] + 1

    def fetch(self, name: str, version: int | None = None) -> StoredModel:
        """A committed version (latest by default), its bytes verified against the manifest's sha256 and size."""
        where = self.backend.description
        if version is None:
            versions = self.versions(name)
            if not versions:
                raise ModelStoreError(f"{where}: no committed version of model {name!r}")
            version = versions[-1]
        manifest_key = f"{_checked(name)}/{version}/{MANIFEST_FILE}"
        if not self.backend.exists(manifest_key):
            raise ModelStoreError(f"{where}: {name} version {version} has no manifest (not committed)")
        try:
            manifest = decode_manifest(self.backend.get(manifest_key, MAX_MANIFEST_BYTES))
        except ValueError as exc:
            raise ModelStoreError(f"{where}/{manifest_key}: manifest: {exc}") from None
        model_key = f"{name}/{manifest.get('model', f'{version}/{LEGACY_MODEL_FILE}')}"
        if "model" in manifest and not (isinstance(manifest["model"], str) and _BLOB.fullmatch(manifest["model"])):
            raise ModelStoreError(
                f"{where}/{manifest_key}: field 'model' is {str(manifest['model'])!r:.100}; "
                "expected blobs/sha256-<64 hex digits>.onnx"
            )
        check_model_size(manifest.get("size_bytes"), f"{where}/{manifest_key}: field 'size_bytes'", ModelStoreError)
        data = self.backend.get(model_key, manifest["size_bytes"])
        problem = integrity_problem(manifest, data)
        if problem:
            raise ModelStoreError(f"{where}/{model_key}: {problem}; refusing a tampered or partial model")
        return StoredModel(name=name, version=version, manifest=manifest, data=data)


def _checked(name: str) -> str:
    """A model name that is safe as a key prefix and a folder name."""
    if not _NAME.fullmatch(name):
        raise ModelStoreError(
            f"model name {name!r:.140}: expected 1–128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name
