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
from heimdall.errors import HeimdallError
from heimdall.scenario import MAX_RECEIVERS, Scenario
from heimdall.train.task import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, LocalizationTask

MAX_CHECKPOINT_BYTES = 2 * 1024**3
_TEXT_ENTRIES = ("scenario_sha256", "scenario_yaml", "feature_params", "dataset_sha256", "mlflow_run_id")


class CheckpointError(HeimdallError):
    """A checkpoint is missing, unreadable or not a Heimdall checkpoint."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file in the same folder, fsync, then rename over the target; loads only
    checked Heimdall checkpoints, tensors and plain data (whatever `weights_only` Lightning asks for).

    A process killed at any moment leaves either the previous complete file or the new complete file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        with atomic_open(path, "wb") as f:
            torch.save(checkpoint, f)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
                        ) -> dict[str, Any]:
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
            raise CheckpointError(f"{p}: refused: it holds the Python object {refused.group(1)}, which loading would "
                                  "run; a Heimdall checkpoint holds only tensors and plain data") from None
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
    if not isinstance(receivers, dict) or not all(isinstance(c, list) for c in columns) \
            or len({len(c) for c in columns}) > 1:
        raise CheckpointError(f"{p}: heimdall.receivers must be a table of equally long columns")
    if receivers and not {"id", "east_m", "north_m"} <= set(receivers):
        raise CheckpointError(f"{p}: heimdall.receivers needs the columns id, east_m and north_m")
    if receivers and not 1 <= len(receivers["id"]) <= MAX_RECEIVERS:
        raise CheckpointError(f"{p}: heimdall.receivers has {len(receivers['id'])} rows, expected 1 to {MAX_RECEIVERS}")
    for column in ("east_m", "north_m"):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   for v in receivers.get(column, [])):
            raise CheckpointError(f"{p}: heimdall.receivers.{column} must hold finite numbers (metres)")
    config = meta.get("config", {})
    if not isinstance(config, dict) or not all(isinstance(config.get(k), (str, type(None)))
                                               for k in ("data_dir", "tracking_uri")):
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
        raise CheckpointError(f"{p}: checkpoint version {meta.get('version')!r:.40}, this Heimdall reads version "
                              f"{CHECKPOINT_VERSION} (the network changed; train again)")
    _check_meta(p, meta)
    state = ckpt.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{p}: state_dict must map parameter names to tensors")
    hparams = ckpt.get("hyper_parameters")
    if not isinstance(hparams, dict) or not isinstance(hparams.get("net"), dict):
        raise CheckpointError(f"{p}: hyper_parameters must hold the network configuration ('net')")
    return ckpt


def load_task(path: str | Path) -> LocalizationTask:
    """The LocalizationTask of a checked checkpoint (file read once); raises CheckpointError naming the file.

    The network is built on the meta device first, so hyper-parameters that do not describe the stored
    weights (shapes, dtypes, names) are refused before any memory is allocated for them.
    """
    p = Path(path)
    ckpt = load_checkpoint(p)
    state = ckpt["state_dict"]
    try:
        with torch.device("meta"):
            task = LocalizationTask(**ckpt["hyper_parameters"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{p}: hyper_parameters do not describe a network ({str(exc)[:200]})") from None
    expected = task.state_dict()
    if set(expected) != set(state):
        odd = sorted(set(expected) ^ set(state))
        raise CheckpointError(f"{p}: state_dict does not fit the network: {len(odd)} names differ, e.g. {odd[0]!r:.80}")
    for name, t in expected.items():
        if (state[name].shape, state[name].dtype) != (t.shape, t.dtype):
            raise CheckpointError(f"{p}: state_dict[{name!r}] is {state[name].dtype} {tuple(state[name].shape)}, "
                                  f"the network needs {t.dtype} {tuple(t.shape)}")
    task.load_state_dict(state, strict=True, assign=True)
    task.on_load_checkpoint(ckpt)
    return task


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
