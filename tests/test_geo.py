"""The local frame's lat/lon lattice: bilinear interpolation of PROJ's conversion, within the error its docstring
states (spacing² / (8 · the Earth's radius))."""

import numpy as np
import pytest

from heimdall.geo import LatLonLattice, LocalFrame

EARTH_RADIUS_M = 6.371e6


@pytest.mark.parametrize("spacing_m", [5.0, 500.0, 2000.0])
def test_points_on_the_lattice_lines_are_within_the_stated_error_of_proj(spacing_m):
    frame = LocalFrame(45.3, 8.1)
    nx = ny = int(min(180_000 / spacing_m, 400))
    east0_m = north0_m = -nx * spacing_m / 2
    lattice = LatLonLattice.over(frame, east0_m, north0_m, spacing_m, nx, ny)
    rng = np.random.default_rng(0)
    i, j, f = rng.integers(0, nx - 1, 4000), rng.integers(0, ny - 1, 4000), rng.random(4000)
    on_rows = np.stack([east0_m + (i + f) * spacing_m, north0_m + j * spacing_m], axis=-1)
    on_columns = np.stack([east0_m + i * spacing_m, north0_m + (j + f) * spacing_m], axis=-1)
    nodes = np.stack([east0_m + i * spacing_m, north0_m + j * spacing_m], axis=-1)
    np.testing.assert_array_equal(lattice.to_geodetic(nodes), frame.to_geodetic(nodes))
    for points in (on_rows, on_columns):
        lat_lon = lattice.to_geodetic(points)
        error_m = np.linalg.norm(frame.to_local(lat_lon[:, 0], lat_lon[:, 1]) - points, axis=1)
        assert error_m.max() <= 1.1 * spacing_m**2 / (8 * EARTH_RADIUS_M) + 1e-6


def test_a_point_just_beyond_the_lattice_is_extrapolated_from_its_edge_cell():
    frame = LocalFrame(45.3, 8.1)
    lattice = LatLonLattice.over(frame, 0.0, 0.0, 500.0, 10, 10)
    beyond = np.array([[-250.0, 100.0], [4750.0, 4600.0], [2000.0, -300.0]])
    lat_lon = lattice.to_geodetic(beyond)
    error_m = np.linalg.norm(frame.to_local(lat_lon[:, 0], lat_lon[:, 1]) - beyond, axis=1)
    assert error_m.max() < 0.02
