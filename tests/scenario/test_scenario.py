import copy

import numpy as np
import pytest
import yaml

from heimdall.errors import ScenarioError
from heimdall.scenario.builtin import builtin_names, load_scenario
from heimdall.scenario.schema import scenario_from_dict


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


def test_a_slope_correction_is_written_only_when_set(nw_italy):
    import dataclasses

    # scenarios written before the field existed keep their text and hash
    assert "slope_correction_db_per_decade" not in nw_italy.to_yaml()
    pl = dataclasses.replace(nw_italy.environment.path_loss, model="log_distance", slope_correction_db_per_decade=3.5)
    steeper = dataclasses.replace(nw_italy, environment=dataclasses.replace(nw_italy.environment, path_loss=pl))
    again = scenario_from_dict(yaml.safe_load(steeper.to_yaml()))
    assert again == steeper and again.sha256 != nw_italy.sha256


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
    (
        "height as text",
        _set("receivers.1.antenna_height_m", "25 m"),
        "receivers[1].antenna_height_m: expected a number",
    ),
    ("missing frequency", _set("frequency_hz", KeyError), "frequency_hz: required key is missing"),
    ("duplicate id", _set("receivers.1.id", "giaveno"), "receivers[1].id: duplicate receiver id"),
    ("empty bbox", _set("area.bbox", [45.0, 8.0, 44.0, 9.0]), "area.bbox: empty area"),
    ("reversed range", _set("transmitter.power_dbm", [47, 30]), "transmitter.power_dbm: min 47"),
    ("unknown emission", _set("signals.mix", {"ssb": 1.0}), "signals.mix.ssb: unknown emission"),
    ("sample rate in kHz", _set("receiver_chain.sample_rate_hz", 48), "receiver_chain.sample_rate_hz"),
    ("channel wider than rate", _set("receiver_chain.channel_bandwidth_hz", 60000), "channel_bandwidth_hz"),
    ("too many required", _set("receiver_chain.min_receivers", 9), "receiver_chain.min_receivers: 9"),
    ("shadowing mode", _set("environment.shadowing.mode", "terrain"), "environment.shadowing.mode"),
    (
        "slope correction",
        _set("environment.path_loss.slope_correction_db_per_decade", 45),
        "environment.path_loss.slope_correction_db_per_decade: 45",
    ),
]


@pytest.mark.parametrize("case,edit,message", BAD, ids=[b[0] for b in BAD])
def test_invalid_scenarios_name_the_field(case, edit, message):
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(edit(copy.deepcopy(_base())))
    assert message in str(info.value)


def test_receivers_may_share_a_site_but_not_an_id():
    # two receivers on one roof: distinct ids at the same coordinates are two receivers
    d = _base()
    giaveno = next(r for r in d["receivers"] if r["id"] == "giaveno")
    d["receivers"].append({**giaveno, "id": "giaveno-uhf", "name": "giaveno-uhf"})
    sc = scenario_from_dict(copy.deepcopy(d))
    en = sc.receiver_positions_m()
    ids = [r.id for r in sc.receivers]
    assert np.linalg.norm(en[ids.index("giaveno")] - en[ids.index("giaveno-uhf")]) < 1e-6
    # the same id twice is still refused
    d["receivers"][-1]["id"] = "giaveno"
    with pytest.raises(ScenarioError, match=r"receivers\[\d+\]\.id: duplicate receiver id 'giaveno'"):
        scenario_from_dict(d)


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfrequency_hz: [1\n")
    with pytest.raises(ScenarioError, match="bad.yaml: not valid YAML"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="missing.yaml: scenario file not found"):
        load_scenario(tmp_path / "missing.yaml")
    with pytest.raises(ScenarioError, match="neither a file nor a built-in"):
        load_scenario("atlantis")


# --- scenario text is untrusted: it comes from files, store attributes and model metadata -----------------


def _bomb(levels=6, width=9):
    """A YAML 'billion laughs': each anchor repeats the previous one `width` times (2.6 KB of text)."""
    lines = ['l0: &l0 "' + "lol" * 10 + '"']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines)


def _with_description_bomb():
    text = load_scenario("nw-italy").to_yaml().replace("description: ", "description_: ", 1)
    return _bomb() + "\n" + text.replace("name: nw-italy", "name: nw-italy\ndescription: *l5", 1)


