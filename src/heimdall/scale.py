"""The scale of a receiver network: grid spacings, area margin and correlation lengths that follow its geometry.

A campus of receivers a few hundred metres apart and a region of receivers tens of kilometres apart need grids
three orders of magnitude apart. Where a scenario or the command line does not set them, every stage takes them
from `network_scale` (one rule, below), so that the same defaults serve both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

CO_SITED_M = 1.0  # receivers closer than this share a site (several receivers on one roof)
MARGIN_PER_SPACING = 1.0  # the area's margin: this many median receiver spacings beyond the receivers
CELLS_PER_SPACING = 40.0  # map cells across one receiver spacing ...
CELLS_PER_SIDE = 400.0  # ... and across the area's longer side: the map spacing is their geometric mean
MAX_MAP_CELLS = 250_000  # the map grid's cells at most (the posterior's coarse-to-fine search bounds the rest)
SEARCH_PER_MAP_SPACING = 4.0  # the evaluation's classical grid search: this many map cells per search cell
CORRELATION_FLOOR_PER_SPACING = 1 / 60  # the shortest field correlation length, in receiver spacings
LONE_SITE_SPACING_M = 1_000.0  # the receiver spacing assumed for a network of one site (no spacing to measure)
_NICE = (1.0, 2.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class NetworkScale:
    """Lengths (m) that follow a receiver network's geometry (`network_scale` states the rule)."""

    spacing_m: float  # median distance from a receiver site to the nearest other site
    margin_m: float  # how far beyond the receivers' bounding box transmitters are looked for
    map_spacing_m: float  # the radio map's and its posterior's grid cell side
    search_spacing_m: float  # the evaluation's classical grid search's cell side
    correlation_bounds_m: tuple[float, float]  # the residual fields' correlation lengths, shortest and longest


def nice_length(x: float) -> float:
    """The value of the 1–2–2.5–5 series (× a power of ten) nearest x > 0 on a log scale."""
    exponent = np.floor(np.log10(x))
    steps = np.array(_NICE) * 10**exponent
    return float(steps[np.argmin(np.abs(np.log(steps / x)))])


def _next_nice(x: float) -> float:
    exponent = np.floor(np.log10(x))
    steps = np.array(_NICE) * 10**exponent
    return float(steps[np.searchsorted(steps, x * (1 + 1e-9))])


def network_scale(rx_position_m: np.ndarray, bounds_m: tuple[float, float, float, float] | None = None) -> NetworkScale:
    """The scale of receivers at rx_position_m (float [R, 2] east/north, m) searched over bounds_m (east_min,
    north_min, east_max, north_max, m; None: the receivers' bounding box grown by the margin).

    The rule, d the median nearest-neighbour distance between receiver sites (receivers within CO_SITED_M of each
    other are one site; LONE_SITE_SPACING_M for a single site) and L the area's longer side:
      margin = MARGIN_PER_SPACING · d;
      map spacing = the 1–2–2.5–5 value nearest √((d / CELLS_PER_SPACING) · (L / CELLS_PER_SIDE)), raised along
      the series until the area holds at most MAX_MAP_CELLS cells;
      search spacing = SEARCH_PER_MAP_SPACING · map spacing;
      correlation lengths between CORRELATION_FLOOR_PER_SPACING · d and L.
    A 2 km campus of 10 receivers gets ~10 m cells, nw-italy (7 receivers ~18 km apart over 185 km) 500 m.
    """
    points = np.asarray(rx_position_m, np.float64).reshape(-1, 2)
    sites = _sites(points)
    if len(sites) > 1:
        distance, _ = cKDTree(sites).query(sites, 2)
        spacing = float(np.median(distance[:, 1]))
    else:
        spacing = LONE_SITE_SPACING_M
    margin = MARGIN_PER_SPACING * spacing
    if bounds_m is None:
        lo, hi = sites.min(axis=0) - margin, sites.max(axis=0) + margin
        bounds_m = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
    width, height = max(bounds_m[2] - bounds_m[0], 1.0), max(bounds_m[3] - bounds_m[1], 1.0)
    side = max(width, height)
    cell = nice_length(np.sqrt(spacing / CELLS_PER_SPACING * side / CELLS_PER_SIDE))
    while width * height / cell**2 > MAX_MAP_CELLS:
        cell = _next_nice(cell)
    return NetworkScale(
        spacing_m=spacing,
        margin_m=margin,
        map_spacing_m=cell,
        search_spacing_m=SEARCH_PER_MAP_SPACING * cell,
        correlation_bounds_m=(CORRELATION_FLOOR_PER_SPACING * spacing, side),
    )


def _sites(points: np.ndarray) -> np.ndarray:
    """float64 [S, 2]: the distinct sites of receivers at points [R, 2] (those within CO_SITED_M merged)."""
    keep: list[int] = []
    tree = cKDTree(points)
    taken = np.zeros(len(points), bool)
    for i in range(len(points)):
        if not taken[i]:
            keep.append(i)
            taken[tree.query_ball_point(points[i], CO_SITED_M)] = True
    return points[keep]
