"""Signed manifests: who vouches for a model. Keys come from files named by a flag or the environment.

A signature covers the whole manifest (its canonical JSON without the signature), and the manifest holds
the model's sha256 and size, so it covers the model bytes. Two kinds of key:
  ed25519      `export`/`train` hold the private key (PEM, PKCS#8); `serve`/`predict` hold only the public
               key (PEM), which cannot sign. The recommended kind.
  hmac-sha256  one shared secret (any file of at least 32 bytes that is not PEM, surrounding whitespace
               ignored); whoever can verify can also sign.
Keys are never stored with a model; the signature names its key by `key_id` (16 hex digits of a sha256).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from heimdall.errors import ModelLoadError, SigningKeyError

SIGNING_KEY_ENV = "HEIMDALL_SIGNING_KEY_FILE"
VERIFY_KEY_ENV = "HEIMDALL_VERIFY_KEY_FILE"
ED25519 = "ed25519"
HMAC_SHA256 = "hmac-sha256"
MIN_HMAC_KEY_BYTES = 32
MAX_KEY_FILE_BYTES = 64 * 1024
SIGNATURE_FIELD = "signature"
_DOMAIN = b"heimdall-manifest-signature/1\n"  # a signature made for something else never verifies here


def signed_payload(manifest: dict[str, Any]) -> bytes:
    """The bytes a signature covers: the manifest without its signature, as canonical JSON."""
    body = {k: v for k, v in manifest.items() if k != SIGNATURE_FIELD}
    return _DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _key_id(material: bytes) -> str:
    return hashlib.sha256(b"heimdall-key-id\n" + material).hexdigest()[:16]


def _read_key_file(path: str | Path, what: str) -> bytes:
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_KEY_FILE_BYTES:
            raise SigningKeyError(f"{p}: {size} bytes is too large for a {what} (at most {MAX_KEY_FILE_BYTES})")
        return p.read_bytes().strip()
    except OSError as exc:
        raise SigningKeyError(f"{p}: cannot read the {what}: {exc.strerror or exc}") from None


def _load_key(path: str | Path, role: str) -> tuple[str, str, Any]:
    """(algorithm, key_id, key) from a key file; role "signing" takes a private key, "verify" a public one."""
    raw = _read_key_file(path, f"{role} key")
    if not raw.startswith(b"-----BEGIN"):
        if len(raw) < MIN_HMAC_KEY_BYTES:
            raise SigningKeyError(
                f"{path}: an HMAC key needs at least {MIN_HMAC_KEY_BYTES} bytes, the file has "
                f"{len(raw)} (make one with: openssl rand -hex 32 > KEY)"
            )
        return HMAC_SHA256, _key_id(raw), raw
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    signing = role == "signing"
    if (b"PUBLIC KEY" if signing else b"PRIVATE KEY") in raw.splitlines()[0]:
        raise SigningKeyError(
            f"{path}: a public key; signing needs the ed25519 private key"
            if signing
            else f"{path}: a private key; give the server only the public key "
            "(openssl pkey -in PRIVATE.pem -pubout -out PUBLIC.pem)"
        )
    try:
        key = (
            serialization.load_pem_private_key(raw, password=None)
            if signing
            else serialization.load_pem_public_key(raw)
        )
    except (TypeError, ValueError) as exc:
        kind = "private key without a password" if signing else "public key"
        raise SigningKeyError(f"{path}: not a PEM {kind} ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey if signing else Ed25519PublicKey):
        raise SigningKeyError(f"{path}: a {type(key).__name__.removeprefix('_')}; expected an ed25519 key")
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return ED25519, _key_id(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)), key


@dataclass(frozen=True)
class _Key:
    algorithm: str
    key_id: str
    _key: Any = field(repr=False)  # the ed25519 private (signing) or public (verify) key, or the HMAC secret
    role: ClassVar[str]

    @classmethod
    def from_file(cls, path: str | Path) -> Self:
        return cls(*_load_key(path, cls.role))


class SigningKey(_Key):
    """A key that signs manifests: an ed25519 private key or an HMAC secret."""

    role = "signing"

    def sign(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """A copy of `manifest` with its signature."""
        payload = signed_payload(manifest)
        if self.algorithm == ED25519:
            value = self._key.sign(payload)
        else:
            value = hmac.new(self._key, payload, hashlib.sha256).digest()
        return {
            **manifest,
            SIGNATURE_FIELD: {
                "algorithm": self.algorithm,
                "key_id": self.key_id,
                "value": base64.b64encode(value).decode(),
            },
        }


class VerifyKey(_Key):
    """A key that checks signatures: an ed25519 public key or the HMAC secret."""

    role = "verify"

    def verify(self, manifest: dict[str, Any], where: str) -> None:
        """Raise ModelLoadError unless `manifest` carries a valid signature by this key."""
        sig = manifest.get(SIGNATURE_FIELD)
        if sig is None:
            raise ModelLoadError(
                f"{where}: the manifest is not signed; a verify key was given, so unsigned models are refused"
            )
        if not isinstance(sig, dict) or not all(isinstance(sig.get(k), str) for k in ("algorithm", "key_id", "value")):
            raise ModelLoadError(f"{where}: manifest field 'signature': expected algorithm, key_id and value strings")
        if sig["algorithm"] != self.algorithm or sig["key_id"] != self.key_id:
            raise ModelLoadError(
                f"{where}: signed with {sig['algorithm']:.20} key {sig['key_id']:.20}, not with the "
                f"verify key ({self.algorithm} key {self.key_id})"
            )
        try:
            value = base64.b64decode(sig["value"], validate=True)
        except (binascii.Error, ValueError):
            value = b""
        payload = signed_payload(manifest)
        if self.algorithm == ED25519:
            from cryptography.exceptions import InvalidSignature

            try:
                self._key.verify(value, payload)
                return
            except InvalidSignature:
                pass
        elif hmac.compare_digest(value, hmac.new(self._key, payload, hashlib.sha256).digest()):
            return
        raise ModelLoadError(
            f"{where}: bad signature: the manifest was changed after it was signed "
            f"(or the signature is not {self.algorithm} key {self.key_id}'s)"
        )


def signing_key(path: str | None) -> SigningKey | None:
    """The signing key from `path`, else from the file named by $HEIMDALL_SIGNING_KEY_FILE, else None."""
    path = path or os.environ.get(SIGNING_KEY_ENV)
    return SigningKey.from_file(path) if path else None


def verify_key(path: str | None) -> VerifyKey | None:
    """The verify key from `path`, else from the file named by $HEIMDALL_VERIFY_KEY_FILE, else None."""
    path = path or os.environ.get(VERIFY_KEY_ENV)
    return VerifyKey.from_file(path) if path else None
