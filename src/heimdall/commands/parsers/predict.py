"""`heimdall predict`'s flags."""

from __future__ import annotations

import argparse

from heimdall.commands.flags import add_flag
from heimdall.commands.options import add_model_source_flags
from heimdall.datasets.spec import MATCH_TOLERANCE_M


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `predict` to the subcommands `sub`."""
    p = sub.add_parser(
        "predict",
        help="localize the transmissions of a store, SigMF collections or a power-reading table (no HTTP)",
        description="Run the service's model (file, store or registry) on every transmission of a "
        "store or of SigMF collections and write a CSV (or JSON) of positions and ellipses; a model that carries "
        "a radio map answers with the map × network posterior, its modes and regions.",
    )
    p.add_argument(
        "data",
        help="a store .h5 file, a store folder (its --split), a .sigmf-collection, a folder of SigMF collections, "
        "or a power-reading table (.csv, .jsonl: one answer per transmission id)",
    )
    add_flag(
        p,
        "--split",
        default="test",
        help="split of a store folder (default test; 'unlabelled' for imported transmissions without a known position)",
    )
    add_flag(p, "--out", help="file to write (default predictions.<format>)")
    add_flag(
        p,
        "--format",
        choices=("csv", "json", "geojson", "kml"),
        help="csv (one row per transmission), json (the answers as the service gives them: with a radio map their "
        "modes and regions), geojson or kml (the position and the 95 %% ellipse of each, for QGIS or Google "
        "Earth); default: the suffix of --out, else csv",
    )
    add_flag(
        p,
        "--match-tolerance-m",
        type=float,
        default=MATCH_TOLERANCE_M,
        help=f"a SigMF recording within this distance of a model receiver is that receiver "
        f"(default {MATCH_TOLERANCE_M:g} m)",
    )
    add_flag(
        p,
        "--skip-invalid",
        action="store_true",
        help="skip invalid SigMF collections or table transmissions (reported) instead of stopping",
    )
    add_flag(p, "--quiet", action="store_true", help="no progress bar")
    add_model_source_flags(p)
    add_flag(
        p,
        "--threads",
        type=int,
        default=2,
        help="ONNX Runtime intra-op threads, and threads computing a radio map's posteriors (default 2)",
    )
    return p
