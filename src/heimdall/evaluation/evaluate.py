"""Evaluation of a model against classical estimators, the oracle and the Cramér–Rao bound.

Every estimator sees the same test transmissions. Metrics are in metres; calibration uses each
estimator's own covariance. Output: metrics.json and PNG plots in one folder (see `evaluate`).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial import Delaunay

import heimdall
from heimdall.atomic import atomic_write_text
from heimdall.baselines import (
    Grid,
    fit_log_distance,
    log_distance_crlb,
    log_distance_model,
    rss_ml,
    weighted_centroid,
)
from heimdall.budget import Progress
from heimdall.errors import HeimdallError
from heimdall.evaluation import DEFAULT_GRID_SPACING_M
from heimdall.evaluation.test_set import Predict, TestSet, load_test_set
from heimdall.features import HEARD_CLASSES, heard_class
from heimdall.metrics import accuracy_summary, calibration_summary
from heimdall.onnx_guard import check_model_size, require_self_contained
from heimdall.radiomap.answers import MapAnswers
from heimdall.radiomap.fit import MapOptions

if TYPE_CHECKING:
    from heimdall.evaluation.radio_map import CarriedMap
    from heimdall.train.task import LocalizationTask

CALIBRATION_SAMPLES = 20_000
MAX_GRID_POINTS = 1_000_000  # candidate positions of one grid search (memory grows with them)
ESTIMATORS = (
    "model",
    "model_network",
    "model_power_only",
    "weighted_centroid",
    "classical_ml",
    "radio_map",
    "hybrid",
    "oracle",
    "crlb",
)
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


def power_only(test: TestSet) -> TestSet:
    """The test set as a power-only request sees it: every feature but the power missing (NaN)."""
    power = test.params.power_index
    features = np.full_like(test.features, np.nan)
    features[..., power] = test.features[..., power]
    return replace(test, features=features)


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
    grid_spacing_m: float = DEFAULT_GRID_SPACING_M,
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
    carried: the radio map the model carries (heimdall.release.model_answers.carried_map): `radio_map` and `hybrid`
    are that map and its exponents (nothing is fitted), `model` is the model's own answer — its hybrid posterior
    where the map reads a receiver, as the service answers — and `model_network` its bare network.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth, heard, rx = test.target_m, test.heard, test.rx_position_m
    cal = calibration or test
    fit = fit_log_distance(cal.power_dbm, cal.heard, cal.target_m, cal.rx_position_m)
    bounds = test.scenario.area_bounds_m() if test.scenario else _bounds_around(truth, rx)
    grid = _grid(bounds, grid_spacing_m, "--grid-spacing-m")
    if carried is not None:
        carried.check_receivers(test, model or "model")
    preds: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    if predict is not None:
        preds["model"] = predict(test)
        preds["model_power_only"] = predict(power_only(test))
    preds["weighted_centroid"] = (weighted_centroid(test.power_dbm, heard, rx), None)
    classical = log_distance_model(rx, fit.exponent, fit.offsets_db)
    preds["classical_ml"] = rss_ml(test.power_dbm, heard, classical, grid, fit.sigma_db)
    grids: dict[str, MapAnswers] = {}
    grid_notes: dict[str, object] = {}
    if (map_options is not None or carried is not None) and test.scenario is not None:
        from heimdall.evaluation.radio_map import grid_estimates

        estimates = grid_estimates(test, calibration, validation, predict, map_options, on_progress, carried)
        grids, grid_notes = estimates.answers, estimates.notes
        for name, answers in grids.items():
            preds[name] = (answers.mean_m, answers.cov_m2)
    if carried is not None and "model" in preds and "hybrid" in grids:
        preds["model_network"] = preds["model"]
        preds["model"] = served_answers(test, preds["model_network"], grids["hybrid"])
    if test.scenario is not None and test.tx_height_m is not None:
        crlb = log_distance_crlb(truth, heard, rx, fit.exponent, fit.sigma_db)
        rng = np.random.default_rng(seed)
        draws = truth + np.einsum("nij,nj->ni", np.linalg.cholesky(crlb), rng.standard_normal(truth.shape))
        preds["crlb"] = (draws, None)
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
            **grid_notes,
            "oracle": "the radio-map posterior with the simulator's own maps (true path loss at each transmitter's "
            "height, in 16 bins; shadowing fields; gain offsets), its fading and measurement noise, and the true "
            "transmit power range: a floor in NLL",
            "crlb": "errors of an efficient estimator: one draw from N(truth, CRLB) per transmission, "
            "log-distance model with the classical fit",
            "reporting_rule": f"answer transmissions heard by at least {min_receivers} receivers",
        },
        "inside_hull_fraction": float(inside.mean()),
        "by_receivers_heard_fraction": {c: float(np.mean(heard_class(n_heard) == c)) for c in HEARD_CLASSES},
        "estimators": {
            name: summarise(p, c, truth, inside, n_heard, reported, grids.get(name)) for name, (p, c) in preds.items()
        },
    }
    metrics["seconds"] = time.perf_counter() - t0
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    from heimdall.evaluation.plots import write_plots

    write_plots(out, preds, truth, test, metrics)
    return metrics


def served_answers(
    test: TestSet, network: tuple[np.ndarray, np.ndarray | None], hybrid: MapAnswers
) -> tuple[np.ndarray, np.ndarray]:
    """What a map-carrying model answers (mean [n, 2] m, covariance [n, 2, 2] m²): its hybrid posterior's moments
    where the map reads a receiver (map_usable), the network's elsewhere."""
    from heimdall.evaluation.radio_map import map_usable, measured

    net_mean, net_cov = network
    assert net_cov is not None  # a model answers with a covariance
    usable = map_usable(measured(test), net_mean, net_cov)
    return (
        np.where(usable[:, None], hybrid.mean_m, net_mean),
        np.where(usable[:, None, None], hybrid.cov_m2, net_cov),
    )


def _grid(bounds_m: tuple[float, float, float, float], spacing_m: float, what: str) -> Grid:
    """A search grid, refused when it would hold more than MAX_GRID_POINTS candidates."""
    e0, n0, e1, n1 = bounds_m
    if not spacing_m > 0:
        raise HeimdallError(f"{what}: grid spacing must be > 0 m, got {spacing_m:g}")
    points = (np.floor((e1 - e0) / spacing_m) + 1) * (np.floor((n1 - n0) / spacing_m) + 1)
    if points > MAX_GRID_POINTS:
        raise HeimdallError(
            f"{what}: a {spacing_m:g} m grid over the area has {points:.3g} points, more than "
            f"{MAX_GRID_POINTS}; use a coarser spacing"
        )
    return Grid(bounds_m, spacing_m)


def _bounds_around(truth: np.ndarray, rx: np.ndarray) -> tuple[float, float, float, float]:
    pts = np.concatenate([truth, rx])
    lo, hi = pts.min(0) - 20_000, pts.max(0) + 20_000
    return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
