"""A receiver's residual power field learned from labelled transmissions: a Gaussian process (kriging).

Covariance Σ_k σ_k²·exp(−r/ℓ_k): two exponential components (Gudmundson's shadowing model at a coarse and
a fine scale: terrain and clutter) plus a nugget τ² and each point's own known noise variance (fading,
the uncertainty of its transmit power, the power measurement). σ_k, ℓ_k and τ by maximum composite likelihood
on HYPER_BLOCKS blocks of neighbouring points (each block's points are the nearest to a random centre among a
random thinning of the labels, so both scales are seen whatever the density); predictions by local kriging
from the NEIGHBOURS nearest points, so fitting grows like n·log n with the number of labels and the map's size
does not depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import RegularGridInterpolator
from scipy.optimize import minimize
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

from heimdall.radiomap.grid import MapGrid

HYPER_BLOCKS = 8
HYPER_BLOCK_POINTS = 300
HYPER_THINNING = 6000  # labels the blocks are drawn from
FINER_RESTART = 4.0  # the second start's correlation lengths: the first's divided by this
NEIGHBOURS = 16  # 32 gave no better maps on bench/bench_labels.py and twice the fit time
FIELD_GRID_FACTOR = 1  # cells per kriged node (2: every other cell, bilinear in between, which blurs a 1.5 km field)
KRIGE_CHUNK = 4096
SIGMA_BOUNDS_DB = (0.5, 20.0)
CORRELATION_BOUNDS_M = (300.0, 200_000.0)
NUGGET_BOUNDS_DB = (0.1, 10.0)


@dataclass(frozen=True)
class FieldHyper:
    """Hyper-parameters of a residual field: each component's σ (dB) and correlation length ℓ (m), coarse first,
    and the nugget τ (dB)."""

    sigma_db: tuple[float, ...]
    correlation_m: tuple[float, ...]
    nugget_db: float

    @classmethod
    def initial(cls, components: list[tuple[float, float]]) -> FieldHyper:
        """A starting point from a scenario's shadowing components [(σ dB, ℓ m)]: its coarsest and finest ones
        (the others' variance shared between them); a single component split into a coarse and a 5× finer one."""
        by_scale = sorted(components, key=lambda c: -c[1])
        total = float(np.sqrt(sum(s**2 for s, _ in by_scale)))
        coarse, fine = by_scale[0][1], by_scale[-1][1]
        if len(by_scale) == 1:
            return cls((0.8 * total, 0.6 * total), (coarse, coarse / 5), 1.0)
        share = total / float(np.hypot(by_scale[0][0], by_scale[-1][0]))
        return cls((by_scale[0][0] * share, by_scale[-1][0] * share), (coarse, fine), 1.0)

    @property
    def variance_db2(self) -> float:
        """The field's variance Σσ_k² (dB²), nugget excluded."""
        return float(sum(s**2 for s in self.sigma_db))

    def covariance(self, r: np.ndarray) -> np.ndarray:
        """Σ_k σ_k²·exp(−r/ℓ_k) for distances r (m)."""
        cov = np.zeros(np.shape(r))
        for s, ell in zip(self.sigma_db, self.correlation_m, strict=True):
            cov += s**2 * np.exp(-r / ell)
        return cov

    def as_dict(self) -> dict[str, object]:
        """Plain floats for a map's info."""
        return {
            "sigma_db": [float(s) for s in self.sigma_db],
            "correlation_m": [float(c) for c in self.correlation_m],
            "nugget_db": float(self.nugget_db),
        }


def _negative_log_likelihood(
    theta: np.ndarray, blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> tuple[float, np.ndarray]:
    """−log composite likelihood (blocks independent, constant dropped) and its gradient in
    θ = log(σ_1…σ_K, ℓ_1…ℓ_K, τ)."""
    k_comp = (len(theta) - 1) // 2
    sigma, corr, nugget = np.exp(theta[:k_comp]), np.exp(theta[k_comp:-1]), float(np.exp(theta[-1]))
    total, grad = 0.0, np.zeros_like(theta)
    for d, e, noise_var in blocks:
        parts = [s**2 * np.exp(-d / ell) for s, ell in zip(sigma, corr, strict=True)]
        k = sum(parts) + np.diag(noise_var + nugget**2)
        try:
            chol = np.linalg.cholesky(k)
        except np.linalg.LinAlgError:
            return 1e12, np.zeros_like(theta)
        inv_chol = np.linalg.inv(chol)
        k_inv = inv_chol.T @ inv_chol
        alpha = k_inv @ e
        total += 0.5 * e @ alpha + np.log(np.diag(chol)).sum()
        w = k_inv - np.outer(alpha, alpha)  # dNLL/dK = ½·(K⁻¹ − ααᵀ)
        for i, (part, ell) in enumerate(zip(parts, corr, strict=True)):
            grad[i] += (w * part).sum()  # ½·∂K/∂log σ_k = K_k
            grad[k_comp + i] += 0.5 * (w * (part * d / ell)).sum()
        grad[-1] += np.trace(w) * nugget**2
    return float(total), grad


def _hyper_blocks(
    points_m: np.ndarray, residual_db: np.ndarray, noise_var_db2: np.ndarray, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """HYPER_BLOCKS (distances [b, b], residuals [b], noise [b]) of neighbouring points; all points in one block
    when they are few."""
    if len(points_m) > HYPER_THINNING:
        pick = rng.choice(len(points_m), HYPER_THINNING, replace=False)
        points_m, residual_db, noise_var_db2 = points_m[pick], residual_db[pick], noise_var_db2[pick]
    if len(points_m) <= HYPER_BLOCK_POINTS * 2:
        return [(cdist(points_m, points_m), residual_db, noise_var_db2)]
    tree = cKDTree(points_m)
    blocks = []
    for centre in rng.choice(len(points_m), HYPER_BLOCKS, replace=False):
        _, idx = tree.query(points_m[centre], HYPER_BLOCK_POINTS)
        blocks.append((cdist(points_m[idx], points_m[idx]), residual_db[idx], noise_var_db2[idx]))
    return blocks


def fit_hyper(
    points_m: np.ndarray,
    residual_db: np.ndarray,
    noise_var_db2: np.ndarray,
    rng: np.random.Generator,
    initial: FieldHyper,
) -> FieldHyper:
    """Maximum-likelihood hyper-parameters of a zero-mean field. points_m [n, 2], residual_db [n], noise [n]."""
    blocks = _hyper_blocks(points_m, residual_db, noise_var_db2, rng)
    k_comp = len(initial.sigma_db)
    bounds = [tuple(np.log(SIGMA_BOUNDS_DB))] * k_comp + [tuple(np.log(CORRELATION_BOUNDS_M))] * k_comp
    bounds.append(tuple(np.log(NUGGET_BOUNDS_DB)))
    lower, upper = [b[0] for b in bounds], [b[1] for b in bounds]
    best = None
    for finer in (1.0, FINER_RESTART):  # a second start with finer scales: the likelihood has local optima
        lengths = [c / finer for c in initial.correlation_m]
        start = np.clip(np.log([*initial.sigma_db, *lengths, initial.nugget_db]), lower, upper)
        res = minimize(_negative_log_likelihood, start, args=(blocks,), method="L-BFGS-B", jac=True, bounds=bounds)
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    x = np.exp(best.x)
    order = np.argsort(-x[k_comp:-1])  # coarse first
    return FieldHyper(tuple(x[:k_comp][order]), tuple(x[k_comp:-1][order]), float(x[-1]))


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
        kxx = h.covariance(np.linalg.norm(near[:, :, None] - near[:, None, :], axis=-1))
        n = idx.shape[1]
        kxx[:, np.arange(n), np.arange(n)] += noise_var_db2[idx] + h.nugget_db**2
        kx = h.covariance(dist)
        sol = np.linalg.solve(kxx, np.stack([residual_db[idx], kx], axis=-1))
        mean[s : s + len(q)] = (kx * sol[..., 0]).sum(1)
        var[s : s + len(q)] = np.maximum(h.variance_db2 - (kx * sol[..., 1]).sum(1), 1e-6)
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
