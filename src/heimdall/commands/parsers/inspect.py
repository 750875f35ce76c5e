"""`heimdall inspect`'s arguments."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `inspect` to the subcommands `sub`."""
    p = sub.add_parser(
        "inspect",
        help="print the metadata inside an exported ONNX model",
        description="Print the metadata stored inside a Heimdall ONNX model.",
    )
    p.add_argument("model", help="path to model.onnx")
    return p
