"""`heimdall train`: simulate the default dataset if it is missing, train (or resume), then publish the best
checkpoint (export → model store → registry); or, with --export-only, publish a given checkpoint."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

from heimdall.commands.export import report
from heimdall.datasets.generate import generate_dataset
from heimdall.datasets.spec import DatasetSpec
from heimdall.datasets.store import split_files
from heimdall.errors import ConfigError
from heimdall.metrics import COVERAGE_1SIGMA_IDEAL, COVERAGE_2SIGMA_IDEAL
from heimdall.release.publish import PublishOptions, PublishResult, export_and_publish
from heimdall.scenario.builtin import load_scenario
from heimdall.signing import signing_key
from heimdall.train.config import TrainConfig, resolve
from heimdall.train.run import TrainResult, resume_config, run_training
from heimdall.workspace import default_data_dir, default_model_store

MODES = ("export_only", "checkpoint", "resume_training")  # what the command does, not options of the run


def train_command(args: argparse.Namespace) -> int:
    """Run `heimdall train` (see the module docstring); 0 on success."""
    console = Console()
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config", *MODES)}
    cfg = resolve(flags, getattr(args, "config", None))
    if getattr(args, "export_only", False):
        return _export_only(console, cfg, getattr(args, "checkpoint", None))
    resume = getattr(args, "resume_training", False)
    if resume:
        cfg = resume_config(cfg, set(flags))
    signer = signing_key(cfg.signing_key) if cfg.export else None  # a bad key file fails now, not after the fit
    cfg = dataclasses.replace(cfg, data_dir=str(ensure_dataset(cfg, console)))
    result = run_training(cfg, console, resume=resume)
    published = None
    if cfg.export and result.best_checkpoint is not None and result.global_rank == 0:
        published = export_and_publish(
            result.best_checkpoint,
            result.checkpoint_dir / "model.onnx",
            options=PublishOptions(store=default_model_store(), tracking_uri=result.tracking_uri, signer=signer),
        )
    if result.global_rank == 0:
        print_result(console, result, published)
    return 0


def ensure_dataset(cfg: TrainConfig, console: Console) -> Path:
    """The data folder; the default scenario's dataset is simulated into the workspace when missing."""
    if cfg.data_dir:
        return Path(cfg.data_dir)
    scenario = load_scenario(cfg.scenario)
    data_dir = default_data_dir(scenario.name)
    if not split_files(data_dir, "train") or not split_files(data_dir, "val"):
        console.print(f"No dataset in {data_dir}: simulating {cfg.dataset_size} transmissions of {scenario.name}…")
        summary = generate_dataset(
            scenario,
            data_dir,
            DatasetSpec(n_transmissions=cfg.dataset_size, seed=cfg.seed),
            workers=os.cpu_count() or 1,
        )
        console.print(f"  {summary.n_samples} transmissions in {summary.seconds:.0f} s")
    return data_dir


def print_result(console: Console, result: TrainResult, published: PublishResult | None) -> None:
    """The table of where everything went."""
    table = Table(title=f"run {result.run_name}", show_header=False)
    table.add_row("epochs completed", str(result.epochs_completed))
    if result.best_val_median_error_m is not None:
        table.add_row("val median error (model, best checkpoint)", f"{result.best_val_median_error_m / 1e3:.2f} km")
    if result.baseline_val_median_error_m is not None:
        table.add_row("val median error (weighted centroid)", f"{result.baseline_val_median_error_m / 1e3:.2f} km")
    if result.val_calibration:
        c = result.val_calibration
        table.add_row(
            f"val coverage 1σ / 2σ (ideal {COVERAGE_1SIGMA_IDEAL:.1%} / {COVERAGE_2SIGMA_IDEAL:.1%})",
            f"{c['coverage_1sigma']:.1%} / {c['coverage_2sigma']:.1%} (covariance scale {result.covariance_scale:.2f})",
        )
    table.add_row("best checkpoint", str(result.best_checkpoint))
    table.add_row("last checkpoint", str(result.last_checkpoint))
    if published is not None:
        table.add_row("ONNX model", str(published.export.path))
        if published.store_version is not None:
            table.add_row("model store", f"version {published.store_version} in {published.store}")
        if published.registration is not None:
            g = published.registration
            table.add_row("MLflow registry", f"{g.name} v{g.version} → {g.alias} ({g.reason})")
    table.add_row("MLflow run", f"{result.mlflow_run_id} at {result.tracking_uri}")
    table.add_row("time", f"{result.seconds:.0f} s")
    console.print(table)


def _export_only(console: Console, cfg: TrainConfig, checkpoint: str | None) -> int:
    if not checkpoint:
        raise ConfigError("--export-only needs --checkpoint PATH")
    ckpt = Path(checkpoint)
    out = Path(cfg.checkpoint_dir) / "model.onnx" if cfg.checkpoint_dir else ckpt.with_name("model.onnx")
    report(
        console,
        export_and_publish(
            ckpt,
            out,
            options=PublishOptions(register=False, tracking_uri=cfg.tracking_uri, signer=signing_key(cfg.signing_key)),
        ),
    )
    return 0
