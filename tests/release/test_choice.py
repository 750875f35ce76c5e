"""The localizer choice at the end of `heimdall train`: network, radio map and hybrid compared on the validation split
by mean NLL on the same footing; the chosen one is what the model store and the registry get, judged by its own
answers, and what the service answers with."""

import hashlib
import json
import shutil
import time

import httpx
import numpy as np
import onnx
import pytest
from mlflow.tracking import MlflowClient
from scipy.stats import multivariate_normal

from heimdall.budget import TimeBudget
from heimdall.cli import main
from heimdall.errors import ExportError
from heimdall.evaluation.evaluate import VALIDATION_SAMPLES, onnx_predictions
from heimdall.evaluation.test_set import load_test_set
from heimdall.radiomap.fit import MapOptions
from heimdall.radiomap.posterior import LOG_DENSITY_FLOOR
from heimdall.release.choice import choose, choose_and_attach, worse_than
from heimdall.release.judged_answers import carries_map
from heimdall.release.map_metadata import FIT_KEY
from heimdall.release.model_store import ModelStore
from heimdall.release.publish import centroid_refusal, giving_way, ships_network_instead
from heimdall.release.registry import calibrated, onnx_metrics
from serve_bodies import features_body
from service_process import running_service
from tiny import TINY_NETWORK

SMALL = ["--epochs", "2", "--batch-size", "128", *TINY_NETWORK]
MAP = ["--map-spacing-m", "2000"]


