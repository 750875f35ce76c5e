"""docs/ARCHITECTURE.md names every module of the package in the row of its stage, so that the map of the code
cannot fall behind the tree: a module added without its line fails here."""

from __future__ import annotations

import re
from pathlib import Path

import heimdall

PACKAGE = Path(heimdall.__file__).parent
DOC = Path(__file__).parents[1] / "docs" / "ARCHITECTURE.md"
ROW_NAMES = {"core": "core", "commands": "commands / cli"}  # stages whose table row has another heading


def stage_rows() -> dict[str, str]:
    """Stage heading (the bold text of the table's first column) → the rest of its row."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        found = re.match(r"\|\s*\*\*(.+?)\*\*[^|]*\|(.*)", line)
        if found:
            rows[found.group(1)] = found.group(2)
    return rows


def missing_modules() -> list[str]:
    """Modules (as package paths) whose name is not in backticks in their stage's row."""
    rows = stage_rows()
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] in ("__init__", "__main__"):
            continue
        if len(parts) == 1:
            stage, name = ("commands" if parts[0] == "cli" else "core"), parts[0]
        else:
            stage, name = parts[0], parts[-1]
        row = rows.get(ROW_NAMES.get(stage, stage), "")
        if f"`{name}`" not in row and f"`{'/'.join(parts[1:])}`" not in row:
            missing.append("/".join(parts))
    return missing


def test_every_module_is_named_in_the_architecture():
    assert stage_rows(), f"no stage table found in {DOC}"
    assert missing_modules() == []
