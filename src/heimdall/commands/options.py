"""Flags that several commands share (S3 options, the model source, the signing key) and what they turn into for
the library."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from heimdall.commands.flags import add_flag
from heimdall.option_field import parse_sha256
from heimdall.release import CHAMPION, MODEL_NAME

if TYPE_CHECKING:
    from heimdall.serve.runtime import ModelSource


def add_s3_flags(p: argparse.ArgumentParser) -> None:
    """--s3-endpoint-url, --s3-access-key, --s3-secret-key (read by `s3_options`)."""
    add_flag(p, "--s3-endpoint-url", help="S3 endpoint (MinIO, SeaweedFS); default AWS or $AWS_ENDPOINT_URL")
    add_flag(p, "--s3-access-key", help="default $AWS_ACCESS_KEY_ID or the AWS credentials file")
    add_flag(
        p,
        "--s3-secret-key",
        help="visible to other users in the process list: prefer $AWS_SECRET_ACCESS_KEY or "
        "the AWS credentials file ($AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials)",
    )


def add_signing_key_flag(p: argparse.ArgumentParser) -> None:
    """--signing-key FILE: the key that signs the manifests of the models a command writes."""
    add_flag(
        p,
        "--signing-key",
        metavar="FILE",
        help="sign the manifests with this ed25519 private key (PEM) or HMAC key file "
        "(default $HEIMDALL_SIGNING_KEY_FILE; none: unsigned)",
    )


def add_model_source_flags(p: argparse.ArgumentParser) -> None:
    """Where `serve` and `predict` take the model from (default: the registry's champion), and how it is trusted
    (read by `model_source`, with the command's --threads)."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model-file", dest="model_file", help="an exported model.onnx")
    src.add_argument("--store", help="model store (folder or s3://bucket/prefix); latest version unless --version")
    p.add_argument("--model_file", dest="model_file", help=argparse.SUPPRESS, default=argparse.SUPPRESS)
    add_flag(p, "--version", type=int, help="version in the model store")
    add_flag(
        p,
        "--tracking-uri",
        "--registry-uri",
        "--registry_uri",
        help="MLflow tracking URI of the registry (default $MLFLOW_TRACKING_URI, else the workspace's)",
    )
    add_flag(p, "--name", default=MODEL_NAME, help=f"model name in the store / registry (default {MODEL_NAME})")
    add_flag(p, "--alias", default=CHAMPION, help=f"registry alias (default {CHAMPION})")
    add_s3_flags(p)
    add_flag(
        p,
        "--verify-key",
        metavar="FILE",
        help="refuse models whose manifest is not signed by this ed25519 public key (PEM) or HMAC key "
        "file (default $HEIMDALL_VERIFY_KEY_FILE)",
    )
    add_flag(
        p,
        "--model-sha256",
        type=parse_sha256,
        metavar="HEX",
        help="refuse any model whose bytes do not have this sha256",
    )


def s3_options(args: argparse.Namespace) -> dict[str, str | None]:
    """The S3 endpoint and credentials the flags give (the model store takes the rest from the environment:
    heimdall.release.model_store.s3_settings)."""
    if args.s3_secret_key:
        print(
            "heimdall: warning: --s3-secret-key is visible to other users of this machine (process list, shell "
            "history); prefer $AWS_SECRET_ACCESS_KEY or the AWS credentials file",
            file=sys.stderr,
        )
    return {"endpoint_url": args.s3_endpoint_url, "access_key": args.s3_access_key, "secret_key": args.s3_secret_key}


def model_source(args: argparse.Namespace) -> ModelSource:
    """The model source of `serve` and `predict`, with the verify key and pinned sha256 they were given."""
    from heimdall.manifest import TrustPolicy
    from heimdall.serve.runtime import ModelSource
    from heimdall.signing import verify_key

    return ModelSource(
        file=args.model_file,
        store=args.store,
        name=args.name,
        version=args.version,
        registry_uri=args.tracking_uri,
        alias=args.alias,
        threads=args.threads,
        s3_options=s3_options(args),
        trust=TrustPolicy(verify_key=verify_key(args.verify_key), sha256=args.model_sha256),
    )
