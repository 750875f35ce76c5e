"""From a checkpoint to a served model: export (validated ONNX) → model store → MLflow registry.

Each step commits only when complete: the ONNX file appears after validation (with its manifest beside
it, ``<file>.manifest.json``), a store version with its manifest, the registry alias after the comparison.
A failed upload leaves the local ONNX file in place and no new version in the store. Given a signing key,
every manifest (file, store, registry) is signed. The checkpoint is read once. Publishing never needs the
training data: the model is judged on `eval_data` when given, else on the training data's test split when it is
on this machine, else it is registered as a challenger without comparison (heimdall.release.registry).
With a `localizer` other than the network, the network, the radio map and their hybrid are compared on the training
store (heimdall.release.choice); when a map wins, the map-carrying model is what goes to the store and the registry,
judged by its own answers, and the choice is logged to the training run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from heimdall.atomic import atomic_write_bytes
from heimdall.datasets.store import split_files
from heimdall.errors import ExportError, ModelStoreError
from heimdall.evaluation.evaluate import task_predictor
from heimdall.evaluation.test_set import TestSet, load_test_set
from heimdall.manifest import encode_manifest, new_manifest, sidecar_path
from heimdall.radiomap.fit import MapOptions
from heimdall.release import MODEL_NAME
from heimdall.release.choice import AUTO, NETWORK, Choice, choose_and_attach, miscalibration
from heimdall.release.export import ExportResult, export_task, metadata_of
from heimdall.release.map_attach import AttachedMap
from heimdall.release.map_metadata import FIT_KEY
from heimdall.release.model_answers import MAP_EVALUATION_SAMPLES
from heimdall.release.model_store import ModelStore
from heimdall.release.registry import Registration, calibrated, onnx_metrics, register, registry_client, summary_of
from heimdall.signing import SigningKey
from heimdall.train.config import from_mapping
from heimdall.train.model_card import ModelCard
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
    localizer: str = NETWORK  # what is shipped: network, or map / hybrid / auto (heimdall.release.choice)
    map_options: MapOptions = field(default_factory=MapOptions)  # the map fitted for a localizer other than network


@dataclass
class PublishResult:
    """What publishing did: the export, the store version, the registration and the evaluation it used."""

    export: ExportResult
    store: str | None = None
    store_version: int | None = None
    registration: Registration | None = None
    eval_metrics: dict | None = None
    choice: Choice | None = None  # with a localizer other than the network: the comparison and its outcome
    attached: AttachedMap | None = None  # the map-carrying model shipped instead of the network's export

    @property
    def path(self) -> Path:
        """The ONNX file published: the map-carrying model when one was shipped, else the network's."""
        return self.attached.path if self.attached is not None else self.export.path

    @property
    def sha256(self) -> str:
        """The sha256 of the file published."""
        return self.attached.sha256 if self.attached is not None else self.export.sha256


@dataclass
class PublishedMap:
    """Where a map-carrying model went: the store and its version, the registration, the metrics it was judged by."""

    store: str | None
    store_version: int | None
    registration: Registration | None
    eval_metrics: dict | None


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
    metadata = exported.metadata
    uri = options.tracking_uri or run.tracking_uri or default_tracking_uri()
    choice, attached = None, None
    if options.localizer != NETWORK:
        store = Path(run.data_dir) if run.data_dir else None
        choice, attached = choose_and_attach(exported.path, store, options.localizer, signer, options.map_options)
        log_choice(uri, run_id, choice)
    if attached is not None:  # shipped and judged as the map-carrying model it is
        map_data = attached.path.read_bytes()
        map_test, map_metrics = map_model_metrics(map_data, test, str(attached.path))
        if ships_network_instead(options.localizer, map_metrics, metrics):
            assert choice is not None and map_metrics is not None
            choice = replace(
                choice,
                localizer=NETWORK,
                reason=f"{choice.reason}; but on the evaluation set the {choice.localizer} fails the champion rule's "
                f"calibration ({miscalibration(map_metrics)}) where the network passes: the network is shipped "
                f"({attached.path.name} is kept for --model-file)",
            )
            log_choice(uri, run_id, choice)
            attached = None
        else:
            data, test, metrics = map_data, map_test, map_metrics
            metadata = map_model_metadata(exported.metadata, data)
    result = PublishResult(export=exported, eval_metrics=metrics, choice=choice, attached=attached)
    result.store, result.store_version, result.registration = store_and_register(
        data, metadata, run_id, test, metrics, options, uri, result.path
    )
    return result


