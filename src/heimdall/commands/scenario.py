"""`heimdall scenario list|show|validate`."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from heimdall.scenario.builtin import builtin_names, load_scenario


def scenario_command(args: argparse.Namespace) -> int:
    """`heimdall scenario`: list, show or check scenarios; exit code."""
    console = Console()
    if args.action == "list":
        table = Table("name", "receivers", "frequency", "description")
        for name in builtin_names():
            sc = load_scenario(name)
            table.add_row(name, str(len(sc.receivers)), f"{sc.frequency_hz / 1e6:.3f} MHz", sc.description)
        console.print(table)
    elif args.action == "show":
        print(load_scenario(args.name).to_yaml(), end="")
    else:
        sc = load_scenario(args.name)
        e0, n0, e1, n1 = sc.area_bounds_m()
        console.print(
            f"[green]valid[/]: {sc.name}, {len(sc.receivers)} receivers, {sc.frequency_hz / 1e6:.3f} MHz, "
            f"area {(e1 - e0) / 1e3:.0f} × {(n1 - n0) / 1e3:.0f} km, shadowing σ = "
            f"{sc.environment.shadowing.sigma_db:.1f} dB ({sc.environment.shadowing.mode})"
        )
    return 0
