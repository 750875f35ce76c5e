"""`heimdall train`: train, resume, or export a checkpoint, and print where everything went."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from heimdall.train.config import resolve
from heimdall.train.run import resume_config


def train_command(args: argparse.Namespace) -> int:
    console = Console()
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    cfg = resolve(flags, getattr(args, "config", None))
    if cfg.export_only:
        return _export_only(console, cfg)
    if cfg.resume_training:
        cfg = resume_config(cfg, set(flags))
    from heimdall.train.run import run_training

    result = run_training(cfg, console)
    table = Table(title=f"run {result.run_name}", show_header=False)
    table.add_row("epochs completed", str(result.epochs_completed))
    if result.best_val_median_error_m is not None:
        table.add_row("val median error (model, best checkpoint)", f"{result.best_val_median_error_m / 1e3:.2f} km")
    if result.baseline_val_median_error_m is not None:
        table.add_row("val median error (weighted centroid)", f"{result.baseline_val_median_error_m / 1e3:.2f} km")
    if result.val_calibration:
        c = result.val_calibration
        table.add_row("val coverage 1σ / 2σ (ideal 39.3 % / 86.5 %)",
                      f"{c['coverage_1sigma']:.1%} / {c['coverage_2sigma']:.1%} "
                      f"(covariance scale {result.covariance_scale:.2f})")
    table.add_row("best checkpoint", str(result.best_checkpoint))
    table.add_row("last checkpoint", str(result.last_checkpoint))
    if result.onnx_path:
        table.add_row("ONNX model", str(result.onnx_path))
    if result.published is not None and result.published.store_version is not None:
        table.add_row("model store", f"version {result.published.store_version} in {result.published.store}")
    if result.published is not None and result.published.registration is not None:
        g = result.published.registration
        table.add_row("MLflow registry", f"heimdall-localizer v{g.version} → {g.alias} ({g.reason})")
    table.add_row("MLflow run", f"{result.mlflow_run_id} at {result.tracking_uri}")
    table.add_row("time", f"{result.seconds:.0f} s")
    console.print(table)
    return 0


def _export_only(console: Console, cfg) -> int:
    from pathlib import Path

    from heimdall.commands.export import report
    from heimdall.publish import export_and_publish
    from heimdall.signing import signing_key
    from heimdall.train.config import ConfigError

    if not cfg.checkpoint:
        raise ConfigError("--export_only needs --checkpoint PATH")
    ckpt = Path(cfg.checkpoint)
    out = Path(cfg.checkpoint_dir) / "model.onnx" if cfg.checkpoint_dir else ckpt.with_name("model.onnx")
    report(console, export_and_publish(ckpt, out, None, {}, False, None, cfg.tracking_uri,
                                       signer=signing_key(cfg.signing_key)))
    return 0
