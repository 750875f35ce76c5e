"""Accuracy and calibration metrics of 2-D position estimates, in metres (pure numpy).

A 2-D Gaussian's k-σ ellipse {d² ≤ k²} holds 1 − exp(−k²/2) of the mass: 39.3 % for 1σ, 86.5 % for 2σ;
the 95 % ellipse is d² ≤ 5.991. The squared Mahalanobis distance of calibrated estimates has mean 2.
"""

from __future__ import annotations

import numpy as np

from heimdall.ellipse import radius_sq

CHI2_2D_95 = float(radius_sq(0.95))  # 5.991
COVERAGE_1SIGMA_IDEAL = float(1 - np.exp(-0.5))  # 0.3935
COVERAGE_2SIGMA_IDEAL = float(1 - np.exp(-2.0))  # 0.8647
MAHALANOBIS_SQ_IDEAL = 2.0  # mean squared Mahalanobis distance of calibrated 2-D estimates


def error_m(pred_m: np.ndarray, true_m: np.ndarray) -> np.ndarray:
    """Euclidean error. pred_m, true_m: [n, 2] metres → [n] metres."""
    return np.linalg.norm(np.asarray(pred_m, float) - np.asarray(true_m, float), axis=-1)


def mahalanobis_sq(pred_m: np.ndarray, cov_m2: np.ndarray, true_m: np.ndarray) -> np.ndarray:
    """(x − μ)ᵀ Σ⁻¹ (x − μ). pred_m, true_m: [n, 2]; cov_m2: [n, 2, 2] → [n]."""
    d = np.asarray(true_m, float) - np.asarray(pred_m, float)
    cov = np.asarray(cov_m2, float)
    return np.einsum("ni,ni->n", d, np.linalg.solve(cov, d[..., None])[..., 0])


def gaussian_nll(pred_m: np.ndarray, cov_m2: np.ndarray, true_m: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of the truth under N(μ, Σ), per sample, in nats with positions in km."""
    cov_km2 = np.asarray(cov_m2, float) / 1e6
    return 0.5 * mahalanobis_sq(pred_m, cov_m2, true_m) + 0.5 * np.log(np.linalg.det(cov_km2)) + np.log(2 * np.pi)


def accuracy_summary(pred_m: np.ndarray, true_m: np.ndarray) -> dict[str, float]:
    """Median / mean / p90 error, CEP50 (= median radius) and R95 in metres."""
    e = error_m(pred_m, true_m)
    if len(e) == 0:
        return {}
    return {
        "median_error_m": float(np.median(e)),
        "mean_error_m": float(np.mean(e)),
        "p90_error_m": float(np.percentile(e, 90)),
        "cep50_m": float(np.percentile(e, 50)),
        "r95_m": float(np.percentile(e, 95)),
    }


def calibration_summary(pred_m: np.ndarray, cov_m2: np.ndarray, true_m: np.ndarray) -> dict[str, float]:
    """Coverage of the 1σ / 2σ / 95 % ellipses, mean squared Mahalanobis distance, mean NLL."""
    if len(pred_m) == 0:
        return {}
    d2 = mahalanobis_sq(pred_m, cov_m2, true_m)
    return {
        "coverage_1sigma": float(np.mean(d2 <= 1.0)),
        "coverage_2sigma": float(np.mean(d2 <= 4.0)),
        "coverage_95": float(np.mean(d2 <= CHI2_2D_95)),
        "mean_mahalanobis_sq": float(np.mean(d2)),
        "nll": float(np.mean(gaussian_nll(pred_m, cov_m2, true_m))),
    }


def coverage_curve(pred_m: np.ndarray, cov_m2: np.ndarray, true_m: np.ndarray, nominal: np.ndarray) -> np.ndarray:
    """Observed coverage of the ellipses holding each nominal probability (the calibration curve)."""
    d2 = mahalanobis_sq(pred_m, cov_m2, true_m)
    k2 = np.asarray(radius_sq(nominal))
    return (d2[None, :] <= k2[:, None]).mean(axis=1)


def covariance_scale_for(d2: np.ndarray, targets_tolerance: tuple[float, float, float] = (0.03, 0.03, 0.2)) -> float:
    """The factor s for covariances (Σ → s·Σ) that brings held-out calibration closest to ideal.

    d2: squared Mahalanobis distances [n] under the current covariances. Minimises the squared deviations
    of 1σ and 2σ coverage and of the mean d², each in units of its tolerance. For Gaussian errors this is
    s = mean(d²)/2; real errors are heavier-tailed, and matching the mean alone over-covers the 1σ ellipse.
    """
    t1, t2, tm = targets_tolerance
    scales = np.geomspace(0.25, 4.0, 401)
    d2 = np.asarray(d2, float)[None, :] / scales[:, None]
    loss = (
        (((d2 <= 1.0).mean(1) - COVERAGE_1SIGMA_IDEAL) / t1) ** 2
        + (((d2 <= 4.0).mean(1) - COVERAGE_2SIGMA_IDEAL) / t2) ** 2
        + ((d2.mean(1) - MAHALANOBIS_SQ_IDEAL) / tm) ** 2
    )
    return float(scales[np.argmin(loss)])
