"""Classical position estimators that need no training, and the Cramér–Rao bound.

* `weighted_centroid`: centroid of the hearing receivers weighted by received power.
* `rss_posterior`: the posterior mean and covariance over the same grid (the Bayes-optimal estimate).
* `rss_ml`: maximum likelihood from received powers with the transmit power profiled out analytically,
  for any mean-power model μ_r(x) (the log-distance model for the classical estimator; the true path loss
  plus the true shadowing fields and gain offsets for the oracle). Grid search over the area, then three
  rounds of local refinement, vectorised over transmissions; its covariance comes from the curvature of the
  profiled log-likelihood at the optimum.
* `log_distance_crlb`: the Cramér–Rao bound of the log-distance model with unknown transmit power.

Only receivers that heard the transmission enter rss_ml's likelihood (censoring is not modelled there);
rss_posterior also reads the silent ones as censored when given their floors.
Shapes: power_dbm, heard [n, R]; positions [n, 2] metres; covariances [n, 2, 2] m².
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

LN10 = np.log(10.0)
PRIOR_SIGMA_M = 300_000.0  # weak prior that keeps covariances finite with < 3 receivers
MeanModel = Callable[[np.ndarray], np.ndarray]  # points [P, 2] metres → mean received power [P, R] dB (up to P0)


def weighted_centroid(
    power_dbm: np.ndarray, heard: np.ndarray, rx_position_m: np.ndarray, exponent: float = 0.5
) -> np.ndarray:
    """Centroid of the hearing receivers weighted by (linear received power)^exponent.

    power_dbm: [n, R]; heard: bool [n, R]; rx_position_m: [R, 2] → [n, 2] metres. A row where no
    receiver hears falls back to the centroid of all receivers.
    """
    p = np.where(heard, power_dbm, -np.inf)
    p_max = p.max(axis=1, keepdims=True)
    w = np.where(heard, 10.0 ** ((p - np.where(np.isfinite(p_max), p_max, 0.0)) / 10.0 * exponent), 0.0)
    none = w.sum(axis=1) == 0
    w[none] = 1.0
    return (w @ rx_position_m) / w.sum(axis=1, keepdims=True)


def log_distance_model(
    rx_position_m: np.ndarray, exponent: float, offsets_db: np.ndarray | None = None, min_distance_m: float = 100.0
) -> MeanModel:
    """μ_r(x) = K_r − 10·n·log10(|x − x_r|): per-receiver offsets K_r (antenna, height, calibration);
    the unknown transmit power absorbs every common constant."""
    k = np.zeros(len(rx_position_m)) if offsets_db is None else np.asarray(offsets_db, float)

    def mean(points: np.ndarray) -> np.ndarray:
        d = np.linalg.norm(points[:, None, :] - rx_position_m[None, :, :], axis=-1)
        return k - 10.0 * exponent * np.log10(np.maximum(d, min_distance_m))

    return mean


@dataclass(frozen=True)
class Grid:
    """Candidate positions: a regular grid over (east_min, north_min, east_max, north_max) with `spacing_m`."""

    bounds_m: tuple[float, float, float, float]
    spacing_m: float

    def points(self) -> np.ndarray:
        """Grid points float64 [P, 2] (east, north) m, row by row over the bounds."""
        e0, n0, e1, n1 = self.bounds_m
        e = np.arange(e0, e1 + self.spacing_m / 2, self.spacing_m)
        n = np.arange(n0, n1 + self.spacing_m / 2, self.spacing_m)
        ee, nn = np.meshgrid(e, n)
        return np.stack([ee.ravel(), nn.ravel()], axis=-1)


def _profiled_cost(power: np.ndarray, w: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Min over P0 of Σ_heard (p − μ − P0)². power, w: [n, R]; mu: [n, P, R] → [n, P]."""
    r = (power[:, None, :] - mu) * w[:, None, :]
    n_h = np.maximum(w.sum(-1), 1.0)[:, None]
    return (r * r).sum(-1) - r.sum(-1) ** 2 / n_h


