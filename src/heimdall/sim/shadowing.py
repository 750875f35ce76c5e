"""Spatially correlated log-normal shadowing: one fixed Gaussian random field per receiver.

A field is the sum of components, each with exponential correlation C(r) = σ²·exp(-r/d)
(Gudmundson's model), synthesised by spectral filtering of white noise on a grid padded well beyond the
area (so the periodic wrap-around of the FFT does not correlate opposite edges), and sampled by bilinear
interpolation. The field is a pure function of the scenario's shadowing seed and the receiver id, so the
same place shadows the same receiver the same way in every dataset of that scenario.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

MAX_GRID_CELLS = 4096  # per axis
PADDING_CORRELATIONS = 4.0  # padding around the area, in correlation lengths of the widest component


@dataclass(frozen=True)
class ShadowingFields:
    """Fields on a regular grid in the local frame.

    values_db: float32 [n_rx, ny, nx]; cell (j, i) is at (east0_m + i·spacing_m, north0_m + j·spacing_m).
    """

    east0_m: float
    north0_m: float
    spacing_m: float
    values_db: np.ndarray

    def sample(self, east_north_m: np.ndarray) -> np.ndarray:
        """Bilinear samples of every field. east_north_m: float [n, 2] → float32 [n, n_rx] in dB."""
        _, ny, nx = self.values_db.shape
        gx = np.clip((east_north_m[:, 0] - self.east0_m) / self.spacing_m, 0, nx - 1.000001)
        gy = np.clip((east_north_m[:, 1] - self.north0_m) / self.spacing_m, 0, ny - 1.000001)
        i, j = gx.astype(np.int64), gy.astype(np.int64)
        fx, fy = (gx - i)[:, None], (gy - j)[:, None]
        v = self.values_db
        top = v[:, j, i].T * (1 - fx) + v[:, j, i + 1].T * fx
        bottom = v[:, j + 1, i].T * (1 - fx) + v[:, j + 1, i + 1].T * fx
        return (top * (1 - fy) + bottom * fy).astype(np.float32)


def receiver_seed(base_seed: int, receiver_id: str, component: int) -> np.random.SeedSequence:
    """Seed of one receiver's field component: stable when receivers are added, removed or reordered."""
    rid = int.from_bytes(hashlib.sha256(receiver_id.encode()).digest()[:8], "little")
    return np.random.SeedSequence(entropy=base_seed, spawn_key=(rid, component))


def exponential_field(
    rng: np.random.Generator, shape: tuple[int, int], spacing_m: float, sigma_db: float, correlation_m: float
) -> np.ndarray:
    """Periodic Gaussian field with covariance σ²·exp(-r/d) on a grid. → float64 [ny, nx] in dB.

    The 2-D power spectrum of exp(-r/d) is ∝ (1 + (2π·k·d)²)^(-3/2) (k in cycles/m); the filter is scaled
    so the field's variance is exactly σ² in expectation.
    """
    ny, nx = shape
    ky = np.fft.fftfreq(ny, spacing_m)[:, None]
    kx = np.fft.rfftfreq(nx, spacing_m)[None, :]
    spectrum = (1.0 + (2 * np.pi * correlation_m) ** 2 * (kx**2 + ky**2)) ** -1.5
    # variance of irfft2(rfft2(w)·H) for unit white w is Σ|H|² over the full (two-sided) spectrum / (nx·ny)
    full = np.concatenate([spectrum, spectrum[:, 1 : (nx + 1) // 2][:, ::-1]], axis=1)
    gain = np.sqrt(spectrum) * sigma_db / np.sqrt(full.sum() / (nx * ny))
    white = rng.standard_normal((ny, nx))
    return np.fft.irfft2(np.fft.rfft2(white) * gain, s=(ny, nx))


def build_fields(
    receiver_ids: list[str],
    bounds_m: tuple[float, float, float, float],
    components: list[tuple[float, float]],
    seed: int,
) -> ShadowingFields:
    """One field per receiver over `bounds_m` (east_min, north_min, east_max, north_max).

    components: [(sigma_db, correlation_m), ...], summed (independent).
    """
    e0, n0, e1, n1 = bounds_m
    d_min = min(d for _, d in components)
    d_max = max(d for _, d in components)
    pad = PADDING_CORRELATIONS * d_max
    span = max(e1 - e0, n1 - n0) + 2 * pad
    spacing = max(d_min / 4.0, span / MAX_GRID_CELLS)
    nx = int(np.ceil((e1 - e0 + 2 * pad) / spacing)) + 1
    ny = int(np.ceil((n1 - n0 + 2 * pad) / spacing)) + 1
    # crop the padded field to the area (plus one cell): interpolation never reaches the padding
    i0, j0 = int(pad // spacing), int(pad // spacing)
    ci = int(np.ceil((e1 - e0) / spacing)) + 2
    cj = int(np.ceil((n1 - n0) / spacing)) + 2
    values = np.zeros((len(receiver_ids), cj, ci), np.float64)
    for r, rid in enumerate(receiver_ids):
        for c, (sigma, corr) in enumerate(components):
            rng = np.random.Generator(np.random.PCG64(receiver_seed(seed, rid, c)))
            values[r] += exponential_field(rng, (ny, nx), spacing, sigma, corr)[j0 : j0 + cj, i0 : i0 + ci]
    return ShadowingFields(
        east0_m=e0 - (pad - i0 * spacing),
        north0_m=n0 - (pad - j0 * spacing),
        spacing_m=spacing,
        values_db=values.astype(np.float32),
    )
