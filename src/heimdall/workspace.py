"""Where Heimdall keeps what it makes by default: datasets, runs, models (HEIMDALL_WORKSPACE, else ./workspace)."""

from __future__ import annotations

import os
from pathlib import Path


def workspace() -> Path:
    return Path(os.environ.get("HEIMDALL_WORKSPACE", "workspace"))


def default_data_dir(scenario_name: str) -> Path:
    return workspace() / "data" / scenario_name
