"""`heimdall evaluate`'s flags."""

from __future__ import annotations

import argparse

from heimdall.commands.flags import add_flag
from heimdall.option_field import positive_int


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `evaluate` to the subcommands `sub`."""
    p = sub.add_parser(
        "evaluate",
        help="compare a model with classical estimators, the radio map, the oracle and the CRLB",
        description="Evaluate a checkpoint or ONNX model on a test split against the weighted "
        "centroid, classical RSS maximum likelihood, the radio-map posterior (fitted on the training split), "
        "the map × model hybrid, the oracle (simulated data) and the Cramér–Rao bound; metrics overall, "
        "inside/outside the receivers' hull and by receivers heard (1, 2, 3, 4+).",
    )
    add_flag(p, "--model", help="best.ckpt or model.onnx (default: the newest run in the workspace)")
    add_flag(p, "--data-dir", "--data", help="store folder (its test split) or a test .h5 (default: the run's data)")
    add_flag(p, "--out", help="output folder (default: <run folder>/evaluation)")
    add_flag(
        p,
        "--grid-spacing-m",
        type=float,
        help="grid of the classical search in metres (default: from the network's geometry, 4 map cells; 2000 for "
        "nw-italy)",
    )
    add_flag(
        p,
        "--map-spacing-m",
        type=float,
        help="grid of the radio-map, hybrid and oracle posteriors in metres (default: from the network's geometry, "
        "500 for nw-italy; 0: leave them out)",
    )
    add_flag(p, "--max-samples", type=positive_int, help="evaluate only the first N test transmissions")
    add_flag(p, "--tracking-uri", help="MLflow tracking URI (default: the run's)")
    add_flag(p, "--no-mlflow", action="store_true", help="do not log to MLflow")
    add_flag(p, "--quiet", action="store_true", help="no progress bar")
    return p
