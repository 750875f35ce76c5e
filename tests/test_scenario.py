import copy

import numpy as np
import pytest
import yaml

from heimdall.errors import ScenarioError
from heimdall.scenario import builtin_names, load_scenario, scenario_from_dict


def test_builtins_load_and_differ():
    names = builtin_names()
    assert {"nw-italy", "randstad-70cm"} <= set(names)
    a, b = load_scenario("nw-italy"), load_scenario("randstad-70cm")
    assert len(a.receivers) == 7 and a.frequency_hz == pytest.approx(145e6)
    assert len(b.receivers) == 10 and b.frequency_hz > 400e6
    assert a.sha256 != b.sha256


def test_nw_italy_receivers_and_area(nw_italy):
    by_id = {r.id: r for r in nw_italy.receivers}
    assert (by_id["montanaro"].lat, by_id["montanaro"].lon) == (45.234, 7.857)
    assert (by_id["milano"].lat, by_id["milano"].lon) == (45.478, 9.123)
    e0, n0, e1, n1 = nw_italy.area_bounds_m()
    en = nw_italy.receiver_positions_m()
    assert e0 == pytest.approx(en[:, 0].min() - 20_000) and n1 == pytest.approx(en[:, 1].max() + 20_000)
    # the local frame is centred on the network: receivers straddle the origin
    assert en[:, 0].min() < 0 < en[:, 0].max() and en[:, 1].min() < 0 < en[:, 1].max()


def test_round_trip_through_dict(nw_italy):
    again = scenario_from_dict(yaml.safe_load(nw_italy.to_yaml()))
    assert again == nw_italy and again.sha256 == nw_italy.sha256


def test_frame_round_trip(nw_italy):
    frame = nw_italy.frame
    lat_lon = frame.to_geodetic(frame.to_local([45.0, 44.5], [8.0, 7.5]))
    np.testing.assert_allclose(lat_lon, [[45.0, 8.0], [44.5, 7.5]], atol=1e-9)


def _base():
    return yaml.safe_load(load_scenario("nw-italy").to_yaml())


def _set(path, value):
    def edit(d):
        keys = path.split(".")
        node = d
        for k in keys[:-1]:
            node = node[int(k)] if k.isdigit() else node[k]
        last = keys[-1]
        if value is KeyError:
            del node[last]
        else:
            node[int(last) if last.isdigit() else last] = value
        return d

    return edit


BAD = [
    ("unknown top-level key", _set("frequncy_hz", 145e6), "frequncy_hz: unknown key"),
    ("unknown receiver key", _set("receivers.2.hieght_m", 10), "receivers[2].hieght_m: unknown key"),
    ("frequency in MHz", _set("frequency_hz", 145), "frequency_hz: 145 Hz is outside"),
    ("latitude out of range", _set("receivers.0.lat", 145.0), "receivers[0].lat"),
    ("height as text", _set("receivers.1.antenna_height_m", "25 m"), "receivers[1].antenna_height_m: expected a number"),
    ("missing frequency", _set("frequency_hz", KeyError), "frequency_hz: required key is missing"),
    ("overlapping receivers", _set("receivers.3", {"id": "twin", "lat": 45.0201, "lon": 7.2901, "antenna_height_m": 10}),
     "receivers[3]: receiver 'twin' overlaps receivers[0] 'giaveno' (14 m apart"),
    ("duplicate id", _set("receivers.1.id", "giaveno"), "receivers[1].id: duplicate receiver id"),
    ("empty bbox", _set("area.bbox", [45.0, 8.0, 44.0, 9.0]), "area.bbox: empty area"),
    ("reversed range", _set("transmitter.power_dbm", [47, 30]), "transmitter.power_dbm: min 47"),
    ("unknown emission", _set("signals.mix", {"ssb": 1.0}), "signals.mix.ssb: unknown emission"),
    ("sample rate in kHz", _set("receiver_chain.sample_rate_hz", 48), "receiver_chain.sample_rate_hz"),
    ("channel wider than rate", _set("receiver_chain.channel_bandwidth_hz", 60000), "channel_bandwidth_hz"),
    ("too many required", _set("receiver_chain.min_receivers", 9), "receiver_chain.min_receivers: 9"),
    ("shadowing mode", _set("environment.shadowing.mode", "terrain"), "environment.shadowing.mode"),
]


@pytest.mark.parametrize("case,edit,message", BAD, ids=[b[0] for b in BAD])
def test_invalid_scenarios_name_the_field(case, edit, message):
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(edit(copy.deepcopy(_base())))
    assert message in str(info.value)


def test_overlap_check_does_not_reject_the_close_real_sites(nw_italy):
    # Coazze and Aquila di Giaveno are ~2 km apart: distinct receivers, accepted
    assert {"coazze", "giaveno"} <= {r.id for r in nw_italy.receivers}


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfrequency_hz: [1\n")
    with pytest.raises(ScenarioError, match="bad.yaml: not valid YAML"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="missing.yaml: scenario file not found"):
        load_scenario(tmp_path / "missing.yaml")
    with pytest.raises(ScenarioError, match="neither a file nor a built-in"):
        load_scenario("atlantis")
