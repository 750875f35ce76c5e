"""Median path loss for VHF/UHF links of 1–200 km.

Model ``two_ray_diffraction`` (docs/PHYSICS.md): the larger of
  * the plane-earth two-ray loss, which equals free space up to the breakpoint 4π·h_t·h_r/λ and falls
    at 40 dB/decade beyond it, and
  * free space plus smooth-spherical-earth diffraction (ITU-R P.526, first-term residue formula with an
    effective earth radius k·6371 km), which dominates beyond the radio horizon.
Both are functions of antenna heights above the local terrain; terrain itself is left to the shadowing
fields. Valid for 30 MHz–3 GHz, 1–200 km, antenna heights 1–1000 m.
"""

from __future__ import annotations

import numpy as np

SPEED_OF_LIGHT_MPS = 299_792_458.0
EARTH_RADIUS_M = 6_371_000.0
MIN_DISTANCE_M = 10.0
# Limit 2 + 20·log10(K) of the height-gain function (P.526 §3.1.1.2) with K ≈ 0.01, average land
# and vertical polarisation at VHF/UHF.
HEIGHT_GAIN_FLOOR_DB = 2.0 + 20.0 * np.log10(0.01)


def free_space_loss_db(distance_m: np.ndarray, frequency_hz: float) -> np.ndarray:
    """Free-space path loss 20·log10(4πd/λ) in dB. distance_m: float [...] → float [...]."""
    d = np.maximum(np.asarray(distance_m, float), MIN_DISTANCE_M)
    return 20.0 * np.log10(4.0 * np.pi * d * frequency_hz / SPEED_OF_LIGHT_MPS)


def two_ray_loss_db(distance_m: np.ndarray, frequency_hz: float, h_tx_m: np.ndarray, h_rx_m: np.ndarray) -> np.ndarray:
    """Plane-earth two-ray loss in dB: free space before the breakpoint, 40·log10(d²/(h_t·h_r)) after."""
    d = np.maximum(np.asarray(distance_m, float), MIN_DISTANCE_M)
    plane_earth = 20.0 * np.log10(d**2 / (np.asarray(h_tx_m, float) * np.asarray(h_rx_m, float)))
    return np.maximum(free_space_loss_db(d, frequency_hz), plane_earth)


def _height_gain_db(y: np.ndarray) -> np.ndarray:
    """G(Y) of ITU-R P.526 §3.1.1.2 (β = 1), floored at HEIGHT_GAIN_FLOOR_DB."""
    y = np.asarray(y, float)
    high = 17.6 * np.sqrt(np.maximum(y - 1.1, 1e-12)) - 5.0 * np.log10(np.maximum(y - 1.1, 1e-12)) - 8.0
    low = 20.0 * np.log10(y + 0.1 * y**3)
    return np.maximum(np.where(y > 2.0, high, low), HEIGHT_GAIN_FLOOR_DB)


def diffraction_loss_db(
    distance_m: np.ndarray,
    frequency_hz: float,
    h_tx_m: np.ndarray,
    h_rx_m: np.ndarray,
    earth_radius_factor: float = 4.0 / 3.0,
) -> np.ndarray:
    """Smooth-earth diffraction loss relative to free space in dB (≥ 0), ITU-R P.526 first term.

    20·log10(E/E0) = F(X) + G(Y1) + G(Y2) with X, Y the normalised distance and heights.
    """
    f_mhz = frequency_hz / 1e6
    a_km = earth_radius_factor * EARTH_RADIUS_M / 1e3
    d_km = np.maximum(np.asarray(distance_m, float), MIN_DISTANCE_M) / 1e3
    x = 2.188 * f_mhz ** (1 / 3) * a_km ** (-2 / 3) * d_km
    y_scale = 9.575e-3 * f_mhz ** (2 / 3) * a_km ** (-1 / 3)
    f_x = np.where(
        x >= 1.6,
        11.0 + 10.0 * np.log10(x) - 17.6 * x,
        -20.0 * np.log10(x) - 5.6488 * x**1.425,
    )
    relative_field_db = f_x + _height_gain_db(y_scale * np.asarray(h_tx_m, float)) + _height_gain_db(
        y_scale * np.asarray(h_rx_m, float)
    )
    return np.maximum(-relative_field_db, 0.0)


def radio_horizon_m(h_tx_m: np.ndarray, h_rx_m: np.ndarray, earth_radius_factor: float = 4.0 / 3.0) -> np.ndarray:
    """Line-of-sight distance over a smooth earth: √(2·a·h_t) + √(2·a·h_r) in metres."""
    a = earth_radius_factor * EARTH_RADIUS_M
    return np.sqrt(2 * a * np.asarray(h_tx_m, float)) + np.sqrt(2 * a * np.asarray(h_rx_m, float))


def path_loss_db(
    distance_m: np.ndarray,
    frequency_hz: float,
    h_tx_m: np.ndarray,
    h_rx_m: np.ndarray,
    earth_radius_factor: float = 4.0 / 3.0,
) -> np.ndarray:
    """Median basic transmission loss in dB of model ``two_ray_diffraction``; arrays broadcast."""
    spherical = free_space_loss_db(distance_m, frequency_hz) + diffraction_loss_db(
        distance_m, frequency_hz, h_tx_m, h_rx_m, earth_radius_factor
    )
    return np.maximum(two_ray_loss_db(distance_m, frequency_hz, h_tx_m, h_rx_m), spherical)

