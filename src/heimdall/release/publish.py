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
from heimdall.budget import OutOfTime, TimeBudget
from heimdall.datasets.store import split_files
from heimdall.errors import ExportError, ModelStoreError
from heimdall.evaluation.evaluate import task_predictor
from heimdall.evaluation.test_set import TestSet, load_test_set
from heimdall.manifest import encode_manifest, new_manifest, sidecar_path
from heimdall.radiomap.fit import MapOptions
from heimdall.release import MODEL_NAME
from heimdall.release.choice import (
    AUTO,
    NETWORK,
    Choice,
    choose_and_attach,
    describe_medians,
    miscalibration,
    worse_than,
)
from heimdall.release.evaluation_set import EvaluationSet, training_rows
from heimdall.release.export import ExportResult, export_task, metadata_of
from heimdall.release.judged_answers import Answers
from heimdall.release.map_attach import AttachedMap
from heimdall.release.map_metadata import FIT_KEY
from heimdall.release.model_store import ModelStore
from heimdall.release.registry import Judged, Registration, calibrated, judge, register, registry_client
from heimdall.signing import SigningKey
from heimdall.train.config import TrainConfig, from_mapping
from heimdall.train.model_card import ModelCard
from heimdall.workspace import default_tracking_uri

# the first transmissions of an evaluation set the champion rule judges on: a paired test and coverages (standard error
# under 0.7 points) that need no more, at a bounded cost for a map-carrying model (a posterior per transmission)
EVALUATION_SAMPLES = 5_000


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


def evaluation_set(data_dir: str | None, eval_data: str | Path | None) -> EvaluationSet | None:
    """The test split the model is judged on (its first EVALUATION_SAMPLES transmissions): `eval_data` (an error
    when unusable), else the test split of the training data when this machine has it; None when neither."""
    if eval_data:
        return EvaluationSet.of(load_test_set(eval_data, EVALUATION_SAMPLES))
    if data_dir and split_files(Path(data_dir), "test"):
        return EvaluationSet.of(load_test_set(data_dir, EVALUATION_SAMPLES))
    return None


@dataclass
class Exported:
    """The network exported by `export_network`: the export, its model bytes and metadata, the run's configuration
    and MLflow run, and the evaluation set with the network judged on it (None without one)."""

    export: ExportResult
    data: bytes
    run: TrainConfig
    run_id: str | None
    evalset: EvaluationSet | None
    judged: Judged | None


@dataclass
class Shipped:
    """What goes to the store and the registry (`ship`): the model bytes, their manifests' metadata, how they were
    judged, the choice of localizer and the map-carrying model when one is shipped."""

    data: bytes
    metadata: dict[str, str]
    judged: Judged | None
    choice: Choice | None = None
    attached: AttachedMap | None = None


def export_and_publish(
    checkpoint: str | Path,
    out: str | Path,
    *,
    options: PublishOptions = PublishOptions(),
    budget: TimeBudget | None = None,
) -> PublishResult:
    """Export `checkpoint` to `out` and publish it as `options` say; returns what was done. The steps in order:
    export_network → choose_localizer → ship → store_and_register. `budget`: the deadline and progress of the steps
    after training, and where their phase times go ("export", "map fit", "choice", "evaluation", "champion
    evaluation", "registration")."""
    budget = budget or TimeBudget()
    network = export_network(checkpoint, out, options, budget)
    uri = options.tracking_uri or network.run.tracking_uri or default_tracking_uri()
    choice, attached = choose_localizer(network, options, uri, budget)
    shipped = ship(network, choice, attached, options.localizer, uri, budget)
    result = PublishResult(
        export=network.export,
        eval_metrics=None if shipped.judged is None else shipped.judged.metrics(),
        choice=shipped.choice,
        attached=shipped.attached,
    )
    store = Path(network.run.data_dir) if network.run.data_dir else None
    training = [*split_files(store, "train")] if store is not None and store.is_dir() else []
    result.store, result.store_version, result.registration = store_and_register(
        shipped.data,
        shipped.metadata,
        network.run_id,
        shipped.judged,
        options,
        uri,
        result.path,
        training,
        budget,
        refusal=centroid_refusal(shipped.choice),
    )
    return result


def centroid_refusal(choice: Choice | None) -> str | None:
    """Why a shipped model may not become champion (heimdall.release.registry): the choice found it worse than the
    weighted centroid on validation, the closest of localizers that all were (or forced); None otherwise."""
    if choice is None or not choice.worse_than_centroid:
        return None
    return (
        f"the {choice.localizer} is worse than the weighted centroid on validation "
        f"({describe_medians(choice.medians[choice.localizer])}; the centroid's {describe_medians(choice.centroid)}): "
        "never champion"
    )


