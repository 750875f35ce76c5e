import numpy as np
import pytest

from heimdall.scenario.builtin import load_scenario
from heimdall.sim.generator import build_world, simulate_block
from tiny import tiny_train_args


@pytest.fixture(scope="session")
def nw_italy():
    return load_scenario("nw-italy")


@pytest.fixture(scope="session")
def world(nw_italy):
    return build_world(nw_italy)


@pytest.fixture(scope="session")
def block(world):
    """About 1,500 accepted transmissions of the default scenario, with oracle quantities."""
    rng = np.random.default_rng(1234)
    parts = [simulate_block(world, rng, 512) for _ in range(4)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@pytest.fixture(scope="session")
def tiny_store(nw_italy, tmp_path_factory):
    """A small simulated store (1,200 / 150 / 150 transmissions) for training tests."""
    from heimdall.datasets.generate import generate_dataset
    from heimdall.datasets.spec import DatasetSpec

    out = tmp_path_factory.mktemp("tiny")
    generate_dataset(nw_italy, out, DatasetSpec(n_transmissions=1500, seed=21, iq_per_split=8))
    return out


@pytest.fixture(scope="session")
def held_out_store(nw_italy, tmp_path_factory):
    """600 transmissions of the default scenario simulated apart from tiny_store (another seed), a test split only:
    an evaluation set for the champion rule, which decides on at least 200 transmissions none of which were
    trained on."""
    from heimdall.datasets.generate import generate_dataset
    from heimdall.datasets.spec import DatasetSpec

    out = tmp_path_factory.mktemp("held-out")
    generate_dataset(nw_italy, out, DatasetSpec(n_transmissions=600, seed=97, fractions=(0, 0, 1), iq_per_split=0))
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_store, tmp_path_factory):
    """A model trained for 3 short epochs on tiny_store: (workspace, tracking URI); run folder ws/run."""
    from heimdall.cli import main

    ws = tmp_path_factory.mktemp("tinyrun")
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    assert main(tiny_train_args(tiny_store, ws / "run", uri, "--no-export", epochs=3)) == 0
    return ws, uri


@pytest.fixture
def fsynced(monkeypatch):
    """The paths os.fsync is called on, in order, from now on (the real fsync still runs)."""
    import os

    paths = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    return paths


@pytest.fixture(scope="session")
def model_file(tiny_run, tmp_path_factory):
    """tiny_run's best checkpoint exported to ONNX (the model the service tests serve)."""
    from heimdall.release.export import export_checkpoint

    ws, _ = tiny_run
    return export_checkpoint(ws / "run" / "best.ckpt", tmp_path_factory.mktemp("srv") / "model.onnx").path


@pytest.fixture(scope="session")
def store_rows(tiny_store):
    """The first 8 test transmissions of tiny_store: receiver ids, features, IQ and receiver positions."""
    import h5py

    with h5py.File(tiny_store / "test.h5") as f:
        ids = list(f["receivers/id"].asstr()[...])
        return {
            "ids": ids,
            "features": f["features"][:8],
            "iq": f["iq"][:8],
            "rx": np.stack([f["receivers/east_m"][...], f["receivers/north_m"][...]], -1).astype(np.float32),
        }


@pytest.fixture(scope="session")
def map_model_file(tiny_store, model_file, tmp_path_factory):
    """model_file with a radio map fitted on tiny_store attached (`heimdall map fit`, a coarse 2 km grid)."""
    from heimdall.cli import main

    out = tmp_path_factory.mktemp("map") / "model-map.onnx"
    args = ["map", "fit", str(tiny_store), "--model", str(model_file), "--out", str(out), "--spacing-m", "2000"]
    assert main([*args, "--quiet"]) == 0
    return out
