"""The local frame's lat/lon lattice: bilinear interpolation of PROJ's conversion, within a fraction of a millimetre
of it on a 500 m lattice, across the antimeridian and near a pole too."""

import numpy as np
import pytest

from heimdall.geo import LatLonLattice, LocalFrame


def _errors_m(frame: LocalFrame, lattice: LatLonLattice, points_m: np.ndarray) -> np.ndarray:
    lat_lon = lattice.to_geodetic(points_m)
    return np.linalg.norm(frame.to_local(lat_lon[:, 0], lat_lon[:, 1]) - points_m, axis=1)


@pytest.mark.parametrize(
    ("origin", "spacing_m", "half_width_m", "bound_m"),
    [
        ((45.3, 8.1), 5.0, 1_000.0, 1e-6),
        ((45.3, 8.1), 500.0, 100_000.0, 0.0002),
        ((0.0, 30.0), 500.0, 100_000.0, 0.0002),
        ((70.0, 20.0), 500.0, 100_000.0, 0.0002),
        ((-17.7, 179.9), 500.0, 100_000.0, 0.0002),  # across the antimeridian
        ((89.5, 0.0), 500.0, 100_000.0, 0.0002),  # around the north pole
        ((45.3, 8.1), 2000.0, 100_000.0, 0.003),
    ],
)
def test_points_on_and_between_the_lattice_lines_are_within_a_fraction_of_a_millimetre_of_proj(
    origin, spacing_m, half_width_m, bound_m
):
    frame = LocalFrame(*origin)
    n = int(2 * half_width_m / spacing_m) + 1
    east0_m = north0_m = -half_width_m
    lattice = LatLonLattice.over(frame, east0_m, north0_m, spacing_m, n, n)
    rng = np.random.default_rng(0)
    i, j, f, g = rng.integers(0, n - 1, 3000), rng.integers(0, n - 1, 3000), rng.random(3000), rng.random(3000)
    nodes = np.stack([east0_m + i * spacing_m, north0_m + j * spacing_m], axis=-1)
    np.testing.assert_allclose(lattice.to_geodetic(nodes), frame.to_geodetic(nodes), rtol=0, atol=1e-9)
    for du, dv in ((f, 0.0), (0.0, f), (f, g)):  # on row lines, on column lines, inside cells
        points = nodes + np.stack([du + 0 * f, dv + 0 * f], axis=-1) * spacing_m
        assert _errors_m(frame, lattice, points).max() <= bound_m


def test_a_point_just_beyond_the_lattice_is_extrapolated_from_its_edge_cell():
    frame = LocalFrame(45.3, 8.1)
    lattice = LatLonLattice.over(frame, 0.0, 0.0, 500.0, 10, 10)
    beyond = np.array([[-250.0, 100.0], [4750.0, 4600.0], [2000.0, -300.0]])
    assert _errors_m(frame, lattice, beyond).max() < 0.02
