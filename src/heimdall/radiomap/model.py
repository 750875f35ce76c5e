"""A radio map: per-receiver mean received power and its uncertainty on a grid, and the grid posterior.

For a transmission with measured SNR u_r and noise power N_r (dBm) at receiver r, unknown position x
(a grid cell) and unknown transmit power P (dBm):

    p(x | u) ∝ π(x) · Σ_c w_c ∫ π(P) Π_r p_c(u_r | z_r = P + μ_r(x) − N_r, spread s_r(x)) dP

μ_r(x) = `mean_dbm` (received power for a 0 dBm transmitter), s_r(x) = `spread_db` (the map's own
uncertainty, added to fast fading), c the fading components (mobile / fixed transmitters: one fading
regime per transmission), π(P) = `power_log_prior`, π(x) uniform over the grid. P is integrated on a
1 dB grid: over a window of POWER_WINDOW values around the power the strongly heard receivers imply,
or over the whole prior when none hears strongly. Cells are first scored at one representative per
block (MapGrid.coarse_factor); blocks outside the 1 − PRUNE_MASS of the mass (and their neighbours) are
dropped, the REFINED_BLOCKS most probable of the others are scored cell by cell, and the remaining ones
(a broad posterior's low tail) keep their representative's density over the whole block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, overload

import numpy as np
from scipy.ndimage import binary_dilation

from heimdall.radiomap.fading import FadingKernel
from heimdall.radiomap.grid import MapGrid
from heimdall.radiomap.likelihood import STEP_DB, LikelihoodTable, build_table
from heimdall.radiomap.noise import PowerNoise
from heimdall.radiomap.posterior import GridPosterior

POWER_STEP_DB = 1.0
POWER_WINDOW = 32
STRONG_SNR_DB = 10.0
PRUNE_MASS = 1e-4
REFINED_BLOCKS = 256


@dataclass
class RadioMap:
    """Everything the posterior needs; arrays over grid cells (row-major) and receivers."""

    grid: MapGrid
    receiver_ids: tuple[str, ...]
    rx_position_m: np.ndarray  # float64 [R, 2]
    mean_dbm: np.ndarray  # float32 [cells, R]
    spread_db: np.ndarray  # float32 [cells, R]
    noise: PowerNoise
    kernels: tuple[FadingKernel, ...]
    component_log_weight: np.ndarray  # float64 [C]
    power_start_dbm: float
    power_log_prior: np.ndarray  # float64 [K] on POWER_STEP_DB steps from power_start_dbm
    n_labels: int = 0
    info: dict = field(default_factory=dict)

    @property
    def n_receivers(self) -> int:
        """R, the map's receivers."""
        return len(self.receiver_ids)

    @cached_property
    def table(self) -> LikelihoodTable:
        """The likelihood table of the map's noise and fading components (built once, on first use)."""
        return build_table(self.noise, list(self.kernels))

    @cached_property
    def _padded(self) -> tuple[np.ndarray, int]:
        """The table extended at both ends of Δ by its edge values, wide enough for any power window:
        (values [C, S, U, D + 2·pad], pad)."""
        pad = int(round(POWER_STEP_DB / STEP_DB)) * len(self.power_log_prior)
        return np.pad(self.table.values, ((0, 0), (0, 0), (0, 0), (pad, pad)), mode="edge"), pad

    @cached_property
    def _spread_index(self) -> np.ndarray:
        return self.table.spread_index(self.spread_db)

    @cached_property
    def _blocks(self) -> np.ndarray:
        return self.grid.block_representatives()

    def localize(self, snr_db: np.ndarray, noise_dbm: np.ndarray, present: np.ndarray | None = None) -> GridPosterior:
        """The posterior of one transmission. snr_db, noise_dbm: float [R] measured per receiver (features
        snr_db and power_dbm − snr_db); present: bool [R], receivers whose recording is part of it."""
        snr = np.asarray(snr_db, np.float64)
        noise = np.asarray(noise_dbm, np.float64)
        use = np.ones(self.n_receivers, bool) if present is None else np.asarray(present, bool)
        use &= np.isfinite(snr) & np.isfinite(noise)
        coarse = self._log_posterior(self._blocks, snr, noise, use)
        w = np.exp(coarse - coarse.max())
        w /= w.sum()
        order = np.argsort(-w)
        n_keep = int(np.searchsorted(np.cumsum(w[order]), 1.0 - PRUNE_MASS)) + 1
        keep = np.zeros(len(w), bool)
        keep[order[:n_keep]] = True
        keep = binary_dilation(keep.reshape(self.grid.block_shape()), np.ones((3, 3), bool)).ravel()
        kept = np.flatnonzero(keep)
        kept = kept[np.argsort(-w[kept])]
        refined, rest = kept[:REFINED_BLOCKS], kept[REFINED_BLOCKS:]
        fine = self.grid.cells_of_blocks(refined)
        cell_parts = [fine]
        log_post_parts = [self._log_posterior(fine, snr, noise, use)]
        if len(rest):
            tail = self.grid.cells_of_blocks(rest)
            cell_parts.append(tail)
            log_post_parts.append(coarse[self.grid.block_of(tail)])
        cells, log_post = np.concatenate(cell_parts), np.concatenate(log_post_parts)
        order = np.argsort(cells)
        return GridPosterior(self.grid, cells[order], log_post[order])

    @overload
    def _log_posterior(
        self,
        cells: np.ndarray,
        snr: np.ndarray,
        noise_dbm: np.ndarray,
        use: np.ndarray,
        power_moments: Literal[False] = False,
    ) -> np.ndarray: ...

    @overload
    def _log_posterior(
        self, cells: np.ndarray, snr: np.ndarray, noise_dbm: np.ndarray, use: np.ndarray, power_moments: Literal[True]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def _log_posterior(
        self, cells: np.ndarray, snr: np.ndarray, noise_dbm: np.ndarray, use: np.ndarray, power_moments: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unnormalised log posterior [n] of the given cells; with power_moments also the transmit power's
        posterior mean and variance [n] in each cell (dBm, dB²)."""
        table = self.table
        values, pad = self._padded
        n_comp, n_spread, n_rows, n_delta = values.shape
        flat = values.reshape(-1)
        rx = np.flatnonzero(use)
        rows, ref = table.rows(snr[rx])
        mu = self.mean_dbm[cells][:, rx].astype(np.float64)  # [n, r]
        spread = self._spread_index[cells][:, rx].astype(np.int64)
        k_all = len(self.power_log_prior)
        strong = snr[rx] >= STRONG_SNR_DB
        if strong.any():
            width = min(POWER_WINDOW, k_all)
            p_star = ((snr[rx] + noise_dbm[rx])[strong] - mu[:, strong]).mean(axis=1)  # power implied per cell
            start = np.clip(np.round((p_star - self.power_start_dbm) / POWER_STEP_DB) - width // 2, 0, k_all - width)
            start = start.astype(np.int64)
        else:
            width, start = k_all, np.zeros(len(cells), np.int64)
        k = np.arange(width)
        stride = int(round(POWER_STEP_DB / STEP_DB))
        power0 = self.power_start_dbm + POWER_STEP_DB * start  # [n]
        delta = (power0[:, None] + mu - noise_dbm[rx] - ref - table.delta_start_db) / STEP_DB + pad
        base = np.clip(np.round(delta).astype(np.int64), 0, n_delta - 1 - stride * (width - 1))
        prior = self.power_log_prior[start[:, None] + k[None, :]].astype(np.float32)
        joint = None  # log p(cell, power) [n, width], components summed
        for c in range(n_comp):
            acc = prior + np.float32(self.component_log_weight[c])
            for j in range(len(rx)):
                off = ((c * n_spread + spread[:, j]) * n_rows + rows[j]) * n_delta + base[:, j]
                acc += flat[off[:, None] + stride * k[None, :]]
            joint = acc if joint is None else np.logaddexp(joint, acc)
        # a map has at least one fading component: scenario_fading makes two, from_onnx refuses none
        assert joint is not None
        top = joint.max(axis=1, keepdims=True)
        w = np.exp(joint - top)
        total = w.sum(axis=1, dtype=np.float64)
        log_post = np.log(total) + top[:, 0]
        if not power_moments:
            return log_post
        power = power0[:, None] + POWER_STEP_DB * k[None, :]
        mean = (w * power).sum(axis=1) / total
        return log_post, mean, (w * power**2).sum(axis=1) / total - mean**2

    def predictive(
        self, snr_db: np.ndarray, noise_dbm: np.ndarray, present: np.ndarray, held_out: int
    ) -> tuple[float, float]:
        """(mean dBm, variance dB²) of receiver `held_out`'s measured power as the other receivers predict it
        (coarse posterior): the transmit power's and the place's uncertainty, the map's spread there and the
        fading variance."""
        use = np.asarray(present, bool) & np.isfinite(snr_db)
        use[held_out] = False
        cells = self._blocks
        lp, p_mean, p_var = self._log_posterior(
            cells, np.asarray(snr_db, float), np.asarray(noise_dbm, float), use, power_moments=True
        )
        w = np.exp(lp - lp.max())
        w /= w.sum()
        level = p_mean + self.mean_dbm[cells, held_out]
        var = p_var + self.spread_db[cells, held_out].astype(np.float64) ** 2 + self.fading_var_db2
        mean = w @ level
        return float(mean), float(w @ (var + level**2) - mean**2)

    @property
    def fading_var_db2(self) -> float:
        """Variance of the window gain of the fading mixture, dB²."""
        w = np.exp(self.component_log_weight)
        means = np.array([np.exp(k.log_weight) @ k.g_db for k in self.kernels])
        second = np.array([np.exp(k.log_weight) @ k.g_db**2 for k in self.kernels])
        mean = w @ means
        return float(w @ second - mean**2)