def export_network(checkpoint: str | Path, out: str | Path, options: PublishOptions, budget: TimeBudget) -> Exported:
    """Read `checkpoint` (once), judge its network on the evaluation set (`options.eval_data`, else the training
    store's test split when present), write the validated ONNX file `out` with its manifest (signed given a
    signer); phase "export"."""
    from heimdall.train.task import load_task

    with budget.phase("export"):
        task = load_task(checkpoint)
        where = str(checkpoint)
        run = from_mapping(task.heimdall_meta.get("config") or {}, f"{where}: heimdall.config")
        evalset = evaluation_set(run.data_dir, options.eval_data)
        judged = None if evalset is None else Judged(evalset, Answers(*task_predictor(task)(evalset.test)))
        metrics = None if judged is None else judged.metrics()
        exported = export_task(task, out, where, metrics=metrics)
        run_id = exported.card.mlflow_run_id or None
        data = exported.path.read_bytes()
        manifest = new_manifest(options.name, None, data, run_id, metadata=exported.metadata)
        signer = options.signer
        atomic_write_bytes(sidecar_path(exported.path), encode_manifest(signer.sign(manifest) if signer else manifest))
    return Exported(exported, data, run, run_id, evalset, judged)


def choose_localizer(
    network: Exported, options: PublishOptions, tracking_uri: str, budget: TimeBudget
) -> tuple[Choice | None, AttachedMap | None]:
    """With a localizer other than the network: fit the map on the training store, compare network, map and hybrid
    on its validation split (heimdall.release.choice), write the map-carrying model when a map wins and log the
    choice to the training run; (None, None) for the network alone. Phases "map fit" and "choice"."""
    if options.localizer == NETWORK:
        return None, None
    store = Path(network.run.data_dir) if network.run.data_dir else None
    choice, attached = choose_and_attach(
        network.export.path, store, options.localizer, options.signer, options.map_options, budget
    )
    log_choice(tracking_uri, network.run_id, choice)
    return choice, attached


def ship(
    network: Exported,
    choice: Choice | None,
    attached: AttachedMap | None,
    localizer: str,
    tracking_uri: str,
    budget: TimeBudget,
) -> Shipped:
    """What is shipped: the map-carrying model, judged by its own answers on the evaluation set (phase
    "evaluation"), unless the champion rule or the time budget makes an automatic choice give way to the network
    (the choice's reason says so, and is logged again); else the network as exported."""
    net = Shipped(network.data, network.export.metadata, network.judged, choice)
    if attached is None:
        return net
    assert choice is not None
    map_data = attached.path.read_bytes()
    map_judged, instead = judge_map_model(map_data, network.evalset, attached, localizer, network.judged, budget)
    if map_judged is not None and instead is not None and network_worse_than_centroid(choice):
        # never give way on calibration to a network the choice found worse than the weighted centroid: the map
        # model is shipped (the champion rule may keep it a challenger)
        choice = replace(
            choice,
            reason=f"{choice.reason}; the {choice.localizer} {instead}, but the network is worse than the weighted "
            "centroid on validation: the map model is shipped all the same",
        )
        instead = None
    if instead is None:
        metadata = map_model_metadata(network.export.metadata, map_data)
        return Shipped(map_data, metadata, map_judged, choice, attached)
    net.choice = giving_way(choice, instead, attached.path.name)
    log_choice(tracking_uri, network.run_id, net.choice)
    return net


def giving_way(choice: Choice, instead: str, kept: str) -> Choice:
    """The choice once its map or hybrid gives way to the network (`instead`: why; `kept`: the map model's file name,
    kept for --model-file): the network shipped, flagged `worse_than_centroid` when the choice found it so (a map
    not judged within the time budget gives way even to such a network)."""
    worse = network_worse_than_centroid(choice)
    reason = f"{choice.reason}; but the {choice.localizer} {instead}: the network is shipped ({kept} is kept for "
    reason += "--model-file)" + ("; the network is WORSE than the weighted centroid on validation" if worse else "")
    return replace(choice, localizer=NETWORK, reason=reason, worse_than_centroid=worse)


