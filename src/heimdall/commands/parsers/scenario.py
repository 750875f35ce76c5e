"""`heimdall scenario`'s arguments."""

from __future__ import annotations

import argparse

from heimdall.scenario import DEFAULT_SCENARIO


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `scenario` to the subcommands `sub`."""
    p = sub.add_parser(
        "scenario",
        help="list, show or validate scenarios",
        description="List built-in scenarios, print one, or validate a scenario file.",
    )
    p.add_argument("action", choices=["list", "show", "validate"])
    p.add_argument("name", nargs="?", default=DEFAULT_SCENARIO, help="built-in name or YAML file")
    return p
