"""MLflow's model registry: registering an exported model, the champion rule, and reading a version back.

The ONNX model is logged as an MLflow model (with its tensor signature, as one self-contained file) in the
training run and registered as `heimdall-localizer`; its manifest (heimdall.manifest, signed when a key is
given) is the version's tag MANIFEST_TAG. The champion rule (`decide`, docs/MODELS.md) moves the alias `champion`
to the new version only when
- it was judged on at least MIN_TRANSMISSIONS transmissions, none of them in the training data this machine knows
  of (heimdall.release.evaluation_set);
- a current champion was judged on the same set: the champion's recorded evaluation set (EVALUATION_SET_TAG), or
  the first rows of the new set when they are exactly that set — both models are then judged there, each by its
  own answers (a map-carrying model by its hybrid posterior: heimdall.release.judged_answers);
- its calibration is within COVERAGE_TOLERANCE of ideal (1σ/2σ ellipses; a map-carrying model's 50 %/95 % regions);
- its errors are smaller than the champion's on those transmissions by a one-sided Wilcoxon signed-rank test at
  SIGNIFICANCE (paired, transmission by transmission);
- whoever registers it gives no reason it may not be champion (a training run whose choice of localizer found every
  candidate worse than the weighted centroid on validation: heimdall.release.publish.centroid_refusal).
Otherwise the version gets the alias `challenger` and the reason is reported. A model registered without an
evaluation set is always a challenger (NO_EVALUATION is the reason). Every version records the evaluation set it
was judged on.
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

from heimdall.budget import OutOfTime, TimeBudget
from heimdall.errors import ModelLoadError
from heimdall.evaluation.test_set import TestSet, short_source
from heimdall.manifest import MANIFEST_TAG, new_manifest
from heimdall.metrics import COVERAGE_1SIGMA_IDEAL, COVERAGE_2SIGMA_IDEAL, accuracy_summary, calibration_summary
from heimdall.onnx_guard import check_model_size, require_self_contained
from heimdall.release import CHALLENGER, CHAMPION, MODEL_NAME
from heimdall.release.evaluation_set import (
    MIN_TRANSMISSIONS,
    EvaluationSet,
    TrainingRows,
    describe,
    read_record,
    rows_judged_with,
)
from heimdall.release.export import metadata_of
from heimdall.release.judged_answers import Answers, model_answers
from heimdall.signing import SigningKey
from heimdall.train.model_card import ModelCard
from heimdall.units import format_distance
from heimdall.workspace import artifact_location

if TYPE_CHECKING:  # mlflow is imported where the registry is used
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

COVERAGE_TOLERANCE = 0.05
SIGNIFICANCE = 0.01  # of the one-sided paired test a challenger must pass against the champion
EVALUATION_SET_TAG = "evaluation_set"  # a version's tag: the record of the set it was judged on (JSON)
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


@dataclass
class Judged:
    """A model's answers on an evaluation set, as the champion rule reads them."""

    evalset: EvaluationSet
    answers: Answers

    @property
    def error_m(self) -> np.ndarray:
        """Float [n]: distance of each answer from the truth, m (NaN where the answer is not finite)."""
        return np.linalg.norm(self.answers.mean_m - self.evalset.test.target_m, axis=1)

    def head(self, n: int) -> Judged:
        """The answers on the first n transmissions."""
        a = self.answers
        cut = None if a.in_region50 is None or a.in_region95 is None else (a.in_region50[:n], a.in_region95[:n])
        return Judged(self.evalset.head(n), Answers(a.mean_m[:n], a.cov_m2[:n], *(cut or (None, None))))

    def metrics(self) -> dict:
        """metrics_of the answers, with `n_eval` and `eval_data` (the files, folder/name)."""
        test = self.evalset.test
        return metrics_of(self.answers, test.target_m) | {
            "n_eval": len(self.evalset),
            "eval_data": short_source(test.source),
        }


def judge(onnx_bytes: bytes, evalset: EvaluationSet, where: str, budget: TimeBudget | None = None) -> Judged:
    """An ONNX model's own answers on `evalset` (model_answers; progress and deadline from `budget`)."""
    on_progress = budget.progress if budget is not None else None
    return Judged(evalset, model_answers(onnx_bytes, evalset.test, where, on_progress))


def onnx_metrics(onnx_bytes: bytes, test: TestSet, where: str = "model") -> dict:
    """Median error and calibration of an ONNX model's own answers on a TestSet (metrics_of model_answers)."""
    return metrics_of(model_answers(onnx_bytes, test, where), test.target_m)


