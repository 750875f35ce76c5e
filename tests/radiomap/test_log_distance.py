"""A map's log-distance partner: fitted on the map's labels, weighed into its posterior at the weight chosen, carried
by the map file and refused there when out of range."""

import json

import numpy as np
import onnx
import pytest

from heimdall.baselines import fit_log_distance
from heimdall.errors import RadioMapFormatError
from heimdall.evaluation.grid_estimators import measured
from heimdall.evaluation.test_set import load_test_set
from heimdall.radiomap import io as map_io
from heimdall.radiomap.grid import MapGrid
from heimdall.radiomap.log_distance import MAX_SEARCH_POINTS, MIN_HEARD, LogDistanceSearch
from heimdall.radiomap.posterior import DISAGREEMENT_D2
from heimdall.scale import SEARCH_PER_MAP_SPACING


@pytest.fixture(scope="module")
def fitted(map_model_file, tiny_store):
    """The map `heimdall map fit` fitted on the tiny store's training labels (2 km grid; the session's, as its model
    carries it, unweighed), the training and the validation split."""
    train, val = load_test_set(tiny_store / "train.h5"), load_test_set(tiny_store / "val.h5", 60)
    radio_map = map_io.from_onnx(onnx.load(str(map_model_file))).with_log_distance_weight(0.0)
    return radio_map, train, val


def test_a_map_fitted_on_labels_carries_the_log_distance_model_of_those_labels_unweighed(fitted):
    radio_map, train, val = fitted
    partner = radio_map.log_distance
    assert partner is not None and partner.weight == 0.0
    lm = measured(train)
    rows = lm.heard.sum(axis=1) >= MIN_HEARD  # a transmission heard by fewer places nothing
    power_dbm = np.where(lm.heard, lm.snr_db + lm.noise_dbm, 0.0)[rows]
    expected = fit_log_distance(power_dbm, lm.heard[rows], train.target_m[rows], train.rx_position_m)
    assert partner.exponent == pytest.approx(expected.exponent, rel=1e-6)
    np.testing.assert_allclose(partner.offsets_db, expected.offsets_db, atol=1e-5)
    assert partner.sigma_db == pytest.approx(expected.sigma_db, rel=1e-6)
    m = measured(val)
    unweighed = radio_map.localize(m.snr_db[0], m.noise_dbm[0], m.present[0], m.heard[0])
    assert radio_map.with_log_distance_weight(0.0) is radio_map
    weighed = radio_map.with_log_distance_weight(0.5)
    assert weighed.log_distance.weight == weighed.log_distance_weight == 0.5
    assert radio_map.log_distance.weight == 0.0  # the map itself is left as it was
    np.testing.assert_array_equal(radio_map.localize(m.snr_db[0], m.noise_dbm[0], m.present[0], m.heard[0]).box,
                                  unweighed.box)  # fmt: skip


def test_the_weighed_posterior_is_the_maps_times_the_partners_gaussian_unless_they_disagree(fitted):
    radio_map, _, val = fitted
    weight = 0.5
    weighed = radio_map.with_log_distance_weight(weight)
    search = LogDistanceSearch(weighed.log_distance, radio_map.grid, radio_map.rx_position_m)
    m = measured(val)
    multiplied = read_censored = 0
    for i in range(len(val.target_m)):
        # as measured, and with its weakest receiver read as silent: a censored reading at its floor (noise power)
        silenced = m.heard[i].copy()
        silenced[np.flatnonzero(m.heard[i])[np.argmin(m.snr_db[i][m.heard[i]])]] = False
        for heard in (m.heard[i], silenced):
            post = radio_map.localize(m.snr_db[i], m.noise_dbm[i], m.present[i], heard)
            got = weighed.localize(m.snr_db[i], m.noise_dbm[i], m.present[i], heard)
            censored = m.present[i] & ~heard & np.isfinite(m.noise_dbm[i])
            power = np.where(heard, m.snr_db[i] + m.noise_dbm[i], np.where(censored, m.noise_dbm[i], 0.0))
            partner = search.answer(power, heard, censored)
            if partner is not None and censored.any():  # the floor of a silent receiver moves the partner's answer
                read_censored += not np.allclose(search.answer(power, heard, np.zeros_like(censored))[0], partner[0])
            if partner is None or post.disagreement_d2(*partner) > DISAGREEMENT_D2:
                assert partner is not None or heard.sum() < MIN_HEARD
                np.testing.assert_array_equal(got.box, post.box)
                continue
            multiplied += 1
            expected = post.times_gaussian(*partner, 1.0, weight)
            np.testing.assert_allclose(got.box, expected.box, rtol=1e-12, atol=1e-300)
            assert not np.array_equal(got.box, post.box)
    assert multiplied >= len(val.target_m)
    assert read_censored >= len(val.target_m) // 2


def test_the_partner_and_its_weight_round_trip_through_the_map_file_and_bad_values_are_refused(fitted):
    radio_map, _, val = fitted
    weighed = radio_map.with_log_distance_weight(1.0)
    proto = map_io.to_onnx(weighed, {})
    back = map_io.from_onnx(proto)
    assert back.log_distance is not None and back.log_distance.weight == 1.0
    assert back.log_distance.exponent == weighed.log_distance.exponent
    np.testing.assert_array_equal(back.log_distance.offsets_db, weighed.log_distance.offsets_db)
    m = measured(val)
    np.testing.assert_array_equal(
        back.localize(m.snr_db[0], m.noise_dbm[0], m.present[0], m.heard[0]).box,
        weighed.localize(m.snr_db[0], m.noise_dbm[0], m.present[0], m.heard[0]).box,
    )
    n = radio_map.n_receivers
    for change, field in (
        ({"offsets_db": [0.0] * (n - 1)}, "log_distance.offsets_db"),
        ({"offsets_db": [float("nan")] * n}, "log_distance.offsets_db"),
        ({"offsets_db": [True] * n}, "log_distance.offsets_db"),
        ({"weight": 1.5}, "log_distance.weight"),
        ({"sigma_db": 0.0}, "log_distance.sigma_db"),
        ({"exponent": "3"}, "log_distance.exponent"),
    ):
        bad = onnx.ModelProto()
        bad.CopyFrom(proto)
        entry = next(p for p in bad.metadata_props if p.key == map_io.METADATA_KEY)
        description = json.loads(entry.value)
        description["log_distance"] |= change
        entry.value = json.dumps(description)
        with pytest.raises(RadioMapFormatError, match=field):
            map_io.from_onnx(bad)


def test_the_partners_search_points_cover_the_map_and_are_bounded_whatever_its_size():
    small = MapGrid(-1_000.0, -500.0, 100.0, 30, 20)  # 600 cells: search points 4 cells apart
    grid = LogDistanceSearch.search_grid(small)
    assert grid.spacing_m == 100.0 * SEARCH_PER_MAP_SPACING
    assert grid.bounds_m == (-1_050.0, -550.0, 1_950.0, 1_450.0)  # the cells' outer edges
    # 3.75 million cells (234,000 points 4 cells apart), and 2 million in a strip 5,000 times longer than wide
    for nx, ny in ((2_500, 1_500), (100_000, 20), (20, 100_000)):
        grid = LogDistanceSearch.search_grid(MapGrid(0.0, 0.0, 5.0, nx, ny))
        points = grid.points()
        assert len(points) <= MAX_SEARCH_POINTS
        for axis, n in ((0, nx), (1, ny)):  # every cell within a search spacing of a point
            assert points[:, axis].min() <= 0.0 and points[:, axis].max() >= (n - 1) * 5.0 - grid.spacing_m
