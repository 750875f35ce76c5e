"""Evaluation of a model against classical estimators, the oracle and the Cramér–Rao bound.

Every estimator sees the same test transmissions. Metrics are in metres; calibration uses each
estimator's own covariance. Output: metrics.json and PNG plots in one folder (see `evaluate`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial import Delaunay

import heimdall
from heimdall.atomic import atomic_write_text
from heimdall.budget import Progress
from heimdall.errors import HeimdallError
from heimdall.evaluation.estimators import ESTIMATORS, Answers, Inputs
from heimdall.evaluation.test_set import Predict, TestSet, load_test_set
from heimdall.features import HEARD_CLASSES, heard_class
from heimdall.metrics import accuracy_summary, calibration_summary
from heimdall.onnx_guard import check_model_size, require_self_contained
from heimdall.radiomap.answer_arrays import MapAnswers
from heimdall.radiomap.fit import MapOptions

if TYPE_CHECKING:
    from heimdall.evaluation.grid_estimators import CarriedMap
    from heimdall.train.task import LocalizationTask

CALIBRATION_SAMPLES = 20_000
DEFAULT_MAP_OPTIONS = MapOptions()
VALIDATION_SAMPLES = 400  # validation transmissions the hybrid's exponents are chosen on


def map_splits(data: Path) -> tuple[TestSet | None, TestSet | None]:
    """(calibration, validation) of a store folder: its train and val splits as the radio map and the hybrid
    read them (at most CALIBRATION_SAMPLES / VALIDATION_SAMPLES), None where the folder has none."""
    calibration = validation = None
    if data.is_dir() and (data / "train.h5").is_file():
        calibration = load_test_set(data / "train.h5", CALIBRATION_SAMPLES)
    if data.is_dir() and (data / "val.h5").is_file():
        validation = load_test_set(data / "val.h5", VALIDATION_SAMPLES)
    return calibration, validation


def model_predictor(model_path: str | Path) -> Predict:
    """The predictions of a checkpoint (.ckpt) or exported model (.onnx), read once from `model_path`."""
    p = Path(model_path)
    if p.suffix == ".onnx":
        if not p.is_file():
            raise HeimdallError(f"{p}: model file not found")
        check_model_size(p.stat().st_size, str(p))
        data = p.read_bytes()

        def predict(test: TestSet) -> tuple[np.ndarray, np.ndarray]:
            try:
                return onnx_predictions(data, test)
            except HeimdallError as exc:
                raise HeimdallError(f"{p}: {exc}") from None

        return predict
    from heimdall.train.task import load_task

    return task_predictor(load_task(p))


def task_predictor(task: LocalizationTask) -> Predict:
    """The predictions of a loaded checkpoint's network (PyTorch)."""
    from heimdall.train.task import predict_numpy

    def predict(test: TestSet) -> tuple[np.ndarray, np.ndarray]:
        rx = np.broadcast_to(test.rx_position_m.astype(np.float32), (len(test.features), *test.rx_position_m.shape))
        return predict_numpy(task.net, test.features, rx.copy(), test.present)

    return predict


