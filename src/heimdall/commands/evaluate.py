"""`heimdall evaluate`: metrics.json, plots, report.html, MLflow logging and a table for a person."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from heimdall.commands.progress import staged_progress
from heimdall.errors import HeimdallError
from heimdall.evaluation.estimators import ordered
from heimdall.evaluation.evaluate import evaluate, map_splits, model_predictor
from heimdall.evaluation.report import write_report
from heimdall.evaluation.test_set import load_test_set
from heimdall.metrics import COVERAGE_1SIGMA_IDEAL, COVERAGE_2SIGMA_IDEAL, MAHALANOBIS_SQ_IDEAL
from heimdall.radiomap.fit import MapOptions
from heimdall.release.export import source_revision
from heimdall.release.judged_answers import carried_map_of_file
from heimdall.train.config import TrainConfig, from_mapping, load_yaml
from heimdall.units import format_distance
from heimdall.workspace import default_tracking_uri, runs_dir


def latest_run() -> Path:
    """The run folder most recently written in the workspace."""
    runs = sorted(runs_dir().glob("*/config.yaml"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise HeimdallError(f"no training run in {runs_dir()}; give --model (train one with `heimdall train`)")
    return runs[-1].parent


def evaluate_command(args: argparse.Namespace) -> int:
    """Run `heimdall evaluate`; 0 on success."""
    console = Console(width=max(Console().width, 100))
    run_dir = None
    if args.model:
        model = Path(args.model)
        if (model.parent / "config.yaml").is_file():
            run_dir = model.parent
    else:
        run_dir = latest_run()
        model = run_dir / "best.ckpt"
    run_cfg = (
        from_mapping(load_yaml(run_dir / "config.yaml"), str(run_dir / "config.yaml")) if run_dir else TrainConfig()
    )
    data = Path(args.data_dir) if args.data_dir else (Path(run_cfg.data_dir) if run_cfg.data_dir else None)
    if data is None:
        raise HeimdallError("no test data: give --data-dir (a store folder or test .h5)")
    out = Path(args.out) if args.out else (run_dir / "evaluation" if run_dir else Path("evaluation"))
    test = load_test_set(data, args.max_samples)
    calibration, validation = map_splits(data)
    console.print(f"evaluating {model} on {len(test.target_m)} test transmissions …")
    map_options = None if args.map_spacing_m == 0 else MapOptions(spacing_m=args.map_spacing_m)
    carried = carried_map_of_file(model)
    if carried is not None:
        console.print(
            "the model carries a radio map: it is scored as it is (not refitted); `model` is the model's own (hybrid) "
            "answer, `model_network` its network"
        )
    with staged_progress(console, args.quiet) as (_, on_progress):
        metrics = evaluate(
            model_predictor(model),
            test,
            calibration,
            out,
            args.grid_spacing_m,
            model=str(model),
            validation=validation,
            map_options=map_options,
            on_progress=on_progress,
            carried=carried,
        )
    write_report(out, metrics, commit=source_revision())
    print_table(console, metrics)
    if not args.no_mlflow and run_cfg.mlflow_run_id:
        log_to_mlflow(args.tracking_uri or run_cfg.tracking_uri, run_cfg.mlflow_run_id, metrics, out)
        console.print(f"logged to MLflow run {run_cfg.mlflow_run_id}")
    console.print(f"metrics and plots in {out}")
    return 0


def print_table(console: Console, metrics: dict) -> None:
    """The metrics of every estimator in metrics.json (in the estimator table's order), and those not evaluated with
    the reason, for a person."""
    table = Table(
        title=f"test split: {metrics['n_test']} transmissions "
        f"({metrics['inside_hull_fraction']:.0%} inside the receivers' hull)"
    )
    for col in [
        "estimator",
        "answered",
        "median",
        "p90",
        "in hull",
        "outside",
        "1σ",
        "2σ",
        "E d²",
        "NLL",
        "95 % reg.",
    ]:
        table.add_column(col, justify="right" if col != "estimator" else "left")
    estimators = metrics["estimators"]
    for name in ordered(estimators):
        m = estimators[name]
        table.add_row(
            name,
            f"{m['answered']:.0%}",
            format_distance(m["median_error_m"]),
            format_distance(m["p90_error_m"]),
            format_distance(m["inside_hull"].get("median_error_m")),
            format_distance(m["outside_hull"].get("median_error_m")),
            f"{m['coverage_1sigma']:.1%}" if "coverage_1sigma" in m else "—",
            f"{m['coverage_2sigma']:.1%}" if "coverage_2sigma" in m else "—",
            f"{m['mean_mahalanobis_sq']:.2f}" if "mean_mahalanobis_sq" in m else "—",
            f"{m['nll']:.2f}" if "nll" in m else "—",
            f"{m['coverage_hpd95']:.1%}" if "coverage_hpd95" in m else "—",
        )
    console.print(table)
    for name, reason in metrics["provenance"].get("not_evaluated", {}).items():
        console.print(f"not evaluated: {name} ({reason})")
    console.print(
        f"median errors inside / outside the receivers' hull; coverage of the 1σ and 2σ ellipses "
        f"(ideal {COVERAGE_1SIGMA_IDEAL:.1%}, {COVERAGE_2SIGMA_IDEAL:.1%}); E d² = mean squared Mahalanobis "
        f"distance (ideal {MAHALANOBIS_SQ_IDEAL:.2f}); NLL of the truth under the estimator's own density (nats, km; "
        f"lower is better, the oracle is the floor); 95 % reg. = share of truths in the grid posterior's 95 % "
        f"region; answered = share of the transmissions the reporting rule asks an answer for"
    )
    by_heard = metrics.get("by_receivers_heard_fraction", {})
    if by_heard:
        rows = Table(title="median error by receivers heard")
        rows.add_column("estimator")
        for c in by_heard:
            rows.add_column(f"{c} ({by_heard[c]:.0%})", justify="right")
        for name in ordered(estimators):
            cells = [estimators[name]["by_receivers_heard"].get(c, {}).get("median_error_m") for c in by_heard]
            rows.add_row(name, *[format_distance(v) for v in cells])
        console.print(rows)


def log_to_mlflow(tracking_uri: str | None, run_id: str, metrics: dict, out: Path) -> None:
    """Log the metrics and the evaluation folder to the training run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri or default_tracking_uri())
    for name, m in metrics["estimators"].items():
        for key, value in m.items():
            if isinstance(value, (int, float)) and key != "n":
                client.log_metric(run_id, f"test_{name}_{key}", float(value))
    client.log_artifacts(run_id, str(out), artifact_path="evaluation")
