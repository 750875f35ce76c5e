"""`heimdall simulate`: simulate a scenario into a training store and print a summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from heimdall.commands.progress import staged_progress
from heimdall.datasets.generate import DatasetSummary, generate_dataset
from heimdall.datasets.spec import DatasetSpec
from heimdall.scenario.builtin import load_scenario
from heimdall.scenario.domain import Scenario
from heimdall.workspace import default_data_dir, default_sigmf_dir


def simulate_command(args: argparse.Namespace) -> int:
    """`heimdall simulate`: a scenario → a training store or SigMF collections; exit code."""
    console = Console(stderr=False)
    scenario = load_scenario(args.scenario)
    if args.shadowing and args.shadowing != scenario.environment.shadowing.mode:
        scenario = scenario.with_shadowing_mode(args.shadowing)
    if args.out:
        out = Path(args.out)
    else:
        out = default_data_dir(scenario.name) if args.format == "store" else default_sigmf_dir(scenario.name)
    spec = DatasetSpec(
        n_transmissions=args.n_transmissions,
        seed=args.seed,
        fractions=args.splits,
        shard=args.shard,
        split_mode=args.split_mode,
        spatial_block_m=args.spatial_block_m,
        iq_per_split=max(0, args.iq_samples),
    )
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
    return 0


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
