"""The uncertainty ellipses of a 2-D Gaussian N(mean, cov) in the local frame (metres): their radius, axes,
orientation and outline. The one home of this geometry for metrics, plots, answers and predictions.

The ellipse holding probability p is {x: (x − μ)ᵀ Σ⁻¹ (x − μ) ≤ k²} with k² = −2·ln(1 − p): k = 1.515 for 68 %,
2.448 for 95 % (the 1σ ellipse, k = 1, holds only 39.3 % in 2-D).
"""

from __future__ import annotations

import numpy as np


def radius_sq(probability: float | np.ndarray) -> float | np.ndarray:
    """k², the squared Mahalanobis radius of the ellipse holding `probability` (chi-square, 2 degrees of freedom)."""
    return -2.0 * np.log(1.0 - np.asarray(probability, float))


def principal_axes(cov_m2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cov_m2 [..., 2, 2] → standard deviations [..., 2] m (minor, major), eigenvectors [..., 2, 2] (columns)
    and the bearing of the major axis [...] in degrees clockwise from north, in [0, 180)."""
    vals, vecs = np.linalg.eigh(cov_m2)
    major = vecs[..., :, 1]
    bearing = np.degrees(np.arctan2(major[..., 0], major[..., 1])) % 180.0
    return np.sqrt(np.maximum(vals, 0.0)), vecs, bearing


def axes(probability: float, sd_m: np.ndarray, bearing_deg: float | np.ndarray) -> dict[str, float]:
    """The ellipse holding `probability` given principal_axes' sd_m [2] (minor, major) and bearing: semi-major and
    semi-minor axes (m) and the major axis's bearing (degrees from north)."""
    k = float(np.sqrt(radius_sq(probability)))
    return {
        "probability": probability,
        "semi_major_m": float(k * sd_m[1]),
        "semi_minor_m": float(k * sd_m[0]),
        "orientation_deg": float(bearing_deg),
    }


def ellipse(cov_m2: np.ndarray, probability: float) -> dict[str, float]:
    """Semi-axes (m) of the ellipse holding `probability` of N(·, cov) [2, 2] and its major axis bearing (°)."""
    sd, _, bearing = principal_axes(cov_m2)
    return axes(probability, sd, bearing)


def outline(mean_m: np.ndarray, cov_m2: np.ndarray, probability: float, n_points: int) -> np.ndarray:
    """Points [..., n_points, 2] (m) around the ellipse holding `probability`, counter-clockwise, not closed.

    mean_m [..., 2] m, cov_m2 [..., 2, 2] m²."""
    sd, vecs, _ = principal_axes(cov_m2)
    t = np.linspace(0, 2 * np.pi, n_points, endpoint=False)
    unit = np.stack([np.cos(t), np.sin(t)], -1)  # [P, 2]
    k = np.sqrt(radius_sq(probability))
    return np.asarray(mean_m)[..., None, :] + (unit * k * sd[..., None, :]) @ np.swapaxes(vecs, -1, -2)
