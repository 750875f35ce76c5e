"""Evaluation of a model against classical estimators, the oracle and the Cramér–Rao bound.

Every estimator sees the same test transmissions. Metrics are in metres; calibration uses each
estimator's own covariance. Output: metrics.json and PNG plots in one folder (see `evaluate`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
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
    rss_posterior,
    weighted_centroid,
)
from heimdall.datasets.loader import StoreDataset
from heimdall.datasets.store import split_files
from heimdall.errors import DatasetError, HeimdallError
from heimdall.features import FeatureParams
from heimdall.metrics import accuracy_summary, calibration_summary
from heimdall.onnx_guard import require_self_contained
from heimdall.scenario.domain import Scenario
from heimdall.scenario.schema import scenario_from_text

if TYPE_CHECKING:
    from heimdall.train.task import LocalizationTask

CALIBRATION_SAMPLES = 20_000
DEFAULT_GRID_SPACING_M = 2_000.0
MAX_GRID_POINTS = 1_000_000  # candidate positions of one grid search (memory grows with them)
ESTIMATORS = ("model", "model_power_only", "weighted_centroid", "classical_ml", "oracle", "crlb")


@dataclass
class TestSet:
    """The transmissions every estimator is evaluated on (arrays over n samples, R receivers)."""

    features: np.ndarray  # float32 [n, R, F]
    heard: np.ndarray  # bool [n, R]
    present: np.ndarray  # float32 [n, R], 1 where the receiver's recording is part of the transmission
    target_m: np.ndarray  # float64 [n, 2]
    rx_position_m: np.ndarray  # float64 [R, 2]
    params: FeatureParams
    scenario: Scenario | None
    gain_offset_db: np.ndarray | None  # oracle, simulated stores only
    tx_height_m: np.ndarray | None  # oracle, simulated stores only
    source: str

    @property
    def power_dbm(self) -> np.ndarray:
        """float64 [n, R] measured in-band power, dBm."""
        return self.features[..., self.params.power_index].astype(np.float64)


Predict = Callable[[TestSet], tuple[np.ndarray, np.ndarray]]  # a model: test set → mean [n, 2] m, cov [n, 2, 2] m²


def load_test_set(path: str | Path, max_samples: int | None = None) -> TestSet:
    """A test split: a store folder (its test split) or one store file."""
    p = Path(path)
    files = split_files(p, "test") if p.is_dir() else [p]
    if not files:
        raise DatasetError(f"{p}: no test.h5 (or test shards) in the folder")
    ds = StoreDataset(files)
    if max_samples:
        ds = StoreDataset(files, np.arange(min(max_samples, len(ds))))
    if len(ds) == 0:
        raise DatasetError(f"{files[0]}: no transmissions to evaluate on")
    scenario = None
    if ds.meta.scenario_yaml:
        scenario = scenario_from_text(ds.meta.scenario_yaml, f"{files[0]}: attribute scenario_yaml")
        if [r.id for r in scenario.receivers] != list(ds.meta.receivers["id"]):
            raise DatasetError(f"{files[0]}: the receivers of attribute scenario_yaml differ from the receiver table")
    import h5py

    with h5py.File(files[0], "r") as f:
        gains = f["oracle/gain_offset_db"][...] if "oracle/gain_offset_db" in f else None
        simulated = "oracle/tx_height_m" in f
    arrays = ds.read_split()
    return TestSet(
        features=arrays.features,
        heard=arrays.heard,
        present=arrays.present,
        target_m=arrays.target_m,
        rx_position_m=arrays.rx_position_m,
        params=ds.meta.params,
        scenario=scenario,
        gain_offset_db=gains,
        tx_height_m=ds.read_all("oracle/tx_height_m") if simulated else None,
        source=", ".join(str(f) for f in files),
    )


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
    pred: np.ndarray, cov: np.ndarray | None, truth: np.ndarray, inside: np.ndarray, n_heard: np.ndarray
) -> dict:
    """Accuracy (and calibration when cov is given) overall, inside/outside the hull, by receivers heard."""

    def one(sel: np.ndarray) -> dict:
        out = {"n": int(sel.sum()), **accuracy_summary(pred[sel], truth[sel])}
        if cov is not None:
            out.update(calibration_summary(pred[sel], cov[sel], truth[sel]))
        return out

    everything = np.ones(len(truth), bool)
    result = one(everything)
    result["inside_hull"] = one(inside)
    result["outside_hull"] = one(~inside)
    result["by_receivers_heard"] = {str(k): one(n_heard == k) for k in np.unique(n_heard)}
    return result


ORACLE_HEIGHT_BINS = 8


def residual_sigma_db(
    power_dbm: np.ndarray, heard: np.ndarray, truth_m: np.ndarray, mean_model: Callable[[np.ndarray], np.ndarray]
) -> float:
    """Std of p − μ(x_true) − P0 over hearing receivers, P0 profiled per transmission."""
    r = np.where(heard, power_dbm - mean_model(truth_m), 0.0)
    w = heard.astype(float)
    n_h = np.maximum(w.sum(1, keepdims=True), 1.0)
    r = (r - r.sum(1, keepdims=True) / n_h) * w
    return float(np.sqrt((r**2).sum() / max(heard.sum() - (w.sum(1) > 0).sum(), 1)))


def oracle_model(
    scenario: Scenario, gain_offset_db: np.ndarray, tx_height_m: float
) -> Callable[[np.ndarray], np.ndarray]:
    """Mean received power [P, R] (dBm minus the transmit power) of the simulator itself: the true path loss
    for a transmitter antenna at tx_height_m, the true shadowing fields and the receivers' gain offsets."""
    from heimdall.sim.generator import build_world
    from heimdall.sim.propagation import median_path_loss_db

    world = build_world(scenario)

    def mean(points: np.ndarray) -> np.ndarray:
        d = np.linalg.norm(points[:, None, :] - world.rx_position_m[None, :, :], axis=-1)
        loss = median_path_loss_db(
            scenario.environment.path_loss,
            d,
            scenario.frequency_hz,
            np.asarray(tx_height_m),
            world.rx_height_m[None, :],
        )
        shadow = world.fields.sample(points) if world.fields is not None else 0.0
        return -loss + shadow + gain_offset_db

    return mean


