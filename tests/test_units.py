"""Distances print in a unit that fits their scale (metres at a campus, km across a region)."""

import pytest

from heimdall.units import distance_unit, format_distance


@pytest.mark.parametrize(
    "distance_m,text",
    [
        (0.0, "0 m"),
        (121.4, "121 m"),
        (999.4, "999 m"),
        (1_124.0, "1124 m"),
        (9_999.4, "9999 m"),
        (10_040.0, "10.0 km"),
        (42_310.0, "42.3 km"),
        (250_400.0, "250 km"),
        (float("nan"), "—"),
        (None, "—"),
    ],
)
def test_distances_print_in_a_unit_that_fits(distance_m, text):
    assert format_distance(distance_m) == text


def test_an_axis_unit_follows_the_scale():
    assert distance_unit(2_900.0) == ("m", 1.0) and distance_unit(31_000.0) == ("km", 1_000.0)
