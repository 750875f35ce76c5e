"""A map's log-distance partner: the classical model fitted on the map's labels, a second opinion weighed into the
map's posterior.

    p(x) ∝ p_map(x) · N(x; μ_ld, Σ_ld)^γ

μ_ld and Σ_ld are the posterior mean and covariance, over a search grid, of the log-distance model fitted on the same
labels (heimdall.baselines.rss_posterior: μ_r(x) = K_r − 10·n·log10 |x − x_r|, the transmit power profiled out,
Gaussian residuals of σ dB at the receivers that hear, and each present receiver that does not hear read as censored
at its floor, log Φ((floor − P0* − μ_r(x))/σ)). Where the two answers disagree beyond both their spreads (the squared
Mahalanobis distance of their means under Σ_map + Σ_ld above DISAGREEMENT_D2, the rule the network answers to) or
fewer than MIN_HEARD receivers hear, the map's posterior stands alone. γ = 0: the map alone.

Why: away from its labels a map's residual fields hold little, and its mean is the scenario's physics; the
log-distance model's few parameters, fitted to the same labels, err differently there. On the real network's spatial
draws (docs/RADIOMAP.md) their product was better than either, and reading the silent receivers as censored made the
partner better than log-distance ML, which reads only those that hear. γ is chosen on validation together with the
spread floor (heimdall.evaluation.grid_estimators.map_variant_chosen) and carried by a model whose map answers, alone
or with its network (the hybrid reads the same weighed map).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from heimdall.baselines import Grid, PosteriorGrid, fit_log_distance, log_distance_model, rss_posterior
from heimdall.radiomap.grid import MapGrid
from heimdall.scale import SEARCH_PER_MAP_SPACING

MIN_HEARD = 3  # receivers hearing a transmission for the partner to place it (the transmit power is one unknown)
MAX_FIT_LABELS = 20_000  # labels the partner is fitted on at most (a random subset: it has R + 2 parameters) ...
MAX_FIT_BYTES = 256 * 2**20  # ... and fewer where its least squares' design ([n, R, R + 1] float64, 3 copies) is larger
MIN_FIT_LABELS = 20  # labelled transmissions heard by MIN_HEARD receivers or more needed to fit it
LOG_DISTANCE_WEIGHTS = (0.0, 0.5, 1.0)  # γ tried on validation, none first
MAX_SEARCH_POINTS = 4096  # the partner's search points over the map's area, at most


@dataclass(frozen=True)
class LogDistancePartner:
    """The log-distance model's parameters (exponent n, per-receiver offsets float64 [R] dB of mean zero, residual
    σ dB) and its weight γ ≥ 0 in the map's posterior."""

    exponent: float
    offsets_db: np.ndarray
    sigma_db: float
    weight: float = 0.0

    @classmethod
    def fitted(
        cls, power_dbm: np.ndarray, heard: np.ndarray, position_m: np.ndarray, rx_position_m: np.ndarray
    ) -> LogDistancePartner | None:
        """Fitted on labelled transmissions (power_dbm float [n, R], heard bool [n, R], position_m [n, 2]; at most
        MAX_FIT_LABELS of them and what MAX_FIT_BYTES allows, drawn at random with a fixed seed), weight 0; None with
        fewer than MIN_FIT_LABELS heard by MIN_HEARD receivers or more."""
        rows = np.flatnonzero(np.asarray(heard, bool).sum(axis=1) >= MIN_HEARD)
        n_rx = np.shape(heard)[1]
        most = max(MIN_FIT_LABELS, min(MAX_FIT_LABELS, MAX_FIT_BYTES // (3 * 8 * n_rx * (n_rx + 1))))
        if len(rows) < MIN_FIT_LABELS:
            return None
        if len(rows) > most:
            rows = np.sort(np.random.default_rng(0).choice(rows, most, replace=False))
        fit = fit_log_distance(power_dbm[rows], heard[rows], position_m[rows], rx_position_m)
        return cls(fit.exponent, np.asarray(fit.offsets_db, np.float64), fit.sigma_db)

    def weighted(self, weight: float) -> LogDistancePartner:
        """This partner with weight γ = `weight`."""
        return replace(self, weight=float(weight))


class LogDistanceSearch:
    """A partner's answers over one map's grid: what the posterior reads of its model at the search points
    (`search_grid`; heimdall.baselines.PosteriorGrid) computed once, then one posterior over them per transmission."""

    BYTES_PER_VALUE = 48  # per search point and receiver while built (distances, their offsets, log) and kept (16)
    BYTES_PER_POINT = PosteriorGrid.BYTES_PER_POINT

    @staticmethod
    def search_grid(grid: MapGrid) -> Grid:
        """The search points over a map grid's area: SEARCH_PER_MAP_SPACING map cells apart, or wider where that
        would make more than MAX_SEARCH_POINTS (what an answer costs is bounded whatever the map's size and shape)."""
        half = grid.spacing_m / 2
        width_m, height_m = grid.nx * grid.spacing_m, grid.ny * grid.spacing_m
        # Grid.points puts at most w/s + 1.5 points along a side w at spacing s: the smallest s with
        # (W/s + 1.5)(H/s + 1.5) ≤ MAX_SEARCH_POINTS, a quadratic in 1/s
        a, b, c = width_m * height_m, 1.5 * (width_m + height_m), 2.25 - MAX_SEARCH_POINTS
        widest = 2 * a / (-b + np.sqrt(b * b - 4 * a * c))
        spacing_m = max(grid.spacing_m * SEARCH_PER_MAP_SPACING, float(widest))
        return Grid(
            (grid.east0_m - half, grid.north0_m - half, grid.east0_m - half + width_m, grid.north0_m - half + height_m),
            spacing_m,
        )

    def __init__(self, partner: LogDistancePartner, grid: MapGrid, rx_position_m: np.ndarray) -> None:
        self.partner = partner
        self.grid = self.search_grid(grid)
        self.model = log_distance_model(rx_position_m, partner.exponent, partner.offsets_db)
        self.terms = PosteriorGrid.of(self.grid, self.model)

    def answer(
        self, power_dbm: np.ndarray, heard: np.ndarray, censored: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean [2] m, covariance [2, 2] m²) of one transmission (power_dbm float [R]: the measured power where
        heard, the floor where censored; heard, censored bool [R]; neither: not recording), or None when fewer than
        MIN_HEARD receivers hear it."""
        if np.count_nonzero(heard) < MIN_HEARD:
            return None
        floor_dbm = np.where(censored, power_dbm, np.nan)[None] if np.any(censored) else None
        mean, cov = rss_posterior(
            power_dbm[None], heard[None], self.model, self.grid, self.partner.sigma_db, floor_dbm, chunk=1,
            precomputed=self.terms,
        )  # fmt: skip
        return mean[0], cov[0]
