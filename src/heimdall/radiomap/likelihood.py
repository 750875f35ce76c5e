"""The likelihood of one receiver's measured power given the expected signal level, as a lookup table.

For a receiver with measured SNR u (dB; heimdall.features) and an expected window SNR z (dB) — the
transmit power plus the map's mean power at a place, minus the measured noise power — the likelihood

    p(u | z) = Σ_g k_s(g) · p_noise(u | t = 10^((z + g)/10))

mixes the measurement noise of the power estimate (heimdall.radiomap.measurement_noise: Gaussian in linear power, a
censored probability at the extractor's floor) with the window gain g (fast fading widened by the map's
own uncertainty s: heimdall.radiomap.fading_kernel). Near and below the noise it is soft: a power measured at
2 dB SNR still counts, and a silent receiver says "weak here" without a hard threshold. A small outlier
probability keeps one contradicting receiver (interference, a wrong calibration) from vetoing a place.

The table is indexed by (fading component, spread level, measured-SNR row, Δ = z − u); measurements above
`U_MAX_DB` are shift-invariant in Δ and share the last measured row. One more row, the last, is a censored
reading (a receiver that recorded but did not hear: its power at or below its floor, reported as the noise
power): P(u ≤ 0 dB | z), the cumulative probability of every measured SNR up to the noise, with Δ = z − 0 dB.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve
from scipy.special import log_ndtr

from heimdall.radiomap.fading_kernel import FadingKernel
from heimdall.radiomap.measurement_noise import PowerNoise

STEP_DB = 0.25  # of the measured-SNR rows, of Δ, and of every kernel
U_MAX_DB = 30.0
CENSORED_SNR_DB = 0.0  # a censored reading: the signal at most the noise power (the receiver's floor)
DELTA_RANGE_DB = (-60.0, 60.0)
OUTLIER_PROBABILITY = 1e-3
OUTLIER_SPAN_DB = 100.0  # an outlier measurement is uniform over this many dB
SPREAD_LEVELS_DB = (0.0, 1.0, 2.0, 3.0, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5, 8.0, 9.0, 10.0, 11.0, 12.5, 15.0)
_LN10_10 = np.log(10.0) / 10.0


@dataclass(frozen=True)
class LikelihoodTable:
    """log p(u | z) as float32 [n_components, n_spreads, n_rows, n_delta]; row 0 is the extractor's censored floor,
    the last row (`censored_row`) a reading at or below the receiver's floor (Δ relative to CENSORED_SNR_DB)."""

    values: np.ndarray
    floor_snr_db: float
    spread_levels_db: np.ndarray  # [n_spreads]

    @property
    def censored_row(self) -> int:
        """The row of a reading at or below the receiver's floor (the last)."""
        return self.values.shape[2] - 1

    @property
    def delta_start_db(self) -> float:
        """Δ (dB) of the first column."""
        return DELTA_RANGE_DB[0]

    def rows(self, snr_db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row index [R], reference SNR dB [R]) of measured SNRs: Δ is taken relative to the reference."""
        s = np.asarray(snr_db, float)
        n = self.censored_row
        r = np.clip(np.round((s - self.floor_snr_db) / STEP_DB).astype(np.int64), 0, n - 1)
        r[s <= self.floor_snr_db + 1e-3] = 0
        ref = np.where(r == n - 1, s, self.floor_snr_db + STEP_DB * r)
        return r, ref

    def spread_index(self, sd_db: np.ndarray) -> np.ndarray:
        """Nearest spread level (uint8) for extra spreads sd_db (any shape)."""
        levels = self.spread_levels_db
        return np.argmin(np.abs(np.asarray(sd_db, float)[..., None] - levels), axis=-1).astype(np.uint8)


def table_shape(
    floor_snr_db: float, n_components: int, spread_levels_db: tuple[float, ...] = SPREAD_LEVELS_DB
) -> tuple[int, int, int, int]:
    """The shape of the table build_table makes (components, spreads, rows, Δ), without making it: the measured-SNR
    rows and the censored row."""
    n_rows = int(round((U_MAX_DB - floor_snr_db) / STEP_DB)) + 2
    n_delta = len(np.arange(DELTA_RANGE_DB[0], DELTA_RANGE_DB[1] + STEP_DB / 2, STEP_DB))
    return n_components, len(spread_levels_db), n_rows, n_delta


def build_table(
    noise: PowerNoise, kernels: list[FadingKernel], spread_levels_db: tuple[float, ...] = SPREAD_LEVELS_DB
) -> LikelihoodTable:
    """The table for fading components `kernels` (each widened by every spread level)."""
    shape = table_shape(noise.floor_snr_db, len(kernels), spread_levels_db)
    u_rows = noise.floor_snr_db + STEP_DB * np.arange(shape[2] - 1)
    delta = DELTA_RANGE_DB[0] + STEP_DB * np.arange(shape[3])
    log_outlier = np.log(OUTLIER_PROBABILITY / OUTLIER_SPAN_DB)
    out = np.empty(shape, np.float32)
    for c, kernel in enumerate(kernels):
        for s, spread in enumerate(spread_levels_db):
            k = kernel.widened(spread)
            g = k.g_db
            # z' = u + Δ + g over every Δ and g: evaluate the measurement density once, then correlate with k
            zp = delta[0] + g[0] + STEP_DB * np.arange(len(delta) + len(g) - 1)
            log_h = np.concatenate(
                [
                    _log_measurement(noise, u_rows[:, None], u_rows[:, None] + zp[None, :]),
                    _log_censored(noise, CENSORED_SNR_DB, CENSORED_SNR_DB + zp[None, :]),
                ]
            )
            top = log_h.max(axis=1, keepdims=True)
            h = np.exp(log_h - top)
            w = np.exp(k.log_weight)
            conv = fftconvolve(h, w[::-1][None, :], mode="valid", axes=1)  # Σ_j w_j h[i + j]
            ll = np.log(np.maximum(conv, 1e-300)) + top
            out[c, s] = np.logaddexp(ll, log_outlier)
    return LikelihoodTable(values=out, floor_snr_db=noise.floor_snr_db, spread_levels_db=np.asarray(spread_levels_db))


_tables: weakref.WeakValueDictionary[bytes, LikelihoodTable] = weakref.WeakValueDictionary()
_last_table: list[LikelihoodTable] = []  # the last one built, kept while no map holds it (a model read back next)
_tables_lock = threading.Lock()


def shared_table(noise: PowerNoise, kernels: list[FadingKernel]) -> LikelihoodTable:
    """build_table(noise, kernels), or the table of the same noise and components (by their values) that a map alive
    in this process holds, or that was built last: a model written then read back, or loaded again, builds it once,
    and no table outlives its maps but the last one built."""
    digest = hashlib.sha256(repr((noise, SPREAD_LEVELS_DB, len(kernels))).encode())
    for k in kernels:
        weights = np.asarray(k.log_weight)
        digest.update(repr((k.start_db, k.step_db, weights.dtype.str, weights.shape)).encode())
        digest.update(np.ascontiguousarray(weights).tobytes())
    key = digest.digest()
    with _tables_lock:
        table = _tables.get(key)
    if table is None:
        table = build_table(noise, kernels)
        table.values.flags.writeable = False  # shared: nobody writes it
        table.spread_levels_db.flags.writeable = False
        with _tables_lock:
            _tables[key] = table
            _last_table[:] = [table]
    return table


def _log_measurement(noise: PowerNoise, u_db: np.ndarray, z_db: np.ndarray) -> np.ndarray:
    """Log-likelihood log p(measured u_db | true SNR z_db): a density per dB, or the censored mass on the floor row."""
    t = 10 ** (z_db / 10)
    sd = noise.sd(t)
    u = 10 ** (u_db / 10)
    density = -0.5 * ((u - t) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi) + np.log(u * _LN10_10)
    return np.where(u_db <= noise.floor_snr_db + 1e-3, _log_censored(noise, noise.floor_snr_db, z_db), density)


def _log_censored(noise: PowerNoise, below_db: float, z_db: np.ndarray) -> np.ndarray:
    """Log P(measured SNR ≤ below_db | true SNR z_db)."""
    t = 10 ** (z_db / 10)
    return log_ndtr((10 ** (below_db / 10) - t) / noise.sd(t))