def _train(tiny_store, ws, *extra):
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    argv = ["train", "--data-dir", str(tiny_store), "--checkpoint-dir", str(ws / "run"), "--tracking-uri", uri]
    argv += ["--store", str(ws / "models"), *SMALL, *MAP, "--json", *extra]
    return main(argv), uri


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.setenv("HEIMDALL_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.mark.system  # a training run and what follows it: the second tier
def test_train_compares_the_three_localizers_and_ships_the_lowest_nll(tiny_store, ws, capsys):
    rc, uri = _train(tiny_store, ws)
    assert rc == 0
    captured = capsys.readouterr()
    model = json.loads(captured.out)["model"]
    choice = model["localizer"]
    nll = choice["validation_nll"]
    assert set(nll) == {"network", "map", "hybrid"} and choice["validation_n"] == 150
    # of those not worse than the weighted centroid on validation, the lowest NLL among the candidates the champion
    # rule would find calibrated there (all when none is)
    centroid, medians = choice["centroid_validation_median_m"], choice["validation_median_m"]
    assert centroid["median_error_m"] > 0 and set(medians) == set(nll)
    beat = [k for k in nll if not worse_than(medians[k], centroid)]
    assert beat and choice["worse_than_centroid"] is False and "weighted centroid on validation" in choice["reason"]
    coverage = choice["validation_coverage"]
    pool = [k for k in beat if calibrated(coverage[k])] or beat
    assert choice["localizer"] == min(pool, key=nll.get) and "lowest mean validation NLL" in choice["reason"]
    assert "localizer shipped" in captured.err and choice["localizer"] in captured.err
    # the time of each phase after the training, in the order they ran, in the summary and the console's table
    phases = json.loads(captured.out)["phases_s"]
    assert list(phases)[:4] == ["train", "export", "map fit", "choice"] and list(phases)[-1] == "registration"
    assert ("evaluation" in phases or choice["localizer"] == "network") and min(phases.values()) >= 0
    assert "total" in captured.err

    # the network's NLL is its Gaussian density per km² at the truth, floored as the map's grid density is
    network = (ws / "run" / "model.onnx").read_bytes()
    val = load_test_set(tiny_store / "val.h5", VALIDATION_SAMPLES)
    mean_m, cov_m2 = onnx_predictions(network, val)
    log_density = [
        multivariate_normal(mean_m[i] / 1e3, cov_m2[i] / 1e6).logpdf(val.target_m[i] / 1e3) for i in range(len(mean_m))
    ]
    assert nll["network"] == pytest.approx(-np.mean(np.maximum(log_density, LOG_DENSITY_FLOOR)), rel=1e-5)

    # what was shipped is the chosen kind: in the run folder, the model store and the registry
    shipped = model["onnx"]
    assert shipped.endswith("model-map.onnx" if choice["localizer"] != "network" else "model.onnx")
    stored = ModelStore.open(str(ws / "models")).fetch("heimdall-localizer")
    assert stored.manifest["sha256"] == model["sha256"] == hashlib.sha256(stored.data).hexdigest()
    assert carries_map(stored.data) == (choice["localizer"] != "network")
    client = MlflowClient(uri)
    run = client.get_run(json.loads(captured.out)["mlflow_run_id"])
    assert run.data.tags["localizer"] == choice["localizer"]
    assert {k: run.data.metrics[f"val_nll_{k}"] for k in nll} == pytest.approx(nll)


@pytest.mark.system
def test_forced_hybrid_is_stored_registered_judged_by_its_answers_and_served_with_regions(tiny_store, ws, capsys):
    rc, uri = _train(tiny_store, ws, "--localizer", "hybrid")
    assert rc == 0
    model = json.loads(capsys.readouterr().out)["model"]
    assert (
        model["localizer"]["localizer"] == "hybrid" and "forced by --localizer hybrid" in model["localizer"]["reason"]
    )
    assert model["localizer"]["beta"] > 0 and model["onnx"] == str(ws / "run" / "model-map.onnx")
    data = (ws / "run" / "model-map.onnx").read_bytes()
    fit = json.loads({p.key: p.value for p in onnx.load_from_string(data).metadata_props}[FIT_KEY])
    assert (fit["alpha"], fit["beta"], fit["localizer"]) == (
        model["localizer"]["alpha"],
        model["localizer"]["beta"],
        "hybrid",
    )

    # the registry judged the map-carrying model by its hybrid answers, not by its bare network
    test = load_test_set(tiny_store)
    judged = onnx_metrics(data, test)
    network = onnx_metrics((ws / "run" / "model.onnx").read_bytes(), test)
    assert model["eval_metrics"]["median_error_m"] == pytest.approx(judged["median_error_m"])
    assert judged["median_error_m"] != pytest.approx(network["median_error_m"])
    version = MlflowClient(uri).get_model_version("heimdall-localizer", model["registry"]["version"])
    assert float(version.tags["median_error_m"]) == pytest.approx(judged["median_error_m"], rel=1e-5)

    # the store's latest version, served by a real service process, answers with the hybrid's regions
    rows = _rows(tiny_store, 5)
    with running_service(None, "--store", str(ws / "models")) as url:
        body = {"transmissions": [features_body(rows, k) for k in range(5)]}
        r = httpx.post(f"{url}/v1/localize/batch", json=body, timeout=120)
    assert r.status_code == 200, r.text
    for answer in r.json()["results"]:
        assert answer["map"] == "used" and set(answer["regions"]) == {"0.5", "0.95"} and answer["modes"]


def test_forced_hybrid_without_a_validation_split_is_refused_before_training(tiny_store, ws, capsys):
    store = ws / "store"
    store.mkdir()
    shutil.copy(tiny_store / "train.h5", store / "train.h5")
    rc, _ = _train(store, ws, "--localizer", "hybrid")
    assert rc == 2
    assert "--localizer hybrid" in capsys.readouterr().err and not (ws / "run" / "best.ckpt").exists()


def test_a_map_grid_too_fine_for_the_area_is_refused_before_training(tiny_store, ws, capsys):
    rc, _ = _train(tiny_store, ws, "--map-spacing-m", "5")
    assert rc == 2
    err = capsys.readouterr().err
    assert "--map-spacing-m" in err and "cells over the area" in err and not (ws / "run" / "best.ckpt").exists()


def test_export_only_refuses_a_forced_map(tiny_store, ws, capsys):
    argv = ["train", "--export-only", "--checkpoint", str(ws / "best.ckpt"), "--localizer", "map"]
    assert main(argv) == 2
    assert "heimdall map fit" in capsys.readouterr().err


def _rows(store, n):
    """The first n test transmissions of a store as serve_bodies reads them (receiver ids and features)."""
    import h5py

    with h5py.File(store / "test.h5") as f:
        return {"ids": list(f["receivers/id"].asstr()[...]), "features": f["features"][:n]}


def test_a_map_model_is_judged_by_the_answers_the_service_gives(map_model_file, model_file, tiny_store):
    from heimdall.errors import ModelLoadError
    from heimdall.release.registry import summary_of
    from heimdall.serve.hybrid_answers import hybrid_answers, load_map, map_input
    from heimdall.train.model_card import ModelCard

    data = map_model_file.read_bytes()
    test = load_test_set(tiny_store)
    proto = onnx.load_from_string(data)
    meta = {p.key: p.value for p in proto.metadata_props}
    card = ModelCard.from_onnx_metadata(meta, "map model", ModelLoadError)
    served = load_map(proto, meta, card.receiver_ids, card.frame, "map model")
    mean_m, cov_m2 = onnx_predictions(data, test)
    inputs = [map_input(card.feature_params, card.receiver_ids, f, card.receiver_ids) for f in test.features]
    mean_m, cov_m2, _, _ = hybrid_answers(served, mean_m, cov_m2, inputs)
    expected = summary_of(mean_m, cov_m2, test.target_m)
    judged = onnx_metrics(data, test)
    assert {k: judged[k] for k in expected} == pytest.approx(expected)
    assert 0 < judged["coverage_region50"] < judged["coverage_region95"] <= 1
    assert onnx_metrics(data, test) != pytest.approx(onnx_metrics(model_file.read_bytes(), test))


def test_a_map_model_is_calibrated_by_its_regions_not_its_moment_ellipses():
    from heimdall.release.registry import miscalibrated

    # a two-mode or heavy-tailed posterior: its moment-matched 1σ ellipse holds the truth too rarely, its regions right
    answers = {"median_error_m": 5e3, "coverage_1sigma": 0.30, "coverage_2sigma": 0.90}
    regions = {"coverage_region50": 0.52, "coverage_region95": 0.94}
    assert miscalibrated(answers) is not None and miscalibrated(answers | regions) is None
    why = miscalibrated(answers | regions | {"coverage_region95": 0.85})
    assert why is not None and "95 % region 85.0%" in why


def _fit_entry(nll: dict[str, float], coverage: dict[str, dict[str, float]]) -> dict:
    candidates = {k: {"nll": v, **coverage[k]} for k, v in nll.items()}
    candidates["map"] |= {"alpha": 1.0, "beta": 0.0}
    candidates["hybrid"] |= {"alpha": 1.0, "beta": 0.25}
    return {"candidates": candidates, "validation_n": 150}


CALIBRATED_NET = {"coverage_1sigma": 0.40, "coverage_2sigma": 0.86}
CALIBRATED_REGIONS = {"coverage_region50": 0.52, "coverage_region95": 0.94}
OVER_CONFIDENT_REGIONS = {"coverage_region50": 0.37, "coverage_region95": 0.88}


def test_the_choice_passes_over_a_candidate_the_champion_rule_would_refuse():
    nll = {"network": 8.3, "map": 6.5, "hybrid": 6.48}
    fit = _fit_entry(nll, {"network": CALIBRATED_NET, "map": CALIBRATED_REGIONS, "hybrid": OVER_CONFIDENT_REGIONS})
    choice = choose(fit, "auto")
    assert choice.localizer == "map"
    assert "of the calibrated: 6.500 against 8.300 (network)" in choice.reason
    assert "hybrid (50 % region holds 37% (ideal 50%)" in choice.reason
    assert choice.summary()["validation_coverage"]["hybrid"] == OVER_CONFIDENT_REGIONS
    # forced: taken as asked; none calibrated: the lowest NLL of all, and the reason says none was
    assert choose(fit, "hybrid").localizer == "hybrid"
    fit = _fit_entry(nll, {"network": {"coverage_1sigma": 0.1, "coverage_2sigma": 0.3}, "map": OVER_CONFIDENT_REGIONS,
                           "hybrid": OVER_CONFIDENT_REGIONS})  # fmt: skip
    choice = choose(fit, "auto")
    assert choice.localizer == "hybrid" and "of the calibrated" not in choice.reason
    assert all(f"{k} (" in choice.reason for k in nll)


def test_a_shipped_hybrid_says_on_how_many_validation_transmissions_its_network_was_set_aside():
    calibrated = {"network": CALIBRATED_NET, "map": CALIBRATED_REGIONS, "hybrid": CALIBRATED_REGIONS}
    fit = _fit_entry({"network": 8.3, "map": 6.5, "hybrid": 6.1}, calibrated)
    fit["candidates"]["hybrid"]["network_set_aside"] = 12
    choice = choose(fit, "auto")
    assert choice.localizer == "hybrid"
    assert "the network set aside on 12 of 150 transmissions (its answer and the map's disagree" in choice.reason
    fit["candidates"]["hybrid"]["nll"] = 6.9  # the map ships: nothing of the hybrid's network to tell
    assert choose(fit, "auto").localizer == "map" and "set aside" not in choose(fit, "auto").reason


def test_an_automatic_map_choice_gives_way_when_only_the_network_would_be_served():
    over, fine, net_off = OVER_CONFIDENT_REGIONS, CALIBRATED_REGIONS, {"coverage_1sigma": 0.2, "coverage_2sigma": 0.6}
    assert ships_network_instead("auto", over, CALIBRATED_NET)
    assert not ships_network_instead("auto", fine, CALIBRATED_NET)
    assert not ships_network_instead("auto", over, net_off)  # neither would be served: the lowest NLL stays
    assert not ships_network_instead("hybrid", over, CALIBRATED_NET)  # forced: as asked
    assert not ships_network_instead("auto", None, CALIBRATED_NET)  # no evaluation set: nothing to judge on


@pytest.mark.system  # a whole map fit run out of time: the second tier
def test_an_automatic_choice_past_the_runs_deadline_ships_the_network(model_file, tiny_store, tmp_path):
    model = tmp_path / "model.onnx"
    shutil.copy(model_file, model)
    grid = MapOptions(spacing_m=2000.0)
    seen = []
    spent = TimeBudget(deadline=time.monotonic(), show=lambda *progress: seen.append(progress))
    choice, attached = choose_and_attach(model, tiny_store, "auto", options=grid, budget=spent)
    assert choice.localizer == "network" and attached is None and "within the run's time budget" in choice.reason
    assert seen and "map fit" in spent.seconds  # the fit showed its progress and was stopped at its next step
    assert not (tmp_path / "model-map.onnx").exists()
    # a forced map is not replaced by the network: refused, the network's model kept
    with pytest.raises(ExportError, match="--localizer map: the map's fit and comparison did not finish"):
        choose_and_attach(model, tiny_store, "map", options=grid, budget=TimeBudget(deadline=time.monotonic()))
    assert model.is_file() and not (tmp_path / "model-map.onnx").exists()


BEATS_CENTROID = {"median_error_m": 800.0}
CENTROID = {"median_error_m": 1000.0, "median_error_far_m": 1500.0, "n_far": 40}


def _with_medians(fit: dict, medians: dict[str, dict[str, float]]) -> dict:
    for name, m in medians.items():
        fit["candidates"][name] |= m
    return fit | {"centroid": CENTROID}


def test_a_localizer_worse_than_the_weighted_centroid_away_from_the_labels_is_passed_over():
    # the network has the lowest NLL and beats the centroid over all of validation, but not far from its labels
    nll = {"network": 6.0, "map": 6.5, "hybrid": 6.8}
    fit = _fit_entry(nll, {"network": CALIBRATED_NET, "map": CALIBRATED_REGIONS, "hybrid": CALIBRATED_REGIONS})
    network = {"median_error_m": 700.0, "median_error_far_m": 2900.0, "n_far": 40}
    fit = _with_medians(fit, {"network": network, "map": BEATS_CENTROID, "hybrid": BEATS_CENTROID})
    choice = choose(fit, "auto")
    assert choice.localizer == "map" and not choice.worse_than_centroid
    assert "worse than the weighted centroid on validation: network (median 700 m, 2900 m away" in choice.reason
    assert (
        "weighted centroid on validation: median 1000 m, 1500 m away from the training labels (n 40)" in choice.reason
    )
    summary = choice.summary()
    assert summary["centroid_validation_median_m"] == CENTROID and summary["worse_than_centroid"] is False
    assert summary["validation_median_m"]["network"] == network


def test_when_none_is_calibrated_the_lowest_validation_median_wins_whatever_its_nll():
    """The real network's random split: the network's NLL the lowest (its Gaussian's gentle tail against the grid
    posteriors' floored misses), its median three times the hybrid's, and none calibrated there."""
    nll = {"network": 0.37, "map": 0.52, "hybrid": 0.47}
    off_net = {"coverage_1sigma": 0.51, "coverage_2sigma": 0.84}
    fit = _fit_entry(nll, {"network": off_net, "map": OVER_CONFIDENT_REGIONS, "hybrid": OVER_CONFIDENT_REGIONS})
    medians = {
        "network": {"median_error_m": 270.0, "median_error_far_m": 400.0, "n_far": 40},
        "map": {"median_error_m": 95.0, "median_error_far_m": 150.0, "n_far": 40},
        "hybrid": {"median_error_m": 90.0, "median_error_far_m": 140.0, "n_far": 40},
    }
    choice = choose(_with_medians(fit, medians), "auto")
    assert choice.localizer == "hybrid" and not choice.worse_than_centroid
    assert choice.reason.startswith(
        "none calibrated on validation: the lowest validation median error, median 90 m, 140 m away from the "
        "training labels (n 40), against median 95 m, 150 m away from the training labels (n 40) (map) on 150 "
        "transmissions (validation NLL 0.470)"
    )
    # judged away from the labels: the map's far median the lower wins, though its overall median is not
    medians["map"] = {"median_error_m": 99.0, "median_error_far_m": 120.0, "n_far": 40}
    assert choose(_with_medians(fit, medians), "auto").localizer == "map"
    # one calibrated: the lowest NLL among the calibrated, as before
    fit["candidates"]["network"] |= CALIBRATED_NET
    assert choose(_with_medians(fit, medians), "auto").localizer == "network"


def test_the_choice_names_the_maps_spread_floor_and_train_json_gives_it_for_a_map_shipped():
    nll = {"network": 6.0, "map": 5.5, "hybrid": 5.8}
    fit = _fit_entry(nll, {"network": CALIBRATED_NET, "map": CALIBRATED_REGIONS, "hybrid": CALIBRATED_REGIONS})
    fit["spread_floor"] = {"spread_floor_db": 8.0, "median_error_m": {"0": 190.0, "4": 186.0, "6": 181.0, "8": 176.0}}
    fit["candidates"]["map"]["spread_floor_db"], fit["candidates"]["hybrid"]["spread_floor_db"] = 8.0, 0.0
    choice = choose(fit, "auto")
    assert choice.localizer == "map" and choice.summary()["spread_floor_db"] == 8.0
    assert "the map's spreads floored at 8 dB (validation median 176 m against 190 m unfloored)" in choice.reason
    # the hybrid reads the map as fitted; a network shipped: no floor reported
    hybrid = choose(fit, "hybrid")
    assert "floored" not in hybrid.reason and hybrid.summary()["spread_floor_db"] == 0.0
    assert choose(fit, "network").summary()["spread_floor_db"] is None


def test_the_map_does_not_give_way_on_calibration_to_a_network_worse_than_the_centroid():
    from heimdall.release.publish import network_worse_than_centroid

    nll = {"network": 6.0, "map": 6.5, "hybrid": 6.8}
    fit = _fit_entry(nll, {"network": CALIBRATED_NET, "map": CALIBRATED_REGIONS, "hybrid": CALIBRATED_REGIONS})
    network = {"median_error_m": 700.0, "median_error_far_m": 2900.0, "n_far": 40}
    passed_over = choose(
        _with_medians(fit, {"network": network, "map": BEATS_CENTROID, "hybrid": BEATS_CENTROID}), "auto"
    )
    assert passed_over.localizer == "map" and network_worse_than_centroid(passed_over)
    good = {"median_error_m": 600.0, "median_error_far_m": 900.0, "n_far": 40}
    fit = _fit_entry(nll, {"network": CALIBRATED_NET, "map": CALIBRATED_REGIONS, "hybrid": CALIBRATED_REGIONS})
    beaten = choose(_with_medians(fit, {"network": good, "map": BEATS_CENTROID, "hybrid": BEATS_CENTROID}), "auto")
    assert not network_worse_than_centroid(beaten)


def test_a_map_giving_way_to_a_network_worse_than_the_centroid_ships_it_flagged_and_never_champion():
    """A map not judged within the time budget gives way even to a network the choice found worse than the weighted
    centroid: that network is shipped flagged, and the registry is told it may not be champion."""
    nll = {"network": 6.0, "map": 6.5, "hybrid": 6.8}
    fit = _fit_entry(nll, {"network": CALIBRATED_NET, "map": CALIBRATED_REGIONS, "hybrid": CALIBRATED_REGIONS})
    network = {"median_error_m": 700.0, "median_error_far_m": 2900.0, "n_far": 40}
    choice = choose(_with_medians(fit, {"network": network, "map": BEATS_CENTROID, "hybrid": BEATS_CENTROID}), "auto")
    assert choice.localizer == "map" and centroid_refusal(choice) is None
    shipped = giving_way(choice, "was not judged on the evaluation set within the run's time budget", "model-map.onnx")
    assert shipped.localizer == "network" and shipped.worse_than_centroid and shipped.summary()["worse_than_centroid"]
    assert "the network is WORSE than the weighted centroid on validation" in shipped.reason
    refusal = centroid_refusal(shipped)
    assert refusal is not None and refusal.startswith("the network is worse than the weighted centroid")
    # a network that beats the centroid is shipped unflagged
    good = {"median_error_m": 600.0, "median_error_far_m": 900.0, "n_far": 40}
    fit = _fit_entry(nll, {"network": CALIBRATED_NET, "map": CALIBRATED_REGIONS, "hybrid": CALIBRATED_REGIONS})
    beaten = choose(_with_medians(fit, {"network": good, "map": BEATS_CENTROID, "hybrid": BEATS_CENTROID}), "auto")
    assert centroid_refusal(giving_way(beaten, "fails the champion rule's calibration", "model-map.onnx")) is None


def test_when_every_localizer_is_worse_than_the_centroid_the_closest_is_shipped_and_flagged():
    nll = {"network": 6.0, "map": 6.5, "hybrid": 6.8}
    fit = _fit_entry(nll, {"network": CALIBRATED_NET, "map": CALIBRATED_REGIONS, "hybrid": CALIBRATED_REGIONS})
    far = {k: {"median_error_m": 1200.0, "median_error_far_m": v, "n_far": 40} for k, v in
           {"network": 2900.0, "map": 1700.0, "hybrid": 1800.0}.items()}  # fmt: skip
    choice = choose(_with_medians(fit, far), "auto")
    assert choice.localizer == "map" and choice.worse_than_centroid and choice.summary()["worse_than_centroid"]
    assert choice.reason.startswith("WORSE THAN THE WEIGHTED CENTROID") and "median 1000 m" in choice.reason
    # forced: as asked, and said so
    forced = choose(_with_medians(fit, far), "hybrid")
    assert forced.localizer == "hybrid" and forced.worse_than_centroid and "WORSE than the weighted" in forced.reason
    # either way the registry is told it may not be champion, and why
    refusal = centroid_refusal(choice)
    assert refusal is not None and refusal.startswith("the map is worse than the weighted centroid on validation")
    assert "median 1200 m, 1700 m away from the training labels" in refusal and "never champion" in refusal
    assert "the hybrid is worse" in (centroid_refusal(forced) or "")
    fit = _fit_entry(nll, {"network": CALIBRATED_NET, "map": CALIBRATED_REGIONS, "hybrid": CALIBRATED_REGIONS})
    beats = {k: BEATS_CENTROID for k in ("network", "map", "hybrid")}
    assert centroid_refusal(choose(_with_medians(fit, beats), "auto")) is None
    assert centroid_refusal(None) is None


def test_an_over_confident_map_is_recalibrated_on_validation_and_the_exported_model_answers_with_it(
    model_file, tiny_store, tmp_path
):
    import dataclasses

    from heimdall.evaluation.grid_estimators import fit_map, hybrid_exponents, measured
    from heimdall.radiomap.answer_arrays import answers_of
    from heimdall.release.choice import ship
    from heimdall.release.judged_answers import model_answers
    from heimdall.release.map_attach import read_network

    train, val = load_test_set(tiny_store / "train.h5"), load_test_set(tiny_store / "val.h5", VALIDATION_SAMPLES)
    fitted, _ = fit_map(train, train, MapOptions(spacing_m=2000.0))
    # receivers whose gains are 12 dB off the map's, and no spread for it: a map too sure of itself, as on real data
    bias_db = 12.0 * (-1.0) ** np.arange(fitted.n_receivers)
    over = dataclasses.replace(
        fitted, mean_dbm=(fitted.mean_dbm + bias_db).astype(np.float32), spread_db=np.zeros_like(fitted.spread_db)
    )
    model = tmp_path / "model.onnx"
    shutil.copy(model_file, model)
    network = read_network(model, tmp_path / "model-map.onnx")
    # no floor and no log-distance partner offered: the temperature alone recalibrates (both are chosen in the tests
    # below)
    predict = lambda t: onnx_predictions(network.data, t)  # noqa: E731
    fit = hybrid_exponents(
        over, val, predict, labels_m=train.target_m, spread_floors_db=(0.0,), log_distance_weights=(0.0,)
    )
    chosen = fit["candidates"]["map"]
    assert chosen["spread_floor_db"] == 0.0
    assert chosen["coverage_region95_untempered"] < 0.90 and chosen["temperature"] > 1
    assert 0.90 <= chosen["coverage_region95"] <= 0.97

    choice = choose(fit, "map")
    assert choice.summary()["temperature"] == chosen["temperature"] and choice.exponents["map"][0] < 0.25
    attached = ship(choice, network, over, fit, tmp_path / "model-map.onnx")
    assert attached is not None and attached.fit["temperature"] == chosen["temperature"]
    # the exported model's own answers (as the service and predict give them) hold the truth as often
    judged = onnx_metrics(attached.path.read_bytes(), val)
    assert judged["coverage_region95"] == pytest.approx(chosen["coverage_region95"], abs=0.02)
    # its 50 % regions drawn at the mass recalibrated on validation: they hold half of the truths there
    assert attached.fit["region_masses"] == chosen["region_masses"] and chosen["region_masses"][1] == 0.95
    assert 0.5 <= judged["coverage_region50"] <= 0.56 and abs(chosen["coverage_region50"] - 0.5) <= 0.08
    # and with the point of the map as fitted: the temperature widens the regions, it does not move the answer
    m = measured(val)
    as_fitted = answers_of(over, m.snr_db, m.noise_dbm, m.present, val.target_m, heard=m.heard)
    shipped = model_answers(attached.path.read_bytes(), val, "shipped")
    np.testing.assert_allclose(shipped.mean_m, as_fitted.mean_m, rtol=0, atol=1e-6)
    assert shipped.in_region95 is not None and shipped.in_region95.mean() > as_fitted.in_hpd95.mean()
    median_m = np.median(np.linalg.norm(as_fitted.mean_m - val.target_m, axis=1))
    assert choice.medians["map"]["median_error_m"] == pytest.approx(median_m, rel=1e-9)


def test_a_map_too_sure_of_a_few_wrong_receivers_is_floored_on_validation_and_shipped_so_alone(
    model_file, tiny_store, tmp_path
):
    import dataclasses

    from heimdall.evaluation.grid_estimators import SPREAD_FLOORS_DB, fit_map, hybrid_exponents, map_variant_chosen
    from heimdall.radiomap import io as map_io
    from heimdall.release.choice import ship
    from heimdall.release.map_attach import read_network

    train, val = load_test_set(tiny_store / "train.h5"), load_test_set(tiny_store / "val.h5", VALIDATION_SAMPLES)
    fitted, _ = fit_map(train, train, MapOptions(spacing_m=2000.0))
    # two receivers 15 dB off and sure of it, the others right and honest about their spread: as a map whose labels
    # lie elsewhere than the places it is asked about
    wrong = np.arange(fitted.n_receivers) < 2
    sure = dataclasses.replace(
        fitted,
        mean_dbm=(fitted.mean_dbm + np.where(wrong, 15.0, 0.0)).astype(np.float32),
        spread_db=np.where(wrong, 0.0, 8.0).astype(np.float32) + np.zeros_like(fitted.spread_db),
    )
    no_partner = (0.0,)  # the log-distance partner is chosen in the next test
    report, _, floored_points = map_variant_chosen(sure, val, weights=no_partner)
    medians, floor = report["median_error_m"], report["spread_floor_db"]
    floored = sure.with_spread_floor(floor)
    assert floor in SPREAD_FLOORS_DB and floor > 0 and medians[f"{floor:g}"] <= 0.98 * medians["0"]
    assert medians[f"{floor:g}"] == min(medians.values())
    answered = np.isfinite(floored_points).all(axis=1)  # the points returned are the floored map's
    floored_errors_m = np.hypot(*(floored_points[answered] - val.target_m[answered]).T)
    assert np.median(floored_errors_m) == pytest.approx(medians[f"{floor:g}"])
    assert floored.spread_db.min() == floor and floored.info["spread_floor_db"] == floor
    np.testing.assert_array_equal(floored.mean_dbm, sure.mean_dbm)
    np.testing.assert_array_equal(floored.spread_db[:, ~wrong], 8.0)  # spreads above the floor are kept
    # a map whose spreads are all above every floor: the floors change nothing, none is kept
    even = dataclasses.replace(fitted, spread_db=np.full_like(fitted.spread_db, SPREAD_FLOORS_DB[-1]))
    unchanged, _, _ = map_variant_chosen(even, val, weights=no_partner)
    assert unchanged["spread_floor_db"] == 0.0
    assert all(
        m == pytest.approx(unchanged["median_error_m"]["0"], rel=1e-9) for m in unchanged["median_error_m"].values()
    )
    assert even.with_spread_floor(0.0) is even

    # in the choice the map candidate reads the floored map and the hybrid the map as fitted
    shutil.copy(model_file, tmp_path / "model.onnx")
    network = read_network(tmp_path / "model.onnx", tmp_path / "model-map.onnx")
    predict = lambda t: onnx_predictions(network.data, t)  # noqa: E731
    fit = hybrid_exponents(sure, val, predict, labels_m=train.target_m, log_distance_weights=no_partner)
    unfloored = hybrid_exponents(
        sure, val, predict, labels_m=train.target_m, spread_floors_db=(0.0,), log_distance_weights=no_partner
    )
    # the same floor and medians as above, to the last bits a different summation order may move
    assert fit["spread_floor"]["spread_floor_db"] == floor and fit["candidates"]["map"]["spread_floor_db"] == floor
    assert fit["spread_floor"]["median_error_m"] == pytest.approx(medians, rel=1e-9)
    hybrid, unfloored_hybrid = fit["candidates"]["hybrid"], unfloored["candidates"]["hybrid"]
    assert hybrid.keys() == unfloored_hybrid.keys()
    assert all(hybrid[key] == pytest.approx(unfloored_hybrid[key], rel=1e-9) for key in hybrid)
    assert fit["candidates"]["map"]["median_error_m"] < unfloored["candidates"]["map"]["median_error_m"]
    # shipped: the map alone carries its floor, the hybrid the map as fitted
    for localizer, expected in (("map", floor), ("hybrid", 0.0)):
        attached = ship(choose(fit, localizer), network, sure, fit, tmp_path / f"{localizer}.onnx")
        assert attached is not None and attached.fit["spread_floor_db"] == expected
        carried = map_io.from_onnx(onnx.load(str(attached.path)))
        assert carried.info.get("spread_floor_db", 0.0) == expected
        np.testing.assert_array_equal(carried.spread_db, np.maximum(sure.spread_db, expected))


@pytest.mark.system
def test_a_network_trained_too_briefly_is_not_shipped_over_a_map_that_beats_the_centroid(nw_italy, ws, capsys):
    from heimdall.datasets.generate import generate_dataset
    from heimdall.datasets.spec import DatasetSpec

    store = ws / "spatial"
    spec = DatasetSpec(n_transmissions=1500, seed=5, split_mode="spatial", spatial_block_m=30_000, iq_per_split=8)
    generate_dataset(nw_italy, store, spec)
    rc, _ = _train(store, ws, "--epochs", "1")
    assert rc == 0
    captured = capsys.readouterr()
    choice = json.loads(captured.out)["model"]["localizer"]
    centroid, medians = choice["centroid_validation_median_m"], choice["validation_median_m"]
    assert worse_than(medians["network"], centroid)  # one epoch of the tiny network: worse than the centroid
    assert not worse_than(medians["map"], centroid)
    assert choice["localizer"] in ("map", "hybrid") and not choice["worse_than_centroid"]
    assert "worse than the weighted centroid on validation: network" in choice["reason"]
    assert "weighted centroid" in captured.err  # the printed table's centroid row


def test_the_maps_spread_floor_and_partner_weight_are_chosen_together_on_validation(tiny_store):
    import dataclasses

    from heimdall.evaluation.grid_estimators import (
        SPREAD_FLOORS_DB,
        VARIANT_GAIN,
        fit_map,
        map_variant_chosen,
        measured,
    )
    from heimdall.radiomap.batch import Unanswered
    from heimdall.radiomap.log_distance import LOG_DISTANCE_WEIGHTS

    train, val = load_test_set(tiny_store / "train.h5"), load_test_set(tiny_store / "val.h5", VALIDATION_SAMPLES)
    fitted, _ = fit_map(train, train, MapOptions(spacing_m=2000.0))
    # fields off by ±20 dB (the partner helps) and three receivers sure of them (a floor helps)
    east, north = fitted.grid.centres(np.arange(fitted.grid.n_cells)).T
    phase = np.arange(fitted.n_receivers)[None, :]
    field_db = 20.0 * np.sin(east[:, None] / 23e3 + phase) * np.cos(north[:, None] / 31e3 + 2 * phase)
    sure = np.arange(fitted.n_receivers) < 3
    misled = dataclasses.replace(
        fitted,
        mean_dbm=(fitted.mean_dbm + field_db).astype(np.float32),
        spread_db=np.where(sure, 2.0, 10.0).astype(np.float32) + np.zeros_like(fitted.spread_db),
    )
    floor_report, weight_report, points = map_variant_chosen(misled, val)
    # every pair scored here, independently of the choice
    m, medians = measured(val), {}
    for floor in SPREAD_FLOORS_DB:
        for weight in LOG_DISTANCE_WEIGHTS:
            variant = misled.with_spread_floor(floor).with_log_distance_weight(weight)
            posteriors = variant.posteriors(m.snr_db, m.noise_dbm, m.present, None, m.heard)
            got = np.array([(np.nan, np.nan) if isinstance(p, Unanswered) else p.mean_m for p in posteriors])
            answered = np.isfinite(got).all(axis=1)
            medians[floor, weight] = float(np.median(np.hypot(*(got[answered] - val.target_m[answered]).T)))
    # of the pairs where each setting above 0 saves VARIANT_GAIN against the same pair without it, the lowest
    saves = lambda pair, other: medians[pair] <= (1 - VARIANT_GAIN) * medians[other]  # noqa: E731
    earned = [(f, w) for f, w in medians if (f == 0 or saves((f, w), (0.0, w))) and (w == 0 or saves((f, w), (f, 0.0)))]
    best = min(earned, key=medians.__getitem__)
    assert best[0] > 0 and best[1] > 0  # here both pay
    chosen = floor_report["spread_floor_db"], weight_report["log_distance_weight"]
    assert chosen == best
    floor, weight = chosen
    assert floor_report["median_error_m"] == pytest.approx({f"{f:g}": medians[f, weight] for f in SPREAD_FLOORS_DB})
    assert weight_report["median_error_m"] == pytest.approx({f"{w:g}": medians[floor, w] for w in LOG_DISTANCE_WEIGHTS})
    answered = np.isfinite(points).all(axis=1)  # the points returned are the chosen map's
    assert np.median(np.hypot(*(points[answered] - val.target_m[answered]).T)) == pytest.approx(medians[best])


def test_a_map_whose_fields_mislead_is_weighed_with_its_log_distance_partner_alone_and_in_the_hybrid(
    model_file, tiny_store, tmp_path
):
    import dataclasses

    from heimdall.evaluation.grid_estimators import fit_map, hybrid_exponents, measured
    from heimdall.radiomap import io as map_io
    from heimdall.radiomap.answer_arrays import answers_of
    from heimdall.radiomap.log_distance import LOG_DISTANCE_WEIGHTS
    from heimdall.release.choice import ship
    from heimdall.release.judged_answers import model_answers
    from heimdall.release.map_attach import read_network

    train, val = load_test_set(tiny_store / "train.h5"), load_test_set(tiny_store / "val.h5", VALIDATION_SAMPLES)
    fitted, _ = fit_map(train, train, MapOptions(spacing_m=2000.0))
    assert fitted.log_distance is not None and fitted.log_distance.weight == 0.0
    # each receiver's map off by a smooth field of ±20 dB (as fields kriged from labels elsewhere), its spread 10 dB:
    # the log-distance model fitted on the same labels errs differently (on the map as fitted it does not help)
    east, north = fitted.grid.centres(np.arange(fitted.grid.n_cells)).T
    phase = np.arange(fitted.n_receivers)[None, :]
    field_db = 20.0 * np.sin(east[:, None] / 23e3 + phase) * np.cos(north[:, None] / 31e3 + 2 * phase)
    misled = dataclasses.replace(
        fitted,
        mean_dbm=(fitted.mean_dbm + field_db).astype(np.float32),
        spread_db=np.full_like(fitted.spread_db, 10.0),
    )
    shutil.copy(model_file, tmp_path / "model.onnx")
    network = read_network(tmp_path / "model.onnx", tmp_path / "model-map.onnx")
    predict = lambda t: onnx_predictions(network.data, t)  # noqa: E731
    fit = hybrid_exponents(misled, val, predict, labels_m=train.target_m, spread_floors_db=(0.0,))
    alone = hybrid_exponents(misled, val, predict, labels_m=train.target_m, spread_floors_db=(0.0,),
                             log_distance_weights=(0.0,))  # fmt: skip
    weight, medians = fit["log_distance"]["log_distance_weight"], fit["log_distance"]["median_error_m"]
    assert weight in LOG_DISTANCE_WEIGHTS and weight > 0 and medians[f"{weight:g}"] <= 0.98 * medians["0"]
    assert fit["candidates"]["map"]["log_distance_weight"] == weight
    assert fit["candidates"]["map"]["median_error_m"] < alone["candidates"]["map"]["median_error_m"]
    # the hybrid reads the map with the same partner (its spreads as fitted), and gains from it too
    assert fit["candidates"]["hybrid"]["log_distance_weight"] == weight
    assert fit["candidates"]["hybrid"]["median_error_m"] < alone["candidates"]["hybrid"]["median_error_m"]
    for localizer in ("map", "hybrid"):
        assert "the log-distance model fitted on its labels weighed in at" in choose(fit, localizer).reason
    # shipped: the map carries the weight whether it answers alone or with the network
    for localizer, expected in (("map", weight), ("hybrid", weight)):
        attached = ship(choose(fit, localizer), network, misled, fit, tmp_path / f"{localizer}.onnx")
        assert attached is not None and attached.fit["log_distance_weight"] == expected
        carried = map_io.from_onnx(onnx.load(str(attached.path)))
        assert carried.log_distance.weight == expected
        i = int(np.flatnonzero(val.heard.sum(axis=1) >= 3)[0])
        m = measured(val)
        got = carried.localize(m.snr_db[i], m.noise_dbm[i], m.present[i], m.heard[i]).mean_m
        want = misled.with_log_distance_weight(expected).localize(m.snr_db[i], m.noise_dbm[i], m.present[i], m.heard[i])
        np.testing.assert_allclose(got, want.mean_m, rtol=1e-6)
    # the shipped map model's own answers, as the service and predict give them, are the weighed map's
    served = model_answers((tmp_path / "map.onnx").read_bytes(), val, "shipped")
    weighed = answers_of(misled.with_log_distance_weight(weight), m.snr_db, m.noise_dbm, m.present, heard=m.heard)
    both = np.isfinite(served.mean_m).all(axis=1) & np.isfinite(weighed.mean_m).all(axis=1)
    assert both.sum() >= len(both) // 2
    np.testing.assert_allclose(served.mean_m[both], weighed.mean_m[both], rtol=0, atol=1e-6)