def test_aliases_are_refused_before_they_expand(tmp_path, capsys):
    from heimdall.cli import main

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_with_description_bomb())
    assert len(bomb.read_text()) < 6_000
    assert main(["scenario", "validate", str(bomb)]) == 2
    err = capsys.readouterr().err
    assert "bomb.yaml: not valid YAML" in err and "aliases" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "case,text,message",
    [
        ("400-digit integer", "name: x\nfrequency_hz: " + "1" * 400 + "\n", "an integer of 400 characters"),
        ("deep nesting", "name: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 32 levels"),
        ("not text", None, "expected YAML text, got NoneType"),
        ("too long", "name: x\n#" + "x" * 300_000 + "\n", "characters of YAML; at most"),
    ],
)
def test_scenario_text_is_bounded(case, text, message):
    from heimdall.scenario.schema import scenario_from_text

    with pytest.raises(ScenarioError) as info:
        scenario_from_text(text, "model m 3: metadata scenario_yaml")
    assert str(info.value).startswith("model m 3: metadata scenario_yaml: ") and message in str(info.value)


LIMITS = [
    ("huge integer as a number", _set("frequency_hz", 10**400), "frequency_hz: expected a finite number"),
    ("long id", _set("receivers.0.id", "x" * 201), "receivers[0].id: 201 characters, at most 200"),
    ("long description", _set("description", "x" * 10_001), "description: 10001 characters, at most 10000"),
    ("description not text", _set("description", ["a", "b"]), "description: expected a string"),
    (
        "too many receivers",
        lambda d: dict(d, receivers=[dict(d["receivers"][0], id=f"r{i}", lat=40 + i * 0.01) for i in range(257)]),
        "receivers: expected a list of 2 to 256 receivers, got 257 receivers",
    ),
    (
        "too many shadowing components",
        _set("environment.shadowing.components", [{"sigma_db": 1, "correlation_m": 1000}] * 9),
        "1 to 8",
    ),
    ("non-text key", lambda d: dict(d, **{"extra": 1}) | {7: 1}, "7: unknown key"),
]


@pytest.mark.parametrize("case,edit,message", LIMITS, ids=[b[0] for b in LIMITS])
def test_scenario_sizes_are_bounded(case, edit, message):
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(edit(copy.deepcopy(_base())))
    assert message in str(info.value)


def test_a_huge_scenario_file_is_refused_unread(tmp_path):
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(64 * 1024**2)  # sparse: 64 MB that would take long to parse
    with pytest.raises(ScenarioError, match="big.yaml: 67108864 bytes; at most 262144 characters are read"):
        load_scenario(big)


def test_a_model_s_scenario_is_parsed_as_untrusted_text(tiny_store, tmp_path, capsys):
    """The scenario inside an ONNX model goes through the same parser: an alias bomb stops `predict` clearly."""
    import onnx
    from onnx import TensorProto, helper

    from heimdall.cli import main
    from heimdall.features import FeatureParams
    from heimdall.scenario.builtin import load_scenario

    inputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, shape)
        for n, shape in (("features", ["b", "r", 35]), ("rx_position_m", ["b", "r", 2]), ("present", ["b", "r"]))
    ]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("mean_m", "cov_m2")]
    nodes = [
        helper.make_node("Identity", ["rx_position_m"], ["mean_m"]),
        helper.make_node("Identity", ["features"], ["cov_m2"]),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", inputs, outputs), opset_imports=[helper.make_opsetid("", 18)]
    )
    params = FeatureParams.from_scenario(load_scenario("nw-italy"))
    for key, value in {
        "format": "heimdall-onnx/1",
        "receivers": '{"id": ["a"], "lat": [45.0], "lon": [7.0], "east_m": [0], "north_m": [0]}',
        "feature_params": params.to_json(),
        "scenario_yaml": _with_description_bomb(),
    }.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(tmp_path / "bomb.onnx"))
    assert (
        main(
            ["predict", str(tiny_store), "--model-file", str(tmp_path / "bomb.onnx"), "--out", str(tmp_path / "p.csv")]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "bomb file: metadata 'scenario_yaml': not valid YAML" in err and "aliases" in err
    assert not (tmp_path / "p.csv").exists()
