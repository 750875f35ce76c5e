"""`heimdall map update`: new labelled SigMF recordings refit the map of a map-carrying model; the network is
untouched, the map's version counts on, and a failure writes nothing."""

import hashlib
import json

import numpy as np
import onnx
import pytest
from mlflow.tracking import MlflowClient

from heimdall.cli import main
from heimdall.evaluation.grid_estimators import measured
from heimdall.evaluation.test_set import load_test_set
from heimdall.manifest import decode_manifest, sidecar_path
from heimdall.radiomap import io as map_io
from heimdall.release.map_metadata import FIT_KEY
from heimdall.release.model_store import ModelStore
from heimdall.release.registry import onnx_metrics


@pytest.fixture(scope="module")
def new_labels(nw_italy, tmp_path_factory):
    """Labelled SigMF recordings of the tiny store's receivers, at places it has not seen (another seed)."""
    from heimdall.datasets.generate import generate_dataset
    from heimdall.datasets.spec import DatasetSpec

    out = tmp_path_factory.mktemp("labels")
    generate_dataset(nw_italy, out, DatasetSpec(n_transmissions=240, seed=77, fractions=(1, 0, 0)), output="sigmf")
    return out


@pytest.fixture(scope="module")
def foreign_labels(nw_italy, tmp_path_factory):
    """Labelled SigMF recordings in which receiver coazze is replaced by one the model does not have, 40 km away."""
    from heimdall.datasets.generate import generate_dataset
    from heimdall.datasets.spec import DatasetSpec

    out = tmp_path_factory.mktemp("foreign")
    generate_dataset(nw_italy, out, DatasetSpec(n_transmissions=20, seed=5, fractions=(1, 0, 0)), output="sigmf")
    for collection in out.rglob("*.sigmf-collection"):
        c = json.loads(collection.read_text())
        for stream in c["collection"]["core:streams"]:
            meta = collection.with_name(f"{stream['name']}.sigmf-meta")
            d = json.loads(meta.read_text())
            if d["global"].get("heimdall:receiver_id") == "coazze":
                d["global"]["heimdall:receiver_id"] = "bardonecchia"
                d["global"]["core:geolocation"]["coordinates"][0] -= 0.5
                meta.write_text(json.dumps(d))
                stream["hash"] = hashlib.sha512(meta.read_bytes()).hexdigest()
        collection.write_text(json.dumps(c))
    return out


def _fit(path):
    return json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}[FIT_KEY])


def _map_nll(path, test):
    """Mean NLL (per km²) of the truths under the model's map alone."""
    radio_map = map_io.from_onnx(onnx.load(str(path)))
    m = measured(test)
    return -np.mean(
        [
            radio_map.localize(m.snr_db[i], m.noise_dbm[i], m.present[i]).log_density_at(test.target_m[i][None])[0]
            for i in range(len(m))
        ]
    )


@pytest.fixture(scope="module")
def updated(map_model_file, tiny_store, new_labels, tmp_path_factory):
    """map_model_file updated with new_labels, also published to a model store and registered: (out, ws)."""
    ws = tmp_path_factory.mktemp("update")
    out = ws / "model-map-v2.onnx"
    args = ["map", "update", str(tiny_store), "--model", str(map_model_file), "--labels", str(new_labels)]
    args += ["--out", str(out), "--store", str(ws / "models"), "--register", "--tracking-uri", f"sqlite:///{ws}/m.db"]
    assert main([*args, "--quiet"]) == 0
    return out, ws


