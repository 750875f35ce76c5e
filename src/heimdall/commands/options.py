"""Flags that several commands share, turned into what the library takes (S3 options, the model source)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from heimdall.serve.runtime import ModelSource


# Each S3 setting: its flag wins, then the AWS variable (read by boto3 itself), then the MinIO variable.
MINIO_ENV = {
    "endpoint_url": ("AWS_ENDPOINT_URL", "MINIO_ENDPOINT"),
    "access_key": ("AWS_ACCESS_KEY_ID", "MINIO_ACCESS_KEY"),
    "secret_key": ("AWS_SECRET_ACCESS_KEY", "MINIO_SECRET_KEY"),
}


def s3_options(args: argparse.Namespace) -> dict[str, str | None]:
    """The S3 endpoint and credentials: flags, else $AWS_* (None here: boto3 reads them, or the credentials
    file), else $MINIO_ENDPOINT / $MINIO_ACCESS_KEY / $MINIO_SECRET_KEY (an endpoint without a scheme is http)."""
    if args.s3_secret_key:
        print(
            "heimdall: warning: --s3-secret-key is visible to other users of this machine (process list, shell "
            "history); prefer $AWS_SECRET_ACCESS_KEY or the AWS credentials file",
            file=sys.stderr,
        )
    options = {"endpoint_url": args.s3_endpoint_url, "access_key": args.s3_access_key, "secret_key": args.s3_secret_key}
    for key, (aws, minio) in MINIO_ENV.items():
        if options[key] is None and not os.environ.get(aws) and os.environ.get(minio):
            options[key] = os.environ[minio]
    endpoint = options["endpoint_url"]
    if endpoint and "://" not in endpoint:
        options["endpoint_url"] = f"http://{endpoint}"
    return options


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
