"""New labelled transmissions refit the radio map of a map-carrying model, without retraining its network
(`heimdall map update`).

The labelled SigMF recordings of a folder are imported with the store's scenario (heimdall.datasets.importer, into
a temporary folder removed afterwards); their receivers must be the model's. They join the store's labelled
training split, the map is refitted on both and the hybrid's exponents chosen again on the store's validation split
(heimdall.release.map_attach.fit_store_map). The network is the parent's own: its graph and weights are taken back
byte for byte (checked against the parent's `network_sha256`). The result is a new model version: its FIT_KEY
entry records `map_version` (the parent's + 1), `parent_sha256`, and the labels added (`labels_added`: count and
sha256 over the imported store files); it gets its own manifest, and goes to a model store and the registry like
any model when asked.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from heimdall.budget import Progress
from heimdall.datasets.generate import dataset_fingerprint
from heimdall.datasets.importer import import_collections
from heimdall.datasets.spec import ImportOptions
from heimdall.errors import DatasetError, ExportError
from heimdall.evaluation.evaluate import map_splits
from heimdall.evaluation.test_set import TestSet, load_test_set
from heimdall.onnx_guard import check_model_size, require_self_contained
from heimdall.radiomap import io as map_io
from heimdall.radiomap.fit import MapOptions
from heimdall.release.judged_answers import read_map
from heimdall.release.map_attach import (
    AttachedMap,
    NetworkModel,
    attach_map,
    check_receivers,
    fit_store_map,
    read_model_file,
)
from heimdall.release.map_metadata import FIT_KEY
from heimdall.signing import SigningKey
from heimdall.train.model_card import ModelCard

LABEL_SPLITS = ("train", "val", "test")  # every labelled split of the imported labels joins the map's labels


@dataclass
class MapModel:
    """A map-carrying model read to update: where it came from (a file, a store or registry version: for messages),
    its bytes, its FIT_KEY entry and the network it was made from."""

    where: str
    data: bytes
    fit: dict[str, Any]
    network: NetworkModel


def read_map_model(model_path: Path, out: Path) -> MapModel:
    """The map-carrying model file at `model_path` (not `out`), checked as map_model_of does."""
    data, proto = read_model_file(model_path, out)
    return map_model_of(data, proto, str(model_path))


def fetched_map_model(data: bytes, where: str) -> MapModel:
    """A map-carrying model fetched from a model store or the registry (its integrity already checked there)."""
    check_model_size(len(data), where, ExportError)
    return map_model_of(data, require_self_contained(data, where), where)


def map_model_of(data: bytes, proto: Any, where: str) -> MapModel:  # noqa: ANN401  (onnx.ModelProto)
    """The map-carrying model (bytes, parsed) and its network (the map taken off), checked before anything is
    fitted: a map that loads (ModelLoadError naming the field otherwise), a FIT_KEY entry, the network its
    `network_sha256` names."""
    import onnx

    if not map_io.has_map(proto):
        raise ExportError(
            f"{where}: carries no radio map to update; attach one first with `heimdall map fit STORE --model "
            "MODEL.onnx --out MODEL-MAP.onnx`"
        )
    read_map(proto, where)  # refitted, not used: still, a map that could not load is refused as at any load
    meta = {p.key: p.value for p in proto.metadata_props}
    try:
        fit = json.loads(meta[FIT_KEY])
        if not isinstance(fit, dict):
            raise TypeError
    except (KeyError, TypeError, ValueError):
        raise ExportError(f"{where}: metadata {FIT_KEY}: missing or not a JSON object") from None
    map_io.detach(proto)
    kept = [p for p in proto.metadata_props if p.key != FIT_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    network_data = proto.SerializeToString()
    if hashlib.sha256(network_data).hexdigest() != fit.get("network_sha256"):
        raise ExportError(
            f"{where}: its network is not the one its map was attached to (metadata {FIT_KEY}.network_sha256); "
            "the file was changed after `heimdall map fit`"
        )
    card = ModelCard.from_onnx_metadata(
        {p.key: p.value for p in onnx.load_from_string(network_data).metadata_props}, where, ExportError
    )
    return MapModel(where, data, fit, NetworkModel(where, network_data, proto, card))


def imported_labels(labels_dir: Path, recordings: TestSet, work: Path) -> tuple[TestSet, str]:
    """The labelled transmissions of the SigMF folder `labels_dir`, imported into `work` with the scenario of
    `recordings` (the store's), and the sha256 over the imported store files."""
    if recordings.scenario is None:
        raise ExportError(f"{recordings.source}: no scenario_yaml attribute; the labels are imported with it")
    import_collections(labels_dir, work, recordings.scenario, ImportOptions(fractions=(1.0, 0.0, 0.0), iq_per_split=0))
    files = [work / f"{split}.h5" for split in LABEL_SPLITS if (work / f"{split}.h5").is_file()]
    if not files:
        raise DatasetError(f"{labels_dir}: no labelled collection (each needs the transmitter's position)")
    sets = [load_test_set(f) for f in files]
    return (sets[0] if len(sets) == 1 else joined(sets)), dataset_fingerprint(files)


def joined(sets: list[TestSet]) -> TestSet:
    """The transmissions of several test sets of the same receivers, one after the other (no oracle arrays)."""
    return replace(
        sets[0],
        features=np.concatenate([s.features for s in sets]),
        heard=np.concatenate([s.heard for s in sets]),
        present=np.concatenate([s.present for s in sets]),
        target_m=np.concatenate([s.target_m for s in sets]),
        gain_offset_db=None,
        tx_height_m=None,
        source=", ".join(s.source for s in sets),
    )


def update_map(
    parent: MapModel,
    store: Path,
    labels_dir: Path,
    out: Path,
    options: MapOptions | None = None,
    signer: SigningKey | None = None,
    on_progress: Progress | None = None,
) -> AttachedMap:
    """Refit the map of `parent` (read_map_model, fetched_map_model) on the store's labels plus those of `labels_dir`
    (on the parent's grid unless `options` say otherwise), and write the new version to `out` (atomically, after it
    loads) with its manifest; nothing is written on failure."""
    if options is None:
        spacing = parent.fit.get("spacing_m")
        options = MapOptions(spacing_m=None if spacing is None else float(spacing))
    if not labels_dir.is_dir():
        raise DatasetError(f"--labels {labels_dir}: not a folder of SigMF collections")
    stored, _ = map_splits(store)
    if stored is None:
        raise ExportError(f"{store}: no train.h5; the new labels join the store's labelled training split")
    check_receivers(stored, parent.network.card, store, parent.where)
    with tempfile.TemporaryDirectory(prefix="heimdall-labels-", dir=out.parent if out.parent.is_dir() else None) as tmp:
        labels, labels_sha256 = imported_labels(labels_dir, stored, Path(tmp) / "store")
    check_receivers(labels, parent.network.card, labels_dir, parent.where)
    radio_map, fit = fit_store_map(parent.network, store, options, on_progress, calibration=joined([stored, labels]))
    fit |= {
        "how": f"{fit['how']} ({len(stored.target_m)} of the store, {len(labels.target_m)} added)",
        "map_version": int(parent.fit.get("map_version", 1)) + 1,
        "parent_sha256": hashlib.sha256(parent.data).hexdigest(),
        "labels_added": {"n": len(labels.target_m), "sha256": labels_sha256, "folder": labels_dir.resolve().name},
    }
    attached = attach_map(parent.network, radio_map, fit, out, signer)
    attached.labels_added = labels
    return attached