def onnx_predictions(onnx_bytes: bytes, test: TestSet, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean [n, 2] m and covariance [n, 2, 2] m² of an exported model (refused if it holds external data)."""
    import onnxruntime as ort

    require_self_contained(onnx_bytes, "model")
    try:
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for a bad model
        raise HeimdallError(f"not a loadable ONNX model ({type(exc).__name__}: {str(exc)[:300]})") from None
    n = len(test.features)
    rx = np.broadcast_to(test.rx_position_m.astype(np.float32), (n, *test.rx_position_m.shape))
    means, covs = [], []
    for s in range(0, n, batch):
        m, c = session.run(
            ["mean_m", "cov_m2"],
            {
                "features": test.features[s : s + batch],
                "rx_position_m": rx[s : s + batch].copy(),
                "present": test.present[s : s + batch],
            },
        )
        means.append(m)
        covs.append(c)
    return np.concatenate(means).astype(np.float64), np.concatenate(covs).astype(np.float64)


def inside_hull(points_m: np.ndarray, rx_position_m: np.ndarray) -> np.ndarray:
    """Bool [n]: the point lies inside the convex hull of the receivers."""
    return Delaunay(rx_position_m).find_simplex(points_m) >= 0


def summarise(
    pred: np.ndarray,
    cov: np.ndarray | None,
    truth: np.ndarray,
    inside: np.ndarray,
    n_heard: np.ndarray,
    reported: np.ndarray,
    grid: MapAnswers | None = None,
) -> dict:
    """Accuracy (and calibration when cov is given) overall, inside/outside the hull, by receivers heard.

    reported: bool [n], transmissions the reporting rule asks an answer for; `answered` is the share of them
    with a finite answer, and the other figures are over the answered ones. grid: the estimator's grid
    posterior answers, whose own density gives `nll` and the HPD-region coverage and area.
    """
    answered = reported & np.isfinite(pred).all(1)

    def one(sel: np.ndarray) -> dict:
        s = sel & answered
        out = {"n": int(sel.sum()), "answered": float(s.sum() / max((sel & reported).sum(), 1))}
        out.update(accuracy_summary(pred[s], truth[s]))
        if cov is not None:
            out.update(calibration_summary(pred[s], cov[s], truth[s]))
        if grid is not None and s.any():
            density, in50, in95 = grid.log_density_at_truth, grid.in_hpd50, grid.in_hpd95
            if density is None or in50 is None or in95 is None:
                raise ValueError("grid answers without the truth's density and HPD membership")
            out.update(
                nll=float(-density[s].mean()),
                coverage_hpd50=float(in50[s].mean()),
                coverage_hpd95=float(in95[s].mean()),
                median_area_hpd95_km2=float(np.median(grid.hpd95_area_km2[s])),
                multimodal_fraction=float(np.mean(grid.n_modes[s] > 1)),
                median_error_map_m=float(np.median(np.linalg.norm(grid.map_m[s] - truth[s], axis=1))),
            )
        return out

    result = one(np.ones(len(truth), bool))
    result["inside_hull"] = one(inside)
    result["outside_hull"] = one(~inside)
    classes = heard_class(n_heard)
    result["by_receivers_heard"] = {c: one(classes == c) for c in HEARD_CLASSES if (classes == c).any()}
    return result


def evaluate(
    predict: Predict | None,
    test: TestSet,
    calibration: TestSet | None,
    out_dir: str | Path,
    grid_spacing_m: float | None = None,
    seed: int = 0,
    model: str | None = None,
    validation: TestSet | None = None,
    map_options: MapOptions | None = DEFAULT_MAP_OPTIONS,
    on_progress: Progress | None = None,
    carried: CarriedMap | None = None,
) -> dict:
    """Run every estimator on `test`, write metrics.json and plots to out_dir, return the metrics.

    predict: the model's predictions (model_predictor), named `model` in the provenance; None: classical only.
    calibration: labelled data (the training split) to calibrate the classical model's exponent, per-receiver
    offsets and σ, and to fit the radio map; without it the classical model uses the test set itself (flagged)
    and the map self-calibrates on the test recordings' measurements. validation: labelled data to choose
    the hybrid's exponents on (no hybrid without it). map_options: the grid of the map fitted for the evaluation
    (None: no grid estimators but the model's own map). The reporting rule (the scenario's min_receivers) decides
    which transmissions ask an answer.
    carried: the radio map the model carries (heimdall.release.judged_answers.carried_map): `radio_map` and `hybrid`
    are that map and its exponents (nothing is fitted), `model` is the model's own answer — its hybrid posterior
    where the map reads a receiver, as the service answers — and `model_network` its bare network.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth, heard, rx = test.target_m, test.heard, test.rx_position_m
    inputs = Inputs(test, calibration, validation, predict, grid_spacing_m, seed, map_options, on_progress, carried)
    inputs.grid  # noqa: B018 — a search grid too fine for memory is refused before any work
    if carried is not None:
        carried.check_receivers(test, model or "model")
    answers: dict[str, Answers] = {}
    not_evaluated: dict[str, str] = {}
    for name, estimator in ESTIMATORS.items():
        result = estimator.answer(inputs)
        if isinstance(result, Answers):
            answers[name] = result
        else:
            not_evaluated[name] = result
    fit = inputs.fit
    inside = inside_hull(truth, rx)
    n_heard = heard.sum(1)
    min_receivers = test.scenario.receiver_chain.min_receivers if test.scenario else 1
    reported = n_heard >= min_receivers
    metrics = {
        "n_test": int(len(truth)),
        "provenance": {
            "heimdall_version": heimdall.__version__,
            "model": model,
            "test_store": test.source,
            "scenario": test.scenario.name if test.scenario else None,
            "calibration": "training split" if calibration is not None else "test split (no training split found)",
            "classical_model": {
                "exponent": fit.exponent,
                "offsets_db": fit.offsets_db.tolist(),
                "sigma_db": fit.sigma_db,
                "grid_spacing_m": grid_spacing_m,
            },
            **inputs.grid_notes,
            "oracle": ESTIMATORS["oracle"].doc,
            "crlb": ESTIMATORS["crlb"].doc,
            "reporting_rule": f"answer transmissions heard by at least {min_receivers} receivers",
            "not_evaluated": not_evaluated,
        },
        "inside_hull_fraction": float(inside.mean()),
        "by_receivers_heard_fraction": {c: float(np.mean(heard_class(n_heard) == c)) for c in HEARD_CLASSES},
        "estimators": {
            name: summarise(a.mean_m, a.cov_m2, truth, inside, n_heard, reported, a.grid) for name, a in answers.items()
        },
    }
    metrics["seconds"] = time.perf_counter() - t0
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    from heimdall.evaluation.plots import write_plots

    write_plots(out, answers, test, metrics)
    return metrics
