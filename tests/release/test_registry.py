"""MLflow registry (sqlite store) and the champion rule: the champion moves only for a calibrated model whose errors
are smaller than the champion's, transmission by transmission, on the champion's own held-out evaluation set —
never on a handful of chosen transmissions, on training data, or on a set the champion was not judged on."""

import json

import h5py
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from heimdall.cli import main
from heimdall.evaluation.evaluate import onnx_predictions
from heimdall.evaluation.test_set import load_test_set
from heimdall.release.evaluation_set import MIN_TRANSMISSIONS, EvaluationSet
from heimdall.release.export import export_checkpoint
from heimdall.release.judged_answers import Answers, mahalanobis_sq
from heimdall.release.registry import (
    COVERAGE_TOLERANCE,
    EVALUATION_SET_TAG,
    SIGNIFICANCE,
    Judged,
    decide,
    judge,
    onnx_metrics,
    register,
    set_refusal,
)
from heimdall.train.checkpoint import AtomicCheckpointIO, load_checkpoint

NAME = "heimdall-localizer"


def _calibrated_answers(truth_m, error_m, rng, overconfidence=1.0):
    """Gaussian answers [n] `error_m` metres from the truths, in random directions, whose covariances make their
    squared Mahalanobis distances χ²₂ draws (calibrated; `overconfidence` > 1 shrinks the ellipses)."""
    angle = rng.uniform(0, 2 * np.pi, len(truth_m))
    mean = truth_m + error_m[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    sigma_m = error_m / np.sqrt(rng.chisquare(2, len(truth_m))) / overconfidence
    return Answers(mean, sigma_m[:, None, None] ** 2 * np.eye(2))


def test_decision_rule(held_out_store):
    evalset = EvaluationSet.of(load_test_set(held_out_store).head(300))
    truth = evalset.test.target_m
    rng = np.random.default_rng(5)
    error = rng.lognormal(np.log(9_000), 0.6, len(truth))
    good = Judged(evalset, _calibrated_answers(truth, error, rng))
    worse = Judged(evalset, _calibrated_answers(truth, error * 1.3, np.random.default_rng(6)))
    assert decide(good, None) == (True, "there was no champion")
    wins, why = decide(good, worse)
    assert wins and "beats the champion" in why and "Wilcoxon" in why and "300 evaluation transmissions" in why
    wins, why = decide(worse, good)
    assert not wins and "does not beat the champion" in why
    # a lower median error is not enough: better on the easy 60 %, much worse on the rest
    easy = error <= np.quantile(error, 0.6)
    mixed = Judged(evalset, _calibrated_answers(truth, np.where(easy, 0.97, 1.5) * error, np.random.default_rng(7)))
    assert np.median(mixed.error_m) < np.median(good.error_m)
    wins, why = decide(mixed, good)
    assert not wins and f"not below {SIGNIFICANCE:g}" in why
    # an over-confident model never wins, however accurate
    sharp = Judged(evalset, _calibrated_answers(truth, error * 0.5, rng, overconfidence=3.0))
    wins, why = decide(sharp, good)
    assert not wins and "coverage" in why and f"{COVERAGE_TOLERANCE:.0%}" in why
    # too few transmissions, or transmissions trained on: no decision at all
    assert f"fewer than the {MIN_TRANSMISSIONS}" in set_refusal(evalset.head(7), None)
    assert set_refusal(evalset, None) is None


@pytest.fixture(scope="module")
def models(tiny_run, held_out_store, tmp_path_factory):
    """name → (checkpoint, ONNX bytes): the tiny run's model (`good`); the same with every answer moved 60 km east
    (`shifted`); and with every answer moved by twice the good model's median error, its covariances widened to
    keep a mean squared Mahalanobis distance of 2 (`worse`)."""
    ws, _ = tiny_run
    folder = tmp_path_factory.mktemp("models")
    best = ws / "run" / "best.ckpt"
    out = {"good": (best, export_checkpoint(best, folder / "good.onnx").path.read_bytes())}
    for name, shift_m, factor in (("shifted", 60_000.0, 1.0), ("worse", None, None)):
        if shift_m is None:
            test = load_test_set(held_out_store)
            shift_m = 2.0 * onnx_metrics(out["good"][1], test)["median_error_m"]
            moved = _shifted(best, folder / "moved.ckpt", shift_m)
            factor = onnx_metrics(export_checkpoint(moved, folder / "moved.onnx").path.read_bytes(), test)
            factor = factor["mean_mahalanobis_sq"] / 2
        ckpt = _shifted(best, folder / f"{name}.ckpt", shift_m, factor)
        out[name] = (ckpt, export_checkpoint(ckpt, folder / f"{name}.onnx").path.read_bytes())
    return out


def _shifted(ckpt_path, out, shift_m, covariance_factor=1.0):
    """A worse copy of a model: every mean moved by shift_m metres east, covariances scaled."""
    ckpt = load_checkpoint(ckpt_path)
    scale = float(ckpt["state_dict"]["net.position_scale_m"])
    bias = ckpt["state_dict"]["net.head.2.bias"].view(-1, 6)
    bias[:, 0] += shift_m / scale
    ckpt["state_dict"]["net.head.2.bias"] = bias.view(-1)
    ckpt["state_dict"]["net.covariance_scale"] *= covariance_factor
    AtomicCheckpointIO().save_checkpoint(ckpt, out)
    return out


def _subset(store_file, rows, out):
    """A store file holding the transmissions `rows` of `store_file`, in that order (a hand-picked evaluation set)."""
    with h5py.File(store_file) as f, h5py.File(out, "w") as g:
        n = int(f.attrs["n_samples"])
        g.attrs.update(dict(f.attrs) | {"n_samples": len(rows)})

        def copy(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.shape and obj.shape[0] == n:
                g.create_dataset(name, data=obj[...][rows])
            elif isinstance(obj, h5py.Dataset):
                f.copy(obj, g.require_group(obj.parent.name), name=obj.name.rsplit("/", 1)[-1])

        f.visititems(copy)
    return out


def _export(checkpoint, out, eval_data, uri):
    """`heimdall export` of `checkpoint` judged on `eval_data`, registered at `uri` (no model store)."""
    argv = ["export", "--checkpoint", str(checkpoint), "--out", str(out), "--eval-data", str(eval_data)]
    assert main([*argv, "--tracking-uri", uri, "--no-store"]) == 0


def _version(client, version):
    """(alias, decision) of a registered version."""
    aliases = client.get_registered_model(NAME).aliases
    alias = next((a for a, v in aliases.items() if str(v) == str(version)), None)
    return alias, client.get_model_version(NAME, str(version)).tags["decision"]


def test_champion_and_challenger(models, held_out_store, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    evalset = EvaluationSet.of(load_test_set(held_out_store))
    good, worse = (judge(models[k][1], evalset, k) for k in ("good", "worse"))
    assert np.median(worse.error_m) > np.median(good.error_m) * 1.05

    tol = 0.2  # a model trained for seconds is only roughly calibrated; the rule itself is tested above
    first = register(models["good"][1], good, uri, None, tolerance=tol)
    assert first.alias == "champion" and first.reason == "there was no champion"
    client = MlflowClient(uri)
    recorded = json.loads(client.get_model_version(NAME, first.version).tags[EVALUATION_SET_TAG])
    assert recorded == evalset.record() and recorded["n"] == 600
    assert recorded["source"].endswith("/test.h5") and not recorded["source"].startswith("/")  # no machine's path
    second = register(models["worse"][1], worse, uri, None, tolerance=tol)
    assert second.alias == "challenger" and (
        "does not beat the champion" in second.reason or "coverage" in second.reason
    )
    assert second.champion_metrics["median_error_m"] == pytest.approx(good.metrics()["median_error_m"])
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == first.version
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == second.version
    # a better model takes over: the good one against the worse one as champion
    client.set_registered_model_alias(NAME, "champion", second.version)
    third = register(models["good"][1], good, uri, None, tolerance=tol)
    assert third.alias == "champion" and "beats the champion" in third.reason and "Wilcoxon" in third.reason
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == third.version
    mv = client.get_model_version(NAME, second.version)
    assert float(mv.tags["median_error_m"]) == pytest.approx(worse.metrics()["median_error_m"], rel=1e-5)
    # the registered model carries its signature
    import mlflow.models

    info = mlflow.models.get_model_info(f"models:/{NAME}/{first.version}")
    assert [i["name"] for i in info.signature.inputs.to_dict()] == ["features", "rx_position_m", "present"]


def test_a_model_refused_by_whoever_registers_it_is_a_challenger_whatever_its_answers(models, held_out_store, tmp_path):
    """A training run whose choice found every localizer worse than the weighted centroid registers its model with a
    refusal: a challenger with that reason although it is calibrated and there is no champion; its answers are kept."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    good = judge(models["good"][1], EvaluationSet.of(load_test_set(held_out_store)), "good")
    why = "the map is worse than the weighted centroid on validation (median 1.2 km): never champion"
    refused = register(models["good"][1], good, uri, None, tolerance=0.2, refusal=why)
    assert refused.alias == "challenger" and refused.reason == why
    assert refused.metrics["median_error_m"] == pytest.approx(good.metrics()["median_error_m"])
    assert _version(MlflowClient(uri, uri), refused.version) == ("challenger", why)
    # without answers to judge, the refusal is still the reason given
    assert register(models["good"][1], None, uri, None, refusal=why).reason == why
    # the same model and answers without the refusal: champion (the rule itself would have taken it)
    assert register(models["good"][1], good, uri, None, tolerance=0.2).alias == "champion"


def test_registrations_into_two_stores_in_one_process_each_land_in_their_runs_experiment(models, tmp_path):
    """A run-less registration (its own export experiment) in one store, then one into a training run of another
    store: no experiment is left active process-wide for the second to trip over (MLflow refuses a run whose
    experiment is not the active one)."""
    first_uri, second_uri = (f"sqlite:///{tmp_path / name}" for name in ("first.db", "second.db"))
    client = MlflowClient(second_uri, second_uri)  # (without a registry URI MLflow takes the process-wide one)
    for i in range(2):  # the second store's experiments get other ids than the first's
        client.create_experiment(f"other-{i}")
    register(models["good"][1], None, first_uri, None)
    experiment = client.create_experiment("training", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment)
    registered = register(models["good"][1], None, second_uri, run.info.run_id)
    assert client.get_model_version(NAME, registered.version).run_id == run.info.run_id
    assert registered.alias == "challenger"  # nothing to judge on: never champion


@pytest.mark.system  # a champion evaluation of its own: the first tier keeps test_champion_and_challenger
def test_a_model_shifted_60_km_does_not_win_on_7_chosen_transmissions(models, held_out_store, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _export(models["good"][0], tmp_path / "good.onnx", held_out_store, uri)
    client = MlflowClient(uri)
    client.set_registered_model_alias(NAME, "champion", "1")  # the champion, whatever its calibration
    test = load_test_set(held_out_store)
    good_mean, _ = onnx_predictions(models["good"][1], test)
    mean, cov = onnx_predictions(models["shifted"][1], test)
    good_error = np.linalg.norm(good_mean - test.target_m, axis=1)
    error = np.linalg.norm(mean - test.target_m, axis=1)
    assert np.median(error) > np.median(good_error) + 20_000  # worse on the whole held-out set
    # the 7 transmissions where it looks best, 3 inside its 1σ ellipse, 3 more inside 2σ, one outside: calibrated
    d2, gain = mahalanobis_sq(mean, cov, test.target_m), good_error - error
    rows = []
    for low, high, k in ((-1.0, 1.0, 3), (1.0, 4.0, 3), (4.0, np.inf, 1)):
        pool = np.flatnonzero((gain > 0) & (d2 > low) & (d2 <= high))
        assert len(pool) >= k
        rows += pool[np.argsort(-gain[pool])][:k].tolist()
    chosen = _subset(held_out_store / "test.h5", np.sort(rows), tmp_path / "chosen.h5")
    on_chosen = onnx_metrics(models["shifted"][1], load_test_set(chosen))
    assert on_chosen["median_error_m"] < np.median(good_error[rows])  # what a bare median would reward
    assert abs(on_chosen["coverage_1sigma"] - 3 / 7) < 1e-9 and abs(on_chosen["coverage_2sigma"] - 6 / 7) < 1e-9

    _export(models["shifted"][0], tmp_path / "shifted.onnx", chosen, uri)
    alias, decision = _version(client, 2)
    assert alias == "challenger", decision
    assert f"judged on 7 transmissions, fewer than the {MIN_TRANSMISSIONS}" in decision
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"


@pytest.mark.system  # a champion evaluation of its own: the first tier keeps test_champion_and_challenger
def test_an_evaluation_set_of_training_transmissions_decides_nothing(models, tiny_store, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _export(models["good"][0], tmp_path / "good.onnx", tiny_store / "train.h5", uri)  # the split it was trained on
    alias, decision = _version(MlflowClient(uri), 1)
    assert alias == "challenger", decision
    assert "1200 of its 1200 evaluation transmissions" in decision and "are in its training data" in decision
    # the same transmissions in another file, in another order, are recognised too
    rows = np.random.default_rng(0).permutation(1200)[:250]
    _export(models["good"][0], tmp_path / "good.onnx", _subset(tiny_store / "train.h5", rows, tmp_path / "t.h5"), uri)
    alias, decision = _version(MlflowClient(uri), 2)
    assert alias == "challenger" and "250 of its 250 evaluation transmissions" in decision


@pytest.mark.system  # a champion evaluation of its own: the first tier keeps test_champion_and_challenger
def test_a_challenger_is_compared_on_the_champions_own_evaluation_set(models, held_out_store, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = _subset(held_out_store / "test.h5", np.arange(300), tmp_path / "first.h5")
    other = _subset(held_out_store / "test.h5", np.arange(300, 600), tmp_path / "other.h5")
    _export(models["worse"][0], tmp_path / "worse.onnx", first, uri)
    client = MlflowClient(uri)
    client.set_registered_model_alias(NAME, "champion", "1")
    # a better model judged on other transmissions than the champion was: no comparison
    _export(models["good"][0], tmp_path / "good.onnx", other, uri)
    alias, decision = _version(client, 2)
    assert alias == "challenger", decision
    assert "the champion (version 1) was judged on 300 transmissions of" in decision
    assert "first.h5" in decision and "other.h5" in decision
    # judged on a set that begins with the champion's: both are compared on the champion's 300, and it wins
    evalset = EvaluationSet.of(load_test_set(held_out_store))
    registration = register(models["good"][1], judge(models["good"][1], evalset, "good"), uri, None, tolerance=0.2)
    assert registration.alias == "champion", registration.reason
    assert "beats the champion" in registration.reason and "on its 300 evaluation transmissions" in registration.reason
    assert registration.metrics["n_eval"] == 300  # what it was judged on: the champion's set


def test_export_command_publishes_to_the_store(tiny_run, tiny_store, capsys):
    ws, uri = tiny_run
    store = ws / "store"
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(ws / "run" / "best.ckpt"),
                "--out",
                str(ws / "cmd.onnx"),
                "--store",
                str(store),
                "--tracking-uri",
                uri,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "stored as version 1" in out and "registered heimdall-localizer version" in out
    from heimdall.release.model_store import ModelStore

    stored = ModelStore.open(store).fetch("heimdall-localizer")
    assert stored.data == (ws / "cmd.onnx").read_bytes()
    assert stored.manifest["metadata"]["scenario_sha256"]
    assert stored.manifest["parent_run"]
    import json

    embedded = json.loads(stored.manifest["metadata"]["metrics"])
    assert np.isfinite(embedded["median_error_m"]) and embedded["n_eval"] == 150
    # an unreachable S3 store: the command says so, keeps the local file, and nothing is half-done
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(ws / "run" / "best.ckpt"),
                "--out",
                str(ws / "kept.onnx"),
                "--store",
                "s3://models/x",
                "--s3-endpoint-url",
                "http://127.0.0.1:9",
                "--s3-access-key",
                "a",
                "--s3-secret-key",
                "b",
                "--no-register",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "Could not connect to the endpoint" in err and "kept at" in err
    assert (ws / "kept.onnx").is_file()


def test_parity_and_tampering(tiny_run, tmp_path):
    ws, _ = tiny_run
    from heimdall.errors import ExportError
    from heimdall.release.export import PARITY_TOLERANCE

    result = export_checkpoint(ws / "run" / "best.ckpt", tmp_path / "m.onnx")
    assert result.max_abs_diff <= PARITY_TOLERANCE
    import onnx

    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert not list(tmp_path.glob("*.data"))  # one self-contained file
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input]
    assert all(isinstance(d[0], str) and isinstance(d[1], str) for d in dims)  # dynamic batch and receivers
    # a corrupted checkpoint never produces a file
    broken = load_checkpoint(ws / "run" / "best.ckpt")
    broken["state_dict"]["net.head.2.weight"] = torch.full_like(broken["state_dict"]["net.head.2.weight"], float("nan"))
    AtomicCheckpointIO().save_checkpoint(broken, tmp_path / "nan.ckpt")
    with pytest.raises(ExportError):
        export_checkpoint(tmp_path / "nan.ckpt", tmp_path / "nan.onnx")
    assert not (tmp_path / "nan.onnx").exists() and not list(tmp_path.glob("*.partial"))
