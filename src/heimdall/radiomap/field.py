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
from functools import lru_cache

import numpy as np
from scipy.interpolate import RegularGridInterpolator
from scipy.linalg import cho_solve
from scipy.linalg.lapack import dpotrf, dpotri
from scipy.optimize import minimize
from scipy.spatial import cKDTree
from scipy.spatial.distance import pdist
from threadpoolctl import threadpool_limits

from heimdall.radiomap.grid import MapGrid

HYPER_BLOCKS = 8
HYPER_BLOCK_POINTS = 300
HYPER_THINNING = 6000  # labels the blocks are drawn from
FINER_RESTART = 4.0  # the second start's correlation lengths: the first's divided by this
# L-BFGS-B stops when the likelihood changes by less than this (relative): 1e-6 moves the fitted σ and ℓ by ≲ 3 %
# against scipy's default (2e-9) in a quarter fewer evaluations; a first guess can stop much sooner
HYPER_FTOL = 1e-6
ROUGH_HYPER_FTOL = 1e-4
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

    def within(self, correlation_bounds_m: tuple[float, float]) -> FieldHyper:
        """These hyper-parameters for a network whose field correlation lengths lie within correlation_bounds_m
        (shortest, longest; heimdall.scale): lengths beyond half the longest scaled down together (their ratios
        kept), then clipped to the bounds."""
        lo, hi = correlation_bounds_m
        factor = min(1.0, hi / 2 / max(self.correlation_m))
        lengths = tuple(float(np.clip(c * factor, lo, hi)) for c in self.correlation_m)
        return FieldHyper(self.sigma_db, lengths, self.nugget_db)

    @property
    def variance_db2(self) -> float:
        """The field's variance Σσ_k² (dB²), nugget excluded."""
        return float(sum(s**2 for s in self.sigma_db))

    def covariance(self, r: np.ndarray) -> np.ndarray:
        """Σ_k σ_k²·exp(−r/ℓ_k) for distances r (m)."""
        cov = np.zeros(np.shape(r))
        for s, ell in zip(self.sigma_db, self.correlation_m, strict=True):
            part = np.exp(r * (-1.0 / ell))
            part *= s**2
            cov += part
        return cov

    def as_dict(self) -> dict[str, object]:
        """Plain floats for a map's info."""
        return {
            "sigma_db": [float(s) for s in self.sigma_db],
            "correlation_m": [float(c) for c in self.correlation_m],
            "nugget_db": float(self.nugget_db),
        }


@dataclass(frozen=True)
class _Block:
    """Points whose residuals the composite likelihood treats as one joint Gaussian: their pairwise distances
    below the diagonal (m, [b·(b−1)/2] in `_pairs(b)` order), residuals (dB, [b]) and noise variances (dB², [b])."""

    distance_m: np.ndarray
    residual_db: np.ndarray
    noise_var_db2: np.ndarray

    @classmethod
    def of(cls, points_m: np.ndarray, residual_db: np.ndarray, noise_var_db2: np.ndarray) -> _Block:
        """The block of points [b, 2]."""
        return cls(pdist(points_m)[_pdist_order(len(points_m))], residual_db, noise_var_db2)