def metrics_of(answers: Answers, truth_m: np.ndarray) -> dict:
    """summary_of a model's answers; for a map-carrying model with the share of truths in its 50 % and 95 % regions,
    `coverage_region50` and `coverage_region95`."""
    out = summary_of(answers.mean_m, answers.cov_m2, truth_m)
    if answers.in_region50 is not None and answers.in_region95 is not None:
        out |= {
            "coverage_region50": float(answers.in_region50.mean()),
            "coverage_region95": float(answers.in_region95.mean()),
        }
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


def miscalibrated(m: dict, tolerance: float = COVERAGE_TOLERANCE) -> str | None:
    """Why a model with metrics `m` is not calibrated enough to be champion (its coverages, `coverages`, more than
    `tolerance` from ideal), None when it is."""
    if calibrated(m, tolerance):
        return None
    (a, (ma, ia)), (b, (mb, ib)) = coverages(m).items()
    return f"its coverage {a} {ma:.1%} / {b} {mb:.1%} is more than {tolerance:.0%} from ideal ({ia:.1%} / {ib:.1%})"


def paired_p_value(new_error_m: np.ndarray, champion_error_m: np.ndarray) -> float:
    """One-sided p-value of the Wilcoxon signed-rank test that the new errors [n] are smaller than the champion's on
    the same transmissions; an unanswered transmission (NaN error) counts as worse than any answer, ties drop out."""
    from scipy.stats import wilcoxon

    new = np.where(np.isfinite(new_error_m), new_error_m, np.inf)
    old = np.where(np.isfinite(champion_error_m), champion_error_m, np.inf)
    both_missing = np.isinf(new) & np.isinf(old)
    d = np.where(both_missing, 0.0, old - np.where(both_missing, 0.0, new))
    d = d[d != 0]
    if len(d) == 0:
        return 1.0
    return float(wilcoxon(d, alternative="greater").pvalue)


def decide(new: Judged, champion: Judged | None, tolerance: float = COVERAGE_TOLERANCE) -> tuple[bool, str]:
    """Whether the new model becomes champion, and why (in words): calibrated within `tolerance`, and, against a
    champion judged on the same transmissions, smaller errors by the paired test at SIGNIFICANCE."""
    off = miscalibrated(new.metrics(), tolerance)
    if off is not None:
        return False, off
    if champion is None:
        return True, "there was no champion"
    p = paired_p_value(new.error_m, champion.error_m)
    medians = (
        f"median error {format_distance(np.nanmedian(new.error_m))} against the champion's "
        f"{format_distance(np.nanmedian(champion.error_m))} on its {len(champion.evalset)} evaluation transmissions"
    )
    test = f"one-sided Wilcoxon signed-rank test on the paired errors: p = {p:.2g}"
    if p < SIGNIFICANCE:
        return True, f"beats the champion: {medians}, {test} < {SIGNIFICANCE:g}"
    return False, f"does not beat the champion: {medians}, {test}, not below {SIGNIFICANCE:g}"


