"""Grid spacings, margin and correlation lengths from the receiver network's geometry (heimdall.scale)."""

import dataclasses

import numpy as np
import pytest

from heimdall.radiomap.fit import MapOptions
from heimdall.scale import MAX_MAP_CELLS, network_scale


def _campus(n: int = 10, side_m: float = 2_000.0, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, side_m, (n, 2))


def test_a_campus_gets_metre_scale_cells():
    s = network_scale(_campus())
    assert 10.0 <= s.map_spacing_m <= 25.0
    assert s.search_spacing_m == 4 * s.map_spacing_m
    assert 100.0 <= s.margin_m <= 1_000.0  # about a receiver spacing
    assert s.correlation_bounds_m[0] < 20.0 and 2_000.0 <= s.correlation_bounds_m[1] <= 4_000.0


def test_co_sited_receivers_do_not_shrink_the_spacing():
    rx = _campus()
    both = np.concatenate([rx, rx[:4]])  # four roofs with two receivers each
    assert network_scale(both) == network_scale(rx)


def test_a_region_gets_half_to_one_kilometre_cells_within_the_cell_bound():
    rx = np.random.default_rng(5).uniform(0, 300e3, (25, 2))
    s = network_scale(rx)
    assert 500.0 <= s.map_spacing_m <= 1_000.0
    big = network_scale(rx, (-1e6, -1e6, 1e6, 1e6))  # a huge explicit area: the cells stay bounded
    assert (2e6 / big.map_spacing_m) ** 2 <= MAX_MAP_CELLS


def test_nw_italy_keeps_its_grids(nw_italy):
    s = nw_italy.scale
    assert s.map_spacing_m == 500.0 and s.search_spacing_m == 2_000.0
    assert 250.0 <= s.correlation_bounds_m[0] <= 350.0 and 150e3 <= s.correlation_bounds_m[1] <= 250e3
    assert nw_italy.area.margin_m == 20_000.0  # set by the scenario: kept


def test_the_margin_follows_the_geometry_where_the_scenario_does_not_set_it(nw_italy):
    unset = dataclasses.replace(nw_italy, area=dataclasses.replace(nw_italy.area, margin_m=None))
    e0, _, e1, _ = unset.area_bounds_m()
    rx = unset.receiver_positions_m()
    margin = rx[:, 0].min() - e0
    assert margin == pytest.approx(network_scale(rx).margin_m) and 15e3 <= margin <= 25e3
    assert e1 - rx[:, 0].max() == pytest.approx(margin)


def test_explicit_spacings_win(nw_italy):
    assert MapOptions().spacing_for(nw_italy) == 500.0
    assert MapOptions(spacing_m=750.0).spacing_for(nw_italy) == 750.0
