"""`heimdall inspect MODEL.onnx`: the metadata inside an exported model."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from heimdall.export import read_metadata

LONG = ("scenario_yaml",)


def inspect_command(args: argparse.Namespace) -> int:
    meta = read_metadata(args.model)
    table = Table("key", "value", title=str(args.model))
    for key, value in meta.items():
        if key in LONG:
            value = f"({len(value.splitlines())} lines)"
        elif key == "receivers":
            value = ", ".join(json.loads(value).get("id", []))
        elif len(value) > 200:
            value = value[:200] + "…"
        table.add_row(key, value)
    Console().print(table)
    return 0
