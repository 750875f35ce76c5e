"""The network's configuration (`NetConfig`, the one home of the architecture defaults) and the training
configuration (`TrainConfig`): defaults ← YAML file (--config) ← command-line flags.

The resolved training configuration is saved next to the checkpoints (config.yaml) and in the MLflow run, and
`--resume-training` reads it back so a resumed run continues with the settings it started with. Modes of the
`train` command (--export-only, --checkpoint, --resume-training) are not options and are not saved; files saved by
older runs that hold them are still read (the entries are ignored).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from heimdall.atomic import atomic_write_text
from heimdall.datasets.spec import DatasetSpec
from heimdall.errors import ConfigError
from heimdall.plain_yaml import load_plain_yaml, read_bounded_text
from heimdall.scenario import DEFAULT_SCENARIO

if TYPE_CHECKING:  # the CLI reads the defaults here: nothing heavy at import
    from heimdall.features import FeatureParams

MAX_CONFIG_CHARS = 64 * 1024
MAX_TEXT_CHARS = 4096  # paths, names, URIs
LOCALIZERS = ("auto", "network", "map", "hybrid")  # heimdall.release.choice: auto picks by validation NLL
MODE_KEYS = ("checkpoint", "export_only", "resume_training")  # saved by older runs; modes of `train`, not options
# Far above any useful network, low enough that a configuration from a file cannot ask for absurd memory or time.
SIZE_LIMITS = {
    "n_features": 8192,
    "d_model": 8192,
    "n_heads": 256,
    "n_layers": 256,
    "n_components": 64,
    "n_frequencies": 256,
}


@dataclass(frozen=True)
class NetConfig:
    """The architecture of LocalizationNet (heimdall.train.net); its defaults are those of every command."""

    n_features: int
    d_model: int = 96
    n_heads: int = 4
    n_layers: int = 3
    n_components: int = 1
    n_frequencies: int = 12
    dropout: float = 0.0
    power_index: int | None = None  # column of the in-band power; None (older checkpoints): the features' layout
    min_sigma_m: float = 30.0
    max_sigma_m: float = 400_000.0

    def __post_init__(self) -> None:
        """Refuse a configuration that cannot build a working network (ValueError naming the field)."""
        for name, most in SIZE_LIMITS.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= most:
                raise ValueError(f"{name} must be an integer in [1, {most}], got {v!r:.40}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be a multiple of n_heads {self.n_heads}")
        if self.power_index is None:
            from heimdall.features import power_column

            object.__setattr__(self, "power_index", power_column(self.n_features))
        if (
            isinstance(self.power_index, bool)
            or not isinstance(self.power_index, int)
            or not -self.n_features <= self.power_index < self.n_features
        ):
            raise ValueError(f"power_index must index the {self.n_features} features, got {self.power_index!r:.40}")
        sigmas = (self.min_sigma_m, self.max_sigma_m)
        if (
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (self.dropout, *sigmas))
            or not 0 <= self.dropout < 1
            or not 0 < self.min_sigma_m < self.max_sigma_m < math.inf
        ):
            raise ValueError(
                f"expected 0 ≤ dropout < 1 and 0 < min_sigma_m < max_sigma_m (finite), got "
                f"{self.dropout!r:.20}, {self.min_sigma_m!r:.20}, {self.max_sigma_m!r:.20}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the checkpoint's hyper-parameters, the ONNX metadata)."""
        return dataclasses.asdict(self)


@dataclass
class TrainConfig:
    """Options of a training run: defaults ← YAML (--config) ← flags; saved as the run's config.yaml."""

    # data
    data_dir: str | None = None  # default: the default scenario's dataset in the workspace (simulated if missing)
    scenario: str = DEFAULT_SCENARIO  # used only to simulate the default dataset
    dataset_size: int = DatasetSpec.n_transmissions  # when simulating the default dataset
    validation_split: float = 0.1  # used when the store has no val split
    batch_size: int = 256
    num_workers: int = 0
    loader_memory_mb: float = 1024.0  # store data each reading process keeps in memory; the rest is read from disk
    seed: int = 0
    # model
    d_model: int = NetConfig.d_model
    n_heads: int = NetConfig.n_heads
    n_layers: int = NetConfig.n_layers
    n_components: int = NetConfig.n_components
    dropout: float = NetConfig.dropout
    receiver_dropout: float = 0.1  # training-time probability of hiding each receiver
    feature_dropout: float = 0.2  # training-time probability of a transmission with power only (no spectrum)
    init_from: str | None = None  # a checkpoint whose weights start this run (fine-tuning)
    keep_normalisation: bool = False  # with init_from: keep its input normalisation instead of the new data's
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
    experiment_name: str = "heimdall"
    run_name_prefix: str = "heimdall"
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite in the workspace
    export: bool = True  # export ONNX after training
    signing_key: str | None = None  # key file signing the model's manifests (default $HEIMDALL_SIGNING_KEY_FILE)
    localizer: str = "auto"  # what is shipped: the lowest validation NLL of network, map, hybrid; or one of them
    map_spacing_m: float | None = None  # grid cell side of the radio map fitted for the choice (None: geometry's)
    # written by the run itself
    run_name: str | None = None
    mlflow_run_id: str | None = None

    def network(self, params: FeatureParams) -> NetConfig:
        """The network this configuration trains on features laid out by `params`."""
        return NetConfig(
            n_features=params.n_features,
            power_index=params.power_index,
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            n_components=self.n_components,
            dropout=self.dropout,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data (saved as config.yaml and logged to MLflow)."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The YAML text of `to_dict`."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: Path) -> None:
        """Write config.yaml atomically."""
        atomic_write_text(path, self.to_yaml())


FIELD_TYPES = {f.name: f.type for f in fields(TrainConfig)}


def from_mapping(values: dict[str, Any], origin: str, base: TrainConfig | None = None) -> TrainConfig:
    """A config with `values` applied over `base` (defaults); unknown keys are errors naming `origin`."""
    cfg = dataclasses.replace(base) if base is not None else TrainConfig()
    for key, value in values.items():
        if key in MODE_KEYS:
            continue
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
    if isinstance(kind, str):  # an optional option given: its type
        kind = kind.removesuffix(" | None")
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
        *(
            (1 <= getattr(cfg, k) <= most, f"{k} must be in [1, {most}]")
            for k, most in SIZE_LIMITS.items()
            if hasattr(cfg, k)
        ),
        (cfg.d_model % max(cfg.n_heads, 1) == 0, "d_model must be a multiple of n_heads"),
        (cfg.accelerator in ("cpu", "gpu", "cuda", "auto", "mps"), "accelerator must be cpu, gpu or auto"),
        (cfg.init_from or not cfg.keep_normalisation, "keep_normalisation needs init_from"),
        (cfg.localizer in LOCALIZERS, f"localizer must be one of {', '.join(LOCALIZERS)}"),
        (cfg.map_spacing_m is None or cfg.map_spacing_m > 0, "map_spacing_m must be > 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{origin}: {message}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A configuration file's options (plain YAML, bounded, without aliases); raises ConfigError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    data = (
        load_plain_yaml(read_bounded_text(p, ConfigError, MAX_CONFIG_CHARS), str(p), ConfigError, MAX_CONFIG_CHARS)
        or {}
    )
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of option: value")
    return data


def resolve(flags: dict[str, Any], config_file: str | None) -> TrainConfig:
    """Defaults ← config file ← flags (flags: only those given on the command line)."""
    cfg = TrainConfig()
    if config_file:
        cfg = from_mapping(load_yaml(config_file), str(config_file), cfg)
    return from_mapping(flags, "command line", cfg)
