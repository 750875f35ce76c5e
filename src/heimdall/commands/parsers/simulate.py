"""`heimdall simulate`'s flags: the command's own and DatasetSpec's."""

from __future__ import annotations

import argparse
import os

from heimdall.commands.flags import add_fields, add_flag
from heimdall.datasets.spec import OUTPUT_FORMATS, DatasetSpec
from heimdall.option_field import positive_int
from heimdall.scenario import DEFAULT_SCENARIO


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `simulate` to the subcommands `sub`."""
    p = sub.add_parser(
        "simulate",
        help="simulate a scenario into a training store (train/val/test) or SigMF",
        description="Simulate transmissions of a scenario and write train/val/test store files, "
        "or (--format sigmf) one SigMF collection per transmission.",
    )
    add_flag(
        p,
        "--scenario",
        help=f"built-in scenario name or YAML file (default: {DEFAULT_SCENARIO}; with --like the store's)",
    )
    add_flag(
        p,
        "--like",
        metavar="STORE",
        help="simulate a twin of an imported store: its receivers, channel and recording chain, its measured noise "
        "floors and, with labels, its propagation fitted on them (docs/RADIOMAP.md); writes OUT/twin.json",
    )
    add_flag(
        p,
        "--out",
        help="output folder (default: $HEIMDALL_WORKSPACE/data/<scenario>, "
        "or $HEIMDALL_WORKSPACE/sigmf/<scenario> with --format sigmf)",
    )
    add_flag(
        p,
        "--format",
        choices=OUTPUT_FORMATS,
        default="store",
        help="store: HDF5 training store; sigmf: a folder of SigMF collections per split (default: store)",
    )
    add_flag(
        p,
        "--datatype",
        choices=["cf32_le", "ci16_le", "ci8", "cu8"],
        default="cf32_le",
        help="sample type of SigMF recordings (default: cf32_le, lossless)",
    )
    add_fields(p, DatasetSpec)
    add_flag(
        p,
        "--workers",
        type=positive_int,
        default=os.cpu_count() or 1,
        help="worker processes (default: CPU count); the output does not depend on it",
    )
    add_flag(
        p,
        "--shadowing",
        choices=["fixed", "iid"],  # heimdall.scenario.domain.SHADOWING_MODES (numpy: not imported for --help)
        help="override the scenario's shadowing mode (iid: the control without a learnable radio map)",
    )
    add_flag(p, "--quiet", action="store_true", help="no progress bar")
    return p
