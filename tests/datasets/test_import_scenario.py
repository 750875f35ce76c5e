"""`heimdall import` without --scenario: the network is built from the recordings (433 MHz, not a built-in one)."""

import h5py
import yaml

from heimdall.cli import main
from heimdall.scenario.builtin import load_scenario
from heimdall.scenario.schema import scenario_from_text


def test_import_without_scenario_builds_it_from_the_recordings(tmp_path, capsys):
    sigmf, store = tmp_path / "sigmf", tmp_path / "store"
    simulate = ["simulate", "--scenario", "randstad-70cm", "--format", "sigmf", "--out", str(sigmf)]
    assert main([*simulate, "-n", "40", "--workers", "1", "--quiet"]) == 0
    assert main(["import", str(sigmf), "--out", str(store), "--quiet"]) == 0
    written = (store / "scenario.yaml").read_text()
    built, truth = scenario_from_text(written, "scenario.yaml"), load_scenario("randstad-70cm")
    assert built.frequency_hz == truth.frequency_hz == 433.5e6
    assert [r.id for r in built.receivers] == [r.id for r in truth.receivers]
    for b, t in zip(built.receivers, truth.receivers, strict=True):
        assert abs(b.lat - t.lat) < 1e-6 and abs(b.lon - t.lon) < 1e-6
    chain = built.receiver_chain
    assert chain.sample_rate_hz == truth.receiver_chain.sample_rate_hz
    assert chain.window_samples == truth.receiver_chain.window_samples
    with h5py.File(store / "train.h5") as f:
        assert yaml.safe_load(f.attrs["scenario_yaml"])["frequency_hz"] == 433.5e6
    assert "no --scenario: built 'sigmf' from the recordings (433.5 MHz, 10 receivers)" in capsys.readouterr().out
    # the written scenario is a valid scenario file for the next import
    assert main(["scenario", "validate", str(store / "scenario.yaml")]) == 0
