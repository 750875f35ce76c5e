"""One training run as named steps, called in order by the `train` command (heimdall.commands.train):
prepare_data (the store) → build_model (the task, the run's folder) → start_tracking (MLflow, config.yaml) → fit
(checkpoints) → calibrate_best (validation figures) → log_validation (MLflow).

Training ends at the checkpoint: where the data comes from (simulated when missing) and what happens to the
model afterwards (export, store, registry) are the `train` command's orchestration.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import MLFlowLogger

    from heimdall.datasets.loader import StoreDataset, StoreMeta
    from heimdall.train.datamodule import StoreDataModule
    from heimdall.train.task import LocalizationTask

from heimdall.baselines import weighted_centroid
from heimdall.datasets.generate import dataset_fingerprint
from heimdall.errors import ConfigError, HeimdallError
from heimdall.metrics import calibration_summary, covariance_scale_for, error_m, mahalanobis_sq
from heimdall.train.checkpoint import AtomicCheckpointIO, load_checkpoint, remove_stale_temporaries
from heimdall.train.config import TrainConfig, from_mapping, load_yaml
from heimdall.train.fine_tune import initialise_from
from heimdall.train.model_card import ModelCard
from heimdall.workspace import artifact_location, default_tracking_uri, runs_dir, workspace

CONFIG_FILE = "config.yaml"
# Options that may differ when a run is resumed (everything else comes from the run's saved config).
RESUME_OVERRIDABLE = (
    "data_dir",  # the same store moved (its scenario is checked against the run's)
    "epochs",
    "max_time_minutes",
    "patience",
    "num_workers",
    "loader_memory_mb",
    "accelerator",
    "devices",
    "num_nodes",
    "strategy",
    "threads",
    "export",
    "signing_key",
    "localizer",
    "map_spacing_m",
)


@dataclass
class TrainResult:
    """Where a run's outputs are and how its best checkpoint does on the validation split."""

    run_name: str
    checkpoint_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    mlflow_run_id: str | None
    tracking_uri: str
    epochs_completed: int
    best_val_median_error_m: float | None = None
    baseline_val_median_error_m: float | None = None
    val_calibration: dict | None = None  # of the best checkpoint after covariance calibration
    covariance_scale: float | None = None
    global_rank: int = 0  # of this process; only rank 0 has the results and publishes
    seconds: float = 0.0


def resume_config(cfg: TrainConfig, given: set[str]) -> TrainConfig:
    """The saved configuration of the run in cfg.checkpoint_dir, with the resumable options that were given.

    An option in `given` that cannot change on resume (batch size, learning rate, architecture, …) and differs
    from the saved one is refused (ConfigError naming it) rather than silently dropped."""
    if not cfg.checkpoint_dir:
        raise ConfigError(
            "--resume-training needs --checkpoint RUN/last.ckpt or --checkpoint-dir RUN (the run to continue)"
        )
    saved_path = Path(cfg.checkpoint_dir) / CONFIG_FILE
    if not saved_path.is_file():
        raise ConfigError(f"{saved_path}: no saved configuration; is {cfg.checkpoint_dir} a Heimdall run folder?")
    saved = from_mapping(load_yaml(saved_path), str(saved_path))
    fixed = sorted(k for k in given - {*RESUME_OVERRIDABLE, "checkpoint_dir"} if getattr(cfg, k) != getattr(saved, k))
    if fixed:
        changes = ", ".join(f"--{k.replace('_', '-')} {getattr(cfg, k)} (run: {getattr(saved, k)})" for k in fixed)
        raise ConfigError(
            f"{changes}: cannot change when resuming {cfg.checkpoint_dir}; start a new run, or fine-tune with "
            "--init-from"
        )
    overrides = {k: getattr(cfg, k) for k in RESUME_OVERRIDABLE if k in given}
    # the folder given is the run resumed (a copied or moved run folder names its old place in its config)
    return dataclasses.replace(saved, checkpoint_dir=cfg.checkpoint_dir, **overrides)


