"""Receiver thermal noise: its level (kTB + noise figure) and fast complex Gaussian samples."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

THERMAL_NOISE_DBM_HZ = -173.975  # 10·log10(k·290 K / 1 mW)


def noise_density_dbm_hz(noise_figure_db: ArrayLike) -> np.ndarray:
    """Receiver noise power spectral density kT0·F in dBm/Hz."""
    return THERMAL_NOISE_DBM_HZ + np.asarray(noise_figure_db, float)


def noise_floor_dbm(noise_figure_db: np.ndarray, bandwidth_hz: float) -> np.ndarray:
    """Thermal noise power kTB + NF in dBm over bandwidth_hz."""
    return noise_density_dbm_hz(noise_figure_db) + 10.0 * np.log10(bandwidth_hz)


def complex_gaussian(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Circular complex Gaussian samples with E|z|² = 1: complex64 [*shape].

    Drawn in polar form (|z|² ~ Exp(1), uniform phase), exact and about twice as fast as two
    float32 normals from numpy's ziggurat on the machines we measured.
    """
    u = rng.random((2, *shape), dtype=np.float32)
    radius = np.sqrt(-np.log1p(-u[0]))
    phase = u[1] * np.float32(2 * np.pi)
    out = np.empty(shape, np.complex64)
    np.cos(phase, out=out.real)
    np.sin(phase, out=out.imag)
    out *= radius
    return out
