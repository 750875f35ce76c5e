"""MLflow's model registry: registering an exported model, the champion rule, and reading a version back.

The ONNX model is logged as an MLflow model (with its tensor signature, as one self-contained file) in the
training run and registered as `heimdall-localizer`; its manifest (heimdall.manifest, signed when a key is
given) is the version's tag MANIFEST_TAG. The alias `champion` moves to the new version only when it beats
the current champion on the same evaluation set, each judged by its own answers — a map-carrying model by its
hybrid posterior (heimdall.release.model_answers) — with a lower median error and a calibration within
COVERAGE_TOLERANCE of ideal (1σ/2σ ellipses; a map-carrying model's 50 %/95 % regions); otherwise the version
gets the alias `challenger` and the reason is reported. A model registered without an evaluation set is always a
challenger (NO_EVALUATION is the reason).
The registry URI is always the tracking URI, passed explicitly to every MLflow call: MLflow's own default
would be a ./mlflow.db in the working folder.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from heimdall.errors import ModelLoadError
from heimdall.evaluation.test_set import TestSet
from heimdall.manifest import MANIFEST_TAG, new_manifest
from heimdall.metrics import COVERAGE_1SIGMA_IDEAL, COVERAGE_2SIGMA_IDEAL, accuracy_summary, calibration_summary
from heimdall.onnx_guard import check_model_size, require_self_contained
from heimdall.release import CHALLENGER, CHAMPION, MODEL_NAME
from heimdall.release.export import metadata_of
from heimdall.release.model_answers import MAP_EVALUATION_SAMPLES, carries_map, model_answers
from heimdall.signing import SigningKey
from heimdall.train.model_card import ModelCard
from heimdall.workspace import artifact_location

if TYPE_CHECKING:  # mlflow is imported where the registry is used
    from mlflow.tracking import MlflowClient

COVERAGE_TOLERANCE = 0.05
ONNX_ARTIFACT = "model.onnx"  # the file of MLflow's ONNX flavour inside a logged model
EXPORT_EXPERIMENT = "heimdall-export"  # for models registered outside a training run
NO_EVALUATION = "no evaluation set was given (--eval-data), so it was not compared with the champion"


@dataclass
class Registration:
    """A registered version, the alias it got and why."""

    name: str
    version: str
    alias: str  # "champion" or "challenger"
    reason: str
    metrics: dict
    champion_metrics: dict | None


def onnx_metrics(onnx_bytes: bytes, test: TestSet, where: str = "model") -> dict:
    """Median error and calibration of an ONNX model's own answers on a TestSet (a map-carrying model: its hybrid
    posterior's, heimdall.release.model_answers, with the share of truths in its 50 % and 95 % regions,
    `coverage_region50` and `coverage_region95`)."""
    a = model_answers(onnx_bytes, test, where)
    out = summary_of(a.mean_m, a.cov_m2, test.target_m)
    if a.in_region50 is not None and a.in_region95 is not None:
        out |= {"coverage_region50": float(a.in_region50.mean()), "coverage_region95": float(a.in_region95.mean())}
    return out


def summary_of(mean: np.ndarray, cov: np.ndarray, truth: np.ndarray) -> dict:
    """What the champion rule compares: median and p90 error (m), 1σ/2σ coverage, mean squared Mahalanobis
    distance. mean [n, 2] m, cov [n, 2, 2] m², truth [n, 2] m."""
    acc, cal = accuracy_summary(mean, truth), calibration_summary(mean, cov, truth)
    return {k: acc[k] for k in ("median_error_m", "p90_error_m")} | {
        k: cal[k] for k in ("coverage_1sigma", "coverage_2sigma", "mean_mahalanobis_sq")
    }


def coverages(m: dict) -> dict[str, tuple[float, float]]:
    """The coverages a model's calibration is judged by, name → (measured, ideal): the 50 % and 95 % regions of a
    map-carrying model (its answers are not Gaussian: their ellipses are moment-matched), else the 1σ and 2σ
    ellipses."""
    if "coverage_region50" in m:
        return {"50 % region": (m["coverage_region50"], 0.5), "95 % region": (m["coverage_region95"], 0.95)}
    return {
        "1σ": (m["coverage_1sigma"], COVERAGE_1SIGMA_IDEAL),
        "2σ": (m["coverage_2sigma"], COVERAGE_2SIGMA_IDEAL),
    }


def calibrated(m: dict, tolerance: float = COVERAGE_TOLERANCE) -> bool:
    """Whether both coverages (`coverages`) lie within `tolerance` of ideal."""
    return all(abs(measured - ideal) <= tolerance for measured, ideal in coverages(m).values())


def decide(new: dict, champion: dict | None, tolerance: float = COVERAGE_TOLERANCE) -> tuple[bool, str]:
    """Whether the new model becomes champion, and why (in words)."""
    if not calibrated(new, tolerance):
        (a, (ma, ia)), (b, (mb, ib)) = coverages(new).items()
        return False, (
            f"its coverage {a} {ma:.1%} / {b} {mb:.1%} is more than {tolerance:.0%} from ideal ({ia:.1%} / {ib:.1%})"
        )
    if champion is None:
        return True, "there was no champion"
    if new["median_error_m"] < champion["median_error_m"]:
        return True, (
            f"median error {new['median_error_m'] / 1e3:.2f} km beats the champion's "
            f"{champion['median_error_m'] / 1e3:.2f} km on the same evaluation set"
        )
    return False, (
        f"median error {new['median_error_m'] / 1e3:.2f} km does not beat the champion's "
        f"{champion['median_error_m'] / 1e3:.2f} km on the same evaluation set"
    )


def registry_client(uri: str) -> MlflowClient:
    """An MlflowClient on `uri` for tracking and registry alike."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def download_version(uri: str, name: str, version: str, where: str) -> bytes:
    """The ONNX bytes of a registered version (size checked before download; the download folder is removed)."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    try:
        source = registry_client(uri).get_model_version_download_uri(name, version)
        repo = get_artifact_repository(source, tracking_uri=uri, registry_uri=uri)
        listed = {f.path: f for f in repo.list_artifacts()}
        if ONNX_ARTIFACT not in listed:
            raise ModelLoadError(f"{where}: no {ONNX_ARTIFACT} among the version's artifacts {sorted(listed)}")
        check_model_size(listed[ONNX_ARTIFACT].file_size, f"{where}: {ONNX_ARTIFACT}")
        with tempfile.TemporaryDirectory(prefix="heimdall-registry-") as tmp:
            path = Path(repo.download_artifacts(ONNX_ARTIFACT, dst_path=tmp))
            check_model_size(path.stat().st_size, f"{where}: {ONNX_ARTIFACT}")
            return path.read_bytes()
    except MlflowException as exc:
        raise ModelLoadError(f"{where}: {exc.message[:300]}") from None
    except OSError as exc:
        raise ModelLoadError(f"{where}: cannot download {ONNX_ARTIFACT}: {exc}") from None


def register(
    onnx_bytes: bytes,
    metrics: dict | None,
    test: TestSet | None,
    tracking_uri: str,
    run_id: str | None,
    name: str = MODEL_NAME,
    tolerance: float = COVERAGE_TOLERANCE,
    signer: SigningKey | None = None,
) -> Registration:
    """Log the model in `run_id` (or a new run when there is none in this tracking store), register it with
    its manifest (signed by `signer` if given), and move `champion` or set `challenger` (always `challenger`
    without an evaluation set `test` and its `metrics`)."""
    import mlflow
    import mlflow.onnx
    import onnx
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature

    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)  # log_model(registered_model_name=…) reads the global one
    client = registry_client(tracking_uri)
    new_card = ModelCard.from_onnx_metadata(metadata_of(onnx_bytes), f"registry {name} (new version)", ModelLoadError)
    rx = new_card.rx_position_m.astype(np.float32)
    example = {
        "features": np.zeros((2, len(rx), new_card.feature_params.n_features), np.float32),
        "rx_position_m": np.broadcast_to(rx, (2, *rx.shape)).copy(),
        "present": np.ones((2, len(rx)), np.float32),
    }
    signature = infer_signature(
        example, {"mean_m": np.zeros((2, 2), np.float32), "cov_m2": np.zeros((2, 2, 2), np.float32)}
    )
    model = onnx.load_from_string(onnx_bytes)
    if run_id is not None and not _has_run(client, run_id):  # trained against another tracking server
        run_id = None
    if run_id is None and client.get_experiment_by_name(EXPORT_EXPERIMENT) is None:
        client.create_experiment(EXPORT_EXPERIMENT, artifact_location=artifact_location(tracking_uri))
    if run_id is None:
        mlflow.set_experiment(EXPORT_EXPERIMENT)
    with mlflow.start_run(run_id=run_id) as run:
        # one self-contained file: what the service downloads must be the whole model
        info = mlflow.onnx.log_model(
            model, name="onnx-model", signature=signature, registered_model_name=name, save_as_external_data=False
        )
    version = str(info.registered_model_version)
    manifest = new_manifest(name, version, onnx_bytes, run.info.run_id)
    if signer is not None:
        manifest = signer.sign(manifest)
    client.set_model_version_tag(name, version, MANIFEST_TAG, json.dumps(manifest, separators=(",", ":")))
    champion_metrics = None
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        current = None
    unusable = None
    if current is not None and current.version != version and test is not None:
        where = f"registry {name} version {current.version} (the champion)"
        try:
            champion = download_version(tracking_uri, name, current.version, where)
            require_self_contained(champion, where)
            champion_card = ModelCard.from_onnx_metadata(metadata_of(champion), where, ModelLoadError)
        except ModelLoadError as exc:
            unusable = f"the champion cannot be read ({exc}); it is not replaced automatically"
        else:
            if champion_card.scenario_sha256 != new_card.scenario_sha256:
                unusable = "the champion was trained on another scenario; it is not replaced automatically"
            else:
                if carries_map(champion) and len(test.target_m) > MAP_EVALUATION_SAMPLES:  # both on the same rows
                    test = test.head(MAP_EVALUATION_SAMPLES)
                    if metrics is not None:
                        metrics = metrics | onnx_metrics(onnx_bytes, test) | {"n_eval": MAP_EVALUATION_SAMPLES}
                try:
                    champion_metrics = onnx_metrics(champion, test, where)
                except ModelLoadError as exc:
                    unusable = f"the champion cannot be judged ({exc}); it is not replaced automatically"
    if test is None or metrics is None:
        wins, reason = False, NO_EVALUATION
    elif unusable:
        wins, reason = False, unusable
    else:
        wins, reason = decide(metrics, champion_metrics, tolerance)
    alias = CHAMPION if wins else CHALLENGER
    client.set_registered_model_alias(name, alias, version)
    for key, value in (metrics or {}).items():
        client.set_model_version_tag(name, version, key, f"{value:.6g}")
    client.set_model_version_tag(name, version, "decision", reason)
    return Registration(
        name=name, version=version, alias=alias, reason=reason, metrics=metrics or {}, champion_metrics=champion_metrics
    )


def _has_run(client: MlflowClient, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
        return True
    except MlflowException:
        return False
