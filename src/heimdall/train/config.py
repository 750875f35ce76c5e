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
from typing import TYPE_CHECKING, Any, Literal, get_args

import yaml

from heimdall.atomic import atomic_write_text
from heimdall.datasets.spec import DatasetSpec
from heimdall.errors import ConfigError
from heimdall.option_field import option
from heimdall.plain_yaml import load_plain_yaml, read_bounded_text
from heimdall.scenario import DEFAULT_SCENARIO

if TYPE_CHECKING:  # the CLI reads the defaults here: nothing heavy at import
    from heimdall.features import FeatureParams

MAX_CONFIG_CHARS = 64 * 1024
MAX_TEXT_CHARS = 4096  # paths, names, URIs
Localizer = Literal["auto", "network", "map", "hybrid"]  # heimdall.release.choice: auto picks by validation NLL
LOCALIZERS: tuple[str, ...] = get_args(Localizer)
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
    data_dir: str | None = option(None, "store folder with train.h5/val.h5 (default: simulate --scenario's dataset)")
    scenario: str = option(
        DEFAULT_SCENARIO, "built-in scenario name or YAML file simulated when --data-dir is not given"
    )
    dataset_size: int = option(DatasetSpec.n_transmissions, "transmissions when simulating the default dataset")
    validation_split: float = option(
        0.1,
        "fraction of train used for validation when the store has no val split",
        aliases=("--val_split", "--val-split"),
    )
    batch_size: int = option(256, "batch size")
    num_workers: int = option(0, "DataLoader worker processes")
    loader_memory_mb: float = option(
        1024.0, "store data each reading process keeps in memory, MB (the rest is read from disk)"
    )
    seed: int = option(0, "seed of data order, initialisation and dropout")
    # model
    d_model: int = option(NetConfig.d_model, "width of the network")
    n_heads: int = option(NetConfig.n_heads, "attention heads (d_model must be a multiple)")
    n_layers: int = option(NetConfig.n_layers, "attention blocks")
    n_components: int = option(NetConfig.n_components, "Gaussian mixture components of the head")
    dropout: float = option(NetConfig.dropout, "dropout of the network's layers")
    receiver_dropout: float = option(
        0.1, "training-time probability of hiding each receiver (the model learns to work on any subset)"
    )
    feature_dropout: float = option(0.2, "share of training transmissions seen with power only, no spectrum")
    init_from: str | None = option(
        None,
        "start a new run from this checkpoint's weights (fine-tuning, e.g. simulation → a real network); its "
        "architecture must fit the run's",
        metavar="CKPT",
    )
    keep_normalisation: bool = option(
        False, "with --init-from: keep the checkpoint's input normalisation (default: recomputed on the new data)"
    )
    # optimisation
    epochs: int = option(60, "maximum epochs (early stopping usually ends sooner)")
    learning_rate: float = option(2e-3, "peak learning rate", aliases=("--lr",))
    weight_decay: float = option(1e-4, "AdamW weight decay")
    patience: int = option(10, "early-stopping patience in epochs (on val_loss)")
    max_time_minutes: float = option(12.0, "wall-clock budget of the fit (0: none)")
    # hardware
    accelerator: str = option("auto", "cpu, gpu or auto", choices=("cpu", "gpu", "auto"))
    devices: str = option("auto", "devices per node: a count, a list of GPU indices (0,1) or auto")
    num_nodes: int = option(1, "nodes for multi-node DDP")
    strategy: str = option("auto", "Lightning strategy, e.g. ddp")
    threads: int = option(0, "torch intra-op threads (0: all cores)", default_text="")
    # outputs and tracking
    checkpoint_dir: str | None = option(None, "run folder for checkpoints (default workspace/runs/<run name>)")
    experiment_name: str = option("heimdall", "MLflow experiment")
    run_name_prefix: str = option("heimdall", "prefix of the run name")
    tracking_uri: str | None = option(
        None, "MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite in the workspace)"
    )
    export: bool = option(True, "export ONNX after training, store and register it (--no-export: do not)")
    signing_key: str | None = option(
        None,
        "sign the exported model's manifests with this ed25519 private key (PEM) or HMAC key file "
        "(default $HEIMDALL_SIGNING_KEY_FILE)",
        metavar="FILE",
    )
    localizer: Localizer = option(
        "auto",
        "what is shipped (auto: the lowest validation NLL of the network, the radio map fitted on the store and their "
        "hybrid); network skips the map",
    )
    map_spacing_m: float | None = option(
        None, "grid cell side of that radio map in metres (default: from the network's geometry)"
    )
    # written by the run itself
    run_name: str | None = option(None, "name of the run (default --run-name-prefix and the start time)")
    mlflow_run_id: str | None = None  # the run's MLflow run; no flag

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
