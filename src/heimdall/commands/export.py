"""`heimdall export`: checkpoint → validated ONNX → model store → MLflow registry."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from heimdall.commands.options import s3_options
from heimdall.release.publish import PublishOptions, PublishResult, export_and_publish
from heimdall.signing import signing_key
from heimdall.units import format_distance
from heimdall.workspace import default_model_store


def export_command(args: argparse.Namespace) -> int:
    """Run `heimdall export`; 0 on success."""
    ckpt = Path(args.checkpoint)
    out = Path(args.out) if args.out else ckpt.with_name("model.onnx")
    options = PublishOptions(
        store=None if args.no_store else (args.store or default_model_store()),
        s3_options=s3_options(args),
        register=not args.no_register,
        eval_data=args.eval_data,
        tracking_uri=args.tracking_uri,
        name=args.name,
        signer=signing_key(args.signing_key),
    )
    report(Console(), export_and_publish(ckpt, out, options=options))
    return 0


def report(console: Console, r: PublishResult) -> None:
    """What was exported, stored and registered, for a person."""
    console.print(
        f"exported {r.export.path} (ONNX Runtime vs PyTorch max |Δ| {r.export.max_abs_diff:.1e} in "
        f"normalised units)\nsha256 {r.export.sha256}",
        highlight=False,
    )
    if r.eval_metrics:
        m = r.eval_metrics
        console.print(
            f"evaluation set ({m['n_eval']} transmissions): median {format_distance(m['median_error_m'])}, "
            f"coverage 1σ {m['coverage_1sigma']:.1%} / 2σ {m['coverage_2sigma']:.1%}"
        )
    if r.store_version is not None:
        console.print(f"stored as version {r.store_version} in {r.store}")
    if r.registration:
        g = r.registration
        console.print(f"registered {g.name} version {g.version} as [bold]{g.alias}[/]: {g.reason}")
