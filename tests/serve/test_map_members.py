"""A map answer's `modes` and `regions` as the service writes them (JSON text made without Python lists): the same
values as the posterior's modes and regions converted to lat/lon and rounded to COORDINATE_DECIMALS."""

import json

import numpy as np
import pytest

from heimdall.radiomap.fit import MapOptions, physics_map
from heimdall.radiomap.hybrid import AS_FITTED, DISAGREEMENT_D2, Weights, hybrid_answer
from heimdall.serve.coordinates_json import rings_json
from heimdall.serve.hybrid_answers import (
    COORDINATE_DECIMALS,
    MODE_PROBABILITY,
    NO_NETWORK_ANSWER,
    REGION_PROBABILITIES,
    MapInput,
    MapPart,
    ServedMap,
    hybrid_answers,
    map_members,
    members_dict,
)


def _rounded(lat_lon: np.ndarray, decimals: int) -> list:
    """[[lon, lat], …] as json.dumps(np.round(·).tolist()) reads back: None where not finite or beyond 1e9."""
    r = np.round(lat_lon, decimals)[:, ::-1]
    return [[float(v) if np.isfinite(v) and abs(v) <= 1e9 else None for v in point] for point in r.tolist()]


@pytest.mark.parametrize("decimals", [0, 3, 6, 9])
def test_rings_are_written_as_the_values_numpy_rounds_them_to(decimals):
    rng = np.random.default_rng(decimals)
    edge = [[0.0, -0.0], [1e-9, -1e-9], [45.1, 8.0], [-5e-7, 5e-7], [1.5e-6, 2.5e-6], [np.nan, np.inf]]
    edge += [[179.9999995, -179.9999995], [1e10, 12.0], [-90.0, 1e-5], [0.5, -2.5]]
    points = np.concatenate([rng.uniform(-180, 180, (3000, 2)), rng.uniform(-1e-4, 1e-4, (300, 2)), edge])
    ends = np.array([1, 2000, 2000, len(points)])  # an empty ring among them
    text = rings_json(points, ends, decimals)
    assert [json.loads(t) for t in text] == [
        _rounded(points[a:b], decimals) for a, b in zip([0, 1, 2000, 2000], ends, strict=True)
    ]


def test_decimals_beyond_what_the_writer_holds_are_refused():
    with pytest.raises(ValueError, match="decimals"):
        rings_json(np.zeros((1, 2)), np.array([1]), 12)


def test_modes_and_regions_hold_the_posteriors_values_in_lat_lon(nw_italy):
    """Modes (cell centres) are written as PROJ converts them; the regions' points, interpolated from the lattice of
    the map's cells, lie within the lattice's stated error (8 cm at 2 km cells) plus the rounding of PROJ's."""
    radio_map = physics_map(nw_italy, MapOptions(spacing_m=2000.0, coarse_factor=2))
    frame = nw_italy.frame
    served = ServedMap.ready(radio_map, Weights(1.0, 0.5), frame)
    n = radio_map.n_receivers
    snr, noise = np.linspace(3.0, 25.0, n), np.full(n, -110.0)
    post = hybrid_answer(radio_map, snr, noise, np.ones(n, bool), np.zeros(2), np.eye(2) * 4e8, Weights(1.0, 0.5))
    drawn = post.regions(tuple(float(key) for key in REGION_PROBABILITIES))
    part = MapPart(
        post.mean_m, post.cov_m2, post.modes(MODE_PROBABILITY), {k: drawn[float(k)] for k in REGION_PROBABILITIES}, 0.0
    )
    got = members_dict(map_members(part, served.lattice))
    for mode, m in zip(got["modes"], part.modes, strict=True):
        lat, lon = np.round(frame.to_geodetic([m.east_m, m.north_m]), COORDINATE_DECIMALS).tolist()
        assert mode == {"probability": round(m.mass, 4), "lat": lat, "lon": lon}
    for key in REGION_PROBABILITIES:
        polygons = got["regions"][key]["coordinates"]
        polygons = [polygons] if got["regions"][key]["type"] == "Polygon" else polygons
        assert [len(poly) for poly in polygons] == [len(poly) for poly in part.regions[key]]
        for poly, rings in zip(polygons, part.regions[key], strict=True):
            for ring_lon_lat, ring_m in zip(poly, rings, strict=True):
                lon_lat = np.array(ring_lon_lat)
                assert lon_lat.shape == ring_m.shape
                back_m = frame.to_local(lon_lat[:, 1], lon_lat[:, 0])
                assert np.abs(back_m - ring_m).max() < 0.08 + 0.07  # interpolation + 1e-6° rounding
    assert sum(len(ring) for poly in part.regions["0.95"] for ring in poly) > 10