def set_refusal(evalset: EvaluationSet, training: TrainingRows | None) -> str | None:
    """Why the champion rule decides nothing on `evalset` (too few transmissions, or some in the training data
    `training`), None when it may."""
    if len(evalset) < MIN_TRANSMISSIONS:
        return (
            f"judged on {len(evalset)} transmissions, fewer than the {MIN_TRANSMISSIONS} the champion rule decides "
            "on (--eval-data: a larger held-out set)"
        )
    if training is not None and (shared := training.shared_with(evalset)):
        return (
            f"{shared} of its {len(evalset)} evaluation transmissions ({evalset.describe()}) are in its training data "
            f"({training.source}): the champion rule decides only on held-out transmissions"
        )
    return None


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
    judged: Judged | None,
    tracking_uri: str,
    run_id: str | None,
    name: str = MODEL_NAME,
    tolerance: float = COVERAGE_TOLERANCE,
    signer: SigningKey | None = None,
    training: TrainingRows | None = None,
    budget: TimeBudget | None = None,
    refusal: str | None = None,
) -> Registration:
    """Log the model in `run_id` (or a new run when there is none in this tracking store), register it with
    its manifest (signed by `signer` if given), and move `champion` or set `challenger` by the champion rule on
    `judged`, its answers on an evaluation set (always `challenger` without one). `training`: the transmissions it
    was fitted on, as far as known here; `budget`: the deadline and progress of the champion's evaluation;
    `refusal`: why it may not be champion whatever its answers (then `challenger`, this the reason; its answers are
    still recorded)."""
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
    # a new run's experiment named explicitly, never set process-wide: a process that registers into several
    # stores (tests, a notebook) would otherwise resume a run against another store's active experiment
    experiment_id = None
    if run_id is None:
        found = client.get_experiment_by_name(EXPORT_EXPERIMENT)
        experiment_id = (
            found.experiment_id
            if found is not None
            else client.create_experiment(EXPORT_EXPERIMENT, artifact_location=artifact_location(tracking_uri))
        )
    with mlflow.start_run(run_id=run_id, experiment_id=experiment_id) as run:
        # one self-contained file: what the service downloads must be the whole model
        info = mlflow.onnx.log_model(
            model, name="onnx-model", signature=signature, registered_model_name=name, save_as_external_data=False
        )
    version = str(info.registered_model_version)
    manifest = new_manifest(name, version, onnx_bytes, run.info.run_id)
    if signer is not None:
        manifest = signer.sign(manifest)
    client.set_model_version_tag(name, version, MANIFEST_TAG, json.dumps(manifest, separators=(",", ":")))
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        current = None
    champion = None
    refused = refusal or (NO_EVALUATION if judged is None else set_refusal(judged.evalset, training))
    if judged is not None and refused is None and current is not None and current.version != version:
        judged, champion, refused = _against_champion(tracking_uri, name, current, judged, new_card, budget)
    if judged is not None and refused is None:
        wins, reason = decide(judged, champion, tolerance)
    else:
        wins, reason = False, refused or NO_EVALUATION
    alias = CHAMPION if wins else CHALLENGER
    client.set_registered_model_alias(name, alias, version)
    metrics = judged.metrics() if judged is not None else {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)):
            client.set_model_version_tag(name, version, key, f"{value:.6g}")
    if judged is not None:
        client.set_model_version_tag(name, version, EVALUATION_SET_TAG, json.dumps(judged.evalset.record()))
    client.set_model_version_tag(name, version, "decision", reason)
    return Registration(
        name=name,
        version=version,
        alias=alias,
        reason=reason,
        metrics=metrics,
        champion_metrics=champion.metrics() if champion is not None else None,
    )


def _against_champion(
    tracking_uri: str, name: str, current: ModelVersion, judged: Judged, new_card: ModelCard, budget: TimeBudget | None
) -> tuple[Judged, Judged | None, str | None]:
    """(the new model's answers on the champion's own evaluation set, the champion's there, None) — or (`judged`,
    None, why the champion cannot be compared with) — for the champion `current`."""
    where = f"registry {name} version {current.version} (the champion)"
    record = read_record(current.tags.get(EVALUATION_SET_TAG, ""), where)
    if record is None:
        return (
            judged,
            None,
            (
                f"the champion (version {current.version}) records no evaluation set to compare on (registered before "
                "the champion rule recorded one, or without one); it is not replaced automatically"
            ),
        )
    rows = rows_judged_with(judged.evalset, record)
    if rows is None:
        return (
            judged,
            None,
            (
                f"judged on {judged.evalset.describe()}, but the champion (version {current.version}) was judged on "
                f"{describe(record)}: a challenger is compared on the champion's own evaluation set (--eval-data that "
                "set, or one that begins with it); it is not replaced automatically"
            ),
        )
    if len(rows) < MIN_TRANSMISSIONS:
        return judged, None, set_refusal(rows, None)
    try:
        champion = download_version(tracking_uri, name, current.version, where)
        require_self_contained(champion, where)
        champion_card = ModelCard.from_onnx_metadata(metadata_of(champion), where, ModelLoadError)
    except ModelLoadError as exc:
        return judged, None, f"the champion cannot be read ({exc}); it is not replaced automatically"
    if champion_card.scenario_sha256 != new_card.scenario_sha256:
        return judged, None, "the champion was trained on another scenario; it is not replaced automatically"
    budget = budget or TimeBudget()
    try:
        with budget.phase("champion evaluation"):
            champion_judged = judge(champion, rows, where, budget)
    except ModelLoadError as exc:
        return judged, None, f"the champion cannot be judged ({exc}); it is not replaced automatically"
    except OutOfTime as exc:
        return (
            judged,
            None,
            (
                f"the champion (version {current.version}) could not be judged within the time budget ({exc}); "
                "it is not replaced automatically"
            ),
        )
    return judged.head(len(rows)), champion_judged, None


def _has_run(client: MlflowClient, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
        return True
    except MlflowException:
        return False
