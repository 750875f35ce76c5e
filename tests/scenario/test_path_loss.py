"""The path-loss registry: one entry per model drives the schema's validation and the computation."""

import dataclasses

import numpy as np
import pytest

from heimdall.errors import ScenarioError
from heimdall.scenario.domain import PathLoss
from heimdall.scenario.path_loss import (
    MODELS,
    PARAMETERS,
    PathLossModel,
    free_space_loss_db,
    median_path_loss_db,
    register,
)
from heimdall.scenario.schema import scenario_from_dict


def _with_path_loss(scenario, **path_loss):
    d = scenario.to_dict()
    d["environment"]["path_loss"] = path_loss
    return d


@pytest.fixture
def free_space_model():
    """A model registered only for the test (free space, no parameter of its own), removed afterwards."""

    def loss_db(distance_m, frequency_hz, h_tx_m, h_rx_m, params):
        return np.broadcast_arrays(free_space_loss_db(distance_m, frequency_hz), np.asarray(h_tx_m), h_rx_m)[0]

    model = register(PathLossModel("test_free_space", loss_db, (), "free space, for the test"))
    yield model
    del MODELS[model.name]


def test_a_registered_model_is_validated_and_computed(nw_italy, free_space_model):
    scenario = scenario_from_dict(_with_path_loss(nw_italy, model="test_free_space", slope_correction_db_per_decade=2))
    params = scenario.environment.path_loss
    assert params.model == "test_free_space"
    d = np.array([1_000.0, 10_000.0, 100_000.0])
    loss = median_path_loss_db(params, d, 145e6, 2.0, np.array([[30.0], [60.0]]))
    assert loss.shape == (2, 3)
    np.testing.assert_allclose(loss[1], free_space_loss_db(d, 145e6) + [-2.0, 0.0, 2.0])  # slope correction applies
    with pytest.raises(ScenarioError, match="expected one of two_ray_diffraction, .*, test_free_space, got 'x'"):
        scenario_from_dict(_with_path_loss(nw_italy, model="x"))


def test_an_unknown_model_is_refused_with_the_known_ones(nw_italy):
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(_with_path_loss(nw_italy, model="cost231"))
    assert str(info.value) == (
        "environment.path_loss.model: expected one of two_ray_diffraction, okumura_hata, log_distance, got 'cost231'"
    )
    unchecked = dataclasses.replace(nw_italy.environment.path_loss, model="cost231")  # built in code, not parsed
    with pytest.raises(ValueError, match="unknown path-loss model 'cost231'; expected one of two_ray_diffraction"):
        median_path_loss_db(unchecked, 1_000.0, 145e6, 2.0, 30.0)


def test_parameters_describe_every_field_and_drive_validation(nw_italy):
    fields = [f.name for f in dataclasses.fields(PathLoss)]
    assert fields == ["model", *PARAMETERS]
    assert {p.name: p.default for p in PARAMETERS.values()} == {
        k: v for k, v in dataclasses.asdict(PathLoss()).items() if k != "model"
    }
    assert all(set(m.parameters) <= set(PARAMETERS) and m.doc for m in MODELS.values())
    lo, hi = PARAMETERS["earth_radius_factor"].bounds
    with pytest.raises(
        ScenarioError, match=rf"earth_radius_factor: {lo / 2:g} \(factor\) is outside .*\[{lo:g}, {hi:g}\]"
    ):
        scenario_from_dict(_with_path_loss(nw_italy, earth_radius_factor=lo / 2))
    with pytest.raises(ScenarioError, match="hata_environment: expected one of urban, suburban, open, got 'rural'"):
        scenario_from_dict(_with_path_loss(nw_italy, model="okumura_hata", hata_environment="rural"))
    with pytest.raises(ScenarioError, match="path_loss.exponent: unknown key; expected one of model, earth_radius"):
        scenario_from_dict(_with_path_loss(nw_italy, exponent=3.0))


def test_register_refuses_a_taken_name_and_an_unknown_parameter():
    def loss_db(distance_m, frequency_hz, h_tx_m, h_rx_m, params):
        return np.zeros_like(distance_m)

    with pytest.raises(ValueError, match="'log_distance' is already registered"):
        register(PathLossModel("log_distance", loss_db, (), "a second log-distance"))
    with pytest.raises(ValueError, match="unknown parameters \\['clutter_db'\\]"):
        register(PathLossModel("cluttered", loss_db, ("clutter_db",), "needs a field PathLoss lacks"))
    assert "cluttered" not in MODELS
