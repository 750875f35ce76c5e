"""The manifest of a published model, and the checks a reader makes before it trusts the bytes.

A manifest says which bytes a model is: ``format``, ``name``, ``version`` (null beside a plain file),
``sha256``, ``size_bytes``, ``created``, ``parent_run``, and where it applies ``metadata`` (the model's)
and ``model`` (the store object holding the bytes); optionally a ``signature`` (heimdall.signing) over
all of it. It lives in the model store (``<name>/<version>/manifest.json``), in the MLflow registry (the
model version's tag MANIFEST_TAG) and beside an exported file (``<file>.manifest.json``).

A reader checks, in this order: the bytes against the manifest's sha256 and size (integrity), the
manifest's name and version against where it was found (no replay under another version), a pinned
sha256, and the signature when given a verify key (authenticity). Without a key or a pin it warns that
authenticity is not checked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heimdall.errors import ModelLoadError
from heimdall.signing import VerifyKey

MANIFEST_FORMAT = "heimdall-manifest/1"
MANIFEST_TAG = "heimdall.manifest"
MAX_MANIFEST_BYTES = 1024 * 1024
log = logging.getLogger(__name__)


def new_manifest(
    name: str, version: int | str | None, data: bytes, parent_run: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The manifest of `data` as model `name` `version` (extra fields, e.g. metadata, added as given)."""
    return {
        "format": MANIFEST_FORMAT,
        "name": name,
        "version": version,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "parent_run": parent_run,
        **extra,
    }


def encode_manifest(manifest: dict[str, Any]) -> bytes:
    """The manifest's bytes as stored and signed (indented JSON)."""
    return json.dumps(manifest, indent=2).encode()


def decode_manifest(raw: bytes | str) -> dict[str, Any]:
    """A manifest from its JSON; ValueError says what is wrong (size, syntax, not an object)."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ValueError(f"{len(raw)} bytes, more than the limit of {MAX_MANIFEST_BYTES}")
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"expected a JSON object, found {type(manifest).__name__}")
    return manifest


def sidecar_path(model_file: str | Path) -> Path:
    """Where the manifest of an exported file lives: ``<file>.manifest.json``."""
    p = Path(model_file)
    return p.with_name(p.name + ".manifest.json")


def integrity_problem(manifest: dict[str, Any], data: bytes) -> str | None:
    """Why `data` is not the model the manifest describes (sha256 and size), or None when it is."""
    digest = hashlib.sha256(data).hexdigest()
    if digest == manifest.get("sha256") and len(data) == manifest.get("size_bytes"):
        return None
    return (
        f"sha256 {digest[:16]}… ({len(data)} bytes) does not match the manifest "
        f"({str(manifest.get('sha256'))[:16]}…, {str(manifest.get('size_bytes'))[:20]} bytes)"
    )


@dataclass(frozen=True)
class TrustPolicy:
    """What a reader requires beyond integrity: a pinned sha256 and/or a signature by `verify_key`."""

    verify_key: VerifyKey | None = None
    sha256: str | None = None  # pinned: 64 lowercase hex digits

    def check(
        self,
        data: bytes,
        manifest: dict[str, Any] | None,
        where: str,
        name: str | None = None,
        version: int | str | None = None,
    ) -> None:
        """Raise ModelLoadError unless `data` passes every check; `name`/`version` bind the manifest to its place."""
        if manifest is not None:
            problem = integrity_problem(manifest, data)
            if problem:
                raise ModelLoadError(f"{where}: {problem}; refusing a tampered or partial model")
            for field, expected in (("name", name), ("version", version)):
                if expected is not None and str(manifest.get(field)) != str(expected):
                    raise ModelLoadError(
                        f"{where}: the manifest is for {field} {str(manifest.get(field))!r:.80}, "
                        f"not {str(expected)!r}; refusing a model moved from elsewhere"
                    )
        if self.sha256 is not None and hashlib.sha256(data).hexdigest() != self.sha256:
            raise ModelLoadError(f"{where}: sha256 {hashlib.sha256(data).hexdigest()} is not the pinned {self.sha256}")
        if self.verify_key is not None:
            if manifest is None:
                raise ModelLoadError(
                    f"{where}: no manifest, so no signature; a verify key was given, so unsigned models are refused"
                )
            self.verify_key.verify(manifest, where)
        elif self.sha256 is None:
            log.warning(
                "heimdall: warning: %s: authenticity is not checked (no verify key and no pinned sha256)%s",
                where,
                "" if manifest is not None else "; no manifest, so integrity is not checked either",
            )
