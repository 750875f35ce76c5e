"""Where Heimdall keeps what it makes by default: datasets, runs, models (HEIMDALL_WORKSPACE, else ./workspace),
and the MLflow store every command uses unless told otherwise."""

from __future__ import annotations

import os
from pathlib import Path


def workspace() -> Path:
    return Path(os.environ.get("HEIMDALL_WORKSPACE", "workspace"))


def default_data_dir(scenario_name: str) -> Path:
    return workspace() / "data" / scenario_name


def default_tracking_uri() -> str:
    """The MLflow tracking and registry URI: $MLFLOW_TRACKING_URI, else the sqlite store in the workspace.

    The one rule for train, export, evaluate, serve and predict; it creates nothing (writers create the folder)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(workspace() / 'mlflow.db').resolve()}"


def default_artifact_location() -> Path:
    """Where MLflow runs of the workspace keep their artifacts (models, plots)."""
    return (workspace() / "mlartifacts").resolve()
