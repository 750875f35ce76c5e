"""`heimdall import`: a folder of SigMF collections or a power-reading table → a training store, with a summary of
what was skipped."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.table import Table
from rich.text import Text

from heimdall.atomic import atomic_write_text
from heimdall.budget import Progress as OnProgress
from heimdall.commands.flags import from_args
from heimdall.commands.progress import staged_progress
from heimdall.datasets.importer import ImportSummary, import_collections
from heimdall.datasets.power_import import import_table
from heimdall.datasets.scenario_from_recordings import scenario_from_recordings
from heimdall.datasets.spec import ImportOptions
from heimdall.errors import NothingImported
from heimdall.features import HEARD_CLASSES
from heimdall.scenario.builtin import load_scenario

T = TypeVar("T")
SHOWN_SKIPPED = 20
SCENARIO_FILE = "scenario.yaml"  # the scenario built from the recordings, next to the store they were imported into


def import_command(args: argparse.Namespace) -> int:
    """`heimdall import`: SigMF collections or a power-reading table → a training store; exit code."""
    console = Console()
    fmt = getattr(args, "format", None)
    if fmt in ("csv", "jsonl") or (fmt is None and Path(args.input).is_file()):
        return _import_table(args, console, fmt)
    if args.scenario:
        scenario = load_scenario(args.scenario)
    else:
        scenario = scenario_from_recordings(args.input, args.new_receiver_height_m)
        console.print(
            f"no --scenario: built {scenario.name!r} from the recordings ({scenario.frequency_hz / 1e6:g} MHz, "
            f"{len(scenario.receivers)} receivers); written to {Path(args.out) / SCENARIO_FILE}",
            markup=False,
        )
    options = _options(args)
    summary = _with_progress(
        console,
        args.quiet,
        lambda on_progress: import_collections(args.input, args.out, scenario, options, on_progress),
    )
    if not args.scenario:
        atomic_write_text(Path(args.out) / SCENARIO_FILE, scenario.to_yaml())
    print_summary(console, summary)
    return 0


def _with_progress(console: Console, quiet: bool, run: Callable[[OnProgress], T]) -> T:
    """run(on_progress) under progress bars; when nothing could be imported, the summary is printed first."""
    with staged_progress(console, quiet) as (progress, on_progress):
        try:
            return run(on_progress)
        except NothingImported as exc:
            progress.stop()
            print_summary(console, exc.summary)
            raise


def _options(args: argparse.Namespace) -> ImportOptions:
    return from_args(ImportOptions, args, iq_per_split=max(0, args.iq_per_split))


def _import_table(args: argparse.Namespace, console: Console, fmt: str | None) -> int:
    """`heimdall import` of a power-reading table (fmt csv, jsonl or None: by the suffix); exit code."""
    scenario = load_scenario(args.scenario) if args.scenario else None
    summary, final = _with_progress(
        console,
        args.quiet,
        lambda on_progress: import_table(args.input, args.out, scenario, _options(args), fmt, on_progress),
    )
    if not args.scenario:
        atomic_write_text(Path(args.out) / SCENARIO_FILE, final.to_yaml())
        console.print(
            f"no --scenario: built {final.name!r} from the table ({final.frequency_hz / 1e6:g} MHz, "
            f"{len(final.receivers)} receivers); written to {Path(args.out) / SCENARIO_FILE}",
            markup=False,
        )
    print_summary(console, summary)
    return 0


def print_summary(console: Console, s: ImportSummary) -> None:
    """Print what an import made and what it skipped."""
    read = f"{s.n_rows} rows, {s.n_collections} transmissions" if s.n_rows else f"{s.n_collections} collections"
    table = Table(title=Text(f"{read} → {s.out_dir} in {s.seconds:.1f} s"))
    table.add_column("split")
    table.add_column("transmissions", justify="right")
    table.add_column("file")
    for split, n in s.splits.items():
        table.add_row(split, str(n), Text(str(Path(s.out_dir) / f"{split}.h5")))
    console.print(table)
    if not s.n_rows:
        console.print(f"recordings resampled: {s.resampled}, retuned to the channel: {s.retuned}")
    heard_by = ", ".join(f"{k}: {s.by_receivers_heard.get(k, 0)}" for k in HEARD_CLASSES)
    console.print(f"stored transmissions by receivers heard: {heard_by}")
    if s.new_receivers:
        console.print(f"receivers added to the table: {', '.join(s.new_receivers)}", markup=False)
    for title, items in (("skipped (invalid)", s.skipped), ("not localisable", s.not_localisable)):
        if items:
            console.print(f"[bold]{title}: {len(items)}[/bold]")
            for k in items[:SHOWN_SKIPPED]:
                console.print(f"  {k.file}: {k.field}: {k.message}", highlight=False, markup=False, soft_wrap=True)
            if len(items) > SHOWN_SKIPPED:
                console.print(f"  … and {len(items) - SHOWN_SKIPPED} more")
    console.print(f"report: {s.report}", markup=False, soft_wrap=True)
