"""Small-scale fading inside the recording window: Rician, Doppler-limited, sum of sinusoids.

h(t) = √(K/(K+1))·e^{j(2π·f_d·cos θ0·t + φ0)} + √(1/(K+1))·(1/√M)·Σ_m e^{j(2π·f_d·cos α_m·t + φ_m)}

with E|h|² = 1. K → 0 gives Rayleigh fading (mobile in clutter), large K a steady line-of-sight path.
The process is evaluated on a coarse time grid and linearly interpolated: f_d ≤ ~100 Hz at VHF/UHF
road speeds, so a grid of ≥ 16 points per Doppler cycle resolves it.
"""

from __future__ import annotations

import numpy as np

POINTS_PER_DOPPLER_CYCLE = 16
MIN_GRID_POINTS = 8


def _interpolation_matrix(n_grid: int, n_samples: int) -> np.ndarray:
    """float32 [n_grid, n_samples]: linear interpolation from n_grid evenly spaced points to n_samples."""
    pos = np.linspace(0, n_grid - 1, n_samples)
    left = np.minimum(pos.astype(np.int64), n_grid - 2)
    frac = pos - left
    w = np.zeros((n_grid, n_samples), np.float32)
    w[left, np.arange(n_samples)] = 1 - frac
    w[left + 1, np.arange(n_samples)] = frac
    return w


def rician_fading(
    rng: np.random.Generator,
    n_rx: int,
    n_samples: int,
    sample_rate_hz: float,
    k_factor_db: np.ndarray,
    doppler_hz: np.ndarray,
    n_paths: int,
    amplitude: np.ndarray | None = None,
) -> np.ndarray:
    """Independent fading per (transmission, receiver).

    Args:
        rng: the generator the random paths are drawn from.
        n_rx: receivers per transmission.
        n_samples: samples of each fading sequence.
        sample_rate_hz: sample rate of the sequence.
        k_factor_db: float [n_tx] Rician K-factor of each transmission.
        doppler_hz: float [n_tx] maximum Doppler shift v/λ of each transmission.
        amplitude: optional float [n_tx, n_rx] gain folded into the result (cheaper than a pass over it).
        n_paths: scattered paths summed with the line-of-sight one.

    Returns:
        complex64 [n_tx, n_rx, n_samples], E|h|² = amplitude² (1 without it).
    """
    n_tx = len(k_factor_db)
    duration_s = n_samples / sample_rate_hz
    cycles = float(np.max(doppler_hz, initial=0.0)) * duration_s
    n_grid = int(min(n_samples, max(MIN_GRID_POINTS, np.ceil(POINTS_PER_DOPPLER_CYCLE * cycles) + 2)))
    t = np.linspace(0.0, duration_s, n_grid)
    k = 10 ** (np.asarray(k_factor_db, float) / 10)
    fd = np.asarray(doppler_hz, float)[:, None, None, None]
    angles = rng.uniform(0, 2 * np.pi, (n_tx, n_rx, n_paths + 1, 2))  # arrival angle, phase
    phase = 2 * np.pi * fd * np.cos(angles[..., 0:1]) * t + angles[..., 1:2]
    rays = np.exp(1j * phase)  # [n_tx, n_rx, paths+1, n_grid]
    los = np.sqrt(k / (k + 1))[:, None, None]
    scatter = np.sqrt(1 / (k + 1))[:, None, None] / np.sqrt(n_paths)
    h_grid = los * rays[:, :, 0] + scatter * rays[:, :, 1:].sum(axis=2)
    if amplitude is not None:
        h_grid = h_grid * np.asarray(amplitude)[:, :, None]
    return (h_grid.astype(np.complex64) @ _interpolation_matrix(n_grid, n_samples)).astype(np.complex64)
