"""How noisy a measured in-band power is: the spread of the feature extractor's SNR estimate.

The extractor (heimdall.features) reports the in-band signal power with the noise floor removed, so the
measured linear SNR u scatters around the true window SNR t: u = max(t + e, u_floor) with
e ~ N(0, c_noise²·(1 + 2t) + (c_signal·t)²) — the noise term (Welch estimate of band and noise floor), the
signal × noise cross term, and the estimate's own relative spread at high SNR. A measurement at 2 dB SNR
therefore still locates the signal level to about ±0.4 dB, and one at the floor says "t is small".
The constants are measured by running the extractor itself on simulated windows (`power_noise_for`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heimdall.features import SNR_FLOOR_DB, FeatureParams, extract_features

CALIBRATION_WINDOWS = 4000


@dataclass(frozen=True)
class PowerNoise:
    """Spread of the measured linear SNR; floor_snr_db is the extractor's floor (a censored measurement)."""

    c_noise: float
    c_signal: float
    floor_snr_db: float = SNR_FLOOR_DB

    def sd(self, t: np.ndarray) -> np.ndarray:
        """Standard deviation of the measured linear SNR for true linear SNR t (any shape)."""
        t = np.asarray(t, float)
        return np.sqrt(self.c_noise**2 * (1 + 2 * t) + (self.c_signal * t) ** 2)

    @property
    def floor_linear(self) -> float:
        """The floor as a linear SNR."""
        return float(10 ** (self.floor_snr_db / 10))


def power_noise_for(params: FeatureParams, n_windows: int = CALIBRATION_WINDOWS, seed: int = 0) -> PowerNoise:
    """Measure c_noise (noise-only windows) and c_signal (a carrier inside the channel at 30 dB SNR)
    by running `extract_features` with `params` on simulated windows."""
    from heimdall.sim.noise import complex_gaussian

    rng = np.random.default_rng(seed)
    scale = np.sqrt(params.sample_rate_hz / params.channel_bandwidth_hz)  # noise power 1 in the channel
    noise = complex_gaussian(rng, (n_windows, params.window_samples)) * np.float32(scale)
    snr = extract_features(noise, params, 0.0).snr_db.astype(np.float64)
    u = np.where(snr <= SNR_FLOOR_DB + 1e-3, 0.0, 10 ** (snr / 10))
    c_noise = float(u.mean() * np.sqrt(2 * np.pi))  # E[max(e, 0)] = c/√(2π) for e ~ N(0, c²)
    t = 1000.0
    n = np.arange(params.window_samples) / params.sample_rate_hz
    offset_hz = rng.uniform(-0.25, 0.25, (n_windows // 4, 1)) * params.channel_bandwidth_hz
    carrier = np.exp(1j * (2 * np.pi * offset_hz * n + rng.uniform(0, 2 * np.pi, (n_windows // 4, 1))))
    x = (carrier * np.sqrt(t)).astype(np.complex64) + noise[: n_windows // 4]
    u_s = 10 ** (extract_features(x, params, 0.0).snr_db.astype(np.float64) / 10)
    c_signal = float(np.sqrt(max(u_s.var() - c_noise**2 * (1 + 2 * t), 0.0)) / t)
    return PowerNoise(c_noise=c_noise, c_signal=c_signal)