def launch_rank() -> int:
    """This process's global rank as its launcher set it (Lightning's own DDP launcher, torchrun, SLURM), known
    before the Trainer exists: 0 when launched alone, and in the process that starts Lightning's other ranks.

    Every rank runs the whole command; only rank 0 writes the run's files (its folder, config.yaml, train.log).
    Another rank's own run name or config.yaml would replace the run's, and a resumed run would start a new
    MLflow run."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0))


@dataclass
class TrainingData:
    """The store a run trains on: its data module, its train and validation splits and the model card it gives."""

    data_dir: Path
    module: StoreDataModule
    train_set: StoreDataset
    val_set: StoreDataset
    card: ModelCard

    @property
    def meta(self) -> StoreMeta:
        """The store's metadata (receivers, scenario, feature layout)."""
        return self.train_set.meta


@dataclass
class RunModel:
    """What a run fits and where it goes: the task (new, fine-tuned or resumed), the run's name and folder."""

    task: LocalizationTask
    run_name: str
    checkpoint_dir: Path


@dataclass
class Tracking:
    """A run's MLflow run (new or continued), its tracking URI and the run's configuration as saved."""

    cfg: TrainConfig
    logger: MLFlowLogger
    tracking_uri: str


def prepare_data(cfg: TrainConfig, console: Console) -> TrainingData:
    """Read the store in cfg.data_dir (seeding every generator, setting torch's threads): its data module, splits and
    model card; warns on `console` when store files do not fit --loader-memory-mb."""
    import lightning as L
    import torch

    from heimdall.train.datamodule import StoreDataModule

    if not cfg.data_dir:
        raise ConfigError("no data: give --data-dir (a store folder made by `heimdall simulate` or `heimdall import`)")
    data_dir = Path(cfg.data_dir)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = StoreDataModule(
        data_dir, cfg.batch_size, cfg.num_workers, cfg.validation_split, cfg.seed, cfg.loader_memory_mb * 1024**2
    )
    train_set, val_set = dm.datasets()
    for split, ds in (("train", train_set), ("val", val_set)):
        if ds.files_on_disk:
            console.print(
                f"{split}: {len(ds.files_on_disk)} of {len(ds.infos)} store files do not fit "
                f"--loader-memory-mb {cfg.loader_memory_mb:g} and are read from disk for every batch "
                "(slower); raise it if the memory allows",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    return TrainingData(data_dir, dm, train_set, val_set, ModelCard.from_store(train_set.meta, str(data_dir)))


def build_model(cfg: TrainConfig, data: TrainingData, resume: bool) -> RunModel:
    """The task to fit and the run's name and folder: the resumed run's last.ckpt (its store's scenario checked), or
    a new network from the configuration, normalised on the store (or initialised from cfg.init_from). A new run's
    folder is created (by rank 0) and must not hold a run already."""
    from heimdall.train.task import LocalizationTask, load_task

    if resume:
        if cfg.checkpoint_dir is None or cfg.run_name is None:
            raise ConfigError("resuming needs the run's checkpoint_dir and run_name (as its config.yaml holds them)")
        ckpt_dir = Path(cfg.checkpoint_dir)
        task = load_task(ckpt_dir / "last.ckpt")
        saved = ModelCard.from_checkpoint(task.heimdall_meta, str(ckpt_dir / "last.ckpt"), HeimdallError)
        if saved.scenario_sha256 != data.card.scenario_sha256:
            raise HeimdallError(f"{data.data_dir}: store from another scenario than the run in {ckpt_dir}")
        remove_stale_temporaries(ckpt_dir)
        return RunModel(task, cfg.run_name, ckpt_dir)
    run_name = cfg.run_name or f"{cfg.run_name_prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    ckpt_dir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else runs_dir() / run_name
    if (ckpt_dir / "last.ckpt").exists():
        raise ConfigError(f"{ckpt_dir}: already holds a run; use --resume-training to continue it")
    if launch_rank() == 0:  # the other ranks take rank 0's checkpoint folder from the Trainer (ModelCheckpoint)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    mean, std, scale = data.module.normalisation()
    task = LocalizationTask(
        cfg.network(data.card.feature_params).to_dict(),
        cfg.learning_rate,
        cfg.weight_decay,
        cfg.receiver_dropout,
        cfg.feature_dropout,
    )
    if cfg.init_from:
        initialise_from(task, cfg.init_from, (mean, std, scale), cfg.keep_normalisation)
    else:
        task.net.set_normalisation(mean, std, scale)
    return RunModel(task, run_name, ckpt_dir)


def start_tracking(cfg: TrainConfig, data: TrainingData, model: RunModel, resume: bool) -> Tracking:
    """Start the run's MLflow run (continue it when resuming) tagged with the store's fingerprints; save the completed
    configuration as the run folder's config.yaml (rank 0), put the model card and configuration into the task's
    checkpoint metadata, and log the configuration as the new run's parameters."""
    from lightning.pytorch.loggers import MLFlowLogger

    tracking_uri = cfg.tracking_uri or default_tracking_uri()
    workspace().mkdir(parents=True, exist_ok=True)  # the default tracking store lives there
    dataset_sha = dataset_fingerprint(sorted({i.path for i in data.train_set.infos + data.val_set.infos}))
    logger = MLFlowLogger(
        experiment_name=cfg.experiment_name,
        run_name=model.run_name,
        tracking_uri=tracking_uri,
        artifact_location=artifact_location(tracking_uri),
        run_id=cfg.mlflow_run_id if resume else None,
        tags={
            "scenario_sha256": data.meta.scenario_sha256,
            "dataset_sha256": dataset_sha,
            "data_dir": str(data.data_dir.resolve()),
        },
    )
    cfg = dataclasses.replace(
        cfg,
        run_name=model.run_name,
        checkpoint_dir=str(model.checkpoint_dir),
        mlflow_run_id=logger.run_id,
        data_dir=str(data.data_dir),
    )
    if launch_rank() == 0:
        cfg.save(model.checkpoint_dir / CONFIG_FILE)
    card = dataclasses.replace(data.card, dataset_sha256=dataset_sha, mlflow_run_id=logger.run_id or "")
    model.task.heimdall_meta = card.to_checkpoint() | {"config": cfg.to_dict()}
    if not resume:
        logger.log_hyperparams({f"cfg.{k}": v for k, v in cfg.to_dict().items() if k not in ("mlflow_run_id",)})
    return Tracking(cfg, logger, tracking_uri)


def fit(run: Tracking, data: TrainingData, model: RunModel, resume: bool) -> TrainResult:
    """Fit the task on the data module (from last.ckpt when resuming) with checkpoints (best and last, written
    atomically), early stopping, the learning rate logged and --max-time-minutes; the TrainResult of the run's
    checkpoints and epochs (its validation fields are filled by `calibrate_best`)."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, RichProgressBar

    cfg, ckpt_dir = run.cfg, model.checkpoint_dir
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor="val_loss",
        mode="min",
        save_top_k=1,
        save_last=True,
        enable_version_counter=False,
    )
    callbacks = [
        checkpoint,
        EarlyStopping(monitor="val_loss", patience=cfg.patience),
        LearningRateMonitor(logging_interval="epoch"),
        RichProgressBar(console_kwargs={"stderr": True}),  # stdout is for results (--json)
    ]
    if cfg.max_time_minutes > 0:
        callbacks.append(fresh_budget_timer(cfg.max_time_minutes))
    trainer = L.Trainer(
        max_epochs=cfg.epochs,
        accelerator=cfg.accelerator,
        devices=int(cfg.devices) if str(cfg.devices).isdigit() else cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        logger=run.logger,
        log_every_n_steps=50,
        enable_model_summary=False,
        default_root_dir=str(ckpt_dir),
    )
    trainer.fit(model.task, data.module, ckpt_path=str(ckpt_dir / "last.ckpt") if resume else None, weights_only=True)
    return TrainResult(
        run_name=model.run_name,
        checkpoint_dir=ckpt_dir,
        best_checkpoint=Path(checkpoint.best_model_path) if checkpoint.best_model_path else None,
        last_checkpoint=ckpt_dir / "last.ckpt" if (ckpt_dir / "last.ckpt").exists() else None,
        mlflow_run_id=run.logger.run_id,
        tracking_uri=run.tracking_uri,
        epochs_completed=trainer.current_epoch,
        global_rank=trainer.global_rank,
    )


def calibrate_best(result: TrainResult, data: TrainingData) -> None:
    """Calibrate the best checkpoint's covariance on the validation split (the scale written into the checkpoint)
    and fill the result's validation figures: the best checkpoint's median error and calibration after it, and the
    weighted centroid's median error."""
    from heimdall.train.task import load_task, predict_numpy

    val, meta = data.val_set.read_split(), data.meta
    truth = val.target_m
    rx = np.broadcast_to(meta.rx_position_m, (len(truth), *meta.rx_position_m.shape)).copy()
    if result.best_checkpoint is not None:
        best_task = load_task(result.best_checkpoint)
        pred, cov = predict_numpy(best_task.net, val.features, rx, val.present)
        scale = best_task.net.calibrate_covariance(covariance_scale_for(mahalanobis_sq(pred, cov, truth)))
        _store_covariance_scale(result.best_checkpoint, scale)
        pred, cov = predict_numpy(best_task.net, val.features, rx, val.present)
        result.best_val_median_error_m = float(np.median(error_m(pred, truth)))
        result.val_calibration = calibration_summary(pred, cov, truth)
        result.covariance_scale = scale
    power = val.features[..., data.card.feature_params.power_index]
    centroid = weighted_centroid(power, val.heard, meta.rx_position_m)
    result.baseline_val_median_error_m = float(np.median(error_m(centroid, truth)))


def log_validation(run: Tracking, result: TrainResult) -> None:
    """Log the result's validation figures to the MLflow run (metrics; the best checkpoint's path as a tag) and the
    run folder's config.yaml as an artifact."""
    client, run_id = run.logger.experiment, run.logger.run_id
    client.log_metric(run_id, "best_val_median_error_m", result.best_val_median_error_m or float("nan"))
    client.log_metric(run_id, "val_weighted_centroid_median_error_m", result.baseline_val_median_error_m)
    for key, value in (result.val_calibration or {}).items():
        client.log_metric(run_id, f"best_val_{key}", value)
    if result.covariance_scale is not None:
        client.log_metric(run_id, "covariance_scale", result.covariance_scale)
    if result.best_checkpoint is not None:
        client.set_tag(run_id, "best_checkpoint", str(result.best_checkpoint.resolve()))
    client.log_artifact(run_id, str(result.checkpoint_dir / CONFIG_FILE))


def fresh_budget_timer(minutes: float) -> Callback:
    """Lightning's Timer with a budget of `minutes` per fit: a resumed run gets the whole budget again instead of
    the time the checkpoint says was already spent (which would stop a run ended by its budget at once)."""
    from lightning.pytorch.callbacks import Timer

    class FreshBudgetTimer(Timer):
        def load_state_dict(self, state_dict: dict) -> None:
            """Keep the fresh budget (the saved elapsed time is not restored)."""

    return FreshBudgetTimer(duration=timedelta(minutes=minutes), interval="step")


def _store_covariance_scale(checkpoint: Path, scale: float) -> None:
    """Write the calibrated covariance scale into the checkpoint's weights (atomically)."""
    import torch

    ckpt = load_checkpoint(checkpoint)
    ckpt["state_dict"]["net.covariance_scale"] = torch.tensor(scale)
    ckpt["heimdall"]["covariance_scale"] = scale
    AtomicCheckpointIO().save_checkpoint(ckpt, checkpoint)
