"""A training run that failed: its MLflow run ends as FAILED, and a run folder the failed command created holds
nothing misleading (a config.yaml without a checkpoint would look like a run that can be resumed)."""

from __future__ import annotations

import logging
from pathlib import Path

from heimdall.train.config import load_yaml

CONFIG_FILE = "config.yaml"
log = logging.getLogger(__name__)


def end_failed_run(checkpoint_dir: Path, tracking_uri: str, created: bool) -> None:
    """Mark the MLflow run recorded in `checkpoint_dir`/config.yaml FAILED if it is still RUNNING; when this command
    `created` the folder and no checkpoint was written, remove its config.yaml (and the folder, once empty).

    Never raises: it runs while another error is on its way to the user."""
    saved = checkpoint_dir / CONFIG_FILE
    try:
        run_id = load_yaml(saved).get("mlflow_run_id") if saved.is_file() else None
        if run_id:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=tracking_uri)
            if client.get_run(str(run_id)).info.status == "RUNNING":
                client.set_terminated(str(run_id), "FAILED")
    except Exception as exc:  # noqa: BLE001 - reported; it must never mask the error that ended the run
        log.warning("could not mark the MLflow run of %s as FAILED: %s", checkpoint_dir, exc)
    if created and not any(checkpoint_dir.glob("*.ckpt")):
        saved.unlink(missing_ok=True)
        try:
            checkpoint_dir.rmdir()
        except OSError:  # other files are left: not ours to remove
            pass
