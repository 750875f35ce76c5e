"""Checkpoint files: written atomically, and recognised as Heimdall's before anything uses them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from heimdall.atomic import atomic_open
from heimdall.errors import HeimdallError
from heimdall.scenario import Scenario
from heimdall.train.task import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, LocalizationTask


class CheckpointError(HeimdallError):
    """A checkpoint is missing, unreadable or not a Heimdall checkpoint."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file in the same folder, fsync, then rename over the target.

    A process killed at any moment leaves either the previous complete file or the new complete file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        with atomic_open(path, "wb") as f:
            torch.save(checkpoint, f)


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporaries left by a process killed while saving."""
    for p in Path(folder).glob(".*.ckpt.*.tmp"):
        p.unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a Heimdall checkpoint; raises CheckpointError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(f"{p}: cannot read as a PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    meta = ckpt.get("heimdall") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p}: not a Heimdall checkpoint (no 'heimdall' section of format {CHECKPOINT_FORMAT!r})")
    if meta.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{p}: checkpoint version {meta.get('version')}, this Heimdall reads version "
                              f"{CHECKPOINT_VERSION} (the network changed; train again)")
    return ckpt


def untrained_checkpoint(scenario: Scenario, path: str | Path) -> Path:
    """Write a checkpoint of the default network for `scenario` with random weights, and return its path.

    For what needs a real model but not a trained one: timing inference (speed does not depend on the weights),
    or serving a second model with another receiver table or feature count.
    """
    import lightning as L

    from heimdall.features import FeatureParams
    from heimdall.train.config import TrainConfig

    cfg = TrainConfig()
    params = FeatureParams.from_scenario(scenario)
    task = LocalizationTask({"n_features": params.n_features, "d_model": cfg.d_model, "n_heads": cfg.n_heads,
                             "n_layers": cfg.n_layers, "n_components": cfg.n_components}, cfg.learning_rate, 0.0, 0.0)
    en = scenario.receiver_positions_m()
    task.heimdall_meta = {
        "receivers": {"id": [r.id for r in scenario.receivers], "lat": [r.lat for r in scenario.receivers],
                      "lon": [r.lon for r in scenario.receivers], "east_m": en[:, 0].tolist(),
                      "north_m": en[:, 1].tolist()},
        "scenario_yaml": scenario.to_yaml(), "scenario_sha256": scenario.sha256, "feature_params": params.to_json(),
    }
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        plugins=[AtomicCheckpointIO()], max_epochs=0)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(path)
    return Path(path)
