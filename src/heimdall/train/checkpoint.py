"""Checkpoint files: written atomically, and recognised as Heimdall's before anything uses them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from heimdall.atomic import atomic_open
from heimdall.errors import HeimdallError
from heimdall.train.task import CHECKPOINT_FORMAT, CHECKPOINT_VERSION


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
