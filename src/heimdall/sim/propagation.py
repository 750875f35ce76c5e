"""Median path loss for VHF/UHF links of 1–200 km.

Two models (docs/PHYSICS.md), chosen by the scenario's ``environment.path_loss.model``:

Model ``two_ray_diffraction``: the larger of
  * the plane-earth two-ray loss, which equals free space up to the breakpoint 4π·h_t·h_r/λ and falls
    at 40 dB/decade beyond it, and
  * free space plus smooth-spherical-earth diffraction (ITU-R P.526, first-term residue formula with an
    effective earth radius k·6371 km), which dominates beyond the radio horizon.
Both are functions of antenna heights above the local terrain; terrain itself is left to the shadowing
fields. Valid for 30 MHz–3 GHz, 1–200 km, antenna heights 1–1000 m.

Model ``okumura_hata``: the empirical Hata fit of Okumura's measurements (urban, suburban or open area),
with the receiver as the base station and the transmitter as the mobile; never below free space. Its
slope (35 dB/decade for a 30 m base) differs from the two-ray model's 40, which makes it a useful
"other physics" for testing estimators that assume one model on data made with the other.

Model ``log_distance``: 10·LOG_DISTANCE_EXPONENT·log10(d / 1 m), d at least SLOPE_MIN_DISTANCE_M; no absolute
calibration (receivers' gain offsets and the transmit powers carry it): the plain law a radio map falls back on
and a twin fitted with it simulates (heimdall.radiomap.twin).

Every model's slope is corrected by ``slope_correction_db_per_decade`` (dB per decade of distance, pivoting at
SLOPE_REFERENCE_M, where the loss is unchanged): a fitted network's loss grows faster or slower than the model's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from heimdall.scenario.domain import PathLoss

SPEED_OF_LIGHT_MPS = 299_792_458.0
EARTH_RADIUS_M = 6_371_000.0
MIN_DISTANCE_M = 10.0
# Limit 2 + 20·log10(K) of the height-gain function (P.526 §3.1.1.2) with K ≈ 0.01, average land
# and vertical polarisation at VHF/UHF.
HEIGHT_GAIN_FLOOR_DB = 2.0 + 20.0 * np.log10(0.01)
LOG_DISTANCE_EXPONENT = 3.0
SLOPE_REFERENCE_M = 10_000.0
SLOPE_MIN_DISTANCE_M = 100.0


def free_space_loss_db(distance_m: np.ndarray, frequency_hz: float) -> np.ndarray:
    """Free-space path loss 20·log10(4πd/λ) in dB. distance_m: float [...] → float [...]."""
    d = np.maximum(np.asarray(distance_m, float), MIN_DISTANCE_M)
    return 20.0 * np.log10(4.0 * np.pi * d * frequency_hz / SPEED_OF_LIGHT_MPS)


def two_ray_loss_db(
    distance_m: np.ndarray, frequency_hz: float, h_tx_m: np.ndarray | float, h_rx_m: np.ndarray
) -> np.ndarray:
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
    h_tx_m: np.ndarray | float,
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
    relative_field_db = (
        f_x
        + _height_gain_db(y_scale * np.asarray(h_tx_m, float))
        + _height_gain_db(y_scale * np.asarray(h_rx_m, float))
    )
    return np.maximum(-relative_field_db, 0.0)


def radio_horizon_m(h_tx_m: np.ndarray, h_rx_m: np.ndarray, earth_radius_factor: float = 4.0 / 3.0) -> np.ndarray:
    """Line-of-sight distance over a smooth earth: √(2·a·h_t) + √(2·a·h_r) in metres."""
    a = earth_radius_factor * EARTH_RADIUS_M
    return np.sqrt(2 * a * np.asarray(h_tx_m, float)) + np.sqrt(2 * a * np.asarray(h_rx_m, float))


def path_loss_db(
    distance_m: np.ndarray,
    frequency_hz: float,
    h_tx_m: np.ndarray | float,
    h_rx_m: np.ndarray,
    earth_radius_factor: float = 4.0 / 3.0,
) -> np.ndarray:
    """Median basic transmission loss in dB of model ``two_ray_diffraction``; arrays broadcast."""
    spherical = free_space_loss_db(distance_m, frequency_hz) + diffraction_loss_db(
        distance_m, frequency_hz, h_tx_m, h_rx_m, earth_radius_factor
    )
    return np.maximum(two_ray_loss_db(distance_m, frequency_hz, h_tx_m, h_rx_m), spherical)


def okumura_hata_loss_db(
    distance_m: np.ndarray,
    frequency_hz: float,
    h_tx_m: np.ndarray | float,
    h_rx_m: np.ndarray,
    environment: str = "suburban",
) -> np.ndarray:
    """Hata's median loss in dB for a base (receiver) of height h_rx_m and a mobile (transmitter) of h_tx_m.

    Urban (small/medium city): 69.55 + 26.16·log f − 13.82·log h_b − a(h_m) + (44.9 − 6.55·log h_b)·log d,
    a(h_m) = (1.1·log f − 0.7)·h_m − (1.56·log f − 0.8); suburban subtracts 2·log²(f/28) + 5.4, open
    4.78·log²f − 18.33·log f + 40.94 (f in MHz, d in km, h in m; h_b ≥ 1 m). Floored at free space.
    """
    f_mhz = frequency_hz / 1e6
    log_f = np.log10(f_mhz)
    d_km = np.maximum(np.asarray(distance_m, float), MIN_DISTANCE_M) / 1e3
    h_b = np.maximum(np.asarray(h_rx_m, float), 1.0)
    h_m = np.asarray(h_tx_m, float)
    a_hm = (1.1 * log_f - 0.7) * h_m - (1.56 * log_f - 0.8)
    urban = 69.55 + 26.16 * log_f - 13.82 * np.log10(h_b) - a_hm + (44.9 - 6.55 * np.log10(h_b)) * np.log10(d_km)
    correction = {
        "urban": 0.0,
        "suburban": 2.0 * np.log10(f_mhz / 28.0) ** 2 + 5.4,
        "open": 4.78 * log_f**2 - 18.33 * log_f + 40.94,
    }[environment]
    return np.maximum(urban - correction, free_space_loss_db(distance_m, frequency_hz))


def log_distance_loss_db(distance_m: np.ndarray) -> np.ndarray:
    """Loss of model ``log_distance`` in dB: 10·LOG_DISTANCE_EXPONENT·log10(d / 1 m). float [...] → float [...]."""
    return 10.0 * LOG_DISTANCE_EXPONENT * np.log10(np.maximum(np.asarray(distance_m, float), SLOPE_MIN_DISTANCE_M))


def slope_decades(distance_m: np.ndarray) -> np.ndarray:
    """log10(d / SLOPE_REFERENCE_M), d at least SLOPE_MIN_DISTANCE_M: what a slope correction multiplies."""
    return np.log10(np.maximum(np.asarray(distance_m, float), SLOPE_MIN_DISTANCE_M) / SLOPE_REFERENCE_M)


def median_path_loss_db(
    model: PathLoss,
    distance_m: np.ndarray,
    frequency_hz: float,
    h_tx_m: np.ndarray | float,
    h_rx_m: np.ndarray,
) -> np.ndarray:
    """The scenario's median path loss in dB (model.model selects the formula, corrected by the model's
    slope_correction_db_per_decade); arrays broadcast."""
    if model.model == "okumura_hata":
        loss = okumura_hata_loss_db(distance_m, frequency_hz, h_tx_m, h_rx_m, model.hata_environment)
    elif model.model == "log_distance":
        # heights do not change this loss, but the result keeps the broadcast shape of all three
        loss = np.broadcast_arrays(log_distance_loss_db(distance_m), np.asarray(h_tx_m), np.asarray(h_rx_m))[0]
    else:
        loss = path_loss_db(distance_m, frequency_hz, h_tx_m, h_rx_m, model.earth_radius_factor)
    if model.slope_correction_db_per_decade:
        loss = loss + model.slope_correction_db_per_decade * slope_decades(distance_m)
    return loss
