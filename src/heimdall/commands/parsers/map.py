"""`heimdall map`'s flags."""

from __future__ import annotations

import argparse

from heimdall.commands.flags import add_flag
from heimdall.commands.options import add_s3_flags, add_signing_key_flag
from heimdall.release import CHAMPION


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `map` to the subcommands `sub`."""
    p = sub.add_parser(
        "map",
        help="fit a radio map on a store and attach it to a model, or update a model's map with new labels",
        description="fit: fit the radio map on STORE's labelled training split (self-calibrated on its "
        "unlabelled recordings when it has no labels), choose the map × network exponents on its validation "
        "split, and write the network model with the map attached to --out. update: add the labelled SigMF "
        "recordings of --labels to the map of a map-carrying --model, refit the map (the network is unchanged) and "
        "write the new version to --out. Either can also go to a model store (--store) and the registry "
        "(--register) (docs/RADIOMAP.md).",
    )
    p.add_argument("action", choices=["fit", "update"])
    p.add_argument(
        "data_store",
        metavar="store",
        help="store folder (train.h5 / val.h5, or unlabelled.h5) with the model's receivers",
    )
    add_flag(
        p,
        "--model",
        help="fit: the network model (model.onnx); update: the map-carrying model (default: --store's latest version "
        "or --version, else the registry's --alias at --tracking-uri; the new version goes back there with --store or "
        "--register)",
    )
    add_flag(p, "--out", required=True, help="ONNX file to write (the model with the map; its manifest beside it)")
    add_flag(p, "--labels", metavar="DIR", help="update: folder of labelled SigMF collections of the model's receivers")
    add_flag(
        p,
        "--spacing-m",
        type=float,
        help="grid cell side of the map in metres (default: fit from the network's geometry, update the model's own)",
    )
    add_signing_key_flag(p)
    add_flag(p, "--store", help="also publish the new model to this model store as its next version (folder or s3://…)")
    add_s3_flags(p)
    add_flag(
        p,
        "--register",
        action="store_true",
        help="also register it in MLflow (champion only if it beats the champion on the evaluation set)",
    )
    add_flag(p, "--tracking-uri", help="MLflow tracking URI of the registry (default $MLFLOW_TRACKING_URI or sqlite)")
    add_flag(
        p, "--version", type=int, help="update without --model: the --store version to update (default the latest)"
    )
    add_flag(p, "--alias", default=CHAMPION, help=f"update without --model or --store: the registry alias ({CHAMPION})")
    add_flag(
        p,
        "--verify-key",
        metavar="FILE",
        help="update without --model: refuse a stored or registered model whose manifest is not signed by this key "
        "(default $HEIMDALL_VERIFY_KEY_FILE)",
    )
    add_flag(
        p,
        "--eval-data",
        help="store folder or test .h5 the champion rule judges on (default: STORE's test split if it has one)",
    )
    add_flag(p, "--quiet", action="store_true", help="no progress bar")
    return p
