"""Flags that several commands share, turned into what the library takes (S3 options, the model source)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from heimdall.serve.runtime import ModelSource


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
