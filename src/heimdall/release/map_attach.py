"""A network model with a radio map attached (`heimdall map fit`): one new, self-contained ONNX file.

The map is fitted on a store's labelled training split (self-calibrated on its recordings when it has no
labels: the `unlabelled` split), the hybrid's exponents are chosen on the validation split with the given
network (heimdall.evaluation.grid_estimators), and the map's tensors and description (heimdall.radiomap.io) plus one
metadata entry, FIT_KEY (heimdall.release.map_metadata: the exponents and the map's provenance), are added to a
copy of the network model.
The result is a new model (new bytes, new sha256): it gets its own manifest beside it, signed when a key is
given. The store must have the model's receivers (same ids, same order, same places).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from heimdall.atomic import atomic_write_bytes
from heimdall.budget import Progress, TimeBudget
from heimdall.datasets.generate import dataset_fingerprint
from heimdall.errors import ExportError
from heimdall.evaluation.evaluate import map_splits, onnx_predictions
from heimdall.evaluation.grid_estimators import as_shipped, fit_map, hybrid_exponents
from heimdall.evaluation.test_set import TestSet, load_test_set
from heimdall.manifest import encode_manifest, new_manifest, sidecar_path
from heimdall.onnx_guard import check_model_size, require_self_contained
from heimdall.radiomap import io as map_io
from heimdall.radiomap.fit import MapOptions
from heimdall.radiomap.grid import MapGrid
from heimdall.radiomap.model import RadioMap
from heimdall.release import MODEL_NAME
from heimdall.release.map_metadata import FIT_KEY, read_weights
from heimdall.signing import SigningKey
from heimdall.train.model_card import ModelCard

RECEIVER_TOLERANCE_M = 1.0
UNLABELLED_SPLIT = "unlabelled.h5"


@dataclass
class AttachedMap:
    """A written map-carrying model: where, its sha256 and size, and its FIT_KEY entry."""

    path: Path
    sha256: str
    size_bytes: int
    fit: dict
    labels_added: TestSet | None = None  # labelled transmissions its map was fitted on beyond the store's (map update)


def check_receivers(recordings: TestSet, card: ModelCard, store: Path, model: str | Path) -> None:
    """Refuse a store whose receivers are not the model's: other ids, another order, or other places."""
    if recordings.scenario is None:
        raise ExportError(f"{store}: no scenario_yaml attribute; the map needs the store's scenario")
    ids = [r.id for r in recordings.scenario.receivers]
    expected = card.receiver_ids
    if ids != expected:
        differ = [i for i in dict.fromkeys(ids + expected) if i not in ids or i not in expected]
        why = f"receivers not in both: {differ}" if differ else "the same receivers in another order"
        raise ExportError(f"{store}: receivers {ids} are not those of {model} {expected} ({why})")
    offset_m = np.linalg.norm(recordings.rx_position_m - card.rx_position_m, axis=-1)
    moved = [i for i, d in zip(ids, offset_m, strict=True) if d > RECEIVER_TOLERANCE_M]
    if moved:
        raise ExportError(
            f"{store}: receivers {moved} are more than {RECEIVER_TOLERANCE_M:g} m from where {model} has them"
        )


@dataclass
class NetworkModel:
    """A network model read to attach a map to: where it came from (for messages), its bytes, parsed graph and
    card."""

    where: str
    data: bytes
    proto: Any  # onnx.ModelProto
    card: ModelCard


def read_model_file(model_path: Path, out: Path) -> tuple[bytes, Any]:
    """(bytes, parsed onnx.ModelProto) of the model a new model is made from, refused when `out` would replace it,
    when it is missing or too large, or when it holds external data."""
    if out.resolve() == model_path.resolve():
        raise ExportError(f"--out {out}: would replace {model_path}; write the new model elsewhere")
    if not model_path.is_file():
        raise ExportError(f"{model_path}: model file not found")
    check_model_size(model_path.stat().st_size, str(model_path), ExportError)
    data = model_path.read_bytes()
    return data, require_self_contained(data, str(model_path))


def read_network(model_path: Path, out: Path) -> NetworkModel:
    """The network model at `model_path`, checked (one self-contained file without a map, a valid card) before a
    map-carrying copy of it is written to `out`."""
    data, proto = read_model_file(model_path, out)
    if map_io.has_map(proto):
        raise ExportError(f"{model_path}: already carries a radio map; fit on the network model it was made from")
    card = ModelCard.from_onnx_metadata({p.key: p.value for p in proto.metadata_props}, str(model_path), ExportError)
    return NetworkModel(str(model_path), data, proto, card)


def fit_and_attach(
    model_path: Path,
    store: Path,
    out: Path,
    options: MapOptions,
    signer: SigningKey | None = None,
    on_progress: Progress | None = None,
) -> AttachedMap:
    """Fit a map on `store`, choose the hybrid's exponents with the network `model_path`, write `out` (atomically,
    after it loads) and its manifest."""
    network = read_network(model_path, out)
    radio_map, fit = fit_store_map(network, store, options, on_progress)
    return attach_map(network, radio_map, fit, out, signer)


