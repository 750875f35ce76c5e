"""Publishing an exported model: the model store, MLflow's model registry, and the champion rule.

The ONNX model is logged as an MLflow model (with its tensor signature) in the training run and registered
as `heimdall-localizer`. The alias `champion` moves to the new version only when it beats the current
champion on the same evaluation set (lower median error, with 1σ/2σ coverage within COVERAGE_TOLERANCE of
ideal); otherwise the version gets the alias `challenger` and the reason is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heimdall.metrics import COVERAGE_1SIGMA_IDEAL, COVERAGE_2SIGMA_IDEAL, accuracy_summary, calibration_summary

REGISTERED_MODEL = "heimdall-localizer"
COVERAGE_TOLERANCE = 0.05


@dataclass
class Registration:
    version: str
    alias: str  # "champion" or "challenger"
    reason: str
    metrics: dict
    champion_metrics: dict | None


def onnx_metrics(onnx_bytes: bytes, test) -> dict:
    """Median error and calibration of an ONNX model on a TestSet (heimdall.evaluate)."""
    from heimdall.evaluate import onnx_predictions

    return summary_of(*onnx_predictions(onnx_bytes, test), test.target_m)


def summary_of(mean: np.ndarray, cov: np.ndarray, truth: np.ndarray) -> dict:
    acc, cal = accuracy_summary(mean, truth), calibration_summary(mean, cov, truth)
    return {k: acc[k] for k in ("median_error_m", "p90_error_m")} | {
        k: cal[k] for k in ("coverage_1sigma", "coverage_2sigma", "mean_mahalanobis_sq")}


def calibrated(m: dict, tolerance: float = COVERAGE_TOLERANCE) -> bool:
    return (abs(m["coverage_1sigma"] - COVERAGE_1SIGMA_IDEAL) <= tolerance
            and abs(m["coverage_2sigma"] - COVERAGE_2SIGMA_IDEAL) <= tolerance)


def decide(new: dict, champion: dict | None, tolerance: float = COVERAGE_TOLERANCE) -> tuple[bool, str]:
    """Whether the new model becomes champion, and why (in words)."""
    if not calibrated(new, tolerance):
        return False, (f"its coverage 1σ {new['coverage_1sigma']:.1%} / 2σ {new['coverage_2sigma']:.1%} is more "
                       f"than {tolerance:.0%} from ideal (39.3 % / 86.5 %)")
    if champion is None:
        return True, "there was no champion"
    if new["median_error_m"] < champion["median_error_m"]:
        return True, (f"median error {new['median_error_m'] / 1e3:.2f} km beats the champion's "
                      f"{champion['median_error_m'] / 1e3:.2f} km on the same evaluation set")
    return False, (f"median error {new['median_error_m'] / 1e3:.2f} km does not beat the champion's "
                   f"{champion['median_error_m'] / 1e3:.2f} km on the same evaluation set")


def register(onnx_bytes: bytes, metrics: dict, test, tracking_uri: str, run_id: str | None,
             name: str = REGISTERED_MODEL, tolerance: float = COVERAGE_TOLERANCE) -> Registration:
    """Log the model in `run_id` (or a new run), register it, and move `champion` or set `challenger`."""
    import mlflow
    import mlflow.onnx
    import onnx
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    example = {"features": test.features[:2], "rx_position_m": np.broadcast_to(
        test.rx_position_m.astype(np.float32), (2, *test.rx_position_m.shape)).copy(),
        "present": np.ones((2, test.heard.shape[1]), np.float32)}
    signature = infer_signature(example, {"mean_m": np.zeros((2, 2), np.float32),
                                          "cov_m2": np.zeros((2, 2, 2), np.float32)})
    model = onnx.load_from_string(onnx_bytes)
    if run_id is None:
        mlflow.set_experiment("heimdall-export")
    with mlflow.start_run(run_id=run_id):
        info = mlflow.onnx.log_model(model, name="onnx-model", signature=signature, registered_model_name=name)
    version = str(info.registered_model_version)
    champion_metrics = None
    try:
        current = client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        current = None
    other_scenario = False
    if current is not None and current.version != version:
        champion = mlflow.onnx.load_model(f"models:/{name}@champion")
        other_scenario = _scenario_of(champion) != _scenario_of(model)
        if not other_scenario:
            champion_metrics = onnx_metrics(champion.SerializeToString(), test)
    if other_scenario:
        wins, reason = False, "the champion was trained on another scenario; it is not replaced automatically"
    else:
        wins, reason = decide(metrics, champion_metrics, tolerance)
    alias = "champion" if wins else "challenger"
    client.set_registered_model_alias(name, alias, version)
    for key, value in metrics.items():
        client.set_model_version_tag(name, version, key, f"{value:.6g}")
    client.set_model_version_tag(name, version, "decision", reason)
    return Registration(version=version, alias=alias, reason=reason, metrics=metrics,
                        champion_metrics=champion_metrics)


def _scenario_of(model) -> str | None:
    """scenario_sha256 in an ONNX model's metadata."""
    return next((p.value for p in model.metadata_props if p.key == "scenario_sha256"), None)
