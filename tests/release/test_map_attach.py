"""`heimdall map fit`: a radio map fitted on a store and attached to a network model as a new ONNX file."""

import hashlib
import json
import shutil

import onnx
import pytest

from heimdall.cli import main
from heimdall.errors import ModelLoadError
from heimdall.evaluation.grid_estimators import SPREAD_FLOORS_DB
from heimdall.manifest import TrustPolicy, decode_manifest, sidecar_path
from heimdall.onnx_guard import require_self_contained
from heimdall.radiomap import io as map_io
from heimdall.radiomap.hybrid import Weights
from heimdall.radiomap.log_distance import LOG_DISTANCE_WEIGHTS
from heimdall.release.map_metadata import FIT_KEY, read_weights
from heimdall.serve.runtime import ModelSource


def test_map_fit_writes_a_new_model_carrying_the_map(map_model_file, model_file, tiny_store):
    data = map_model_file.read_bytes()
    require_self_contained(data, "map model")
    proto = onnx.load_from_string(data)
    assert map_io.has_map(proto)
    radio_map = map_io.from_onnx(proto)
    assert radio_map.grid.spacing_m == 2000.0 and radio_map.n_labels > 0
    meta = {p.key: p.value for p in proto.metadata_props}
    fit = json.loads(meta[FIT_KEY])
    t = fit["temperature"]  # the exponents shipped are the chosen ones (≤ 1) divided by the temperature
    assert 0 < fit["alpha"] * t <= 1 + 1e-9 and 0 <= fit["beta"] * t <= 1 + 1e-9 and fit["validation_n"] == 150
    assert fit["labels_used"] == 1200 and fit["store"] == tiny_store.name
    # the spread floor chosen on validation, the carried map's when its exponents are the map's alone
    floor, tried = fit["spread_floor"]["spread_floor_db"], fit["spread_floor"]["median_error_m"]
    assert floor in SPREAD_FLOORS_DB and set(tried) == {f"{f:g}" for f in SPREAD_FLOORS_DB}
    assert fit["spread_floor_db"] == (floor if fit["beta"] == 0 else 0.0)
    assert radio_map.spread_db.min() >= fit["spread_floor_db"]
    assert radio_map.info.get("spread_floor_db", 0.0) == fit["spread_floor_db"]
    # its log-distance partner's weight, chosen on validation, is the carried map's with the network or without
    weight, tried = fit["log_distance"]["log_distance_weight"], fit["log_distance"]["median_error_m"]
    assert set(tried) == {f"{w:g}" for w in LOG_DISTANCE_WEIGHTS}
    assert fit["log_distance_weight"] == weight
    assert radio_map.log_distance is not None and radio_map.log_distance.weight == fit["log_distance_weight"]
    # the shipped model names the store and hashes it; no path of the machine that fitted it is in it
    assert not [k for k, v in meta.items() if str(tiny_store.resolve().parent) in v]
    assert len(fit["store_sha256"]) == 64 and fit["fitted"]
    assert fit["network_sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    # the network's card is unchanged; a new model: its own manifest, which the service's checks accept
    original = {p.key: p.value for p in onnx.load(str(model_file)).metadata_props}
    assert all(meta[k] == v for k, v in original.items())
    manifest = decode_manifest(sidecar_path(map_model_file).read_bytes())
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest() and manifest["metadata"][FIT_KEY] == meta[FIT_KEY]
    served = ModelSource(file=str(map_model_file), trust=TrustPolicy(sha256=manifest["sha256"])).load()
    assert served.receiver_ids == list(radio_map.receiver_ids) and served.radio_map is not None


@pytest.fixture(scope="module")
def other_store(tmp_path_factory):
    """A few transmissions of another network (randstad-70cm): receivers the tiny model does not have."""
    from heimdall.datasets.generate import generate_dataset
    from heimdall.datasets.spec import DatasetSpec
    from heimdall.scenario.builtin import load_scenario

    out = tmp_path_factory.mktemp("other")
    generate_dataset(load_scenario("randstad-70cm"), out, DatasetSpec(n_transmissions=60, seed=3, iq_per_split=0))
    return out


def test_map_fit_refuses_a_store_of_other_receivers_naming_them(other_store, model_file, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["map", "fit", str(other_store), "--model", str(model_file), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "receivers not in both" in err and "giaveno" in err
    assert not out.exists() and not sidecar_path(out).exists()


def test_map_fit_refuses_a_model_that_already_carries_a_map_and_a_grid_too_fine(
    map_model_file, model_file, tiny_store, tmp_path, capsys
):
    out = tmp_path / "m.onnx"
    assert main(["map", "fit", str(tiny_store), "--model", str(map_model_file), "--out", str(out), "--quiet"]) == 2
    assert "already carries a radio map" in capsys.readouterr().err
    args = ["map", "fit", str(tiny_store), "--model", str(model_file), "--out", str(out), "--spacing-m", "1"]
    assert main([*args, "--quiet"]) == 2
    assert "--spacing-m" in capsys.readouterr().err
    assert not out.exists()


def test_map_fit_without_labels_self_calibrates_and_uses_the_map_alone(model_file, tiny_store, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(tiny_store / "test.h5", store / "unlabelled.h5")  # its labels are not read
    out = tmp_path / "m.onnx"
    assert main(["map", "fit", str(store), "--model", str(model_file), "--out", str(out), "--spacing-m", "2000"]) == 0
    fit = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}[FIT_KEY])
    assert (fit["alpha"], fit["beta"], fit["labels_used"]) == (1.0, 0.0, 0)
    assert fit["how"].startswith("no labels: self-calibrated") and fit["store_files"] == ["unlabelled.h5"]


def test_evaluate_scores_a_map_model_by_its_own_answers_with_the_map_it_carries(map_model_file, tiny_store, tmp_path):
    """`model` is what the model serves (its hybrid posterior), `model_network` its bare network; `radio_map` and
    `hybrid` are the map the model carries and its exponents (no map is fitted), and metrics.json says so."""
    import numpy as np

    from heimdall.evaluation.evaluate import onnx_predictions
    from heimdall.evaluation.grid_estimators import measured
    from heimdall.evaluation.test_set import load_test_set
    from heimdall.metrics import accuracy_summary
    from heimdall.radiomap.answer_arrays import answers_of
    from heimdall.release.judged_answers import model_answers

    out = tmp_path / "eval"
    argv = ["evaluate", "--model", str(map_model_file), "--data-dir", str(tiny_store), "--out", str(out)]
    assert main([*argv, "--map-spacing-m", "500", "--no-mlflow", "--quiet"]) == 0  # the model's 2 km map is scored
    metrics = json.loads((out / "metrics.json").read_text())
    est = metrics["estimators"]
    test = load_test_set(tiny_store)
    data = map_model_file.read_bytes()
    served = model_answers(data, test, "model")
    network_mean, _ = onnx_predictions(data, test)
    assert not np.allclose(served.mean_m, network_mean)  # the map moved the answers
    m = measured(test)
    carried = answers_of(map_io.from_onnx(onnx.load_from_string(data)), m.snr_db, m.noise_dbm, m.present)
    asked = test.heard.sum(1) >= test.scenario.receiver_chain.min_receivers
    for name, mean in (("model", served.mean_m), ("model_network", network_mean), ("radio_map", carried.mean_m)):
        expected = accuracy_summary(mean[asked], test.target_m[asked])["median_error_m"]
        assert est[name]["median_error_m"] == pytest.approx(expected, rel=1e-6), name
    scored = metrics["provenance"]["radio_map"]
    fit = json.loads({p.key: p.value for p in onnx.load_from_string(data).metadata_props}[FIT_KEY])
    assert scored["map"] == "carried by the model (not refitted)" and scored["spacing_m"] == 2000.0
    assert scored["store_sha256"] == fit["store_sha256"] and scored["labels_used"] == fit["labels_used"] == 1200
    assert scored["n_labels"] > 0 and scored["fitted"] == fit["fitted"]
    assert scored["spread_floor_db"] == fit["spread_floor_db"]
    assert scored["log_distance_weight"] == fit["log_distance_weight"]
    assert metrics["provenance"]["hybrid"] == {
        "alpha": fit["alpha"],
        "beta": fit["beta"],
        "region_masses": fit["region_masses"],
        "chosen": "the model's own exponents",
    }


def test_evaluate_refuses_a_file_that_is_not_an_onnx_model_naming_it(tiny_store, tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x0a\xff" * 500)  # a truncated protobuf field
    argv = ["evaluate", "--model", str(bad), "--data-dir", str(tiny_store), "--out", str(tmp_path / "eval")]
    assert main([*argv, "--no-mlflow", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: not an ONNX model" in err and "unexpected" not in err


def test_a_tampered_map_is_refused_at_load_by_serve_predict_evaluate_and_update(
    map_model_file, tiny_store, tmp_path, capsys
):
    from heimdall.errors import ModelLoadError

    proto = onnx.load(str(map_model_file))
    for entry in proto.metadata_props:
        if entry.key == map_io.METADATA_KEY:  # a few bytes that made the first answer ask for 1 TiB
            d = json.loads(entry.value)
            d["noise"]["floor_snr_db"] = -4e6
            entry.value = json.dumps(d)
    bad = tmp_path / "tampered.onnx"
    bad.write_bytes(proto.SerializeToString())
    field = "radiomap.noise.floor_snr_db"
    with pytest.raises(ModelLoadError, match=field):  # serve: at start and at each reload, /readyz never ready
        ModelSource(file=str(bad)).load()
    for argv in (
        ["predict", str(tiny_store), "--model-file", str(bad), "--out", str(tmp_path / "p.csv")],
        [
            "evaluate",
            "--model",
            str(bad),
            "--data-dir",
            str(tiny_store),
            "--out",
            str(tmp_path / "eval"),
            "--no-mlflow",
        ],
        [
            "map",
            "update",
            str(tiny_store),
            "--model",
            str(bad),
            "--labels",
            str(tmp_path),
            "--out",
            str(tmp_path / "u"),
        ],
    ):
        assert main([*argv, "--quiet"]) == 2, argv
        err = capsys.readouterr().err
        assert field in err and "unexpected" not in err, (argv, err)
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "eval" / "metrics.json").exists()


def test_a_map_entry_is_read_as_weights_and_bounded():
    """Entries with and without a temperature read alike (the exponents are the shipped ones); a network weighed
    more against the map than the choice ever ships (β/α > 4) or exponents out of range are refused, naming the
    entry."""
    for entry in ({"alpha": 0.125, "beta": 0.0625, "temperature": 8.0}, {"alpha": 0.5, "beta": 0.25}):
        weights = read_weights({FIT_KEY: json.dumps(entry)}, "m.onnx", ModelLoadError)
        assert weights == Weights(entry["alpha"], entry["beta"]) and weights.network_weight == 0.5
    for entry in ({"alpha": 0.01, "beta": 1.0}, {"alpha": 0.0, "beta": 0.0}, {"alpha": 3.0, "beta": 0.0}, {},
                  {"alpha": 10**400, "beta": 0.0}):  # fmt: skip
        with pytest.raises(ModelLoadError, match=f"m.onnx: metadata {FIT_KEY}"):
            read_weights({FIT_KEY: json.dumps(entry)}, "m.onnx", ModelLoadError)
    # the regions' masses recalibrated on validation: read as given; refused unless one per region, increasing
    entry = {"alpha": 0.5, "beta": 0.25, "region_masses": [0.31, 0.95]}
    assert read_weights({FIT_KEY: json.dumps(entry)}, "m.onnx", ModelLoadError).masses() == {0.5: 0.31, 0.95: 0.95}
    huge = 10**400  # json reads it as an int no float holds
    for masses in ([0.6, 0.5], [0.3], [0.0, 0.95], [0.3, 1.5], "0.3", "11", [None, 0.95], [True, True],
                   {"0.5": 0.3, "0.95": 0.95}, [huge, 0.95], [float("nan"), 0.95]):  # fmt: skip
        entry["region_masses"] = masses
        with pytest.raises(ModelLoadError, match=f"m.onnx: metadata {FIT_KEY}.region_masses .*increasing masses"):
            read_weights({FIT_KEY: json.dumps(entry)}, "m.onnx", ModelLoadError)
