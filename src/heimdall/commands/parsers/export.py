"""`heimdall export`'s flags."""

from __future__ import annotations

import argparse

from heimdall.commands.flags import add_flag
from heimdall.commands.options import add_s3_flags, add_signing_key_flag
from heimdall.release import MODEL_NAME


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `export` to the subcommands `sub`."""
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX, store it and register it in MLflow",
        description="Export a checkpoint to one validated ONNX file, publish it to the model store "
        f"(local folder or s3://bucket/prefix) and register it as {MODEL_NAME}.",
    )
    add_flag(p, "--checkpoint", required=True, help="a Heimdall checkpoint (best.ckpt)")
    add_flag(p, "--out", help="ONNX file to write (default: model.onnx beside the checkpoint)")
    add_flag(p, "--store", help="model store: a folder or s3://bucket/prefix (default: workspace/models)")
    add_flag(p, "--no-store", action="store_true", help="only write the ONNX file")
    add_flag(p, "--name", default=MODEL_NAME, help=f"model name in the store and the registry (default {MODEL_NAME})")
    add_s3_flags(p)
    add_signing_key_flag(p)
    add_flag(
        p,
        "--eval-data",
        "--data-dir",  # its name before `--data-dir` meant the store a command works on
        "--data_dir",
        help="store folder (its test split) or test .h5 the champion rule judges on (default: the test split of "
        "the training data)",
    )
    add_flag(p, "--no-register", action="store_true", help="do not register in MLflow")
    add_flag(p, "--tracking-uri", help="MLflow tracking URI (default: the training run's)")
    return p
