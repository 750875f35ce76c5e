"""Map and network together: a tempered product of the two posteriors on the map's cells.

    p(x) ∝ p_map(x)^α · N(x; μ_net, Σ_net)^β

The network (LocalizationNet, trained on the network's own labels or on a simulated twin and fine-tuned)
reads what the map does not model — the spectrum, the emission, sub-threshold detail — while the map knows
the site-specific shadowing and keeps the posterior's modes. Both read the same recordings, so their
evidence overlaps: α and β (each in EXPONENTS) are chosen on validation data by mean negative
log-likelihood, and α = 1, β = 0 (the map alone) is one of the choices.
"""

from __future__ import annotations

import itertools

import numpy as np

from heimdall.radiomap.posterior import GridPosterior

EXPONENTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def gaussian_log_density(points_m: np.ndarray, mean_m: np.ndarray, cov_m2: np.ndarray) -> np.ndarray:
    """log N(points; mean, cov) [n] for points [n, 2], in metres (constant terms dropped)."""
    d = points_m - mean_m
    return -0.5 * np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov_m2), d)


def combine(
    post: GridPosterior, net_mean_m: np.ndarray, net_cov_m2: np.ndarray, alpha: float, beta: float
) -> GridPosterior:
    """The tempered product of a map posterior and the network's Gaussian (mean [2] m, covariance [2, 2] m²)."""
    with np.errstate(divide="ignore"):
        log_map = np.log(post.weights)
    log_map = np.maximum(log_map, -700.0)
    centres = post.grid.centres(post.cells)
    return GridPosterior(
        post.grid, post.cells, alpha * log_map + beta * gaussian_log_density(centres, net_mean_m, net_cov_m2)
    )


def choose_exponents(
    posts: list[GridPosterior], net_mean_m: np.ndarray, net_cov_m2: np.ndarray, truth_m: np.ndarray
) -> tuple[float, float, float]:
    """(α, β, mean NLL) with the lowest mean negative log-likelihood (per km²) of the truths [n, 2]."""
    best = (1.0, 0.0, np.inf)
    for alpha, beta in itertools.product(EXPONENTS, EXPONENTS):
        if alpha == 0.0:
            continue  # the network alone is judged as a network, with its own (unpruned) Gaussian
        nll = float(
            np.mean(
                [
                    -combine(p, net_mean_m[i], net_cov_m2[i], alpha, beta).log_density_at(truth_m[i][None])[0]
                    for i, p in enumerate(posts)
                ]
            )
        )
        if nll < best[2]:
            best = (alpha, beta, nll)
    return best
