"""A radio map read back from a model file (heimdall.radiomap.io.from_onnx): every value bounded to what `map fit`
makes, the likelihood table built at load and its size checked against the memory budget."""

import dataclasses
import json

import numpy as np
import pytest
from onnx import numpy_helper

from heimdall.memory import MEMORY_BUDGET_ENV
from heimdall.radiomap import io as map_io
from heimdall.radiomap.fading_kernel import FadingKernel
from heimdall.radiomap.grid import MapGrid
from heimdall.radiomap.measurement_noise import PowerNoise
from heimdall.radiomap.model import RadioMap


def small_map() -> RadioMap:
    """Two receivers on a 6 × 5 grid of 1 km cells, two fading components: a map as `map fit` makes one."""
    grid = MapGrid(0.0, 0.0, 1000.0, 6, 5, 2)
    rx = np.array([[0.0, 0.0], [5000.0, 4000.0]])
    distance_m = np.linalg.norm(grid.centres()[:, None] - rx[None], axis=-1) + 100.0
    return RadioMap(
        grid=grid,
        receiver_ids=("a", "b"),
        rx_position_m=rx,
        mean_dbm=(-40.0 - 30.0 * np.log10(distance_m)).astype(np.float32),
        spread_db=np.full((grid.n_cells, 2), 4.0, np.float32),
        noise=PowerNoise(0.05, 0.03),
        kernels=(FadingKernel.gaussian(2.0), FadingKernel.gaussian(5.0)),
        component_log_weight=np.log([0.3, 0.7]),
        power_start_dbm=-10.0,
        power_log_prior=np.full(80, -np.log(80)),
        n_labels=40,
    )


def changed(description=None, tensors=None):
    """The small map's model with its `radiomap` description changed by `description` (a function of the dict) and
    tensors replaced (name → array)."""
    proto = map_io.to_onnx(small_map(), {})
    for entry in proto.metadata_props:
        if entry.key == map_io.METADATA_KEY and description is not None:
            d = json.loads(entry.value)
            description(d)
            entry.value = json.dumps(d)  # json writes float("inf") as Infinity, as a tampered file may hold
    for i, t in enumerate(proto.graph.initializer):
        name = t.name.removeprefix(map_io.PREFIX)
        if tensors and name in tensors:
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(tensors[name], t.name))
    return proto


def test_a_whole_map_loads_with_its_likelihood_table_built():
    m = map_io.from_onnx(changed())
    assert "table" in m.__dict__  # built at load (cached_property), not on the first answer
    assert m.table.values.shape[:2] == (2, len(m.table.spread_levels_db)) and m.n_labels == 40
    post = m.localize(np.array([20.0, 5.0]), np.array([-120.0, -120.0]))
    assert np.isclose(post.weights.sum(), 1.0) and np.isfinite(post.log_evidence)


def test_a_map_read_back_shares_the_likelihood_table_of_the_same_noise_and_fading_components():
    """A model written then read back (as training checks it) builds its table once: a map of the same noise and
    fading components, by value, shares the table, read-only; another noise or component gets its own."""
    m = small_map()
    table = m.table
    assert map_io.from_onnx(map_io.to_onnx(m, {})).table is table
    with pytest.raises(ValueError, match="read-only"):
        table.values[0, 0, 0, 0] = 0.0
    for other in (
        dataclasses.replace(m, noise=PowerNoise(0.05, 0.04)),
        dataclasses.replace(m, kernels=(FadingKernel.gaussian(2.0), FadingKernel.gaussian(5.5))),
    ):
        assert other.table is not table and not np.array_equal(other.table.values, table.values)


def test_a_map_with_its_spreads_floored_reads_back_floored_and_answers_as_such():
    m = small_map()
    m.spread_db[:, 0] = 1.0  # receiver a sure of itself
    floored = m.with_spread_floor(6.0)
    assert m.with_spread_floor(0.0) is m and m.spread_db.min() == 1.0  # the map as fitted is left as it is
    back = map_io.from_onnx(map_io.to_onnx(floored, {}))
    assert back.info["spread_floor_db"] == 6.0
    np.testing.assert_array_equal(back.spread_db, np.maximum(m.spread_db, 6.0))
    np.testing.assert_array_equal(back.mean_dbm, m.mean_dbm)
    snr_db, noise_dbm = np.array([20.0, 5.0]), np.array([-120.0, -120.0])
    wide, sure = back.localize(snr_db, noise_dbm), m.localize(snr_db, noise_dbm)
    assert wide.hpd_area_km2(0.95) > sure.hpd_area_km2(0.95)  # wider spreads: a wider posterior


def _set(path, value):
    def change(d):
        *parents, last = path
        for p in parents:
            d = d[p]
        d[last] = value

    return change


@pytest.mark.parametrize(
    ("description", "tensors", "field"),
    [
        (_set(["noise", "floor_snr_db"], -4e6), None, "noise.floor_snr_db"),  # 1 TiB of table
        (_set(["noise", "c_noise"], 0.0), None, "noise.c_noise"),
        (_set(["kernels", 0, "step_db"], 1e-7), None, "kernels[0].step_db"),  # 28 s and 4 GiB
        (_set(["kernels", 1, "start_db"], 1e300), None, "kernels[1].start_db"),
        (_set(["grid", "coarse_factor"], 0), None, "grid.coarse_factor"),  # a division by zero
        (_set(["grid", "coarse_factor"], 10**6), None, "grid.coarse_factor"),
        (_set(["grid", "nx"], 10**12), None, "grid.nx"),
        (_set(["grid", "ny"], 2.5), None, "grid.ny"),
        (_set(["grid", "spacing_m"], float("nan")), None, "grid.spacing_m"),
        (_set(["grid"], {"nx": 4000, "ny": 4000}), None, "grid.nx"),  # 16 M cells
        (_set(["n_labels"], float("inf")), None, "n_labels"),  # was a bare OverflowError
        (_set(["power_start_dbm"], "-10"), None, "power_start_dbm"),
        (_set(["kernels"], []), None, "kernels"),
        (None, {"power_log_prior": np.zeros(10**6)}, "power_log_prior"),
        (None, {"kernel_0": np.zeros(10**6)}, "kernel_0"),
        (None, {"kernel_1": np.array([0.0, np.nan])}, "kernel_1"),
        (None, {"kernel_1": np.zeros((3, 3))}, "kernel_1"),
        (None, {"mean_dbm": np.full((30, 2), 1e30, np.float32)}, "mean_dbm"),
        (None, {"spread_db": np.full((30, 2), -1.0, np.float32)}, "spread_db"),
        (_set(["info"], {"spread_floor_db": "8"}), None, "info.spread_floor_db"),  # GET /v1/model reads it
        (_set(["info"], {"spread_floor_db": float("nan")}), None, "info.spread_floor_db"),
        (_set(["info"], {"spread_floor_db": [8.0]}), None, "info.spread_floor_db"),
    ],
)
def test_a_value_out_of_what_map_fit_makes_is_refused_naming_the_field(description, tensors, field):
    with pytest.raises(map_io.RadioMapFormatError, match=field.replace("[", r"\[").replace("]", r"\]")):
        map_io.from_onnx(changed(description, tensors))


def test_a_map_too_large_for_the_memory_budget_is_refused_with_its_size(monkeypatch):
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "1")
    with pytest.raises(map_io.RadioMapFormatError, match=r"too large for the memory budget: it needs \d+ MiB"):
        map_io.from_onnx(changed())
