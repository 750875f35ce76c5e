"""The model store: versioned ONNX models in a local folder or any S3-compatible bucket.

Layout under the store root: ``<name>/<version>/model.onnx`` and ``<name>/<version>/manifest.json``.
The manifest (sha256, size, metadata, created, parent run) is written last and is the commit point: a
version exists only when its manifest does, and a reader verifies the model's sha256 against it.
Locations: a folder path (default ``<workspace>/models``) or ``s3://bucket/prefix`` with the endpoint and
credentials from arguments or the usual AWS environment variables (path-style addressing; checksums only
when required, which MinIO and SeaweedFS accept).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heimdall.atomic import atomic_write_bytes
from heimdall.errors import HeimdallError

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"


class ModelStoreError(HeimdallError):
    """The model store cannot be reached, refuses the request, or holds an inconsistent model."""


class _Backend:
    """Minimal object storage: whole objects by key."""

    description: str

    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...


class LocalBackend(_Backend):
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.description = str(self.root)

    def put(self, key: str, data: bytes) -> None:
        atomic_write_bytes(self.root / key, data)

    def get(self, key: str) -> bytes:
        path = self.root / key
        if not path.is_file():
            raise ModelStoreError(f"{path}: not found in the model store")
        return path.read_bytes()

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file() and
                      not p.name.startswith("."))


class S3Backend(_Backend):
    def __init__(self, url: str, endpoint_url: str | None = None, access_key: str | None = None,
                 secret_key: str | None = None, region: str | None = None, timeout_s: float = 10.0):
        import boto3
        from botocore.config import Config

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ModelStoreError(f"{url}: expected s3://bucket[/prefix]")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.description = url
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT_URL"),
            aws_access_key_id=access_key or os.environ.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY"),
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

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = err.get("Code", "?")
            hint = {
                "InvalidAccessKeyId": "the access key is not known to the server",
                "SignatureDoesNotMatch": "wrong secret key",
                "AccessDenied": "the credentials may not do this",
                "NoSuchBucket": f"bucket {self.bucket!r} does not exist",
            }.get(code, err.get("Message", ""))
            raise ModelStoreError(f"{self.description}: {what} failed: {code} ({hint})") from None
        except BotoCoreError as exc:
            raise ModelStoreError(f"{self.description}: {what} failed: {exc}") from None

    def put(self, key: str, data: bytes) -> None:
        self._call(f"upload of {key}", self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data)

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ModelStoreError(f"{self.description}/{key}: not found in the model store") from None
            return self._call(f"download of {key}", self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        return obj["Body"].read()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            return self._call(f"lookup of {key}", self.client.head_object, Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str) -> list[str]:
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
    name: str
    version: int
    manifest: dict[str, Any]
    data: bytes


class ModelStore:
    """Versioned models on a backend; see the module docstring for the layout and the commit rule."""

    def __init__(self, backend: _Backend):
        self.backend = backend

    @classmethod
    def open(cls, location: str | Path, **s3_options: Any) -> "ModelStore":
        loc = str(location)
        if loc.startswith("s3://"):
            return cls(S3Backend(loc, **s3_options))
        return cls(LocalBackend(loc))

    def versions(self, name: str) -> list[int]:
        """Committed versions (those with a manifest), ascending."""
        out = set()
        for key in self.backend.list(f"{name}/"):
            parts = key.split("/")
            if len(parts) == 3 and parts[2] == MANIFEST_FILE and parts[1].isdigit():
                out.add(int(parts[1]))
        return sorted(out)

    def publish(self, name: str, model_bytes: bytes, metadata: dict[str, Any], parent_run: str | None = None) -> int:
        """Upload a model as the next version; the manifest goes last. Returns the version."""
        version = (self.versions(name) or [0])[-1] + 1
        digest = hashlib.sha256(model_bytes).hexdigest()
        self.backend.put(f"{name}/{version}/{MODEL_FILE}", model_bytes)
        manifest = {
            "name": name,
            "version": version,
            "sha256": digest,
            "size_bytes": len(model_bytes),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "parent_run": parent_run,
            "metadata": metadata,
        }
        self.backend.put(f"{name}/{version}/{MANIFEST_FILE}", json.dumps(manifest, indent=2).encode())
        return version

    def fetch(self, name: str, version: int | None = None) -> StoredModel:
        """A committed version (latest by default), its bytes verified against the manifest's sha256."""
        if version is None:
            versions = self.versions(name)
            if not versions:
                raise ModelStoreError(f"{self.backend.description}: no committed version of model {name!r}")
            version = versions[-1]
        manifest_key = f"{name}/{version}/{MANIFEST_FILE}"
        if not self.backend.exists(manifest_key):
            raise ModelStoreError(
                f"{self.backend.description}: {name} version {version} has no manifest (not committed)")
        try:
            manifest = json.loads(self.backend.get(manifest_key))
        except json.JSONDecodeError:
            raise ModelStoreError(f"{self.backend.description}/{manifest_key}: manifest is not valid JSON") from None
        data = self.backend.get(f"{name}/{version}/{MODEL_FILE}")
        digest = hashlib.sha256(data).hexdigest()
        if digest != manifest.get("sha256") or len(data) != manifest.get("size_bytes"):
            raise ModelStoreError(
                f"{self.backend.description}/{name}/{version}/{MODEL_FILE}: sha256 {digest[:16]}… ({len(data)} bytes) "
                f"does not match the manifest ({str(manifest.get('sha256'))[:16]}…, {manifest.get('size_bytes')} "
                "bytes); refusing a tampered or partial model"
            )
        return StoredModel(name=name, version=version, manifest=manifest, data=data)