def ships_network_instead(localizer: str, map_metrics: dict | None, network_metrics: dict | None) -> bool:
    """Whether an automatically chosen map or hybrid gives way to the network: on the evaluation set the champion
    rule finds the map model miscalibrated and the network calibrated (what is shipped should be what is served)."""
    if localizer != AUTO or map_metrics is None or network_metrics is None:
        return False
    return not calibrated(map_metrics) and calibrated(network_metrics)


def map_model_metadata(network_metadata: dict[str, str], data: bytes) -> dict[str, str]:
    """The metadata a map-carrying model's manifests hold: its network's card and its FIT_KEY entry (as
    heimdall.release.map_attach writes its manifest)."""
    return {**network_metadata, FIT_KEY: metadata_of(data)[FIT_KEY]}


def map_model_metrics(data: bytes, test: TestSet | None, where: str) -> tuple[TestSet | None, dict | None]:
    """(the evaluation rows, the metrics) a map-carrying model is judged on: its own answers on the first
    MAP_EVALUATION_SAMPLES transmissions of `test` (None, None without an evaluation set)."""
    if test is None:
        return None, None
    test = test.head(MAP_EVALUATION_SAMPLES)
    return test, onnx_metrics(data, test, where) | {"n_eval": len(test.target_m), "eval_data": test.source}


def publish_map_model(attached: AttachedMap, data_store: Path, options: PublishOptions) -> PublishedMap:
    """Put a map-carrying model written by `heimdall map fit` / `map update` into the model store and the registry
    as `options` say, judged on `options.eval_data`, else on the test split of `data_store` when it has one."""
    data = attached.path.read_bytes()
    where = str(attached.path)
    card = ModelCard.from_onnx_metadata(metadata_of(data), where, ExportError)
    test, metrics = map_model_metrics(data, evaluation_set(str(data_store), options.eval_data), where)
    run_id = card.mlflow_run_id or None
    uri = options.tracking_uri or default_tracking_uri()
    metadata = map_model_metadata(card.to_onnx_metadata(), data)
    return PublishedMap(
        *store_and_register(data, metadata, run_id, test, metrics, options, uri, attached.path), metrics
    )


def store_and_register(
    data: bytes,
    metadata: dict[str, str],
    run_id: str | None,
    test: TestSet | None,
    metrics: dict | None,
    options: PublishOptions,
    tracking_uri: str,
    kept_at: Path,
) -> tuple[str | None, int | None, Registration | None]:
    """Put a written model (`data`, kept at `kept_at`) into the model store and the registry as `options` say:
    (store description, store version, registration), None where not done."""
    store = version = registration = None
    if options.store is not None:
        model_store = ModelStore.open(options.store, **options.s3_options)
        try:
            version = model_store.publish(options.name, data, metadata, parent_run=run_id, signer=options.signer)
        except ModelStoreError as exc:
            raise ModelStoreError(f"{exc}; the exported model is kept at {kept_at}") from None
        store = model_store.backend.description
    if options.register:
        numeric = {k: v for k, v in metrics.items() if isinstance(v, float)} if metrics is not None else None
        registration = register(data, numeric, test, tracking_uri, run_id, options.name, signer=options.signer)
    return store, version, registration


def log_choice(tracking_uri: str, run_id: str | None, choice: Choice) -> None:
    """Record the choice in the training run (when this tracking store has it): metrics `val_nll_<localizer>`, tag
    `localizer`."""
    if run_id is None:
        return
    from mlflow.exceptions import MlflowException

    client = registry_client(tracking_uri)
    try:
        client.get_run(run_id)
    except MlflowException:
        return  # trained against another tracking server
    for name, nll in choice.nll.items():
        client.log_metric(run_id, f"val_nll_{name}", nll)
    client.set_tag(run_id, "localizer", choice.localizer)
    client.set_tag(run_id, "localizer_reason", choice.reason)
