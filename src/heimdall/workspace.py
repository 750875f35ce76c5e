"""The one map of the workspace, where Heimdall keeps what it makes by default ($HEIMDALL_WORKSPACE, else
./workspace), and the one rule for the MLflow tracking URI every command uses unless told otherwise.

    data/<scenario>/      simulated training stores       runs/<run>/     checkpoints, config.yaml, model.onnx
    sigmf/<scenario>/     simulated SigMF collections     models/         the default model store
    mlflow.db             the default tracking store      mlartifacts/    its artifacts (models, plots)
"""

from __future__ import annotations

import os
from pathlib import Path


def workspace() -> Path:
    """The workspace folder ($HEIMDALL_WORKSPACE, else ./workspace)."""
    return Path(os.environ.get("HEIMDALL_WORKSPACE", "workspace"))


def default_data_dir(scenario_name: str) -> Path:
    """Where `heimdall simulate` writes a scenario's training store by default."""
    return workspace() / "data" / scenario_name


def default_sigmf_dir(scenario_name: str) -> Path:
    """Where `heimdall simulate --format sigmf` writes a scenario's collections by default."""
    return workspace() / "sigmf" / scenario_name


def runs_dir() -> Path:
    """The folder of training runs (one sub-folder per run)."""
    return workspace() / "runs"


def default_model_store() -> str:
    """The default model store: s3://$MINIO_BUCKET when that is set (the team setup), else a folder in the
    workspace."""
    bucket = os.environ.get("MINIO_BUCKET")
    return f"s3://{bucket}" if bucket else str(workspace() / "models")


def default_tracking_uri() -> str:
    """The MLflow tracking and registry URI: $MLFLOW_TRACKING_URI, else the sqlite store in the workspace.

    The one rule for train, export, evaluate, serve and predict; it creates nothing (writers create the folder)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(workspace() / 'mlflow.db').resolve()}"


TRACKING_SERVER_SCHEMES = ("http://", "https://")  # an MLflow server: it owns where artifacts go


def artifact_location(tracking_uri: str) -> str | None:
    """Where a new MLflow experiment keeps its artifacts (models, plots), as a URI: the workspace's mlartifacts
    folder for a tracking store opened directly (sqlite:///…, postgresql://…), None for a tracking server, whose
    own --default-artifact-root or --artifacts-destination (e.g. s3://bucket/mlflow) decides."""
    if tracking_uri.startswith(TRACKING_SERVER_SCHEMES):
        return None
    return (workspace() / "mlartifacts").resolve().as_uri()
