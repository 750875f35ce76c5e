"""The service object on its own (no HTTP): loading, answering from its cache, and reload (swap or keep)."""

import asyncio
import json
import os
import time

import pytest

from heimdall.errors import Unavailable
from heimdall.release.export import export_checkpoint
from heimdall.scenario.schema import scenario_from_dict
from heimdall.serve.runtime import ModelSource
from heimdall.serve.service import LocalizationService
from heimdall.serve.settings import ServeSettings
from heimdall.train.task import untrained_checkpoint


def _model(scenario, folder, psd_bins: int):
    """A model with random weights for `scenario` with `psd_bins` PSD bins: its ONNX bytes."""
    d = scenario.to_dict()
    d["features"]["psd_bins"] = psd_bins
    folder.mkdir()
    checkpoint = untrained_checkpoint(scenario_from_dict(d), folder / "model.ckpt")
    return export_checkpoint(checkpoint, folder / "model.onnx").path.read_bytes()


def _replace(path, data: bytes) -> None:
    path.with_suffix(".tmp").write_bytes(data)
    os.replace(path.with_suffix(".tmp"), path)


def test_the_service_answers_from_its_cache_and_swaps_or_keeps_its_model_on_reload(nw_italy, tmp_path):
    first, second = _model(nw_italy, tmp_path / "a", 8), _model(nw_italy, tmp_path / "b", 16)
    served = tmp_path / "served.onnx"
    served.write_bytes(first)
    service = LocalizationService(ModelSource(file=str(served)), ServeSettings())
    body = json.dumps({"features": [{"id": r.id, "power_dbm": -90.0 - i} for i, r in enumerate(nw_italy.receivers)]})

    async def run() -> None:
        with pytest.raises(Unavailable, match="loading"):
            service.served()
        await service.start()
        try:
            old = service.served()
            answers = [json.loads((await service.localize(body.encode(), False, False, time.perf_counter()))[0])]
            answers.append(json.loads((await service.localize(body.encode(), False, False, time.perf_counter()))[0]))
            assert [a["cached"] for a in answers] == [False, True] and answers[0]["model"]["sha256"] == old.sha256
            assert len(service.cache.items) == 1

            _replace(served, b"not a model")
            with pytest.raises(Unavailable, match=f"reload failed, still serving {old.name} file"):
                await service.reload()
            assert service.served() is old and len(service.cache.items) == 1

            _replace(served, second)
            swapped = await service.reload()
            new = service.served()
            assert swapped == {"previous": "file", "current": "file", "sha256": new.sha256} and new.sha256 != old.sha256
            assert new.n_features != old.n_features and not service.cache.items
            again = json.loads((await service.localize(body.encode(), False, False, time.perf_counter()))[0])
            assert not again["cached"] and again["model"]["sha256"] == new.sha256
            metrics = service.metrics.text()
            assert "heimdall_reloads_total 1.0" in metrics and 'heimdall_cache_total{result="hit"} 1.0' in metrics
        finally:
            await service.stop()

    asyncio.run(run())