def _grid_cost(power: np.ndarray, w: np.ndarray, m_grid: np.ndarray, m_grid_sq: np.ndarray | None = None) -> np.ndarray:
    """_profiled_cost against one shared set of candidates, as matrix products. m_grid: [P, R] (m_grid_sq: its square,
    when computed already) → [n, P]."""
    a = power * w
    n_h = np.maximum(w.sum(-1), 1.0)[:, None]
    s_a = a.sum(-1)[:, None]
    s_m = w @ m_grid.T
    squares = m_grid**2 if m_grid_sq is None else m_grid_sq
    return (a * a).sum(-1)[:, None] - 2 * a @ m_grid.T + w @ squares.T - (s_a - s_m) ** 2 / n_h


def rss_ml(
    power_dbm: np.ndarray,
    heard: np.ndarray,
    mean_model: MeanModel,
    grid: Grid,
    sigma_db: float,
    chunk: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood positions [n, 2] and covariances [n, 2, 2] from received powers.

    The likelihood is Gaussian in dB with std sigma_db around μ_r(x) + P0, P0 profiled out.
    """
    power = np.where(heard, power_dbm, 0.0).astype(np.float64)
    w = heard.astype(np.float64)
    pts = grid.points()
    m_grid = mean_model(pts)
    m_grid_sq = m_grid**2
    out_pos = np.empty((len(power), 2))
    for s in range(0, len(power), chunk):
        sl = slice(s, s + chunk)
        best = pts[np.argmin(_grid_cost(power[sl], w[sl], m_grid, m_grid_sq), axis=1)]
        step = grid.spacing_m
        for _ in range(3):  # local refinement: 9×9 candidates around the best, spacing shrinking 4× a round
            step /= 4.0
            offsets = np.stack(np.meshgrid(np.arange(-4, 5), np.arange(-4, 5)), -1).reshape(-1, 2) * step
            cand = best[:, None, :] + offsets[None, :, :]
            mu = mean_model(cand.reshape(-1, 2)).reshape(*cand.shape[:2], -1)
            best = cand[np.arange(len(cand)), np.argmin(_profiled_cost(power[sl], w[sl], mu), axis=1)]
        out_pos[sl] = best
    cov = curvature_covariance(power, w, mean_model, out_pos, sigma_db, step_m=max(grid.spacing_m / 8, 50.0))
    return out_pos, cov


@dataclass(frozen=True)
class PosteriorGrid:
    """What rss_posterior reads of a grid and a mean model, computed once (`of`) where many calls share them: the
    model's means at the grid's points [P, R] dB and their squares, the points about their centre [P, 2] m, their
    second moments (east², east·north, north²) [P, 3] m² and the centre [2] m (moments are taken about it in float64:
    no cancellation on a 300 km area)."""

    means_db: np.ndarray
    means_sq_db2: np.ndarray
    relative_m: np.ndarray
    second_m2: np.ndarray
    centre_m: np.ndarray

    BYTES_PER_POINT = 56  # relative_m, second_m2 and the points they came from (float64), besides 16 per receiver

    @classmethod
    def of(cls, grid: Grid, mean_model: MeanModel) -> PosteriorGrid:
        """The terms of `grid` under `mean_model`."""
        pts = grid.points()
        means = mean_model(pts)
        centre = pts.mean(axis=0)
        rel = pts - centre
        second = np.stack([rel[:, 0] ** 2, rel[:, 0] * rel[:, 1], rel[:, 1] ** 2], -1)
        return cls(means, means**2, rel, second, centre)


def rss_posterior(
    power_dbm: np.ndarray,
    heard: np.ndarray,
    mean_model: MeanModel,
    grid: Grid,
    sigma_db: float,
    censor_dbm: np.ndarray | None = None,
    p0_range_dbm: tuple[float, float] | None = None,
    chunk: int = 64,
    precomputed: PosteriorGrid | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean [n, 2] and covariance [n, 2, 2] over the grid (uniform prior on the area).

    With a flat prior on P0, integrating it out leaves exp(−cost/(2σ²)) up to a constant per transmission.
    Optional information, evaluated at the profiled P0*(x): `p0_range_dbm`, the known range of P0 (a
    Gaussian penalty outside it, std σ/√n_heard); `censor_dbm` [R] or [n, R], the power at or below which a
    receiver does not hear (dBm; NaN or ±inf: a receiver that was not recording), so each silent receiver contributes
    log Φ((censor − P0* − μ_r(x))/σ). precomputed: PosteriorGrid.of(grid, mean_model), when already computed (one
    transmission at a time: once for all).
    The posterior mean minimises the expected squared error (the Bayes-optimal point estimate); on a rugged
    likelihood (small-scale shadowing known exactly) it is the floor a learned model can approach, where the
    maximum-likelihood point jumps between distant, nearly equal optima.
    """
    from scipy.special import log_ndtr

    power = np.where(heard, power_dbm, 0.0).astype(np.float64)
    w = heard.astype(np.float64)
    terms = PosteriorGrid.of(grid, mean_model) if precomputed is None else precomputed
    m_grid, m_grid_sq = terms.means_db, terms.means_sq_db2
    censor = None if censor_dbm is None else np.broadcast_to(np.asarray(censor_dbm, np.float64), power.shape)
    mean = np.empty((len(power), 2))
    cov = np.empty((len(power), 2, 2))
    for s in range(0, len(power), chunk):
        sl = slice(s, s + chunk)
        a, ws = power[sl] * w[sl], w[sl]
        n_h = np.maximum(ws.sum(-1), 1.0)[:, None]
        log_w = (_grid_cost(power[sl], ws, m_grid, m_grid_sq) / (-2 * sigma_db**2)).astype(np.float32)
        if censor_dbm is not None or p0_range_dbm is not None:
            p0 = ((a.sum(-1)[:, None] - ws @ m_grid.T) / n_h).astype(np.float32)
            if p0_range_dbm is not None:
                lo, hi = p0_range_dbm
                excess = np.maximum(lo - p0, 0) + np.maximum(p0 - hi, 0)
                log_w -= excess**2 * (n_h / (2 * sigma_db**2)).astype(np.float32)
            if censor is not None:
                for r in range(power.shape[1]):
                    floor_dbm = censor[sl, r]
                    rows = np.flatnonzero(~heard[sl][:, r] & np.isfinite(floor_dbm))
                    if len(rows):
                        at_floor_dbm = floor_dbm[rows, None].astype(np.float32)
                        z = (at_floor_dbm - p0[rows] - m_grid[:, r].astype(np.float32)) / sigma_db
                        log_w[rows] += log_ndtr(np.minimum(z, 8.0))
        log_w -= log_w.max(axis=1, keepdims=True)
        np.exp(log_w, out=log_w)
        weights = log_w.astype(np.float64)
        total = weights.sum(axis=1, keepdims=True)
        m = (weights @ terms.relative_m) / total
        m2 = (weights @ terms.second_m2) / total
        mean[sl] = m + terms.centre_m
        cov[sl, 0, 0] = m2[:, 0] - m[:, 0] ** 2
        cov[sl, 0, 1] = cov[sl, 1, 0] = m2[:, 1] - m[:, 0] * m[:, 1]
        cov[sl, 1, 1] = m2[:, 2] - m[:, 1] ** 2
    cov += np.eye(2) * grid.spacing_m**2 / 12  # the grid's own resolution
    return mean, cov


def curvature_covariance(
    power: np.ndarray, w: np.ndarray, mean_model: MeanModel, at_m: np.ndarray, sigma_db: float, step_m: float
) -> np.ndarray:
    """Inverse Hessian of the profiled negative log-likelihood cost/(2σ²) at `at_m`, by central differences."""
    h = step_m
    stencil = np.array([[0, 0], [h, 0], [-h, 0], [0, h], [0, -h], [h, h], [h, -h], [-h, h], [-h, -h]])
    cand = at_m[:, None, :] + stencil[None]
    mu = mean_model(cand.reshape(-1, 2)).reshape(len(at_m), 9, -1)
    c = _profiled_cost(power, w, mu) / (2 * sigma_db**2)
    hxx = (c[:, 1] - 2 * c[:, 0] + c[:, 2]) / h**2
    hyy = (c[:, 3] - 2 * c[:, 0] + c[:, 4]) / h**2
    hxy = (c[:, 5] - c[:, 6] - c[:, 7] + c[:, 8]) / (4 * h**2)
    hess = np.stack([np.stack([hxx, hxy], -1), np.stack([hxy, hyy], -1)], -2)
    return _regularised_inverse(hess)


def _regularised_inverse(information: np.ndarray) -> np.ndarray:
    """Inverse of [n, 2, 2] information matrices, made positive definite and with a weak prior added."""
    vals, vecs = np.linalg.eigh(information)
    vals = np.maximum(vals, 0.0) + 1.0 / PRIOR_SIGMA_M**2
    return np.einsum("nij,nj,nkj->nik", vecs, 1.0 / vals, vecs)


def log_distance_crlb(
    position_m: np.ndarray, heard: np.ndarray, rx_position_m: np.ndarray, exponent: float, sigma_db: float
) -> np.ndarray:
    """Cramér–Rao bound [n, 2, 2] m² for the log-distance model with unknown transmit power.

    With g_r = ∇μ_r = −(10·n/ln10)·(x − x_r)/d_r², the Fisher information after profiling P0 is
    J = (1/σ²)·Σ_heard (g_r − ḡ)(g_r − ḡ)ᵀ, ḡ the mean over hearing receivers.
    """
    diff = position_m[:, None, :] - rx_position_m[None, :, :]
    d2 = np.maximum((diff**2).sum(-1, keepdims=True), 100.0**2)
    g = -(10 * exponent / LN10) * diff / d2
    w = heard.astype(np.float64)[..., None]
    g_bar = (g * w).sum(1, keepdims=True) / np.maximum(w.sum(1, keepdims=True), 1.0)
    c = (g - g_bar) * w
    info = np.einsum("nri,nrj->nij", c, c) / sigma_db**2
    return _regularised_inverse(info)


@dataclass(frozen=True)
class LogDistanceFit:
    """The classical model calibrated on labelled data."""

    exponent: float  # path-loss exponent n
    offsets_db: np.ndarray  # [R] per-receiver offsets K_r (mean zero)
    sigma_db: float  # residual standard deviation


def fit_log_distance(
    power_dbm: np.ndarray, heard: np.ndarray, position_m: np.ndarray, rx_position_m: np.ndarray
) -> LogDistanceFit:
    """Least squares of p_r = P0 + K_r − 10·n·log10(d_r), one P0 per transmission (profiled out by
    centring each transmission over its hearing receivers)."""
    n_rx = len(rx_position_m)
    d = np.linalg.norm(position_m[:, None, :] - rx_position_m[None, :, :], axis=-1)
    w = heard.astype(np.float64)
    n_h = np.maximum(w.sum(1, keepdims=True), 1.0)

    def centre(v: np.ndarray) -> np.ndarray:
        return (v - (v * w[..., None]).sum(1, keepdims=True) / n_h[..., None]) * w[..., None]

    x = np.concatenate(
        [-10 * np.log10(np.maximum(d, 100.0))[..., None], np.broadcast_to(np.eye(n_rx), (len(d), n_rx, n_rx))], axis=-1
    )
    y = centre(np.where(heard, power_dbm, 0.0)[..., None])[..., 0]
    xc = centre(x)
    coef, *_ = np.linalg.lstsq(xc[heard], y[heard], rcond=None)
    resid = y[heard] - xc[heard] @ coef
    dof = max(int(heard.sum()) - int((w.sum(1) > 0).sum()) - n_rx, 1)
    offsets = coef[1:] - coef[1:].mean()
    return LogDistanceFit(float(coef[0]), offsets, float(np.sqrt((resid**2).sum() / dof)))
