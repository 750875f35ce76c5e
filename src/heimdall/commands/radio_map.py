"""`heimdall map fit`: a radio map fitted on a store, attached to a network model as a new ONNX file."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from heimdall.commands.progress import staged_progress
from heimdall.radiomap.fit import MapOptions
from heimdall.release.map_attach import fit_and_attach
from heimdall.signing import signing_key


def map_command(args: argparse.Namespace) -> int:
    """Run `heimdall map fit`; 0 on success."""
    console = Console()
    signer = signing_key(args.signing_key)
    with staged_progress(console, args.quiet) as (_, on_progress):
        r = fit_and_attach(
            Path(args.model),
            Path(args.store),
            Path(args.out),
            MapOptions(spacing_m=args.spacing_m),
            signer,
            on_progress,
        )
    f = r.fit
    console.print(
        f"{f['how']}; hybrid α {f['alpha']:g}, β {f['beta']:g}"
        + (f" (validation NLL {f['validation_nll']:.2f} on {f['validation_n']})" if "validation_nll" in f else "")
        + f"\nwrote {r.path} ({r.size_bytes / 1e6:.1f} MB) with its manifest\nsha256 {r.sha256}",
        highlight=False,
    )
    return 0