def _height_bins(scenario: Scenario, heights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bin index [n] of each transmitter height and the bin centres [B] (log-spaced over the scenario range)."""
    lo, hi = scenario.transmitter.antenna_height_m
    edges = np.geomspace(lo, max(hi, lo * 1.0001), ORACLE_HEIGHT_BINS + 1)
    idx = np.clip(np.searchsorted(edges, heights, side="right") - 1, 0, ORACLE_HEIGHT_BINS - 1)
    return idx, np.sqrt(edges[:-1] * edges[1:])


def oracle_estimate(test: TestSet, calibration: TestSet, grid: Grid) -> tuple[np.ndarray, np.ndarray, float]:
    """Posterior mean and covariance given everything the simulator knows except the position and the
    transmit power: shadowing fields, gain offsets, path loss at the transmitter's height (in bins), the
    transmit power range and which receivers stayed silent (censoring). Returns (mean, cov, σ used)."""
    from heimdall.sim.noise import noise_floor_dbm

    sc = test.scenario
    if sc is None or test.gain_offset_db is None or test.tx_height_m is None or calibration.tx_height_m is None:
        raise DatasetError(f"{test.source}: the oracle needs a simulated store (scenario, gain offsets, heights)")
    ch = sc.receiver_chain
    censor = (
        noise_floor_dbm(np.array([r.noise_figure_db for r in sc.receivers]), ch.channel_bandwidth_hz)
        + test.gain_offset_db
        + ch.detection_snr_db
    )
    cal_bin, centres = _height_bins(sc, calibration.tx_height_m)
    sq, count = 0.0, 0
    for b, h in enumerate(centres):
        sel = cal_bin == b
        if sel.sum() > 10:
            sigma_b = residual_sigma_db(
                calibration.power_dbm[sel],
                calibration.heard[sel],
                calibration.target_m[sel],
                oracle_model(sc, test.gain_offset_db, h),
            )
            n_b = int(calibration.heard[sel].sum())
            sq, count = sq + sigma_b**2 * n_b, count + n_b
    sigma = float(np.sqrt(sq / max(count, 1)))
    mean = np.empty((len(test.target_m), 2))
    cov = np.empty((len(test.target_m), 2, 2))
    test_bin, _ = _height_bins(sc, test.tx_height_m)
    for b, h in enumerate(centres):
        sel = np.flatnonzero(test_bin == b)
        if len(sel):
            mean[sel], cov[sel] = rss_posterior(
                test.power_dbm[sel],
                test.heard[sel],
                oracle_model(sc, test.gain_offset_db, h),
                grid,
                sigma,
                censor_dbm=censor,
                p0_range_dbm=sc.transmitter.power_dbm,
            )
    return mean, cov, sigma


def evaluate(
    predict: Predict | None,
    test: TestSet,
    calibration: TestSet | None,
    out_dir: str | Path,
    grid_spacing_m: float = DEFAULT_GRID_SPACING_M,
    seed: int = 0,
    model: str | None = None,
) -> dict:
    """Run every estimator on `test`, write metrics.json and plots to out_dir, return the metrics.

    predict: the model's predictions (model_predictor), named `model` in the provenance; None: classical only.
    calibration: labelled data (the training split) to calibrate the classical model's exponent, per-receiver
    offsets and σ, and the oracle's residual σ; without it the test set itself is used (and flagged).
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth, heard, rx = test.target_m, test.heard, test.rx_position_m
    cal = calibration or test
    fit = fit_log_distance(cal.power_dbm, cal.heard, cal.target_m, cal.rx_position_m)
    bounds = test.scenario.area_bounds_m() if test.scenario else _bounds_around(truth, rx)
    grid = _grid(bounds, grid_spacing_m, "--grid-spacing-m")
    preds: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    if predict is not None:
        preds["model"] = predict(test)
        preds["model_power_only"] = predict(power_only(test))
    preds["weighted_centroid"] = (weighted_centroid(test.power_dbm, heard, rx), None)
    classical = log_distance_model(rx, fit.exponent, fit.offsets_db)
    preds["classical_ml"] = rss_ml(test.power_dbm, heard, classical, grid, fit.sigma_db)
    oracle_sigma = None
    if test.scenario is not None and test.tx_height_m is not None and cal.tx_height_m is not None:
        fine = _grid(
            bounds,
            min(grid_spacing_m, _finest_correlation_m(test.scenario) / 4),
            "the oracle's grid (a quarter of the scenario's finest shadowing correlation_m)",
        )
        mean, cov, oracle_sigma = oracle_estimate(test, cal, fine)
        preds["oracle"] = (mean, cov)
        crlb = log_distance_crlb(truth, heard, rx, fit.exponent, fit.sigma_db)
        rng = np.random.default_rng(seed)
        draws = truth + np.einsum("nij,nj->ni", np.linalg.cholesky(crlb), rng.standard_normal(truth.shape))
        preds["crlb"] = (draws, None)
    inside = inside_hull(truth, rx)
    n_heard = heard.sum(1)
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
            "oracle": "posterior mean and covariance on a grid of 1/4 of the finest shadowing correlation, given "
            "the true path loss (transmitter height in 8 bins), shadowing fields, gain offsets, transmit "
            "power range and censoring of silent receivers",
            "oracle_sigma_db": oracle_sigma,
            "crlb": "errors of an efficient estimator: one draw from N(truth, CRLB) per transmission, "
            "log-distance model with the classical fit",
        },
        "inside_hull_fraction": float(inside.mean()),
        "estimators": {name: summarise(p, c, truth, inside, n_heard) for name, (p, c) in preds.items()},
    }
    metrics["seconds"] = time.perf_counter() - t0
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    from heimdall.evaluation.plots import write_plots

    write_plots(out, preds, truth, test, metrics)
    return metrics


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


def _finest_correlation_m(scenario: Scenario) -> float:
    return min(c.correlation_m for c in scenario.environment.shadowing.components)


def _bounds_around(truth: np.ndarray, rx: np.ndarray) -> tuple[float, float, float, float]:
    pts = np.concatenate([truth, rx])
    lo, hi = pts.min(0) - 20_000, pts.max(0) + 20_000
    return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
