"""Checkpoint files: written atomically, and recognised as Heimdall's before anything uses them.

A checkpoint is untrusted input (it may come from anywhere): it is read with ``weights_only=True``, so
only tensors and plain data are unpickled and no code runs, and its sections are checked before use.
"""

from __future__ import annotations

import math
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from heimdall.atomic import atomic_open
from heimdall.errors import CheckpointError
from heimdall.scenario.domain import MAX_RECEIVERS

CHECKPOINT_FORMAT = "heimdall-checkpoint"
CHECKPOINT_VERSION = 2  # 2: spectral-features flag in the encoder (power-only inputs)

MAX_CHECKPOINT_BYTES = 2 * 1024**3
_TEXT_ENTRIES = ("scenario_sha256", "scenario_yaml", "feature_params", "dataset_sha256", "mlflow_run_id")


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file in the same folder, fsync, then rename over the target; loads only
    checked Heimdall checkpoints, tensors and plain data (whatever `weights_only` Lightning asks for).

    A process killed at any moment leaves either the previous complete file or the new complete file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        """torch.save to `path` atomically."""
        with atomic_open(path, "wb") as f:
            torch.save(checkpoint, f)

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """The checked checkpoint at `path` (load_checkpoint), whatever Lightning asks for."""
        return load_checkpoint(path)


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporaries left by a process killed while saving."""
    for p in Path(folder).glob(".*.ckpt.*.tmp"):
        p.unlink(missing_ok=True)


def _torch_load(p: Path) -> Any:
    size = p.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{p}: {size} bytes; a Heimdall checkpoint has at most {MAX_CHECKPOINT_BYTES}")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if refused:
            raise CheckpointError(
                f"{p}: refused: it holds the Python object {refused.group(1)}, which loading would "
                "run; a Heimdall checkpoint holds only tensors and plain data"
            ) from None
        raise CheckpointError(f"{p}: cannot read as a PyTorch checkpoint (not a weights-only pickle)") from None
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(f"{p}: cannot read as a PyTorch checkpoint ({type(exc).__name__}: {exc})") from None


def _check_meta(p: Path, meta: dict) -> None:
    """The 'heimdall' section holds what export and evaluation read: texts, the receiver table, the config."""
    for key in _TEXT_ENTRIES:
        if not isinstance(meta.get(key, ""), (str, type(None))):
            raise CheckpointError(f"{p}: heimdall.{key} must be text, got {type(meta[key]).__name__}")
    receivers = meta.get("receivers", {})
    columns = receivers.values() if isinstance(receivers, dict) else ()
    if (
        not isinstance(receivers, dict)
        or not all(isinstance(c, list) for c in columns)
        or len({len(c) for c in columns}) > 1
    ):
        raise CheckpointError(f"{p}: heimdall.receivers must be a table of equally long columns")
    if receivers and not {"id", "east_m", "north_m"} <= set(receivers):
        raise CheckpointError(f"{p}: heimdall.receivers needs the columns id, east_m and north_m")
    if receivers and not 1 <= len(receivers["id"]) <= MAX_RECEIVERS:
        raise CheckpointError(f"{p}: heimdall.receivers has {len(receivers['id'])} rows, expected 1 to {MAX_RECEIVERS}")
    for column in ("east_m", "north_m"):
        if not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in receivers.get(column, [])
        ):
            raise CheckpointError(f"{p}: heimdall.receivers.{column} must hold finite numbers (metres)")
    config = meta.get("config", {})
    if not isinstance(config, dict) or not all(
        isinstance(config.get(k), (str, type(None))) for k in ("data_dir", "tracking_uri")
    ):
        raise CheckpointError(f"{p}: heimdall.config must be a mapping with text data_dir and tracking_uri")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a Heimdall checkpoint; raises CheckpointError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    ckpt = _torch_load(p)
    meta = ckpt.get("heimdall") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p}: not a Heimdall checkpoint (no 'heimdall' section of format {CHECKPOINT_FORMAT!r})")
    if meta.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{p}: checkpoint version {meta.get('version')!r:.40}, this Heimdall reads version "
            f"{CHECKPOINT_VERSION} (the network changed; train again)"
        )
    _check_meta(p, meta)
    state = ckpt.get("state_dict")
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"{p}: state_dict must map parameter names to tensors")
    hparams = ckpt.get("hyper_parameters")
    if not isinstance(hparams, dict) or not isinstance(hparams.get("net"), dict):
        raise CheckpointError(f"{p}: hyper_parameters must hold the network configuration ('net')")
    return ckpt
