"""The Lightning shell around LocalizationNet: loss, receiver dropout, validation metrics in metres."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

from heimdall.errors import CheckpointError
from heimdall.features import FeatureParams
from heimdall.metrics import accuracy_summary, calibration_summary
from heimdall.scenario.domain import Scenario
from heimdall.train.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, AtomicCheckpointIO, load_checkpoint
from heimdall.train.config import NetConfig, TrainConfig
from heimdall.train.model_card import ModelCard
from heimdall.train.net import LocalizationNet, mixture_nll, moment_match


class LocalizationTask(L.LightningModule):
    """Trains LocalizationNet with the 2-D Gaussian (mixture) NLL in normalised metres.

    Logged per epoch: train_loss, val_loss, val_median_error_m, val_p90_error_m, val_coverage_1sigma,
    val_coverage_2sigma.
    """

    def __init__(
        self,
        net: dict,
        learning_rate: float,
        weight_decay: float,
        receiver_dropout: float,
        feature_dropout: float = 0.0,
        heimdall: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["heimdall"])
        self.net = LocalizationNet(NetConfig(**net))
        self.heimdall_meta = heimdall or {}
        self._val: list[tuple[torch.Tensor, ...]] = []

    def _inputs(self, batch: dict[str, torch.Tensor], training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, present) as the network sees them; in training, hide receivers (receiver_dropout) and
        the spectral features of whole transmissions, keeping power only (feature_dropout)."""
        features, present = batch["features"], batch["present"]
        receiver_dropout, feature_dropout = self.hparams["receiver_dropout"], self.hparams["feature_dropout"]
        if training and receiver_dropout > 0:
            present = present * (torch.rand_like(present) >= receiver_dropout)
        if training and feature_dropout > 0:
            power_only = torch.rand(len(features), 1, 1, device=features.device) < feature_dropout
            spectral = torch.ones(features.shape[-1], dtype=torch.bool, device=features.device)
            spectral[self.net.cfg.power_index] = False
            features = features.masked_fill(power_only & spectral, float("nan"))
        return features, present

    def _loss(
        self, batch: dict[str, torch.Tensor], training: bool
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        features, present = self._inputs(batch, training)
        means, chol, logits = self.net(features, batch["rx_position_m"], present)
        target = batch["target_m"] / self.net.position_scale_m
        return mixture_nll(means, chol, logits, target).mean(), (means, chol, logits)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Mixture NLL of one training batch (logged as train_loss)."""
        loss, _ = self._loss(batch, training=True)
        self.log(
            "train_loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(batch["target_m"]),
            sync_dist=True,
        )
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Validation NLL of one batch; keeps the predictions for the epoch's error and calibration figures."""
        loss, out = self._loss(batch, training=False)
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=len(batch["target_m"]), sync_dist=True)
        mean, cov = moment_match(*out)
        s = self.net.position_scale_m
        self._val.append((mean * s, cov * s * s, batch["target_m"]))

    def on_validation_epoch_end(self) -> None:
        """Log the epoch's validation error (median, p90) and coverage of the 1σ/2σ ellipses."""
        if not self._val:
            return
        mean, cov, target = (torch.cat(t) for t in zip(*self._val, strict=False))
        self._val.clear()
        if self.trainer.world_size > 1:
            mean, cov, target = (cast(torch.Tensor, self.all_gather(t)).flatten(0, 1) for t in (mean, cov, target))
        m, c, t = (x.detach().double().cpu().numpy() for x in (mean, cov, target))
        acc, cal = accuracy_summary(m, t), calibration_summary(m, c, t)
        self.log_dict(
            {
                "val_median_error_m": acc["median_error_m"],
                "val_p90_error_m": acc["p90_error_m"],
                "val_coverage_1sigma": cal["coverage_1sigma"],
                "val_coverage_2sigma": cal["coverage_2sigma"],
            },
            prog_bar=False,
            rank_zero_only=True,
        )
        self.log("val_median_km", acc["median_error_m"] / 1e3, prog_bar=True, rank_zero_only=True)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """AdamW with the run's learning rate and weight decay; the rate halves when val_loss stalls."""
        opt = torch.optim.AdamW(
            self.parameters(), lr=self.hparams["learning_rate"], weight_decay=self.hparams["weight_decay"]
        )
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=3, min_lr=1e-5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss"}}

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]  # narrower on purpose: the CPU, no overrides
        cls, checkpoint_path: str, map_location: str | None = "cpu"
    ) -> LocalizationTask:
        """The task of a checked Heimdall checkpoint, on the CPU (load_task): tensors and plain data only, where
        Lightning's own loader unpickles whatever its caller allows."""
        if map_location not in (None, "cpu"):
            raise ValueError(f"checkpoints load on the CPU, not {map_location!r}")
        return load_task(checkpoint_path)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add the Heimdall section (format, version, model card, run configuration) to the checkpoint."""
        checkpoint["heimdall"] = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **self.heimdall_meta}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Read the Heimdall section back into heimdall_meta."""
        meta = dict(checkpoint.get("heimdall", {}))
        meta.pop("format", None)
        meta.pop("version", None)
        self.heimdall_meta = meta


def predict_numpy(
    net: LocalizationNet, features: np.ndarray, rx_position_m: np.ndarray, present: np.ndarray, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Run the network on numpy inputs in batches → mean [n, 2] metres, covariance [n, 2, 2] m² (float64)."""
    net.eval()
    means, covs = [], []
    with torch.no_grad():
        for s in range(0, len(features), batch_size):
            sl = slice(s, s + batch_size)
            m, c = net.predict_m(
                torch.as_tensor(features[sl]),
                torch.as_tensor(rx_position_m[sl]),
                torch.as_tensor(present[sl], dtype=torch.float32),
            )
            means.append(m.double().numpy())
            covs.append(c.double().numpy())
    return np.concatenate(means), np.concatenate(covs)


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
            raise CheckpointError(
                f"{p}: state_dict[{name!r}] is {state[name].dtype} {tuple(state[name].shape)}, "
                f"the network needs {t.dtype} {tuple(t.shape)}"
            )
    task.load_state_dict(state, strict=True, assign=True)
    task.on_load_checkpoint(ckpt)
    return task


def untrained_checkpoint(scenario: Scenario, path: str | Path) -> Path:
    """Write a checkpoint of the default network for `scenario` with random weights, and return its path.

    For what needs a real model but not a trained one: timing inference (speed does not depend on the weights),
    or serving a second model with another receiver table or feature count.
    """
    cfg = TrainConfig()
    params = FeatureParams.from_scenario(scenario)
    task = LocalizationTask(cfg.network(params).to_dict(), cfg.learning_rate, 0.0, 0.0)
    en = scenario.receiver_positions_m()
    receivers = {
        "id": [r.id for r in scenario.receivers],
        "lat": [r.lat for r in scenario.receivers],
        "lon": [r.lon for r in scenario.receivers],
        "east_m": en[:, 0].tolist(),
        "north_m": en[:, 1].tolist(),
    }
    task.heimdall_meta = ModelCard(
        feature_params=params,
        receivers=receivers,
        scenario=scenario,
        scenario_yaml=scenario.to_yaml(),
        scenario_sha256=scenario.sha256,
    ).to_checkpoint()
    trainer = L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        plugins=[AtomicCheckpointIO()],
        max_epochs=0,
    )
    trainer.strategy.connect(task)
    trainer.save_checkpoint(path, weights_only=True)  # no optimizer to save
    return Path(path)
