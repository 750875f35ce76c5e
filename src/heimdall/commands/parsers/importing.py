"""`heimdall import`'s flags: the command's own and ImportOptions'."""

from __future__ import annotations

import argparse

from heimdall.commands.flags import add_fields, add_flag
from heimdall.datasets.spec import ImportOptions


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `import` to the subcommands `sub`."""
    p = sub.add_parser(
        "import",
        help="import a folder of SigMF collections, or a table of power readings, into a training store",
        description="Read every *.sigmf-collection under DIR (one transmission each, one recording "
        "per receiver), or a power-reading table (CSV or JSON Lines, one row per transmission and receiver: "
        "docs/DATA.md), check it, and write a training store: labelled transmissions into "
        "train/val/test (kept from train/val/test sub-folders, else a seeded split), "
        "unlabelled ones into the 'unlabelled' split for prediction.",
    )
    p.add_argument(
        "input",
        metavar="DIR|TABLE",
        help="folder of SigMF collections, or a power-reading table (.csv, .jsonl) (only read, never modified)",
    )
    add_flag(
        p,
        "--format",
        choices=("sigmf", "csv", "jsonl"),
        help="what the input is (default: csv or jsonl by a file's suffix, sigmf for a folder)",
    )
    add_flag(p, "--out", required=True, help="store folder to write")
    add_flag(
        p,
        "--scenario",
        help="scenario giving the channel frequency, feature settings and known receivers (built-in name or YAML "
        "file; default: built from the recordings and written to OUT/scenario.yaml)",
    )
    add_fields(p, ImportOptions)
    add_flag(p, "--quiet", action="store_true", help="no progress bar")
    return p
