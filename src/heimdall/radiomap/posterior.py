"""A grid posterior and what an answer reads from it: moments, the most probable cell, modes with their
masses, and highest-posterior-density (HPD) regions as polygons (metres in the local frame)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, cast

import numpy as np
from scipy.ndimage import label

from heimdall.radiomap.grid import MapGrid

if TYPE_CHECKING:
    from contourpy._contourpy import FillReturn_OuterOffset

LOG_DENSITY_FLOOR = np.log(1e-12)  # per km², for points in cells the posterior pruned
MAX_MODES = 5


@dataclass(frozen=True)
class Mode:
    """One connected part of an HPD region: its probability mass and its most probable cell."""

    mass: float
    east_m: float
    north_m: float


class GridPosterior:
    """Posterior mass over `cells` (int [n]) of `grid` from an unnormalised log posterior [n] (cells not listed
    hold no mass)."""

    def __init__(self, grid: MapGrid, cells: np.ndarray, log_posterior: np.ndarray) -> None:
        self.grid = grid
        self.cells = np.asarray(cells, np.int64)
        lp = np.asarray(log_posterior, np.float64)
        w = np.exp(lp - lp.max())
        total = w.sum()
        self.weights = w / total  # float64 [n]
        # log p(measurements) under the uniform prior over the whole grid (the pruned cells' share is negligible)
        self.log_evidence = float(np.log(total) + lp.max() - np.log(grid.n_cells))

    @cached_property
    def _centres(self) -> np.ndarray:
        return self.grid.centres(self.cells)

    @cached_property
    def mean_m(self) -> np.ndarray:
        """float64 [2] posterior mean east/north."""
        return self.weights @ self._centres

    @cached_property
    def cov_m2(self) -> np.ndarray:
        """float64 [2, 2] posterior covariance, plus the cell's own extent (spacing²/12 per axis)."""
        d = self._centres - self.mean_m
        return (self.weights[:, None] * d).T @ d + np.eye(2) * self.grid.spacing_m**2 / 12

    @cached_property
    def map_m(self) -> np.ndarray:
        """float64 [2] centre of the most probable cell."""
        return self._centres[int(np.argmax(self.weights))]

    def log_density_at(self, points_m: np.ndarray) -> np.ndarray:
        """float64 [n] log posterior density (per km²) at points [n, 2]; LOG_DENSITY_FLOOR where pruned."""
        cell = self.grid.cell_of(np.atleast_2d(points_m))
        pos = np.searchsorted(self.cells, cell)
        pos = np.clip(pos, 0, len(self.cells) - 1)
        hit = (cell >= 0) & (self.cells[pos] == cell)
        w = np.where(hit, self.weights[pos], 0.0)
        with np.errstate(divide="ignore"):
            return np.maximum(np.log(w / self.grid.cell_area_km2), LOG_DENSITY_FLOOR)

    def hpd_level(self, probability: float) -> float:
        """The weight w* such that cells with weight ≥ w* hold at least `probability` of the mass."""
        w = np.sort(self.weights)[::-1]
        k = int(np.searchsorted(np.cumsum(w), probability))
        return float(w[min(k, len(w) - 1)])

    def in_hpd(self, points_m: np.ndarray, probability: float) -> np.ndarray:
        """Bool [n]: each point lies in the `probability` HPD region."""
        level = self.hpd_level(probability)
        log_level = np.log(level / self.grid.cell_area_km2)
        return self.log_density_at(points_m) >= log_level - 1e-12

    def _dense(self) -> tuple[np.ndarray, int, int]:
        """Weights on the smallest sub-grid holding every cell with mass, padded by one cell: ([h, w], j0, i0)."""
        j, i = self.cells // self.grid.nx, self.cells % self.grid.nx
        j0, i0 = int(j.min()) - 1, int(i.min()) - 1
        dense = np.zeros((int(j.max()) - j0 + 2, int(i.max()) - i0 + 2))
        dense[j - j0, i - i0] = self.weights
        return dense, j0, i0

    def modes(self, probability: float = 0.95, max_modes: int = MAX_MODES) -> list[Mode]:
        """The connected parts (8-neighbourhood) of the HPD region, most massive first."""
        dense, j0, i0 = self._dense()
        parts, n = label(dense >= self.hpd_level(probability), structure=np.ones((3, 3), bool))
        out = []
        for k in range(1, n + 1):
            sel = parts == k
            mass = float(dense[sel].sum())
            jj, ii = np.unravel_index(int(np.argmax(np.where(sel, dense, -1.0))), dense.shape)
            e, nn = self.grid.centres(np.array([(jj + j0) * self.grid.nx + (ii + i0)]))[0]
            out.append(Mode(mass, float(e), float(nn)))
        return sorted(out, key=lambda m: -m.mass)[:max_modes]

    def region(self, probability: float) -> list[list[np.ndarray]]:
        """The HPD region as polygons: each a list of rings (outer boundary first, then holes), float64 [n, 2]
        east/north, closed (first point repeated at the end)."""
        import contourpy

        dense, j0, i0 = self._dense()
        level = self.hpd_level(probability)
        g = self.grid
        x = g.east0_m + (i0 + np.arange(dense.shape[1])) * g.spacing_m
        y = g.north0_m + (j0 + np.arange(dense.shape[0])) * g.spacing_m
        # contour half-way between the threshold cell and the next lower value, so threshold cells lie inside
        gen = contourpy.contour_generator(x, y, dense, fill_type=contourpy.FillType.OuterOffset)
        # the stub's return type is the union over fill types; FillType.OuterOffset gives (points, offsets)
        points, offsets = cast("FillReturn_OuterOffset", gen.filled(level * 0.5, np.inf))
        polygons = []
        for pts, offs in zip(points, offsets, strict=True):
            rings = [pts[a:b] for a, b in zip(offs[:-1], offs[1:], strict=True)]
            polygons.append([np.vstack([r, r[:1]]) if not np.array_equal(r[0], r[-1]) else r for r in rings])
        return polygons


def mixture(posteriors: list[GridPosterior], log_prior: np.ndarray) -> GridPosterior:
    """The posterior of a model mixed over a discrete latent: Σ_b p(b)·p(data | b)·p(x | data, b), from each
    b's posterior (same grid) and log p(b) [B]; its log_evidence is log Σ_b p(b)·p(data | b)."""
    grid = posteriors[0].grid
    cells = np.concatenate([p.cells for p in posteriors])
    with np.errstate(divide="ignore"):  # a cell whose weight underflowed to 0 holds no mass: log 0 = −inf
        # unnormalised log posterior of each part on the scale GridPosterior reads its evidence from
        lp = np.concatenate(
            [np.log(p.weights) + p.log_evidence + lw for p, lw in zip(posteriors, log_prior, strict=True)]
        ) + np.log(grid.n_cells)
        unique, inverse = np.unique(cells, return_inverse=True)
        top = lp.max()
        summed = np.bincount(inverse, weights=np.exp(lp - top), minlength=len(unique))
        return GridPosterior(grid, unique, np.log(summed) + top)