def test_a_network_answer_without_a_proper_gaussian_leaves_the_map_to_answer_alone(nw_italy):
    """A singular or non-finite covariance from the network cannot weigh the map: the map answers alone (as for a
    power-only request), the hybrid only where the network's Gaussian is proper."""
    radio_map = physics_map(nw_italy, MapOptions(spacing_m=2000.0, coarse_factor=2))
    served = ServedMap.ready(radio_map, Weights(1.0, 0.5), nw_italy.frame)
    n = radio_map.n_receivers
    inp = MapInput(np.linspace(3.0, 25.0, n), np.full(n, -110.0), np.ones(n, bool), np.ones(n, bool))
    mean_m = np.zeros((3, 2))
    cov_m2 = np.stack([np.eye(2) * 4e8, np.zeros((2, 2)), np.full((2, 2), np.nan)])
    answered_mean, _, fields, parts = hybrid_answers(served, mean_m, cov_m2, [inp] * 3)
    notes = [json.loads(b"{" + f + b"}")["map"] for f in fields]
    assert notes == ["used", NO_NETWORK_ANSWER, NO_NETWORK_ANSWER]
    alone = hybrid_answer(radio_map, inp.snr_db, inp.noise_dbm, inp.present, mean_m[0], cov_m2[0], Weights(1.0, 0.0))
    np.testing.assert_allclose(answered_mean[1:], [alone.mean_m] * 2)
    assert all(p is not None for p in parts) and np.isfinite(answered_mean).all()


def test_a_network_answer_that_disagrees_with_the_maps_beyond_both_spreads_is_set_aside(nw_italy):
    """Where the network's answer lies far beyond both spreads from the map's, the service answers with the map alone
    and says so with the distance; a network answer within them is weighed in (the hybrid)."""
    radio_map = physics_map(nw_italy, MapOptions(spacing_m=2000.0, coarse_factor=2))
    served = ServedMap.ready(radio_map, Weights(1.0, 0.5), nw_italy.frame)
    n = radio_map.n_receivers
    inp = MapInput(np.linspace(3.0, 25.0, n), np.full(n, -110.0), np.ones(n, bool), np.ones(n, bool))
    map_alone = hybrid_answer(radio_map, inp.snr_db, inp.noise_dbm, inp.present, np.zeros(2), np.eye(2), AS_FITTED)
    spread_m = np.sqrt(np.trace(map_alone.cov_m2))
    mean_m = map_alone.mean_m + np.array([[spread_m, 0.0], [8 * spread_m, 0.0]])
    cov_m2 = np.broadcast_to(np.eye(2) * (0.5 * spread_m) ** 2, (2, 2, 2))
    answered_mean, _, fields, parts = hybrid_answers(served, mean_m, cov_m2, [inp] * 2)
    notes = [members_dict(f)["map"] for f in fields]
    assert notes[0] == "used" and parts[0].set_aside is None
    assert notes[1].startswith("used alone: the network's answer and the map's disagree beyond both their spreads")
    assert f"> {DISAGREEMENT_D2:g}" in notes[1] and parts[1].set_aside == notes[1]
    np.testing.assert_allclose(answered_mean[1], map_alone.mean_m)
    assert np.hypot(*(answered_mean[0] - map_alone.mean_m)) > 0.01 * spread_m  # the near network moves the point
