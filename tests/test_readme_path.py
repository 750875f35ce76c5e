"""The README's path, exactly: `heimdall train` then `heimdall serve` with no model flags (the registry's champion)."""

import h5py
import httpx
import pytest
from mlflow.tracking import MlflowClient

from heimdall.cli import main
from service_process import running_service
from tiny import tiny_train_args

pytestmark = pytest.mark.system


def test_train_then_serve_the_champion(tiny_store, held_out_store, tmp_path, monkeypatch):
    ws, cwd, store = tmp_path / "workspace", tmp_path / "cwd", tmp_path / "store"
    cwd.mkdir()
    store.mkdir()  # tiny_store with a test split large enough for the champion rule (at least 200 transmissions)
    for split, source in (("train", tiny_store), ("val", tiny_store), ("test", held_out_store)):
        (store / f"{split}.h5").symlink_to(source / f"{split}.h5")
    monkeypatch.setenv("HEIMDALL_WORKSPACE", str(ws))
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # MLflow sets them in-process: restore after
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)
    monkeypatch.chdir(cwd)
    # the smallest training whose first model is calibrated enough to become champion (after 1 epoch the
    # 1σ coverage is about 31 %, more than 5 points from ideal, and the version is only challenger)
    assert main(tiny_train_args(store, None, None, "--batch-size", "64", epochs=8)) == 0
    registry = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}", f"sqlite:///{ws / 'mlflow.db'}")
    assert str(registry.get_model_version_by_alias("heimdall-localizer", "champion").version) == "1"

    with h5py.File(tiny_store / "test.h5") as f:
        ids, features = list(f["receivers/id"].asstr()[...]), f["features"][0]
    body = {"features": [{"id": rid, "features": features[i].tolist()} for i, rid in enumerate(ids)]}
    env = {"HEIMDALL_WORKSPACE": str(ws), "MLFLOW_TRACKING_URI": None, "MLFLOW_REGISTRY_URI": None}
    with running_service(None, cwd=cwd, env=env) as url:
        assert httpx.get(f"{url}/readyz").json() == {"status": "ready", "model": "1"}
        answer = httpx.post(f"{url}/v1/localize", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        assert {k: answer.json()["model"][k] for k in ("name", "version")} == {
            "name": "heimdall-localizer",
            "version": "1",
        }
    assert sorted(p.name for p in cwd.iterdir()) == []  # no ./mlflow.db, ./mlruns or anything else here