def judge_map_model(
    data: bytes,
    evalset: EvaluationSet | None,
    attached: AttachedMap,
    localizer: str,
    network: Judged | None,
    budget: TimeBudget,
) -> tuple[Judged | None, str | None]:
    """(the map-carrying model's own answers on the evaluation set, None) — or (those answers, or None when they were
    not computed, and why the network is shipped instead): an automatic choice gives way when the champion rule finds
    the map model miscalibrated there and the network calibrated, or when its evaluation does not finish within the
    time budget."""
    if evalset is None:
        return None, None
    try:
        with budget.phase("evaluation"):
            judged = judge(data, evalset, str(attached.path), budget)
    except OutOfTime as exc:
        if localizer != AUTO:
            raise ExportError(
                f"--localizer {localizer}: {attached.path} was not judged within the run's time budget ({exc}); "
                "publish it with `heimdall map fit … --register`, or give the run more --max-time-minutes"
            ) from None
        return None, f"was not judged on the evaluation set within the run's time budget ({exc})"
    if ships_network_instead(localizer, judged.metrics(), network.metrics() if network is not None else None):
        return judged, (
            f"fails the champion rule's calibration on the evaluation set ({miscalibration(judged.metrics())}) where "
            "the network passes"
        )
    return judged, None


def network_worse_than_centroid(choice: Choice) -> bool:
    """Whether the choice found the network's validation median error larger than the weighted centroid's."""
    return bool(choice.centroid) and worse_than(choice.medians.get(NETWORK, {}), choice.centroid)


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


def publish_map_model(
    attached: AttachedMap, data_store: Path, options: PublishOptions, budget: TimeBudget | None = None
) -> PublishedMap:
    """Put a map-carrying model written by `heimdall map fit` / `map update` into the model store and the registry
    as `options` say, judged on `options.eval_data`, else on the test split of `data_store` when it has one (never
    on transmissions of the store's training split or of the labels its map was fitted on)."""
    budget = budget or TimeBudget()
    data = attached.path.read_bytes()
    where = str(attached.path)
    card = ModelCard.from_onnx_metadata(metadata_of(data), where, ExportError)
    evalset = evaluation_set(str(data_store), options.eval_data)
    judged = None
    if evalset is not None:
        with budget.phase("evaluation"):
            judged = judge(data, evalset, where, budget)
    run_id = card.mlflow_run_id or None
    uri = options.tracking_uri or default_tracking_uri()
    metadata = map_model_metadata(card.to_onnx_metadata(), data)
    training = split_files(data_store, "train") if data_store.is_dir() else []
    added = (attached.labels_added,) if attached.labels_added is not None else ()
    stored = store_and_register(data, metadata, run_id, judged, options, uri, attached.path, training, budget, added)
    return PublishedMap(*stored, None if judged is None else judged.metrics())


def store_and_register(
    data: bytes,
    metadata: dict[str, str],
    run_id: str | None,
    judged: Judged | None,
    options: PublishOptions,
    tracking_uri: str,
    kept_at: Path,
    training: list[Path],
    budget: TimeBudget,
    labels: tuple[TestSet, ...] = (),
    refusal: str | None = None,
) -> tuple[str | None, int | None, Registration | None]:
    """Put a written model (`data`, kept at `kept_at`) into the model store and the registry as `options` say:
    (store description, store version, registration), None where not done. The champion rule judges it by
    `judged` and refuses an evaluation set that shares transmissions with the store files `training` or the sets
    `labels` (what it was fitted on); `refusal`: why it may not be champion at all (registry.register)."""
    store = version = registration = None
    with budget.phase("registration"):
        if options.store is not None:
            model_store = ModelStore.open(options.store, **options.s3_options)
            try:
                version = model_store.publish(options.name, data, metadata, parent_run=run_id, signer=options.signer)
            except ModelStoreError as exc:
                raise ModelStoreError(f"{exc}; the exported model is kept at {kept_at}") from None
            store = model_store.backend.description
        if options.register:
            rows = training_rows(training, labels) if judged is not None else None
            registration = register(
                data,
                judged,
                tracking_uri,
                run_id,
                options.name,
                signer=options.signer,
                training=rows,
                budget=budget,
                refusal=refusal,
            )
    return store, version, registration


def log_choice(tracking_uri: str, run_id: str | None, choice: Choice) -> None:
    """Record the choice in the training run (when this tracking store has it): metrics `val_nll_<localizer>` and
    `val_temperature` (of a map shipped), tags `localizer`, `localizer_reason` and `worse_than_centroid`."""
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
    client.set_tag(run_id, "worse_than_centroid", str(choice.worse_than_centroid).lower())
    if choice.localizer in choice.temperature:
        client.log_metric(run_id, "val_temperature", choice.temperature[choice.localizer])
