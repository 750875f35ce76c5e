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

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from heimdall.radiomap import kernel
from heimdall.radiomap.batch import MapInputError, Unanswered, in_threads
from heimdall.radiomap.fading_kernel import FadingKernel
from heimdall.radiomap.grid import MapGrid
from heimdall.radiomap.kernel import STRIDE
from heimdall.radiomap.likelihood import CENSORED_SNR_DB, LikelihoodTable, shared_table, table_shape
from heimdall.radiomap.log_distance import LogDistancePartner, LogDistanceSearch
from heimdall.radiomap.measurement_noise import PowerNoise
from heimdall.radiomap.posterior import DISAGREEMENT_D2, GridPosterior

POWER_WINDOW = 32
STRONG_SNR_DB = 10.0
PRUNE_MASS = 1e-4
REFINED_BLOCKS = 256


@dataclass(frozen=True)
class _Measured:
    """One transmission as kernel.log_posterior reads it, over its r used receivers (int64 rx [r])."""

    rx: np.ndarray
    rows: np.ndarray  # int64 [r], likelihood table rows
    ref_db: np.ndarray  # float64 [r], the rows' reference SNR
    level_dbm: np.ndarray  # float64 [r], SNR + noise power
    noise_dbm: np.ndarray  # float64 [r]
    strong: np.ndarray  # bool [r]
    width: int  # powers per cell
    censored: np.ndarray  # bool [r], read at or below the floor (level_dbm is not a measured power)

    def args(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """The transmission as kernel.log_posterior reads it."""
        return self.rx, self.rows, self.ref_db, self.level_dbm, self.noise_dbm, self.strong, self.width


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
    log_distance: LogDistancePartner | None = None  # fitted with labels; weighed in when its weight is > 0

    @property
    def n_receivers(self) -> int:
        """R, the map's receivers."""
        return len(self.receiver_ids)

    def with_spread_floor(self, floor_db: float) -> RadioMap:
        """This map with every spread at least floor_db (dB; 0: unchanged), info["spread_floor_db"] saying so; the
        likelihood table and what the kernels read of it shared (neither depends on the spreads)."""
        if floor_db <= 0:
            return self
        floored = replace(
            self,
            spread_db=np.maximum(self.spread_db, np.float32(floor_db)),
            info={**self.info, "spread_floor_db": float(floor_db)},
        )
        floored.share_table(self)
        return floored

    def with_log_distance_weight(self, weight: float) -> RadioMap:
        """This map with its log-distance partner weighed in at γ = `weight` (heimdall.radiomap.log_distance; 0: the
        map alone); itself when it has no partner or the weight is its own. The likelihood table and what the kernels
        read are shared."""
        partner = self.log_distance
        if partner is None or weight == partner.weight:
            return self
        weighed = replace(self, log_distance=partner.weighted(weight))
        weighed.share_table(self)
        weighed.__dict__["_kernel_map"] = self._kernel_map  # nor do the means or spreads change
        if "_log_distance_search" in self.__dict__:  # nor the partner's answers (its weight is read from the map)
            weighed.__dict__["_log_distance_search"] = self._log_distance_search
        return weighed

    @property
    def log_distance_weight(self) -> float:
        """The weight γ its log-distance partner is weighed in at (0 without one)."""
        return 0.0 if self.log_distance is None else self.log_distance.weight

    @cached_property
    def _log_distance_search(self) -> LogDistanceSearch | None:
        """The partner's answers over this map's grid, whatever its weight (None without a partner)."""
        if self.log_distance is None:
            return None
        return LogDistanceSearch(self.log_distance, self.grid, self.rx_position_m)

    @cached_property
    def table(self) -> LikelihoodTable:
        """The likelihood table of the map's noise and fading components (built on first use, or shared with a map of
        the same ones built before in this process: likelihood.shared_table)."""
        return shared_table(self.noise, list(self.kernels))

    @property
    def table_bytes(self) -> int:
        """Peak bytes of building the likelihood table and what the kernels read of it (`_kernel_table`), from their
        shapes, before either exists: the table, its padded copy, the float64 likelihoods computed from it and
        their float32 result."""
        n_comp, n_spread, n_rows, n_delta = table_shape(self.noise.floor_snr_db, len(self.kernels))
        n_padded = n_delta + 2 * STRIDE * len(self.power_log_prior)
        n_columns = -(-n_padded // STRIDE) * STRIDE
        return n_comp * n_spread * n_rows * (4 * n_delta + (4 + 8 + 4) * n_columns)

    @cached_property
    def _kernel_table(self) -> tuple[np.ndarray, float, int, float, int, int]:
        """What the kernels read of `table` (kernel.log_posterior's table arguments, and the table's first Δ, its
        padding and padded Δ columns): the likelihoods padded at both ends of Δ by their edge values, wide enough
        for any power window, split by the phase of the power stride and scaled (kernel.linear_table)."""
        values = self.table.values
        n_comp, n_spread, n_rows, n_delta = values.shape
        pad = STRIDE * len(self.power_log_prior)
        n_padded = n_delta + 2 * pad
        n_q = -(-n_padded // STRIDE)
        padded = np.pad(values, ((0, 0), (0, 0), (0, 0), (pad, pad + n_q * STRIDE - n_padded)), mode="edge")
        phased = padded.reshape(n_comp, n_spread, n_rows, n_q, STRIDE).transpose(0, 1, 2, 4, 3)
        linear, shift, group = kernel.linear_table(phased)
        return linear, shift, group, float(self.table.delta_start_db), pad, n_padded

    @cached_property
    def _kernel_map(
        self,
    ) -> tuple[np.ndarray, float, int, np.ndarray, np.ndarray, np.ndarray, float, float, int, int]:
        """kernel.log_posterior's map: _kernel_table's, mean_dbm, the spread levels (uint8 [cells, R]), the power
        prior times each component's weight (float64 [C, K]), power_start_dbm, and the table's first Δ, padding and
        padded Δ columns."""
        linear, shift, group, delta_start_db, pad, n_padded = self._kernel_table
        prior = np.exp(self.power_log_prior[None, :] + np.asarray(self.component_log_weight, np.float64)[:, None])
        return (
            linear,
            shift,
            group,
            np.ascontiguousarray(self.mean_dbm, np.float32),
            np.ascontiguousarray(self.table.spread_index(self.spread_db)),
            prior,
            float(self.power_start_dbm),
            delta_start_db,
            pad,
            n_padded,
        )

    def share_table(self, other: RadioMap) -> None:
        """Use `other`'s likelihood table, and what the kernels read of it, as this map's (a map of the same noise,
        fading components and power grid: built once for both)."""
        self.__dict__["table"] = other.table
        self.__dict__["_kernel_table"] = other._kernel_table

    @cached_property
    def _blocks(self) -> np.ndarray:
        return self.grid.block_representatives()

    def prepare(self) -> RadioMap:
        """Build the table and what the kernels read of it, and compile the kernels (or load them from numba's
        cache) on one made-up transmission, so that the first request pays for none of it; returns self."""
        snr = np.full(self.n_receivers, STRONG_SNR_DB)
        post = self.localize(snr, np.full(self.n_receivers, -100.0))
        _ = post.cov_m2
        post.modes()
        post.region(0.5)
        return self

    @cached_property
    def _used_receivers(self) -> np.ndarray:
        """Bool [R]: the receivers the posterior reads (all but those info["left_out"] names: receivers in an
        uncalibrated scale that nothing calibrated)."""
        left_out = set(self.info.get("left_out", ()))
        return np.array([rid not in left_out for rid in self.receiver_ids], bool)

    def _measured(
        self, snr_db: np.ndarray, noise_dbm: np.ndarray, present: np.ndarray | None, heard: np.ndarray | None = None
    ) -> _Measured:
        """One transmission's inputs checked (MapInputError naming what is wrong) and laid out for the kernels."""
        r = self.n_receivers
        snr, noise = np.asarray(snr_db, np.float64), np.asarray(noise_dbm, np.float64)
        use = np.ones(r, bool) if present is None else np.asarray(present, bool)
        shapes = {"snr_db": snr.shape, "noise_dbm": noise.shape, "present": use.shape}
        if heard is not None:
            shapes["heard"] = np.shape(heard)
        if any(shape != (r,) for shape in shapes.values()):
            raise MapInputError(f"{', '.join(shapes)}: expected [{r}] each (the map's receivers), got {shapes}")
        censored = use & np.isfinite(noise) & (np.zeros(r, bool) if heard is None else ~np.asarray(heard, bool))
        use = (use & np.isfinite(snr) & np.isfinite(noise) | censored) & self._used_receivers
        if not use.any():
            raise MapInputError("no receiver present with a finite snr_db and noise_dbm")
        rx = np.flatnonzero(use)
        rows, ref = self.table.rows(np.where(censored[rx], 0.0, snr[rx]))
        cut = censored[rx]
        rows[cut], ref[cut] = self.table.censored_row, CENSORED_SNR_DB
        level = np.where(cut, CENSORED_SNR_DB, snr[rx]) + noise[rx]
        strong = ~cut & (snr[rx] >= STRONG_SNR_DB)
        k_all = len(self.power_log_prior)
        width = min(POWER_WINDOW, k_all) if strong.any() else k_all
        return _Measured(rx, rows, ref, level, noise[rx], strong, width, cut)

    def localize(
        self,
        snr_db: np.ndarray,
        noise_dbm: np.ndarray,
        present: np.ndarray | None = None,
        heard: np.ndarray | None = None,
    ) -> GridPosterior:
        """The posterior of one transmission. snr_db, noise_dbm: float [R] measured per receiver (features
        snr_db and power_dbm − snr_db); present: bool [R], receivers whose recording is part of it; heard: bool [R]
        (None: every present receiver), a present receiver not heard is a censored reading — its power at or below
        its floor, given as noise_dbm (its snr_db is not read). MapInputError when the arrays are not [R] or no
        receiver present has a finite SNR and noise. With its log-distance partner weighed in
        (with_log_distance_weight), the product with the partner's answer (heimdall.radiomap.log_distance)."""
        m = self._measured(snr_db, noise_dbm, present, heard)
        g = self.grid
        box, j0, i0, log_evidence = kernel.localize(
            g.nx, g.ny, g.coarse_factor, self._blocks, PRUNE_MASS, REFINED_BLOCKS, self._kernel_map, m.args()
        )
        post = GridPosterior.on_box(g, box, j0, i0, log_evidence)
        weight = self.log_distance_weight
        return post if weight == 0 else self.weighed_in(post, self._partner_answer(m), weight)

    def partner_answer(
        self,
        snr_db: np.ndarray,
        noise_dbm: np.ndarray,
        present: np.ndarray | None = None,
        heard: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The log-distance partner's answer to one transmission (read as `localize` reads it), whatever the weight it
        is weighed in at: (mean [2] m, covariance [2, 2] m²), or None without a partner or when too few receivers
        hear it. MapInputError as `localize`."""
        return self._partner_answer(self._measured(snr_db, noise_dbm, present, heard))

    def _partner_answer(self, m: _Measured) -> tuple[np.ndarray, np.ndarray] | None:
        """partner_answer of a transmission as the kernels read it: its censored readings as such."""
        search = self._log_distance_search
        if search is None:
            return None
        heard = np.zeros(self.n_receivers, bool)
        heard[m.rx[~m.censored]] = True
        power = np.zeros(self.n_receivers)
        power[m.rx] = m.level_dbm
        censored = np.zeros(self.n_receivers, bool)
        censored[m.rx[m.censored]] = True
        return search.answer(power, heard, censored)

    @staticmethod
    def weighed_in(post: GridPosterior, partner: tuple[np.ndarray, np.ndarray] | None, weight: float) -> GridPosterior:
        """The map's own posterior `post` times the partner's answer (partner_answer) to the power `weight`,
        renormalised; `post` itself at weight 0, without an answer, or where the two disagree beyond both their
        spreads (DISAGREEMENT_D2: the partner's few parameters do not hold there)."""
        if weight == 0 or partner is None or post.disagreement_d2(*partner) > DISAGREEMENT_D2:
            return post
        return post.times_gaussian(*partner, 1.0, weight)

    def posteriors(
        self,
        snr_db: np.ndarray,
        noise_dbm: np.ndarray,
        present: np.ndarray,
        workers: int | None = None,
        heard: np.ndarray | None = None,
    ) -> Iterator[GridPosterior | Unanswered]:
        """The posteriors of n transmissions (snr_db, noise_dbm float [n, R], present and heard bool [n, R], as
        `localize` reads each row), in order, computed by `workers` threads (None: every CPU this process may use);
        a row `localize` refuses yields Unanswered naming it, the others are answered."""
        n = len(snr_db)
        if not len(noise_dbm) == len(present) == n or (heard is not None and len(heard) != n):
            raise ValueError(
                f"snr_db, noise_dbm, present, heard: {n}, {len(noise_dbm)}, {len(present)} rows, expected equal"
            )
        return in_threads(
            lambda i: self.localize(snr_db[i], noise_dbm[i], present[i], None if heard is None else heard[i]),
            n,
            workers,
        )

    def log_posterior_at(
        self,
        cells: np.ndarray,
        snr_db: np.ndarray,
        noise_dbm: np.ndarray,
        present: np.ndarray | None = None,
        heard: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The unnormalised log posterior [n] of the given cells (int [n], all scored cell by cell), and the
        transmit power's posterior mean (dBm) and variance (dB²) [n] in each (the transmission as `localize`)."""
        m = self._measured(snr_db, noise_dbm, present, heard)
        cells = np.ascontiguousarray(cells, np.int64)
        out, mean, var = np.empty(len(cells)), np.empty(len(cells)), np.empty(len(cells))
        kernel.log_posterior(cells, self._kernel_map, m.args(), out, mean, var)
        return out, mean, var

    def predictive(
        self,
        snr_db: np.ndarray,
        noise_dbm: np.ndarray,
        present: np.ndarray,
        held_out: int,
        heard: np.ndarray | None = None,
    ) -> tuple[float, float]:
        """(mean dBm, variance dB²) of receiver `held_out`'s measured power as the other receivers predict it
        (coarse posterior; their censored readings count as such): the transmit power's and the place's uncertainty,
        the map's spread there and the fading variance."""
        use = np.asarray(present, bool).copy()
        use[held_out] = False
        cells = self._blocks
        lp, p_mean, p_var = self.log_posterior_at(cells, snr_db, noise_dbm, use, heard)
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
