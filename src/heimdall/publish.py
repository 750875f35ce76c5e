"""From a checkpoint to a served model: export (validated ONNX) → model store → MLflow registry.

Each step commits only when complete: the ONNX file appears after validation (with its manifest beside
it, ``<file>.manifest.json``), a store version with its manifest, the registry alias after the comparison.
A failed upload leaves the local ONNX file in place and no new version in the store. Given a signing key,
every manifest (file, store, registry) is signed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from heimdall.atomic import atomic_write_bytes
from heimdall.export import ExportResult, export_checkpoint
from heimdall.manifest import encode_manifest, new_manifest, sidecar_path
from heimdall.registry import REGISTERED_MODEL, Registration, register, summary_of
from heimdall.signing import SigningKey
from heimdall.store import ModelStore, ModelStoreError
from heimdall.workspace import default_tracking_uri, workspace


@dataclass
class PublishResult:
    export: ExportResult
    store: str | None = None
    store_version: int | None = None
    registration: Registration | None = None
    eval_metrics: dict | None = None


def default_store() -> str:
    return str(workspace() / "models")


def evaluation_set(checkpoint_meta: dict, eval_data: str | Path | None, max_samples: int = 20_000):
    """The test split the model is judged on: --eval-data, else the test split of the training data."""
    from heimdall.evaluate import load_test_set

    data = eval_data or (checkpoint_meta.get("config") or {}).get("data_dir")
    if not data:
        return None
    return load_test_set(data, max_samples)


def export_and_publish(checkpoint: str | Path, out: str | Path, store: str | None, s3_options: dict,
                       do_register: bool, eval_data: str | Path | None, tracking_uri: str | None,
                       name: str = REGISTERED_MODEL, signer: SigningKey | None = None) -> PublishResult:
    from heimdall.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    meta = ckpt["heimdall"]
    test = evaluation_set(meta, eval_data)
    metrics = None
    if test is not None:
        from heimdall.evaluate import model_predictions

        mean, cov = model_predictions(checkpoint, test)
        metrics = summary_of(mean, cov, test.target_m) | {"n_eval": len(test.features), "eval_data": test.source}
    exported = export_checkpoint(checkpoint, out, metrics=metrics)
    data = exported.path.read_bytes()
    manifest = new_manifest(name, None, data, meta.get("mlflow_run_id"), metadata=exported.metadata)
    atomic_write_bytes(sidecar_path(exported.path), encode_manifest(signer.sign(manifest) if signer else manifest))
    result = PublishResult(export=exported, eval_metrics=metrics)
    if store is not None:
        model_store = ModelStore.open(store, **s3_options)
        try:
            result.store_version = model_store.publish(name, data, exported.metadata,
                                                       parent_run=meta.get("mlflow_run_id"), signer=signer)
        except ModelStoreError as exc:
            raise ModelStoreError(f"{exc}; the exported model is kept at {exported.path}") from None
        result.store = model_store.backend.description
    if do_register and test is not None:
        uri = tracking_uri or (meta.get("config") or {}).get("tracking_uri") or default_tracking_uri()
        numeric = {k: v for k, v in metrics.items() if isinstance(v, float)}
        result.registration = register(data, numeric, test, uri, meta.get("mlflow_run_id"), name, signer=signer)
    return result
