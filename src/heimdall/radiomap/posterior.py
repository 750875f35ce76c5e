"""A grid posterior and what an answer reads from it: moments, the most probable cell, modes with their
masses, and highest-posterior-density (HPD) regions as polygons (metres in the local frame)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

import numpy as np

from heimdall.radiomap import kernel
from heimdall.radiomap.grid import MapGrid

if TYPE_CHECKING:
    from contourpy._contourpy import FillReturn_OuterOffset

LOG_DENSITY_FLOOR = np.log(1e-12)  # per km², for points in cells the posterior pruned
MAX_MODES = 5
DISAGREEMENT_D2 = 13.8  # χ² (2 degrees of freedom) 99.9 % point: two answers apart beyond both their spreads
HPD_PROBABILITIES = (0.5, 0.95)  # the HPD regions an answer reads (their levels are found together)
HPD_MARGIN = 1e-12  # log: a point whose density is this close to a region's level lies in it (rounding)


@dataclass(frozen=True)
class Mode:
    """One connected part of an HPD region: its probability mass and its most probable cell."""

    mass: float
    east_m: float
    north_m: float


_T = TypeVar("_T")


class _cached(Generic[_T]):  # noqa: N801  (a decorator, named as functools.cached_property)
    """functools.cached_property without its lock: before Python 3.12 it holds one lock per property for all
    instances, so threads answering different transmissions would wait on each other's moments and levels. Two
    threads reading one posterior at once may both compute a value; either is the same."""

    def __init__(self, fn: Callable[[Any], _T]) -> None:
        self.fn = fn
        self.__doc__ = fn.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _cached[_T]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> _T: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> _T | _cached[_T]:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)  # the instance's dict answers the next reads
        return value


class GridPosterior:
    """Posterior mass over the cells of `grid`, held as weights on the bounding box of the cells that may hold mass
    (the others hold none). Built from an unnormalised log posterior [n] of `cells` (int [n], ascending), or by
    RadioMap.localize from its weights on that box (`on_box`)."""

    def __init__(self, grid: MapGrid, cells: np.ndarray, log_posterior: np.ndarray) -> None:
        box, j0, i0 = kernel.scatter(
            np.asarray(cells, np.int64), np.asarray(log_posterior, np.float64), grid.nx, -np.inf
        )
        self._set_log(grid, box, j0, i0)

    @classmethod
    def on_box(cls, grid: MapGrid, box: np.ndarray, j0: int, i0: int, log_evidence: float) -> GridPosterior:
        """The posterior of weights `box` (float64 [h, w], summing to 1, its first and last rows and columns empty)
        on the cells from grid row j0 and column i0, its log evidence given."""
        post = cls.__new__(cls)
        post._set(grid, box, j0, i0, log_evidence)
        return post

    @classmethod
    def from_log_box(
        cls, grid: MapGrid, log_box: np.ndarray, j0: int, i0: int, top: float | None = None
    ) -> GridPosterior:
        """The posterior of an unnormalised log posterior `log_box` (float64 [h, w], −inf where no mass, so in its
        first and last rows and columns; its largest value `top` when known) on the cells from grid row j0 and
        column i0. log_box becomes the weights."""
        post = cls.__new__(cls)
        post._set_log(grid, log_box, j0, i0, top)
        return post

    def _set_log(self, grid: MapGrid, log_box: np.ndarray, j0: int, i0: int, top: float | None = None) -> None:
        top = float(log_box.max()) if top is None else top
        w = np.exp(np.subtract(log_box, top, out=log_box), out=log_box)
        total = w.sum()
        w /= total
        # log p(measurements) under the uniform prior over the whole grid (the pruned cells' share is negligible)
        self._set(grid, w, j0, i0, float(np.log(total) + top - np.log(grid.n_cells)))

    def _set(self, grid: MapGrid, box: np.ndarray, j0: int, i0: int, log_evidence: float) -> None:
        self.grid = grid
        self.box = box  # float64 [h, w] weights of the cells from row j0, column i0 (those outside the grid: 0)
        self.j0, self.i0 = int(j0), int(i0)
        self.log_evidence = float(log_evidence)
        self._levels: dict[float, float] = {}

    @_cached
    def _held(self) -> tuple[np.ndarray, np.ndarray]:
        jj, ii = np.nonzero(self.box)
        return (jj + self.j0) * self.grid.nx + ii + self.i0, self.box[jj, ii]

    @property
    def cells(self) -> np.ndarray:
        """int64 [n] the cells holding mass, ascending."""
        return self._held[0]

    @property
    def weights(self) -> np.ndarray:
        """float64 [n] their posterior mass (summing to 1)."""
        return self._held[1]

    def box_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """(east_m [w], north_m [h]): the centres of the box's columns and rows."""
        g = self.grid
        h, w = self.box.shape
        return g.east0_m + (self.i0 + np.arange(w)) * g.spacing_m, g.north0_m + (self.j0 + np.arange(h)) * g.spacing_m

    @_cached
    def _moments(self) -> tuple[np.ndarray, int]:
        """(moments: mean column, mean row, var column, cov, var row in cells of the box; the flat index of the
        largest weight), one pass over the weights."""
        return kernel.box_summary(self.box)

    @_cached
    def _hpd_levels(self) -> dict[float, float]:
        """The levels of HPD_PROBABILITIES, one pass over the weights (apart from the moments: a posterior read only
        for its mean and covariance, as the map's in a hybrid answer, does not pay for them)."""
        levels = kernel.hpd_levels(self.box.reshape(-1), np.array(HPD_PROBABILITIES))
        return dict(zip(HPD_PROBABILITIES, levels.tolist(), strict=True))

    @_cached
    def mean_m(self) -> np.ndarray:
        """float64 [2] posterior mean east/north."""
        g, (mean_i, mean_j, _, _, _) = self.grid, self._moments[0]
        return np.array([g.east0_m + (self.i0 + mean_i) * g.spacing_m, g.north0_m + (self.j0 + mean_j) * g.spacing_m])

    @_cached
    def cov_m2(self) -> np.ndarray:
        """float64 [2, 2] posterior covariance, plus the cell's own extent (spacing²/12 per axis)."""
        _, _, var_i, cov_ij, var_j = self._moments[0]
        return (np.array([[var_i, cov_ij], [cov_ij, var_j]]) + np.eye(2) / 12) * self.grid.spacing_m**2

    @_cached
    def map_m(self) -> np.ndarray:
        """float64 [2] centre of the most probable cell (the first in raster order of equal ones)."""
        j, i = divmod(self._moments[1], self.box.shape[1])
        g = self.grid
        return np.array([g.east0_m + (self.i0 + i) * g.spacing_m, g.north0_m + (self.j0 + j) * g.spacing_m])

    def tempered(self, exponent: float) -> GridPosterior:
        """The posterior raised to `exponent` and renormalised (p^exponent: < 1 widens, > 1 sharpens; 1: itself),
        on the same cells (those with no mass keep none)."""
        if exponent == 1.0:
            return self
        with np.errstate(divide="ignore"):
            log_box = np.log(self.box) * exponent
        return GridPosterior.from_log_box(self.grid, log_box, self.j0, self.i0)

    def times_gaussian(self, mean_m: np.ndarray, cov_m2: np.ndarray, alpha: float, beta: float) -> GridPosterior:
        """The tempered product p^alpha · N(x; mean [2] m, cov [2, 2] m²)^beta, renormalised, on the same cells."""
        with np.errstate(divide="ignore"):
            log_box = np.log(self.box)
        east, north = self.box_centres()
        top = kernel.tempered(log_box, east, north, mean_m, np.linalg.inv(cov_m2), alpha, beta)
        return GridPosterior.from_log_box(self.grid, log_box, self.j0, self.i0, top)

    def disagreement_d2(self, mean_m: np.ndarray, cov_m2: np.ndarray) -> float:
        """How far apart this posterior's answer (its mean and covariance) and a Gaussian one (mean [2] m, covariance
        [2, 2] m²) are: the squared Mahalanobis distance of the means under the sum of the covariances — χ² with 2
        degrees of freedom where both are right and Gaussian (DISAGREEMENT_D2: apart beyond both their spreads)."""
        d = self.mean_m - mean_m
        return float(d @ np.linalg.solve(self.cov_m2 + cov_m2, d))

    def log_density_at(self, points_m: np.ndarray) -> np.ndarray:
        """float64 [n] log posterior density (per km²) at points [n, 2]; LOG_DENSITY_FLOOR where pruned."""
        cell = self.grid.cell_of(np.atleast_2d(points_m))
        h, w = self.box.shape
        j, i = cell // self.grid.nx - self.j0, cell % self.grid.nx - self.i0
        hit = (cell >= 0) & (j >= 0) & (j < h) & (i >= 0) & (i < w)
        weight = np.where(hit, self.box[np.where(hit, j, 0), np.where(hit, i, 0)], 0.0)
        with np.errstate(divide="ignore"):
            return np.maximum(np.log(weight / self.grid.cell_area_km2), LOG_DENSITY_FLOOR)

    def hpd_level(self, probability: float) -> float:
        """The weight w* such that cells with weight ≥ w* hold at least `probability` of the mass (those of
        HPD_PROBABILITIES are found together: one pass over the weights)."""
        if probability in HPD_PROBABILITIES:
            return self._hpd_levels[probability]
        if probability not in self._levels:
            self._levels[probability] = float(kernel.hpd_levels(self.box.ravel(), np.array([probability]))[0])
        return self._levels[probability]

    def hpd_area_km2(self, probability: float) -> float:
        """Area (km²) of the cells of the `probability` HPD region."""
        return float(np.count_nonzero(self.box >= self.hpd_level(probability))) * self.grid.cell_area_km2

    def hpd_mass_at(self, points_m: np.ndarray) -> np.ndarray:
        """float64 [n]: for each point [n, 2], the mass of the cells heavier than its cell — it lies in the HPD region
        of every probability above this, and of none at or below it (in_hpd); inf where its density is at the
        floor (LOG_DENSITY_FLOOR: no region holds it)."""
        log_density = self.log_density_at(points_m)
        weight = np.exp(log_density) * self.grid.cell_area_km2 * (1 + 1e-12)
        heavier = [float(self.box[self.box > w].sum()) for w in weight]
        return np.where(log_density > LOG_DENSITY_FLOOR, np.minimum(heavier, 1.0), np.inf)

    def find_hpd_levels(self, probabilities: tuple[float, ...]) -> None:
        """hpd_level of each probability found now, those not yet known in one pass over the weights."""
        missing = [p for p in probabilities if p not in HPD_PROBABILITIES and p not in self._levels]
        if missing:
            levels = kernel.hpd_levels(self.box.ravel(), np.array(missing))
            self._levels.update(zip(missing, levels.tolist(), strict=True))

    def in_hpd(self, points_m: np.ndarray, probability: float) -> np.ndarray:
        """Bool [n]: each point lies in the `probability` HPD region."""
        log_level = np.log(self.hpd_level(probability) / self.grid.cell_area_km2)
        return self.log_density_at(points_m) >= log_level - HPD_MARGIN

    def products_log_density_at(
        self, point_m: np.ndarray, mean_m: np.ndarray, cov_m2: np.ndarray, alphas: np.ndarray, betas: np.ndarray
    ) -> np.ndarray:
        """float64 [P]: times_gaussian(mean_m, cov_m2, α, β).log_density_at(point_m [2])[0] for each pair of alphas,
        betas [P], without building the products (what a choice among exponents reads of each)."""
        log_w, at = self._log_held_at(point_m)
        east, north = self.grid.centres(self.cells).T
        inv = np.linalg.inv(cov_m2)
        de, dn = east - mean_m[0], north - mean_m[1]
        quad = inv[0, 0] * de * de + (inv[0, 1] + inv[1, 0]) * de * dn + inv[1, 1] * dn * dn
        log_mass = kernel.product_log_masses(
            log_w, quad, at, np.asarray(alphas, np.float64), np.asarray(betas, np.float64)
        )
        return np.maximum(log_mass - np.log(self.grid.cell_area_km2), LOG_DENSITY_FLOOR)

    def tempered_reads_at(
        self, point_m: np.ndarray, exponents: np.ndarray, probabilities: tuple[float, ...]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(float64 [T], bool [T, len(probabilities)]): for each exponent [T] > 0, tempered(exponent)'s log_density_at
        and in_hpd of each probability at point_m [2], without building the tempered posteriors (what a choice of the
        temperature reads of each); a point where this posterior holds no mass lies in no region."""
        log_w, at = self._log_held_at(point_m)
        log_mass, heavier = kernel.tempered_log_masses(log_w, at, np.asarray(exponents, np.float64), HPD_MARGIN)
        log_density = np.maximum(log_mass - np.log(self.grid.cell_area_km2), LOG_DENSITY_FLOOR)
        inside = (at >= 0) & (heavier[:, None] < np.asarray(probabilities)[None, :])
        return log_density, inside

    def _log_held_at(self, point_m: np.ndarray) -> tuple[np.ndarray, int]:
        """(float64 [n]: the log weights of the cells holding mass, the index among them of the cell of point_m [2],
        −1 where none holds it)."""
        cells = self.cells
        cell = int(self.grid.cell_of(np.reshape(point_m, (1, 2)))[0])
        k = int(np.searchsorted(cells, cell))
        at = k if cell >= 0 and k < len(cells) and cells[k] == cell else -1
        return np.log(self.weights), at

    def modes(self, probability: float = 0.95, max_modes: int = MAX_MODES) -> list[Mode]:
        """The connected parts (8-neighbourhood) of the HPD region, most massive first."""
        masses, best = kernel.hpd_parts(self.box, self.hpd_level(probability))
        j, i = np.divmod(best, self.box.shape[1])
        centres = self.grid.centres((j + self.j0) * self.grid.nx + i + self.i0)
        out = [Mode(float(m), float(e), float(n)) for m, (e, n) in zip(masses, centres, strict=True)]
        return sorted(out, key=lambda m: -m.mass)[:max_modes]

    def region(self, probability: float) -> list[list[np.ndarray]]:
        """The HPD region as polygons: each a list of rings (outer boundary first, then holes), float64 [n, 2]
        east/north, closed (first point repeated at the end)."""
        return self.regions((probability,))[probability]

    def regions(self, probabilities: tuple[float, ...]) -> dict[float, list[list[np.ndarray]]]:
        """`region` of each probability, drawn on one grid of weights."""
        import contourpy

        levels = {p: self.hpd_level(p) for p in probabilities}
        # each contour runs half-way between the threshold cell and the next lower value, so threshold cells lie
        # inside; drawn on the bounding box of the cells above the lowest contour with a border of one cell (all
        # others lie below it)
        j0, j1, i0, i1 = kernel.box_above(self.box, min(levels.values()) * 0.5)
        east, north = self.box_centres()
        x, y = np.meshgrid(east[i0 - 1 : i1 + 2], north[j0 - 1 : j1 + 2])
        # contourpy.contour_generator with its defaults, less its pass that masks non-finite weights (none are)
        gen = contourpy.SerialContourGenerator(
            x,
            y,
            np.ascontiguousarray(self.box[j0 - 1 : j1 + 2, i0 - 1 : i1 + 2]),
            None,  # type: ignore[arg-type]  # no mask (contourpy.contour_generator passes None too)
            corner_mask=True,
            line_type=contourpy.LineType.Separate,
            fill_type=contourpy.FillType.OuterOffset,
            quad_as_tri=False,
            z_interp=contourpy.ZInterp.Linear,
            x_chunk_size=0,
            y_chunk_size=0,
        )
        out = {}
        for p, level in levels.items():
            # the stub's return type is the union over fill types; FillType.OuterOffset gives (points, offsets)
            points, offsets = cast("FillReturn_OuterOffset", gen.filled(level * 0.5, np.inf))
            polygons = []
            for pts, offs in zip(points, offsets, strict=True):
                rings = [pts[a:b] for a, b in zip(offs[:-1], offs[1:], strict=True)]
                polygons.append([np.vstack([r, r[:1]]) if not np.array_equal(r[0], r[-1]) else r for r in rings])
            out[p] = polygons
        return out


class TemperedPosterior:
    """An answer read from two posteriors: its point (mean, most probable cell) from `point` as it is, its spread
    (covariance about that point, HPD regions and their modes, densities) from `point` raised to `exponent` — a
    calibration (exponent < 1 widens the regions, > 1 narrows them) that leaves the point where it is. Read like a
    GridPosterior. `masses` (claimed probability → the spread's mass its HPD region is drawn at, as recalibrated on
    validation; None: each its own) applies to every HPD read: in_hpd, hpd_area_km2, modes, regions."""

    def __init__(self, point: GridPosterior, exponent: float = 1.0, masses: dict[float, float] | None = None) -> None:
        self.point = point
        self.spread = point.tempered(exponent)
        self.grid = point.grid
        self.masses = masses or {}
        self.spread.find_hpd_levels(tuple(self.masses.values()))

    def _mass(self, probability: float) -> float:
        return self.masses.get(probability, probability)

    @property
    def mean_m(self) -> np.ndarray:
        """float64 [2] the point's posterior mean east/north."""
        return self.point.mean_m

    @property
    def map_m(self) -> np.ndarray:
        """float64 [2] centre of the most probable cell (the same in both posteriors)."""
        return self.point.map_m

    @_cached
    def cov_m2(self) -> np.ndarray:
        """float64 [2, 2] the spread's second moment about the point's mean (its covariance, plus the cell's extent,
        plus the outer product of the two means' difference)."""
        d = self.spread.mean_m - self.point.mean_m
        return self.spread.cov_m2 + np.outer(d, d)

    def log_density_at(self, points_m: np.ndarray) -> np.ndarray:
        """GridPosterior.log_density_at of the spread."""
        return self.spread.log_density_at(points_m)

    def in_hpd(self, points_m: np.ndarray, probability: float) -> np.ndarray:
        """GridPosterior.in_hpd of the spread."""
        return self.spread.in_hpd(points_m, self._mass(probability))

    def hpd_area_km2(self, probability: float) -> float:
        """GridPosterior.hpd_area_km2 of the spread."""
        return self.spread.hpd_area_km2(self._mass(probability))

    def modes(self, probability: float = 0.95, max_modes: int = MAX_MODES) -> list[Mode]:
        """GridPosterior.modes of the spread: the parts of its HPD region (each part's most probable cell is a peak
        of the point's posterior too, tempering keeps the cells' order)."""
        return self.spread.modes(self._mass(probability), max_modes)

    def regions(self, probabilities: tuple[float, ...]) -> dict[float, list[list[np.ndarray]]]:
        """GridPosterior.regions of the spread, keyed by the claimed probabilities."""
        drawn = self.spread.regions(tuple(self._mass(p) for p in probabilities))
        return {p: drawn[self._mass(p)] for p in probabilities}


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
