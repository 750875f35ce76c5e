"""`heimdall inspect MODEL.onnx`: the metadata inside an exported model, printed literally (it is untrusted text)."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table
from rich.text import Text

from heimdall.release.export import read_metadata

LONG = ("scenario_yaml",)
SHOWN_CHARS = 200


def _shown(key: str, value: str) -> str:
    """What a person needs of one metadata entry: long texts summarised, the receiver table as its ids."""
    if key in LONG:
        return f"({len(value.splitlines())} lines)"
    if key == "receivers":
        try:
            ids = json.loads(value).get("id", [])
            return ", ".join(str(i) for i in ids)[:SHOWN_CHARS]
        except (ValueError, AttributeError, TypeError):  # not the JSON export writes: show the text itself
            pass
    return value[:SHOWN_CHARS] + "…" if len(value) > SHOWN_CHARS else value


def inspect_command(args: argparse.Namespace) -> int:
    """`heimdall inspect`: print a model's metadata (model card); exit code."""
    meta = read_metadata(args.model)
    table = Table("key", "value", title=Text(str(args.model)))
    for key, value in meta.items():
        table.add_row(Text(key[:SHOWN_CHARS]), Text(_shown(key, value)))  # Text: never read as Rich markup
    Console().print(table)
    return 0