def fit_store_map(
    network: NetworkModel,
    store: Path,
    options: MapOptions,
    on_progress: Progress | None = None,
    calibration: TestSet | None = None,
    budget: TimeBudget | None = None,
) -> tuple[RadioMap, dict[str, Any]]:
    """The map fitted on `store` for `network` and its FIT_KEY entry: the exponents chosen on the store's validation
    split (with every candidate's validation NLL) and the map's provenance. `calibration`: the labelled set to fit
    on instead of the store's training split (`heimdall map update`). `budget`: the deadline, the progress (else
    `on_progress`) and the phase times ("map fit", "choice") of a training run; OutOfTime past its deadline."""
    budget = budget or TimeBudget(show=on_progress)
    if not store.is_dir():
        raise ExportError(f"{store}: not a store folder")
    with budget.phase("map fit"):
        stored, validation = map_splits(store)
        calibration = calibration or stored
        recordings = calibration
        if recordings is None and (store / UNLABELLED_SPLIT).is_file():
            recordings = load_test_set(store / UNLABELLED_SPLIT)
        if recordings is None:
            raise ExportError(f"{store}: no train.h5 nor {UNLABELLED_SPLIT} to fit the map on")
        check_receivers(recordings, network.card, store, network.where)
        try:  # bound the grid before any work
            scenario = recordings.scenario
            assert scenario is not None  # check_receivers: the store has a scenario
            MapGrid.over(scenario.area_bounds_m(), options.spacing_for(scenario))
        except ValueError as exc:
            raise ExportError(f"--spacing-m: {exc}") from None
        radio_map, how = fit_map(recordings, calibration, options, budget.progress)
    if calibration is None:
        how = f"no labels: self-calibrated on the {len(recordings.features)} recordings of {UNLABELLED_SPLIT}"
    if validation is not None:
        with budget.phase("choice"):
            labels_m = None if calibration is None else calibration.target_m
            exponents = hybrid_exponents(
                radio_map, validation, lambda t: onnx_predictions(network.data, t), budget.progress, labels_m=labels_m
            )
    else:
        exponents = {"alpha": 1.0, "beta": 0.0}  # no validation split to choose on: the map alone
    used = [store / n for n in ("train.h5", "val.h5", UNLABELLED_SPLIT) if (store / n).is_file()]
    fit = {
        **exponents,
        "how": how,
        "labels_used": 0 if calibration is None else len(calibration.target_m),
        "map_version": 1,  # heimdall.release.map_update counts on from here
        "spacing_m": radio_map.grid.spacing_m,
        "store": store.resolve().name,  # its name, not where it lay on the machine that fitted
        "store_sha256": dataset_fingerprint(used),
        "store_files": [p.name for p in used],
        "fitted": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    return radio_map, fit


def attach_map(
    network: NetworkModel, radio_map: RadioMap, fit: dict[str, Any], out: Path, signer: SigningKey | None = None
) -> AttachedMap:
    """Write `network` with `radio_map` — its spreads floored at fit["spread_floor_db"] (when the map alone is
    shipped) and its log-distance partner weighed in at fit["log_distance_weight"]
    (heimdall.evaluation.grid_estimators.hybrid_exponents) — and the FIT_KEY entry `fit` (alpha, beta, provenance;
    the network's sha256 added) to `out` once it loads, then its manifest beside it (signed by `signer` when
    given)."""
    import onnxruntime as ort

    fit = {**fit, "network_sha256": hashlib.sha256(network.data).hexdigest()}
    radio_map = as_shipped(radio_map, fit)
    proto = type(network.proto)()
    proto.CopyFrom(network.proto)  # the network's own stays as read: it can carry another map
    map_io.attach(proto, radio_map)
    entry = proto.metadata_props.add()
    entry.key, entry.value = FIT_KEY, json.dumps(fit)
    result = proto.SerializeToString()
    _check_loads(result, str(out), ort)
    atomic_write_bytes(out, result)
    metadata = {**network.card.to_onnx_metadata(), FIT_KEY: entry.value}
    manifest = new_manifest(MODEL_NAME, None, result, network.card.mlflow_run_id or None, metadata=metadata)
    atomic_write_bytes(sidecar_path(out), encode_manifest(signer.sign(manifest) if signer else manifest))
    return AttachedMap(out, manifest["sha256"], len(result), fit)


def _check_loads(data: bytes, where: str, ort) -> None:  # noqa: ANN001  (onnxruntime, imported by the caller)
    """The new model passes the ONNX guard, ONNX Runtime builds a session, and its map and card read back."""
    import onnx

    require_self_contained(data, where)
    proto = onnx.load_from_string(data)
    try:
        onnx.checker.check_model(proto)
        ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        map_io.from_onnx(proto)
    except Exception as exc:  # whatever refused it, nothing is written
        raise ExportError(
            f"{where}: the map-carrying model does not load ({type(exc).__name__}: {str(exc)[:300]})"
        ) from None
    meta = {p.key: p.value for p in proto.metadata_props}
    ModelCard.from_onnx_metadata(meta, where, ExportError)
    read_weights(meta, where, ExportError)