@lru_cache(maxsize=8)
def _pairs(b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, flat index into a [b, b] matrix) of the pairs below the diagonal, row by row."""
    rows, cols = np.tril_indices(b, -1)
    return rows, cols, rows * b + cols


@lru_cache(maxsize=8)
def _pdist_order(b: int) -> np.ndarray:
    """The positions in pdist's order (pairs i < j, i-major) of `_pairs(b)`'s pairs."""
    rows, cols, _ = _pairs(b)  # (rows > cols): pdist holds pair (cols, rows) at the index below
    return b * cols - cols * (cols + 1) // 2 + (rows - cols - 1)


def _negative_log_likelihood(theta: np.ndarray, blocks: list[_Block]) -> tuple[float, np.ndarray]:
    """−log composite likelihood (blocks independent, constant dropped) and its gradient in
    θ = log(σ_1…σ_K, ℓ_1…ℓ_K, τ).

    With α = K⁻¹e and W = K⁻¹ − ααᵀ, ∂NLL/∂θ = ½·Σ_ij W_ij·∂K_ij/∂θ: K⁻¹ from K's Cholesky factor (LAPACK
    potri), every sum over the pairs below the diagonal (twice) and the diagonal; no n×n product is formed."""
    k_comp = (len(theta) - 1) // 2
    sigma, corr, nugget = np.exp(theta[:k_comp]), np.exp(theta[k_comp:-1]), float(np.exp(theta[-1]))
    total, grad = 0.0, np.zeros_like(theta)
    for block in blocks:
        d, e = block.distance_m, block.residual_db
        b = len(e)
        _, _, flat = _pairs(b)
        parts = [s**2 * np.exp(d * (-1.0 / ell)) for s, ell in zip(sigma, corr, strict=True)]
        k = np.zeros((b, b))
        k.put(flat, sum(parts))  # the lower triangle: all LAPACK reads of it
        k[np.diag_indices(b)] = float(np.sum(sigma**2)) + block.noise_var_db2 + nugget**2
        chol, info = dpotrf(k, lower=1, clean=1, overwrite_a=1)
        if info:
            return 1e12, np.zeros_like(theta)
        alpha = cho_solve((chol, True), e)
        total += 0.5 * e @ alpha + np.log(np.diag(chol)).sum()
        k_inv, info = dpotri(chol, lower=1, overwrite_c=1)
        if info:
            return 1e12, np.zeros_like(theta)
        rows, cols, _ = _pairs(b)
        w_pairs = 2.0 * (k_inv.take(flat) - alpha[rows] * alpha[cols])  # W below and above the diagonal
        w_diag = float(np.diag(k_inv).sum() - alpha @ alpha)
        for i, (part, s, ell) in enumerate(zip(parts, sigma, corr, strict=True)):
            # ½·∂K/∂log σ_k = K_k (σ_k² on the diagonal); ∂K/∂log ℓ_k = K_k·r/ℓ_k (0 on the diagonal)
            grad[i] += w_pairs @ part + w_diag * s**2
            part *= d
            grad[k_comp + i] += 0.5 * (w_pairs @ part) / ell
        grad[-1] += w_diag * nugget**2
    return float(total), grad


def _hyper_blocks(
    points_m: np.ndarray, residual_db: np.ndarray, noise_var_db2: np.ndarray, rng: np.random.Generator
) -> list[_Block]:
    """HYPER_BLOCKS blocks of neighbouring points; all points in one block when they are few."""
    if len(points_m) > HYPER_THINNING:
        pick = rng.choice(len(points_m), HYPER_THINNING, replace=False)
        points_m, residual_db, noise_var_db2 = points_m[pick], residual_db[pick], noise_var_db2[pick]
    if len(points_m) <= HYPER_BLOCK_POINTS * 2:
        return [_Block.of(points_m, residual_db, noise_var_db2)]
    tree = cKDTree(points_m)
    blocks = []
    for centre in rng.choice(len(points_m), HYPER_BLOCKS, replace=False):
        _, idx = tree.query(points_m[centre], HYPER_BLOCK_POINTS)
        blocks.append(_Block.of(points_m[idx], residual_db[idx], noise_var_db2[idx]))
    return blocks


def fit_hyper(
    points_m: np.ndarray,
    residual_db: np.ndarray,
    noise_var_db2: np.ndarray,
    rng: np.random.Generator,
    initial: FieldHyper,
    restart: bool = True,
    correlation_bounds_m: tuple[float, float] = CORRELATION_BOUNDS_M,
    ftol: float = HYPER_FTOL,
) -> FieldHyper:
    """Maximum-likelihood hyper-parameters of a zero-mean field. points_m [n, 2], residual_db [n], noise [n].

    Started from `initial` and, with `restart`, again from FINER_RESTART times finer lengths (the likelihood has
    local optima), the better kept; without it from `initial` alone (a refit near a known optimum). Correlation
    lengths within correlation_bounds_m (m; the network's, heimdall.scale); `ftol`: L-BFGS-B's relative tolerance
    on the likelihood."""
    blocks = _hyper_blocks(points_m, residual_db, noise_var_db2, rng)
    k_comp = len(initial.sigma_db)
    bounds = [tuple(np.log(SIGMA_BOUNDS_DB))] * k_comp + [tuple(np.log(correlation_bounds_m))] * k_comp
    bounds.append(tuple(np.log(NUGGET_BOUNDS_DB)))
    lower, upper = [b[0] for b in bounds], [b[1] for b in bounds]
    best = None
    with threadpool_limits(1):  # LAPACK on a few hundred points: threads gain little and stall on a busy machine
        for finer in (1.0, FINER_RESTART) if restart else (1.0,):
            lengths = [c / finer for c in initial.correlation_m]
            start = np.clip(np.log([*initial.sigma_db, *lengths, initial.nugget_db]), lower, upper)
            res = minimize(
                _negative_log_likelihood,
                start,
                args=(blocks,),
                method="L-BFGS-B",
                jac=True,
                bounds=bounds,
                options={"ftol": ftol},
            )
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
    tree: cKDTree | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Field mean [m] and variance [m] (dB, dB²) at `at_m` [m, 2] by local simple kriging.

    exclude_self: `at_m` are the training points themselves and each leaves itself out (cross-validation).
    tree: a cKDTree of `points_m`, when the caller has one.
    """
    k = min(NEIGHBOURS + int(exclude_self), len(points_m))
    tree = cKDTree(points_m) if tree is None else tree
    mean = np.empty(len(at_m))
    var = np.empty(len(at_m))
    east, north = points_m[:, 0], points_m[:, 1]
    for s in range(0, len(at_m), KRIGE_CHUNK):
        q = at_m[s : s + KRIGE_CHUNK]
        dist, idx = tree.query(q, k)
        dist, idx = dist.reshape(len(q), k), idx.reshape(len(q), k)
        if exclude_self:
            dist, idx = dist[:, 1:], idx[:, 1:]
        if idx.shape[1] == 0:  # one point, left out: the prior
            mean[s : s + len(q)], var[s : s + len(q)] = 0.0, h.variance_db2
            continue
        # nearby places share their neighbours: one system per distinct set of them (sorted), solved for the
        # weights of the residuals and the inverse that each place's variance reads
        order = np.argsort(idx, axis=1)
        idx, dist = np.take_along_axis(idx, order, 1), np.take_along_axis(dist, order, 1)
        rows = np.ascontiguousarray(idx).view(np.dtype((np.void, idx.itemsize * idx.shape[1]))).ravel()
        _, first, which = np.unique(rows, return_index=True, return_inverse=True)  # (np.unique(axis=0): 12× slower)
        sets = idx[first]
        e, n = east[sets], north[sets]
        de, dn = e[:, :, None] - e[:, None, :], n[:, :, None] - n[:, None, :]
        kxx = h.covariance(np.sqrt(de * de + dn * dn))
        diag = np.arange(sets.shape[1])
        kxx[:, diag, diag] += noise_var_db2[sets] + h.nugget_db**2
        rhs = np.concatenate([residual_db[sets][:, :, None], np.broadcast_to(np.eye(len(diag)), kxx.shape)], axis=2)
        sol = np.linalg.solve(kxx, rhs)  # [sets, k, 1 + k]: K⁻¹r, K⁻¹
        kx = h.covariance(dist)
        mean[s : s + len(q)] = (kx * sol[which, :, 0]).sum(1)
        explained = np.einsum("qi,qij,qj->q", kx, sol[which, :, 1:], kx)
        var[s : s + len(q)] = np.maximum(h.variance_db2 - explained, 1e-6)
    return mean, var


def with_own_measurement(
    loo_mean_db: np.ndarray, loo_var_db2: np.ndarray, residual_db: np.ndarray, noise_var_db2: np.ndarray, h: FieldHyper
) -> np.ndarray:
    """The field's mean [n] at each training point given its neighbours and its own measurement: its
    leave-one-out prediction (krige(..., exclude_self=True)) and its residual (noise variance plus nugget) joined
    by their precisions, which is exact Gaussian conditioning on one more point — no second kriging."""
    own_var = noise_var_db2 + h.nugget_db**2
    return (loo_mean_db * own_var + residual_db * loo_var_db2) / (own_var + loo_var_db2)


def krige_on_grid(
    grid: MapGrid,
    points_m: np.ndarray,
    residual_db: np.ndarray,
    noise_var_db2: np.ndarray,
    h: FieldHyper,
    tree: cKDTree | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Field mean and variance [n_cells] at every cell of `grid`: kriged on a grid FIELD_GRID_FACTOR times
    coarser, then interpolated bilinearly (the field varies little within two cells)."""
    step = grid.spacing_m * FIELD_GRID_FACTOR
    east = grid.east0_m + np.arange(-1, grid.nx // FIELD_GRID_FACTOR + 2) * step
    north = grid.north0_m + np.arange(-1, grid.ny // FIELD_GRID_FACTOR + 2) * step
    ee, nn = np.meshgrid(east, north)
    mean, var = krige(np.stack([ee.ravel(), nn.ravel()], -1), points_m, residual_db, noise_var_db2, h, tree=tree)
    at = grid.centres()[:, ::-1]  # (north, east) as the interpolator's axes
    interp = [
        RegularGridInterpolator((north, east), v.reshape(ee.shape), bounds_error=False, fill_value=None)(at)
        for v in (mean, var)
    ]
    return interp[0], np.maximum(interp[1], 1e-6)
