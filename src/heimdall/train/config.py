"""The training configuration: defaults ← YAML file (--config) ← command-line flags.

The resolved configuration is saved next to the checkpoints (config.yaml) and in the MLflow run, and
`--resume_training` reads it back so a resumed run continues with the settings it started with.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from heimdall.atomic import atomic_write_text
from heimdall.errors import HeimdallError
from heimdall.plain_yaml import load_plain_yaml, read_bounded_text

MAX_CONFIG_CHARS = 64 * 1024
MAX_TEXT_CHARS = 4096  # paths, names, URIs


class ConfigError(HeimdallError):
    """A training configuration file or value is invalid."""


@dataclass
class TrainConfig:
    # data
    data_dir: str | None = None  # default: the default scenario's dataset in the workspace (simulated if missing)
    scenario: str = "nw-italy"  # used only to simulate the default dataset
    dataset_size: int = 100_000
    validation_split: float = 0.1  # used when the store has no val split
    batch_size: int = 256
    num_workers: int = 0
    loader_memory_mb: float = 1024.0  # store data each reading process keeps in memory; the rest is read from disk
    seed: int = 0
    # model
    d_model: int = 96
    n_heads: int = 4
    n_layers: int = 3
    n_components: int = 1
    dropout: float = 0.0
    receiver_dropout: float = 0.1  # training-time probability of hiding each receiver
    feature_dropout: float = 0.2  # training-time probability of a transmission with power only (no spectrum)
    # optimisation
    epochs: int = 60
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 10  # early stopping on val_loss
    max_time_minutes: float = 12.0  # wall-clock budget of one fit (0: none)
    # hardware
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    threads: int = 0  # torch intra-op threads (0: all cores)
    # outputs and tracking
    checkpoint_dir: str | None = None  # default: <workspace>/runs/<run name>
    checkpoint: str | None = None  # for --export_only
    export_only: bool = False
    resume_training: bool = False
    experiment_name: str = "heimdall"
    run_name_prefix: str = "heimdall"
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite in the workspace
    export: bool = True  # export ONNX after training
    signing_key: str | None = None  # key file signing the model's manifests (default $HEIMDALL_SIGNING_KEY_FILE)
    # written by the run itself
    run_name: str | None = None
    mlflow_run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: Path) -> None:
        atomic_write_text(path, self.to_yaml())


FIELD_TYPES = {f.name: f.type for f in fields(TrainConfig)}


def from_mapping(values: dict[str, Any], origin: str, base: TrainConfig | None = None) -> TrainConfig:
    """A config with `values` applied over `base` (defaults); unknown keys are errors naming `origin`."""
    cfg = dataclasses.replace(base) if base is not None else TrainConfig()
    for key, value in values.items():
        if key not in FIELD_TYPES:
            raise ConfigError(f"{origin}: unknown key {key!r:.80}; expected one of {', '.join(FIELD_TYPES)}")
        setattr(cfg, key, _coerce(key, value, origin))
    _validate(cfg, origin)
    return cfg


def _coerce(key: str, value: Any, origin: str) -> Any:
    kind = FIELD_TYPES[key]
    if value is None:
        if "None" in str(kind):
            return None
        raise ConfigError(f"{origin}: {key} must not be empty")
    try:
        if isinstance(value, (dict, list, tuple, set, bytes)):  # options are scalars
            raise TypeError
        if kind in ("int", int):
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if kind in ("float", float):
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise ValueError
            return float(value)
        if kind in ("bool", bool):
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes"):
                return True
            if str(value).lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if len(str(value)) > MAX_TEXT_CHARS:
            raise ValueError
        return str(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{origin}: {key} = {value!r:.80} is not a valid {kind}") from None


def _validate(cfg: TrainConfig, origin: str) -> None:
    from heimdall.model.net import SIZE_LIMITS

    checks = [
        (cfg.epochs >= 1, "epochs must be ≥ 1"),
        (cfg.batch_size >= 1, "batch_size must be ≥ 1"),
        (cfg.dataset_size >= 1, "dataset_size must be ≥ 1"),
        (cfg.learning_rate > 0, "learning_rate must be > 0"),
        (cfg.weight_decay >= 0, "weight_decay must be ≥ 0"),
        (0 <= cfg.validation_split < 1, "validation_split must be in [0, 1)"),
        (0 <= cfg.dropout < 1, "dropout must be in [0, 1)"),
        (0 <= cfg.receiver_dropout < 1, "receiver_dropout must be in [0, 1)"),
        (0 <= cfg.feature_dropout < 1, "feature_dropout must be in [0, 1)"),
        (cfg.num_workers >= 0, "num_workers must be ≥ 0"),
        (cfg.loader_memory_mb >= 0, "loader_memory_mb must be ≥ 0"),
        (cfg.num_nodes >= 1, "num_nodes must be ≥ 1"),
        (cfg.threads >= 0, "threads must be ≥ 0"),
        (cfg.patience >= 0, "patience must be ≥ 0"),
        (cfg.max_time_minutes >= 0, "max_time_minutes must be ≥ 0"),
        *((1 <= getattr(cfg, k) <= most, f"{k} must be in [1, {most}]") for k, most in SIZE_LIMITS.items()
          if hasattr(cfg, k)),
        (cfg.d_model % max(cfg.n_heads, 1) == 0, "d_model must be a multiple of n_heads"),
        (cfg.accelerator in ("cpu", "gpu", "cuda", "auto", "mps"), "accelerator must be cpu, gpu or auto"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{origin}: {message}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A configuration file's options (plain YAML, bounded, without aliases); raises ConfigError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    data = load_plain_yaml(read_bounded_text(p, ConfigError, MAX_CONFIG_CHARS), str(p), ConfigError,
                           MAX_CONFIG_CHARS) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of option: value")
    return data


def resolve(flags: dict[str, Any], config_file: str | None) -> TrainConfig:
    """defaults ← config file ← flags (flags: only those given on the command line)."""
    cfg = TrainConfig()
    if config_file:
        cfg = from_mapping(load_yaml(config_file), str(config_file), cfg)
    return from_mapping(flags, "command line", cfg)
