"""The spread of the power received in one window around the map's mean: fast fading, as a kernel in dB.

A kernel is a discretised density of g = 10·log10(window power / mean power) on a grid of `step_db`.
`scenario_fading` draws it from the scenario's own fading and emission models (one kernel for mobile and
one for fixed transmitters, weighted by the scenario's mobile fraction): the zero-label physics. The
map's own uncertainty (kriging variance, unexplained terrain) widens it by a Gaussian (`widened`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import logsumexp

if TYPE_CHECKING:
    from heimdall.scenario.domain import Scenario

KERNEL_STEP_DB = 0.25
MC_TRANSMISSIONS = 4000


@dataclass(frozen=True)
class FadingKernel:
    """log-density (normalised to sum 1 over the grid) of the window gain g_db = start_db + i·step_db."""

    start_db: float
    step_db: float
    log_weight: np.ndarray  # float64 [n]

    @property
    def g_db(self) -> np.ndarray:
        """float64 [n]: the window gain (dB) of each grid point."""
        return self.start_db + self.step_db * np.arange(len(self.log_weight))

    @property
    def mean_db(self) -> float:
        """Mean window gain, dB."""
        return float(np.exp(self.log_weight) @ self.g_db)

    @classmethod
    def from_samples(
        cls, g_db: np.ndarray, step_db: float = KERNEL_STEP_DB, smooth_db: float = 0.5, center: bool = False
    ) -> FadingKernel:
        """Histogram of samples, smoothed by a Gaussian of smooth_db; centred on 0 dB mean when asked."""
        g = np.asarray(g_db, float)
        g = g - g.mean() if center else g
        lo = np.floor(g.min() / step_db) * step_db - 3.0
        n = int(np.ceil((g.max() + 3.0 - lo) / step_db)) + 1
        counts = np.bincount(np.clip(np.round((g - lo) / step_db).astype(int), 0, n - 1), minlength=n).astype(float)
        half = int(np.ceil(3 * smooth_db / step_db))
        k = np.exp(-0.5 * (np.arange(-half, half + 1) * step_db / smooth_db) ** 2)
        w = np.convolve(counts, k / k.sum(), "same")
        return cls(lo, step_db, _normalised(np.log(w + 1e-300)))

    @classmethod
    def gaussian(cls, sd_db: float, step_db: float = KERNEL_STEP_DB) -> FadingKernel:
        """N(0, sd_db²) on a grid of step_db, out to 6 σ (at least one step each side)."""
        half = max(1, int(np.ceil(6 * sd_db / step_db)))
        g = np.arange(-half, half + 1) * step_db
        return cls(-half * step_db, step_db, _normalised(-0.5 * (g / max(sd_db, 1e-6)) ** 2))

    def shifted(self, offset_db: float) -> FadingKernel:
        """This kernel with every gain moved by offset_db."""
        return FadingKernel(self.start_db + offset_db, self.step_db, self.log_weight)

    def widened(self, sd_db: float) -> FadingKernel:
        """This kernel convolved with N(0, sd_db²)."""
        if sd_db <= 0:
            return self
        half = int(np.ceil(5 * sd_db / self.step_db))
        gauss = np.exp(-0.5 * (np.arange(-half, half + 1) * self.step_db / sd_db) ** 2)
        w = np.convolve(np.exp(self.log_weight - self.log_weight.max()), gauss)
        return FadingKernel(self.start_db - half * self.step_db, self.step_db, _normalised(np.log(w + 1e-300)))


def _normalised(log_w: np.ndarray) -> np.ndarray:
    return log_w - logsumexp(log_w)


def scenario_fading(
    scenario: Scenario, n: int = MC_TRANSMISSIONS, seed: int = 0
) -> tuple[list[FadingKernel], np.ndarray]:
    """Kernels of the window gain for mobile and fixed transmitters, and their log-weights [2].

    Drawn with the simulator's own fading (heimdall.sim.fading) and emissions' envelopes (heimdall.sim.signals).
    """
    from heimdall.sim.fading import rician_fading
    from heimdall.sim.signals import EMISSION_CODES, envelope_power

    rng = np.random.default_rng(seed)
    ch, fad, tx = scenario.receiver_chain, scenario.environment.fading, scenario.transmitter
    names, weights = zip(*scenario.signals.mix, strict=True)
    kernels = []
    for mobile in (True, False):
        emission = np.array([EMISSION_CODES[e] for e in names], np.uint8)[
            rng.choice(len(names), n, p=np.array(weights) / sum(weights))
        ]
        envelope = envelope_power(rng, emission, ch.window_samples, ch.sample_rate_hz)
        if mobile:
            k_db, doppler = np.full(n, fad.rician_k_db_mobile), rng.uniform(*tx.speed_mps, n) / scenario.wavelength_m
        else:
            k_db, doppler = np.full(n, fad.rician_k_db_fixed), np.full(n, fad.fixed_doppler_hz)
        h = rician_fading(rng, 1, ch.window_samples, ch.sample_rate_hz, k_db, doppler, fad.n_paths)[:, 0]
        power = np.mean(np.abs(h) ** 2 * envelope, axis=-1, dtype=np.float64)
        kernels.append(FadingKernel.from_samples(10 * np.log10(np.maximum(power, 1e-12))))
    frac = float(np.clip(tx.mobile_fraction, 1e-3, 1 - 1e-3))
    return kernels, np.log([frac, 1 - frac])
