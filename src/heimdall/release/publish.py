"""From a checkpoint to a served model: export (validated ONNX) → model store → MLflow registry.

Each step commits only when complete: the ONNX file appears after validation (with its manifest beside
it, ``<file>.manifest.json``), a store version with its manifest, the registry alias after the comparison.
A failed upload leaves the local ONNX file in place and no new version in the store. Given a signing key,
every manifest (file, store, registry) is signed. The checkpoint is read once. Publishing never needs the
training data: the model is judged on `eval_data` when given, else on the training data's test split when it is
on this machine, else it is registered as a challenger without comparison (heimdall.release.registry).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heimdall.atomic import atomic_write_bytes
from heimdall.datasets.store import split_files
from heimdall.errors import ModelStoreError
from heimdall.evaluation.evaluate import task_predictor
from heimdall.evaluation.test_set import TestSet, load_test_set
from heimdall.manifest import encode_manifest, new_manifest, sidecar_path
from heimdall.release import MODEL_NAME
from heimdall.release.export import ExportResult, export_task
from heimdall.release.model_store import ModelStore
from heimdall.release.registry import Registration, register, summary_of
from heimdall.signing import SigningKey
from heimdall.train.config import from_mapping
from heimdall.workspace import default_tracking_uri

EVALUATION_SAMPLES = 20_000  # transmissions of the evaluation set the champion rule judges on


@dataclass(frozen=True)
class PublishOptions:
    """Where an exported model goes besides its ONNX file, and how it is judged and signed."""

    store: str | None = None  # a folder or s3://bucket/prefix; None: the ONNX file only
    s3_options: dict[str, Any] = field(default_factory=dict)  # endpoint_url, access_key, secret_key
    register: bool = True  # register in MLflow (a challenger when there is no evaluation set)
    eval_data: str | Path | None = None  # store folder or test .h5; default: the training data's test split if present
    tracking_uri: str | None = None  # default: the training run's, else heimdall.workspace.default_tracking_uri()
    name: str = MODEL_NAME
    signer: SigningKey | None = None


@dataclass
class PublishResult:
    """What publishing did: the export, the store version, the registration and the evaluation it used."""

    export: ExportResult
    store: str | None = None
    store_version: int | None = None
    registration: Registration | None = None
    eval_metrics: dict | None = None


def evaluation_set(data_dir: str | None, eval_data: str | Path | None) -> TestSet | None:
    """The test split the model is judged on: `eval_data` (an error when unusable), else the test split of the
    training data when this machine has it; None when neither."""
    if eval_data:
        return load_test_set(eval_data, EVALUATION_SAMPLES)
    if data_dir and split_files(Path(data_dir), "test"):
        return load_test_set(data_dir, EVALUATION_SAMPLES)
    return None


def export_and_publish(
    checkpoint: str | Path, out: str | Path, *, options: PublishOptions = PublishOptions()
) -> PublishResult:
    """Export `checkpoint` to `out` and publish it as `options` say; returns what was done."""
    from heimdall.train.task import load_task

    task = load_task(checkpoint)
    where = str(checkpoint)
    run = from_mapping(task.heimdall_meta.get("config") or {}, f"{where}: heimdall.config")
    test = evaluation_set(run.data_dir, options.eval_data)
    metrics = None
    if test is not None:
        mean, cov = task_predictor(task)(test)
        metrics = summary_of(mean, cov, test.target_m) | {"n_eval": len(test.features), "eval_data": test.source}
    exported = export_task(task, out, where, metrics=metrics)
    run_id = exported.card.mlflow_run_id or None
    data = exported.path.read_bytes()
    manifest = new_manifest(options.name, None, data, run_id, metadata=exported.metadata)
    signer = options.signer
    atomic_write_bytes(sidecar_path(exported.path), encode_manifest(signer.sign(manifest) if signer else manifest))
    result = PublishResult(export=exported, eval_metrics=metrics)
    if options.store is not None:
        model_store = ModelStore.open(options.store, **options.s3_options)
        try:
            result.store_version = model_store.publish(
                options.name, data, exported.metadata, parent_run=run_id, signer=signer
            )
        except ModelStoreError as exc:
            raise ModelStoreError(f"{exc}; the exported model is kept at {exported.path}") from None
        result.store = model_store.backend.description
    if options.register:
        uri = options.tracking_uri or run.tracking_uri or default_tracking_uri()
        numeric = {k: v for k, v in metrics.items() if isinstance(v, float)} if metrics is not None else None
        result.registration = register(data, numeric, test, uri, run_id, options.name, signer=signer)
    return result
