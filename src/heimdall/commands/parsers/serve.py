"""`heimdall serve`'s flags: the model source and ServeSettings'."""

from __future__ import annotations

import argparse

from heimdall.commands.flags import add_fields
from heimdall.commands.options import add_model_source_flags
from heimdall.serve.settings import ServeSettings


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `serve` to the subcommands `sub`."""
    p = sub.add_parser(
        "serve",
        help="serve the model over HTTP (FastAPI + ONNX Runtime)",
        description="Serve localization over HTTP. The model comes from a file, the model store "
        "or the MLflow registry (default: alias champion in the workspace's registry).",
    )
    add_model_source_flags(p)
    add_fields(p, ServeSettings)
    return p
