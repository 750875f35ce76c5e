"""A receiver's residual power field learned from labelled transmissions: a Gaussian process (kriging).

Covariance σ_f²·exp(−r/ℓ) (Gudmundson's exponential shadowing model) plus a nugget τ² and each point's
own known noise variance (fading, the uncertainty of its transmit power, the power measurement).
σ_f, ℓ and τ by maximum likelihood on a random subset of at most HYPER_SUBSET points; predictions by
local kriging from the NEIGHBOURS nearest points, so fitting grows like n·log n with the number of labels
and the map's size does not depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import RegularGridInterpolator
from scipy.optimize import minimize
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

from heimdall.radiomap.grid import MapGrid

HYPER_SUBSET = 800
NEIGHBOURS = 32
FIELD_GRID_FACTOR = 2  # the field is kriged on every other cell and interpolated bilinearly in between
KRIGE_CHUNK = 4096
SIGMA_BOUNDS_DB = (0.5, 20.0)
CORRELATION_BOUNDS_M = (300.0, 200_000.0)
NUGGET_BOUNDS_DB = (0.1, 10.0)


@dataclass(frozen=True)
class FieldHyper:
    """Hyper-parameters of a residual field: its σ_f (dB), correlation length ℓ (m) and nugget τ (dB)."""

    sigma_db: float
    correlation_m: float
    nugget_db: float


def _covariance(r: np.ndarray, h: FieldHyper) -> np.ndarray:
    """σ_f²·exp(−r/ℓ) for distances r (m)."""
    return h.sigma_db**2 * np.exp(-r / h.correlation_m)


def _negative_log_likelihood(
    theta: np.ndarray, d: np.ndarray, e: np.ndarray, noise_var: np.ndarray
) -> tuple[float, np.ndarray]:
    """−log marginal likelihood (constant dropped) and its gradient in θ = log(σ_f, ℓ, τ)."""
    sigma, corr, nugget = np.exp(theta)
    k_field = sigma**2 * np.exp(-d / corr)
    k = k_field + np.diag(noise_var + nugget**2)
    try:
        chol = np.linalg.cholesky(k)
    except np.linalg.LinAlgError:
        return 1e12, np.zeros(3)
    inv_chol = np.linalg.inv(chol)
    k_inv = inv_chol.T @ inv_chol
    alpha = k_inv @ e
    nll = 0.5 * e @ alpha + np.log(np.diag(chol)).sum()
    w = k_inv - np.outer(alpha, alpha)  # dNLL/dK = ½·(K⁻¹ − ααᵀ)
    grad = 0.5 * np.array(
        [
            (w * (2 * k_field)).sum(),  # ∂K/∂log σ_f
            (w * (k_field * d / corr)).sum(),  # ∂K/∂log ℓ
            np.trace(w) * 2 * nugget**2,  # ∂K/∂log τ
        ]
    )
    return float(nll), grad


def fit_hyper(
    points_m: np.ndarray,
    residual_db: np.ndarray,
    noise_var_db2: np.ndarray,
    rng: np.random.Generator,
    initial: FieldHyper,
) -> FieldHyper:
    """Maximum-likelihood hyper-parameters of a zero-mean field. points_m [n, 2], residual_db [n], noise [n]."""
    if len(points_m) > HYPER_SUBSET:
        pick = rng.choice(len(points_m), HYPER_SUBSET, replace=False)
        points_m, residual_db, noise_var_db2 = points_m[pick], residual_db[pick], noise_var_db2[pick]
    d = cdist(points_m, points_m)
    bounds = [tuple(np.log(b)) for b in (SIGMA_BOUNDS_DB, CORRELATION_BOUNDS_M, NUGGET_BOUNDS_DB)]
    start = np.clip(
        np.log([initial.sigma_db, initial.correlation_m, initial.nugget_db]),
        [b[0] for b in bounds],
        [b[1] for b in bounds],
    )
    res = minimize(
        _negative_log_likelihood,
        start,
        args=(d, residual_db, noise_var_db2),
        method="L-BFGS-B",
        jac=True,
        bounds=bounds,
    )
    return FieldHyper(*np.exp(res.x))


def krige(
    at_m: np.ndarray,
    points_m: np.ndarray,
    residual_db: np.ndarray,
    noise_var_db2: np.ndarray,
    h: FieldHyper,
    exclude_self: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Field mean [m] and variance [m] (dB, dB²) at `at_m` [m, 2] by local simple kriging.

    exclude_self: `at_m` are the training points themselves and each leaves itself out (cross-validation).
    """
    k = min(NEIGHBOURS + int(exclude_self), len(points_m))
    tree = cKDTree(points_m)
    mean = np.empty(len(at_m))
    var = np.empty(len(at_m))
    for s in range(0, len(at_m), KRIGE_CHUNK):
        q = at_m[s : s + KRIGE_CHUNK]
        dist, idx = tree.query(q, k)
        dist, idx = dist.reshape(len(q), k), idx.reshape(len(q), k)
        if exclude_self:
            dist, idx = dist[:, 1:], idx[:, 1:]
        near = points_m[idx]
        kxx = _covariance(np.linalg.norm(near[:, :, None] - near[:, None, :], axis=-1), h)
        n = idx.shape[1]
        kxx[:, np.arange(n), np.arange(n)] += noise_var_db2[idx] + h.nugget_db**2
        kx = _covariance(dist, h)
        sol = np.linalg.solve(kxx, np.stack([residual_db[idx], kx], axis=-1))
        mean[s : s + len(q)] = (kx * sol[..., 0]).sum(1)
        var[s : s + len(q)] = np.maximum(h.sigma_db**2 - (kx * sol[..., 1]).sum(1), 1e-6)
    return mean, var


def krige_on_grid(
    grid: MapGrid, points_m: np.ndarray, residual_db: np.ndarray, noise_var_db2: np.ndarray, h: FieldHyper
) -> tuple[np.ndarray, np.ndarray]:
    """Field mean and variance [n_cells] at every cell of `grid`: kriged on a grid FIELD_GRID_FACTOR times
    coarser, then interpolated bilinearly (the field varies little within two cells)."""
    step = grid.spacing_m * FIELD_GRID_FACTOR
    east = grid.east0_m + np.arange(-1, grid.nx // FIELD_GRID_FACTOR + 2) * step
    north = grid.north0_m + np.arange(-1, grid.ny // FIELD_GRID_FACTOR + 2) * step
    ee, nn = np.meshgrid(east, north)
    mean, var = krige(np.stack([ee.ravel(), nn.ravel()], -1), points_m, residual_db, noise_var_db2, h)
    at = grid.centres()[:, ::-1]  # (north, east) as the interpolator's axes
    interp = [
        RegularGridInterpolator((north, east), v.reshape(ee.shape), bounds_error=False, fill_value=None)(at)
        for v in (mean, var)
    ]
    return interp[0], np.maximum(interp[1], 1e-6)
