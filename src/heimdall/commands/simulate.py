"""`heimdall simulate`: simulate a scenario into a training store and print a summary."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from heimdall.atomic import atomic_write_bytes
from heimdall.commands.flags import from_args
from heimdall.commands.progress import staged_progress
from heimdall.datasets.generate import DatasetSummary, generate_dataset
from heimdall.datasets.spec import DatasetSpec
from heimdall.errors import DatasetError
from heimdall.scenario import DEFAULT_SCENARIO
from heimdall.scenario.builtin import load_scenario
from heimdall.scenario.domain import Scenario
from heimdall.workspace import default_data_dir, default_sigmf_dir

if TYPE_CHECKING:
    from heimdall.radiomap.twin import Twin

TWIN_REPORT = "twin.json"


def simulate_command(args: argparse.Namespace) -> int:
    """`heimdall simulate`: a scenario (or the twin of a store, --like) → a training store or SigMF collections;
    exit code."""
    console = Console(stderr=False)
    twin = None
    if args.like:
        twin = _twin(args)
        scenario = twin.scenario
    else:
        scenario = load_scenario(args.scenario or DEFAULT_SCENARIO)
    if args.shadowing and args.shadowing != scenario.environment.shadowing.mode:
        scenario = scenario.with_shadowing_mode(args.shadowing)
    if args.out:
        out = Path(args.out)
    else:
        out = default_data_dir(scenario.name) if args.format == "store" else default_sigmf_dir(scenario.name)
    if twin is not None and out.resolve() == Path(args.like).resolve():
        raise DatasetError(f"--out {out}: is the store the twin is taken from; write the twin elsewhere")
    spec = from_args(DatasetSpec, args, iq_per_split=max(0, args.iq_per_split))
    with staged_progress(console, args.quiet) as (_, on_progress):
        summary = generate_dataset(
            scenario,
            out,
            spec,
            workers=args.workers,
            on_progress=on_progress,
            output=args.format,
            sigmf_datatype=args.datatype,
        )
    print_summary(console, scenario, summary)
    if twin is not None:
        atomic_write_bytes(out / TWIN_REPORT, (json.dumps(twin.report, indent=2) + "\n").encode())
        print_twin(console, twin.report, out / TWIN_REPORT)
    return 0


def _twin(args: argparse.Namespace) -> Twin:
    """The twin of the store --like (its physics from --scenario when given, which must be the store's network)."""
    from heimdall.radiomap.twin import build_twin

    given = load_scenario(args.scenario) if args.scenario else None
    return build_twin(Path(args.like), given)


def print_twin(console: Console, report: dict, path: Path) -> None:
    """Print what a twin was calibrated from and the values it was given."""
    source = report["source"]
    console.print(
        f"twin of {source['store']} (sha256 {source['store_sha256'][:12]}…, {source['transmissions']} "
        f"transmissions, {source['labels_used']} labels used): {report['how']}"
    )
    table = Table(title=f"{report['twin_scenario']}: receivers (detection at {report['detection_snr_db']:g} dB SNR)")
    for column in ("receiver", "measured noise dBm/Hz", "heard", "noise figure dB", "gain offset dB"):
        table.add_column(column, justify="left" if column == "receiver" else "right")
    for r in report["receivers"]:
        noise = "not recorded" if r["measured_noise_dbm_hz"] is None else f"{r['measured_noise_dbm_hz']:.1f}"
        table.add_row(
            r["id"], noise, f"{r['heard_fraction']:.0%}", f"{r['noise_figure_db']:.2f}", f"{r['gain_offset_db']:+.2f}"
        )
    console.print(table)
    p = report["propagation"]
    if p["fitted"]:
        console.print(
            f"propagation: {p['path_loss_model']} shape, slope correction {p['slope_correction_db_per_decade']:+.2f} "
            f"dB/decade, shadowing σ {p['shadowing_sigma_db']:.1f} dB, fit residual on the store "
            f"{p['fit_on_store']['residual_rms_db']:.1f} dB; "
            f"transmit powers shifted {report['power_shift_db']:+.1f} dB"
        )
    console.print(f"calibration written to {path}")


def print_summary(console: Console, scenario: Scenario, summary: DatasetSummary) -> None:
    """Print the transmissions of each split a simulation wrote."""
    table = Table(
        title=f"{scenario.name}: {summary.n_samples} transmissions in {summary.seconds:.1f} s "
        f"({summary.n_samples / max(summary.seconds, 1e-9):.0f}/s)"
    )
    table.add_column("split")
    table.add_column("transmissions", justify="right")
    table.add_column("mean heard", justify="right")
    table.add_column("raw IQ", justify="right")
    table.add_column("written to")
    for s in summary.splits:
        table.add_row(s.split, str(s.n_samples), f"{s.mean_heard:.2f}", str(s.n_iq), str(s.path))
    console.print(table)
    if summary.splits:
        first = summary.splits[0]
        rx = Table(title="fraction of transmissions each receiver hears (" + first.split + ")")
        for r in scenario.receivers:
            rx.add_column(r.id, justify="right")
        rx.add_row(*[f"{f:.0%}" for f in first.heard_fraction])
        console.print(rx)
        console.print("emissions: " + ", ".join(f"{k} {v}" for k, v in first.emissions.items()))
