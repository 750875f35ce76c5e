"""Signed manifests and the reader's checks: integrity, binding, pinning, signatures and key files."""

import hashlib
import logging

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from heimdall.errors import ModelLoadError, SigningKeyError
from heimdall.manifest import TrustPolicy, new_manifest
from heimdall.signing import SigningKey, VerifyKey, signing_key, verify_key

MODEL = b"onnx-model-bytes" * 100


def write_ed25519(folder, stem="k"):
    """(private PEM path, public PEM path) of a new ed25519 key pair."""
    private = ed25519.Ed25519PrivateKey.generate()
    priv, pub = folder / f"{stem}.pem", folder / f"{stem}.pub.pem"
    priv.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    pub.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return priv, pub


@pytest.fixture
def keys(tmp_path):
    priv, pub = write_ed25519(tmp_path)
    hmac_file = tmp_path / "hmac.key"
    hmac_file.write_text("9f" * 32 + "\n")
    return {
        "ed25519": (SigningKey.from_file(priv), VerifyKey.from_file(pub)),
        "hmac-sha256": (SigningKey.from_file(hmac_file), VerifyKey.from_file(hmac_file)),
    }


@pytest.mark.parametrize("kind", ["ed25519", "hmac-sha256"])
def test_sign_and_verify(keys, kind):
    signer, verifier = keys[kind]
    signed = signer.sign(new_manifest("loc", 3, MODEL, "run-1", metadata={"format": "heimdall-onnx/1"}))
    assert signed["signature"]["algorithm"] == kind and signed["signature"]["key_id"] == verifier.key_id
    TrustPolicy(verify_key=verifier).check(MODEL, signed, "store v3", "loc", 3)
    # any change to what the manifest says breaks the signature
    for field, value in [("sha256", hashlib.sha256(b"other").hexdigest()), ("version", 4), ("metadata", {})]:
        with pytest.raises(ModelLoadError, match="bad signature"):
            verifier.verify({**signed, field: value}, "store v3")
    with pytest.raises(ModelLoadError, match="bad signature"):
        verifier.verify({**signed, "signature": {**signed["signature"], "value": "AAAA"}}, "store v3")


def test_unsigned_foreign_and_malformed_signatures_are_refused(keys, tmp_path):
    signer, verifier = keys["ed25519"]
    manifest = new_manifest("loc", 1, MODEL)
    with pytest.raises(ModelLoadError, match="store v1: the manifest is not signed"):
        TrustPolicy(verify_key=verifier).check(MODEL, manifest, "store v1")
    with pytest.raises(ModelLoadError, match="no manifest, so no signature"):
        TrustPolicy(verify_key=verifier).check(MODEL, None, "model.onnx")
    other = SigningKey.from_file(write_ed25519(tmp_path, "other")[0])
    with pytest.raises(ModelLoadError, match=f"signed with ed25519 key {other.key_id}, not with the verify key"):
        verifier.verify(other.sign(manifest), "store v1")
    hmac_signed = keys["hmac-sha256"][0].sign(manifest)
    with pytest.raises(ModelLoadError, match="signed with hmac-sha256 key"):
        verifier.verify(hmac_signed, "store v1")
    with pytest.raises(ModelLoadError, match="field 'signature'"):
        verifier.verify({**manifest, "signature": "yes"}, "store v1")


def test_integrity_binding_and_pinning():
    manifest = new_manifest("loc", 2, MODEL)
    TrustPolicy(sha256=hashlib.sha256(MODEL).hexdigest()).check(MODEL, manifest, "store v2", "loc", 2)
    with pytest.raises(ModelLoadError, match="does not match the manifest.*tampered or partial"):
        TrustPolicy().check(MODEL + b"x", manifest, "store v2")
    with pytest.raises(ModelLoadError, match="manifest is for version '2', not '5'"):
        TrustPolicy().check(MODEL, manifest, "store v5", "loc", 5)
    with pytest.raises(ModelLoadError, match="manifest is for name 'loc', not 'other'"):
        TrustPolicy().check(MODEL, manifest, "registry other v2", "other", 2)
    with pytest.raises(ModelLoadError, match="is not the pinned " + "0" * 64):
        TrustPolicy(sha256="0" * 64).check(MODEL, None, "model.onnx")


def test_no_key_no_pin_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="heimdall.manifest"):
        TrustPolicy().check(MODEL, new_manifest("loc", 1, MODEL), "store v1")
        TrustPolicy().check(MODEL, None, "model.onnx")
    assert "store v1: authenticity is not checked" in caplog.text
    assert "model.onnx: authenticity is not checked" in caplog.text and "integrity is not checked either" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="heimdall.manifest"):
        TrustPolicy(sha256=hashlib.sha256(MODEL).hexdigest()).check(MODEL, None, "model.onnx")
    assert caplog.text == ""


def test_key_files_are_checked(tmp_path, monkeypatch):
    priv, pub = write_ed25519(tmp_path)
    with pytest.raises(SigningKeyError, match="a private key; give the server only the public key"):
        VerifyKey.from_file(priv)
    with pytest.raises(SigningKeyError, match="a public key; signing needs the ed25519 private key"):
        SigningKey.from_file(pub)
    short = tmp_path / "short.key"
    short.write_text("secret")
    with pytest.raises(SigningKeyError, match="short.key: an HMAC key needs at least 32 bytes, the file has 6"):
        SigningKey.from_file(short)
    rsa_file = tmp_path / "rsa.pem"
    rsa_file.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(SigningKeyError, match="RSAPrivateKey; expected an ed25519 key"):
        SigningKey.from_file(rsa_file)
    with pytest.raises(SigningKeyError, match="missing.pem: cannot read the verify key"):
        VerifyKey.from_file(tmp_path / "missing.pem")
    garbled = tmp_path / "garbled.pem"
    garbled.write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    with pytest.raises(SigningKeyError, match="garbled.pem: not a PEM public key"):
        VerifyKey.from_file(garbled)
    # flag first, then the environment, else no key
    monkeypatch.delenv("HEIMDALL_SIGNING_KEY_FILE", raising=False)
    monkeypatch.delenv("HEIMDALL_VERIFY_KEY_FILE", raising=False)
    assert signing_key(None) is None and verify_key(None) is None
    monkeypatch.setenv("HEIMDALL_SIGNING_KEY_FILE", str(priv))
    monkeypatch.setenv("HEIMDALL_VERIFY_KEY_FILE", str(pub))
    assert signing_key(None).key_id == verify_key(None).key_id == VerifyKey.from_file(pub).key_id
    hmac_file = tmp_path / "hmac.key"
    hmac_file.write_text("secret-" * 8)
    assert "secret-" not in repr(SigningKey.from_file(hmac_file)) + repr(VerifyKey.from_file(hmac_file))
    with pytest.raises(SigningKeyError, match="short.key"):
        signing_key(str(short))
