"""`heimdall train`: simulate the default dataset if it is missing, train (or resume), then publish the best
checkpoint (export → model store → registry); or, with --export-only, publish a given checkpoint.

The run is named steps called in order, each timed as a phase of the run's TimeBudget (shown in the summary):
the dataset (`simulate`, when it is made), the training's steps (heimdall.train.run: prepare data → build model →
start tracking → fit → calibrate the best checkpoint → log its validation; phase `train`) and the publishing
steps (heimdall.release.publish: export → choose the localizer → judge the shipped model → store and register;
phases `export`, `map fit`, `choice`, `evaluation`, `champion evaluation`, `registration`).

Human output goes to stdout, or to stderr with --json, which prints one JSON summary on stdout instead (whatever
libraries print meanwhile, such as MLflow's run links, goes to stderr then). A failure
after the MLflow run started ends that run as FAILED (heimdall.train.failed_run).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from heimdall.budget import TimeBudget
from heimdall.commands.export import report
from heimdall.commands.logs import TRACEBACKS, log_file
from heimdall.commands.options import s3_options
from heimdall.commands.progress import staged_progress
from heimdall.datasets.generate import generate_dataset
from heimdall.datasets.spec import DatasetSpec
from heimdall.datasets.store import split_files
from heimdall.errors import ConfigError, HeimdallError
from heimdall.metrics import COVERAGE_1SIGMA_IDEAL, COVERAGE_2SIGMA_IDEAL
from heimdall.radiomap.fit import MapOptions
from heimdall.release.choice import Choice, describe_medians
from heimdall.release.publish import PublishOptions, PublishResult, export_and_publish
from heimdall.scenario.builtin import load_scenario
from heimdall.signing import signing_key
from heimdall.train.config import TrainConfig, resolve
from heimdall.train.failed_run import end_failed_run
from heimdall.train.run import (
    TrainResult,
    build_model,
    calibrate_best,
    fit,
    launch_rank,
    log_validation,
    prepare_data,
    resume_config,
    start_tracking,
)
from heimdall.units import format_distance
from heimdall.workspace import default_data_dir, default_model_store, default_tracking_uri, runs_dir

# What the command does and where its results go; not options of the run (not saved in config.yaml).
COMMAND_ONLY = (
    "export_only",
    "checkpoint",
    "resume_training",
    "json",
    "log_level",
    "debug",
    "store",
    "eval_data",
    "s3_endpoint_url",
    "s3_access_key",
    "s3_secret_key",
)
LOG_FILE = "train.log"
# the steps after training (export, map fit, choice, evaluations, registration) may run this share of
# --max-time-minutes beyond the training's budget: the default run, 12 minutes of fit, ends within 15
PUBLISH_SHARE = 0.25
CHOICE_PHASES = ("map fit", "choice", "evaluation")  # what the choice of localizer adds to a run
log = logging.getLogger(__name__)


def train_command(args: argparse.Namespace) -> int:
    """Run `heimdall train` (see the module docstring); 0 on success."""
    if not getattr(args, "json", False):
        return _train_command(args, Console(), None)
    json_out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # MLflow prints run links to stdout when tracking to a server
        return _train_command(args, Console(stderr=True), json_out)


def _train_command(args: argparse.Namespace, console: Console, json_out: TextIO | None) -> int:
    """`heimdall train` with its human output on `console` and, given `json_out`, the JSON summary there."""
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config", *COMMAND_ONLY)}
    cfg = resolve(flags, getattr(args, "config", None))
    checkpoint = getattr(args, "checkpoint", None)
    resume = getattr(args, "resume_training", False)
    publish = _publish_options(args, cfg)
    if getattr(args, "export_only", False):
        if resume:
            raise ConfigError("--export-only and --resume-training exclude each other")
        if cfg.localizer in ("map", "hybrid"):
            raise ConfigError(
                f"--localizer {cfg.localizer} with --export-only: --export-only publishes the network; attach a map "
                "to its model.onnx with `heimdall map fit STORE --model model.onnx --out model-map.onnx`"
            )
        return _export_only(console, cfg, checkpoint, publish, json_out)
    if resume:
        if getattr(args, "config", None):
            raise ConfigError("--resume-training continues with the run's saved config.yaml; leave out --config")
        cfg = resume_config(_resumed_folder(cfg, checkpoint), set(flags))
    elif checkpoint:
        raise ConfigError(
            f"--checkpoint {checkpoint}: give --export-only (publish it) or --resume-training (continue its run); "
            "to fine-tune from its weights in a new run use --init-from"
        )
    check_hardware(cfg)
    if cfg.export:
        publish = dataclasses.replace(publish, signer=signing_key(cfg.signing_key))  # a bad key fails before the fit
    if not resume:
        run_name = cfg.run_name or f"{cfg.run_name_prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
        cfg = dataclasses.replace(
            cfg, run_name=run_name, checkpoint_dir=cfg.checkpoint_dir or str(runs_dir() / run_name)
        )
    run_dir = Path(cfg.checkpoint_dir or ".")
    created = not run_dir.exists()
    budget = TimeBudget()
    try:
        with log_file(run_dir / LOG_FILE) if launch_rank() == 0 else contextlib.nullcontext():
            try:
                cfg = dataclasses.replace(cfg, data_dir=str(ensure_dataset(cfg, console, budget)))
                _check_localizer(cfg)
                _warn_unused_validation_split(cfg, set(flags))
                started = time.monotonic()
                with budget.phase("train"):
                    result = train(cfg, console, resume)
                published = None
                if cfg.export and result.best_checkpoint is not None and result.global_rank == 0:
                    budget.deadline = publish_deadline(cfg, started)
                    published = publish_best(result, publish, budget, console)
            except Exception as exc:
                if not isinstance(exc, HeimdallError):
                    TRACEBACKS.debug("%s failed", run_dir, exc_info=True)
                    log.error("the traceback is in %s", run_dir / LOG_FILE)
                raise
    except BaseException as exc:
        if created and isinstance(exc, HeimdallError):  # the message said it all; keep nothing of a run not begun
            (run_dir / LOG_FILE).unlink(missing_ok=True)
        end_failed_run(run_dir, cfg.tracking_uri or default_tracking_uri(), created)
        raise
    if result.global_rank == 0:
        print_result(console, result, published, budget.seconds)
        if json_out is not None:
            print(json.dumps(summary(result, published, budget.seconds)), file=json_out)
    return 0


def train(cfg: TrainConfig, console: Console, resume: bool) -> TrainResult:
    """Train on the store in cfg.data_dir (or resume the run in cfg.checkpoint_dir): the training's steps in order
    (heimdall.train.run); where everything is. Only rank 0 calibrates, logs and has the validation figures."""
    t0 = time.perf_counter()
    data = prepare_data(cfg, console)
    model = build_model(cfg, data, resume)
    run = start_tracking(cfg, data, model, resume)
    result = fit(run, data, model, resume)
    if result.global_rank == 0:
        calibrate_best(result, data)
        log_validation(run, result)
        result.seconds = time.perf_counter() - t0
    return result


def publish_deadline(cfg: TrainConfig, started: float) -> float | None:
    """When the steps after training must end (time.monotonic(); None without a budget): the run's budget,
    --max-time-minutes × (1 + PUBLISH_SHARE), counted from `started` (the training's start)."""
    if not cfg.max_time_minutes:
        return None
    return started + cfg.max_time_minutes * 60 * (1 + PUBLISH_SHARE)


def ensure_dataset(cfg: TrainConfig, console: Console, budget: TimeBudget | None = None) -> Path:
    """The data folder; the default scenario's dataset is simulated into the workspace when missing (its time is
    the phase "simulate" of `budget`)."""
    if cfg.data_dir:
        return Path(cfg.data_dir)
    scenario = load_scenario(cfg.scenario)
    data_dir = default_data_dir(scenario.name)
    if not split_files(data_dir, "train") or not split_files(data_dir, "val"):
        console.print(f"No dataset in {data_dir}: simulating {cfg.dataset_size} transmissions of {scenario.name}…")
        with (budget or TimeBudget()).phase("simulate"):
            summary = generate_dataset(
                scenario,
                data_dir,
                DatasetSpec(n_transmissions=cfg.dataset_size, seed=cfg.seed),
                workers=os.cpu_count() or 1,
            )
        console.print(f"  {summary.n_samples} transmissions in {summary.seconds:.0f} s")
    return data_dir


def print_result(
    console: Console, result: TrainResult, published: PublishResult | None, phases_s: dict[str, float]
) -> None:
    """The table of where everything went, and the seconds of each phase."""
    table = Table(title=f"run {result.run_name}", show_header=False)
    table.add_row("epochs completed", str(result.epochs_completed))
    if result.best_val_median_error_m is not None:
        table.add_row("val median error (model, best checkpoint)", format_distance(result.best_val_median_error_m))
    if result.baseline_val_median_error_m is not None:
        table.add_row("val median error (weighted centroid)", format_distance(result.baseline_val_median_error_m))
    if result.val_calibration:
        c = result.val_calibration
        table.add_row(
            f"val coverage 1σ / 2σ (ideal {COVERAGE_1SIGMA_IDEAL:.1%} / {COVERAGE_2SIGMA_IDEAL:.1%})",
            f"{c['coverage_1sigma']:.1%} / {c['coverage_2sigma']:.1%} (covariance scale {result.covariance_scale:.2f})",
        )
    table.add_row("best checkpoint", str(result.best_checkpoint))
    table.add_row("last checkpoint", str(result.last_checkpoint))
    if published is not None:
        table.add_row("ONNX model", str(published.path))
        if published.store_version is not None:
            table.add_row("model store", f"version {published.store_version} in {published.store}")
        if published.registration is not None:
            g = published.registration
            table.add_row("MLflow registry", f"{g.name} v{g.version} → {g.alias} ({g.reason})")
    table.add_row("MLflow run", f"{result.mlflow_run_id} at {result.tracking_uri}")
    table.add_row("time", phase_line(phases_s))
    console.print(table)
    if published is not None and published.choice is not None:
        print_choice(console, published.choice)


def phase_line(phases_s: dict[str, float]) -> str:
    """Each phase's seconds and the total, in the order they ran; with the share of the training time that the
    choice of localizer added (its map fit, comparison and the map model's evaluation: CHOICE_PHASES)."""
    line = " · ".join(f"{name} {s:.0f} s" for name, s in phases_s.items())
    line += f" · total {sum(phases_s.values()):.0f} s"
    added = sum(phases_s.get(name, 0.0) for name in CHOICE_PHASES)
    if added and phases_s.get("train"):
        line += f" (the choice of localizer: {added / phases_s['train']:.0%} of the training)"
    return line


def print_choice(console: Console, choice: Choice) -> None:
    """The localizers' validation NLL side by side, the one shipped and why."""
    table = Table(title=f"localizer shipped: {choice.localizer}", caption=choice.reason)
    table.add_column("localizer")
    table.add_column("val NLL (nats per km², lower is better)", justify="right")
    table.add_column("α, β (T)", justify="right")
    table.add_column("val median error", justify="right")
    for name, nll in choice.nll.items():
        exponents, t = choice.exponents.get(name), choice.temperature.get(name, 1.0)
        table.add_row(
            f"{name} ←" if name == choice.localizer else name,
            f"{nll:.3f}",
            f"{exponents[0]:.3g}, {exponents[1]:.3g}" + (f" (T {t:g})" if t != 1 else "") if exponents else "",
            describe_medians(choice.medians[name]) if choice.medians.get(name) else "",
        )
    if choice.centroid:
        table.add_row("weighted centroid", "", "", describe_medians(choice.centroid))
    if not choice.nll:
        table.add_row(choice.localizer, "not compared", "", "")
    console.print(table)
    if choice.worse_than_centroid:
        console.print(
            f"[bold red]warning: the {choice.localizer} shipped is worse than the weighted centroid on validation[/]"
        )


def _export_only(
    console: Console, cfg: TrainConfig, checkpoint: str | None, options: PublishOptions, json_out: TextIO | None
) -> int:
    """Publish `checkpoint` as training does: ONNX (in --checkpoint-dir, else beside it), store, registry (within
    PUBLISH_SHARE of --max-time-minutes)."""
    if not checkpoint:
        raise ConfigError("--export-only needs --checkpoint PATH")
    ckpt = Path(checkpoint)
    out = Path(cfg.checkpoint_dir) / "model.onnx" if cfg.checkpoint_dir else ckpt.with_name("model.onnx")
    signer = signing_key(cfg.signing_key)
    options = dataclasses.replace(options, signer=signer, localizer="network")
    with staged_progress(console) as (_, on_progress):
        budget = TimeBudget.of_seconds(cfg.max_time_minutes * 60 * PUBLISH_SHARE, on_progress)
        published = export_and_publish(ckpt, out, options=options, budget=budget)
    report(console, published)
    if json_out is not None:
        print(json.dumps(summary(None, published, budget.seconds)), file=json_out)
    return 0


def _publish_options(args: argparse.Namespace, cfg: TrainConfig) -> PublishOptions:
    """Where the model goes after training or with --export-only (the registry: the run's tracking URI)."""
    s3 = argparse.Namespace(
        **{k: getattr(args, k, None) for k in ("s3_endpoint_url", "s3_access_key", "s3_secret_key")}
    )
    return PublishOptions(
        store=getattr(args, "store", None) or default_model_store(),
        s3_options=s3_options(s3),
        eval_data=getattr(args, "eval_data", None),
        tracking_uri=cfg.tracking_uri,
        localizer=cfg.localizer,
        map_options=MapOptions(spacing_m=cfg.map_spacing_m),
    )


def publish_best(result: TrainResult, options: PublishOptions, budget: TimeBudget, console: Console) -> PublishResult:
    """Export the run's best checkpoint beside it, store and register it (judged on --eval-data, else the
    training store's test split when it has one), within `budget`, its long steps' progress on `console`."""
    assert result.best_checkpoint is not None
    with staged_progress(console) as (_, on_progress):
        budget.show = on_progress
        try:
            return export_and_publish(
                result.best_checkpoint,
                result.checkpoint_dir / "model.onnx",
                options=dataclasses.replace(options, tracking_uri=result.tracking_uri),
                budget=budget,
            )
        finally:
            budget.show = None


def _resumed_folder(cfg: TrainConfig, checkpoint: str | None) -> TrainConfig:
    """The run to resume: --checkpoint RUN/last.ckpt (as the design writes it) or --checkpoint-dir RUN."""
    if not checkpoint:
        return cfg
    ckpt = Path(checkpoint)
    if ckpt.name != "last.ckpt":
        raise ConfigError(
            f"--checkpoint {checkpoint}: a run resumes from its last.ckpt (the state of its last epoch); give "
            "RUN/last.ckpt, or --init-from to start a new run from these weights"
        )
    if cfg.checkpoint_dir and Path(cfg.checkpoint_dir).resolve() != ckpt.parent.resolve():
        raise ConfigError(f"--checkpoint {checkpoint} is not in --checkpoint-dir {cfg.checkpoint_dir}")
    return dataclasses.replace(cfg, checkpoint_dir=str(ckpt.parent))


def check_hardware(cfg: TrainConfig) -> None:
    """Refuse an accelerator or device count this machine does not have, before any run starts (ConfigError)."""
    import torch

    devices = str(cfg.devices)
    if devices != "auto" and not all(d.strip().lstrip("-").isdigit() for d in devices.split(",")):
        raise ConfigError(f"--devices {devices!r:.40}: expected a count, a list of GPU indices (0,1) or auto")
    count = int(devices) if devices.isdigit() else None
    gpu = cfg.accelerator in ("gpu", "cuda")
    if torch.cuda.is_available():
        if gpu and count is not None and count > torch.cuda.device_count():
            raise ConfigError(f"--devices {count}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
        return
    if gpu:
        raise ConfigError(
            f"--accelerator {cfg.accelerator}: no CUDA GPU is usable here (torch {torch.__version__}, built "
            f"{'with CUDA ' + str(torch.version.cuda) if torch.version.cuda else 'for CPU only'}); "
            "use --accelerator cpu"
        )
    if cfg.accelerator == "auto" and count is not None and count > 1:
        raise ConfigError(
            f"--devices {count} without a CUDA GPU: give --accelerator cpu to train in {count} CPU processes (DDP), "
            "or leave out --devices"
        )


def _check_localizer(cfg: TrainConfig) -> None:
    """Refuse, before the fit, a forced hybrid the store cannot weigh (no validation split to choose α, β on) and a
    map grid too fine for the store's area (the map is fitted after the training)."""
    if cfg.export and cfg.localizer == "hybrid" and not (Path(cfg.data_dir or ".") / "val.h5").is_file():
        raise ConfigError(
            f"--localizer hybrid: the store {cfg.data_dir} has no validation split (val.h5) to weigh map and network on"
        )
    train = split_files(cfg.data_dir, "train") if cfg.export and cfg.localizer != "network" and cfg.data_dir else []
    if not train:
        return
    from heimdall.datasets.loader import StoreDataset
    from heimdall.radiomap.grid import MapGrid
    from heimdall.scenario.schema import scenario_from_text

    text = StoreDataset(train).meta.scenario_yaml
    if text:
        scenario = scenario_from_text(text, f"{train[0]}: attribute scenario_yaml")
        try:
            MapGrid.over(scenario.area_bounds_m(), MapOptions(spacing_m=cfg.map_spacing_m).spacing_for(scenario))
        except ValueError as exc:
            raise ConfigError(f"--map-spacing-m: {exc} (or --localizer network)") from None


def _warn_unused_validation_split(cfg: TrainConfig, given: set[str]) -> None:
    if "validation_split" in given and cfg.data_dir and split_files(cfg.data_dir, "val"):
        log.warning(
            "--val-split %g is not used: the store %s has a validation split (val.h5), which is used as it is",
            cfg.validation_split,
            cfg.data_dir,
        )


def summary(result: TrainResult | None, published: PublishResult | None, phases_s: dict[str, float]) -> dict[str, Any]:
    """The machine-readable result of `train --json`: the run, its files, its metrics, the seconds of each phase,
    the store version and the registry decision (None where not applicable)."""
    out: dict[str, Any] = {"phases_s": {name: round(s, 3) for name, s in phases_s.items()}}
    if result is not None:
        out |= {
            "run_name": result.run_name,
            "mlflow_run_id": result.mlflow_run_id,
            "tracking_uri": result.tracking_uri,
            "checkpoint_dir": str(result.checkpoint_dir),
            "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
            "last_checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None,
            "epochs_completed": result.epochs_completed,
            "metrics": {
                "best_val_median_error_m": result.best_val_median_error_m,
                "val_weighted_centroid_median_error_m": result.baseline_val_median_error_m,
                "covariance_scale": result.covariance_scale,
                **{f"best_val_{k}": v for k, v in (result.val_calibration or {}).items()},
            },
            "seconds": round(result.seconds, 3),
        }
    out["model"] = None
    if published is not None:
        g = published.registration
        out["model"] = {
            "onnx": str(published.path),
            "sha256": published.sha256,
            "localizer": published.choice.summary() if published.choice is not None else None,
            "store": published.store,
            "store_version": published.store_version,
            "eval_metrics": published.eval_metrics,
            "registry": None
            if g is None
            else {"name": g.name, "version": g.version, "alias": g.alias, "reason": g.reason},
        }
    return out