@pytest.mark.system  # map updates of a trained, published model: the second tier
def test_update_refits_the_map_on_more_labels_and_keeps_the_network(updated, map_model_file, model_file, new_labels):
    out, _ = updated
    parent, child = _fit(map_model_file), _fit(out)
    assert child["map_version"] == parent["map_version"] + 1 == 2
    assert child["parent_sha256"] == hashlib.sha256(map_model_file.read_bytes()).hexdigest()
    added = child["labels_added"]
    imported = _imported(new_labels, out.parent / "imported")
    assert added["n"] == len(imported.target_m) > 150 and len(added["sha256"]) == 64
    assert added["folder"] == new_labels.name  # names and hashes, no path of the machine that updated it
    assert not [p.key for p in onnx.load(str(out)).metadata_props if str(new_labels.resolve().parent) in p.value]
    assert child["labels_used"] == parent["labels_used"] + added["n"]
    assert child["spacing_m"] == parent["spacing_m"] == 2000.0  # the parent's grid
    new_map = map_io.from_onnx(onnx.load(str(out)))
    assert new_map.n_labels > map_io.from_onnx(onnx.load(str(map_model_file))).n_labels

    # the network: the same bytes once the map is taken off, as the parent's
    proto = onnx.load(str(out))
    map_io.detach(proto)
    kept = [p for p in proto.metadata_props if p.key != FIT_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    assert proto.SerializeToString() == model_file.read_bytes()
    assert child["network_sha256"] == parent["network_sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()

    # a new version with its own manifest
    manifest = decode_manifest(sidecar_path(out).read_bytes())
    assert manifest["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()

    # the map's answers moved toward the truth where the new labels are
    assert _map_nll(out, imported) < _map_nll(map_model_file, imported) - 0.1


@pytest.mark.system  # map updates of a trained, published model: the second tier
def test_update_goes_to_the_model_store_and_the_registry_judged_by_its_answers(updated, tiny_store):
    out, ws = updated
    stored = ModelStore.open(str(ws / "models")).fetch("heimdall-localizer")
    assert stored.version == 1 and stored.data == out.read_bytes()
    assert json.loads(stored.manifest["metadata"][FIT_KEY])["map_version"] == 2
    client = MlflowClient(f"sqlite:///{ws}/m.db")
    (version,) = client.search_model_versions("name='heimdall-localizer'")
    aliases = client.get_registered_model("heimdall-localizer").aliases  # champion or challenger, with why
    assert {str(v) for v in aliases.values()} == {str(version.version)} and version.tags["decision"]
    judged = onnx_metrics(out.read_bytes(), load_test_set(tiny_store))  # its hybrid answers on the store's test split
    assert float(version.tags["median_error_m"]) == pytest.approx(judged["median_error_m"], rel=1e-5)


@pytest.mark.system  # map updates of a trained, published model: the second tier
def test_update_takes_the_model_from_the_store_or_the_registry_and_publishes_the_next_version(
    updated, tiny_store, new_labels
):
    out, ws = updated
    store = ws / "models"
    v3 = ws / "model-map-v3.onnx"
    args = ["map", "update", str(tiny_store), "--labels", str(new_labels), "--out", str(v3), "--quiet"]
    assert main([*args, "--store", str(store)]) == 0  # no --model: the store's latest version, v1 (map version 2)
    fit = _fit(v3)
    assert fit["map_version"] == 3 and fit["parent_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    stored = ModelStore.open(str(store)).fetch("heimdall-localizer")
    assert stored.version == 2 and stored.data == v3.read_bytes()

    # from the registry: the version the fixture registered, under the alias it got
    uri = f"sqlite:///{ws}/m.db"
    (alias,) = MlflowClient(uri).get_registered_model("heimdall-localizer").aliases
    from_registry = ws / "from-registry.onnx"
    argv = ["map", "update", str(tiny_store), "--labels", str(new_labels), "--out", str(from_registry), "--quiet"]
    assert main([*argv, "--tracking-uri", uri, "--alias", alias]) == 0
    assert _fit(from_registry)["parent_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def test_update_refuses_foreign_receivers_and_a_model_without_a_map_writing_nothing(
    foreign_labels, map_model_file, model_file, tiny_store, tmp_path, capsys
):
    out = tmp_path / "v2.onnx"
    base = ["map", "update", str(tiny_store), "--out", str(out), "--quiet"]
    assert main([*base, "--model", str(map_model_file), "--labels", str(foreign_labels)]) == 2
    err = capsys.readouterr().err
    assert "receivers not in both" in err and "bardonecchia" in err and str(foreign_labels) in err
    assert main([*base, "--model", str(model_file), "--labels", str(foreign_labels)]) == 2
    err = capsys.readouterr().err
    assert "carries no radio map" in err and "heimdall map fit" in err
    assert main(["map", "fit", str(tiny_store), "--model", str(model_file), "--out", str(out), "--labels", "x"]) == 2
    assert main(["map", "fit", str(tiny_store), "--out", str(out)]) == 2
    assert "`map fit` needs the network model" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == []  # no model, no manifest, no imported labels left behind


def _imported(labels_dir, store):
    """The labels as a store imports them (the transmissions and positions the update read)."""
    assert main(["import", "--scenario", "nw-italy", str(labels_dir), "--out", str(store), "--quiet"]) == 0
    return load_test_set(store / "train.h5")
