"""`heimdall predict`: the service's model over a store, SigMF collections or a power-reading table, written as CSV,
JSON, GeoJSON or KML (with a radio map: the hybrid answers, their modes and regions, as the service gives them)."""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import track

from heimdall.atomic import atomic_open
from heimdall.commands.options import model_source
from heimdall.commands.predict_formats import transmission_features, write_geojson, write_kml
from heimdall.datasets.conform import recording_features
from heimdall.datasets.loader import StoreDataset
from heimdall.datasets.power_import import match_receivers, readings, table_problems
from heimdall.datasets.power_table import is_table, read_table
from heimdall.datasets.receivers import resolve_recordings
from heimdall.datasets.sigmf_files import COLLECTION_SUFFIX, find_collections, read_collection
from heimdall.datasets.store import split_files
from heimdall.ellipse import ellipse
from heimdall.errors import DatasetError, RecordingError
from heimdall.features import SCALAR_FEATURES, receiver_reports
from heimdall.radiomap.batch import worker_count
from heimdall.serve.hybrid_answers import Answered, MapPart, hybrid_answers, map_input, members_dict
from heimdall.serve.runtime import ServedModel
from heimdall.units import format_distance

BATCH = 4096
# names, mean [n, 2] m, cov [n, 2, 2] m², truth [n, 2] m (NaN: unknown), per transmission (features, receiver ids)
# (names, mean, cov, truth, per transmission: features [R', F], receiver labels, heard bool [R'] or None: all)
Predictions = tuple[
    list[str], np.ndarray, np.ndarray, np.ndarray, list[tuple[np.ndarray, list[str], np.ndarray | None]]
]
FRAME_ORIGIN_TOLERANCE_DEG = 1e-6  # about 0.1 m
RECEIVER_TOLERANCE_M = 1.0
# a CSV cell starting with one of these is a formula to a spreadsheet (OWASP's list): such a name is sent as text
FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


def predict_command(args: argparse.Namespace) -> int:
    """`heimdall predict`: localize SigMF collections with a model; exit code."""
    console = Console()
    model = model_source(args).load()
    data = Path(args.data)
    if data.is_file() and is_table(data):
        names, mean, cov, truth, inputs = predict_table(data, model, args.match_tolerance_m, args.skip_invalid, console)
    elif data.name.endswith(COLLECTION_SUFFIX) or (
        data.is_dir() and not split_files(data, args.split) and find_collections(data)
    ):
        names, mean, cov, truth, inputs = predict_collections(
            data, model, args.match_tolerance_m, args.skip_invalid, console, quiet=args.quiet
        )
    else:
        names, mean, cov, truth, inputs = predict_store(data, args.split, model)
    fields: list[dict[str, Any]] = [{} for _ in names]
    parts: list[MapPart | None] = [None] * len(names)
    if model.radio_map is not None:
        read = [
            map_input(model.params, model.receiver_ids, feats, labels, heard=heard) for feats, labels, heard in inputs
        ]
        with ThreadPoolExecutor(worker_count(args.threads), thread_name_prefix="heimdall-map") as pool:

            def each(f: Callable[[Any], Answered], jobs: list) -> Iterable[Answered]:
                done = pool.map(f, jobs)
                return track(done, total=len(jobs), description="radio map", console=console, disable=args.quiet)

            mean, cov, members, parts = hybrid_answers(model.radio_map, mean, cov, read, each)
            fields = [members_dict(m) for m in members]
    fmt = output_format(args.format, args.out)
    out = Path(args.out or f"predictions.{fmt}")
    if fmt in ("geojson", "kml"):
        writer = write_geojson if fmt == "geojson" else write_kml
        writer(out, transmission_features(names, mean, cov, model.frame, fields))
    else:
        if fmt == "json":  # per receiver its SNR and whether it heard, as the service answers
            snr = model.params.snr_index
            fields = [
                {**extra, "receivers": receiver_reports(labels, feats[:, snr], model.params)}
                for extra, (feats, labels, _) in zip(fields, inputs, strict=True)
            ]
        write_table(out, fmt, names, mean, cov, model.frame.to_geodetic(mean), fields, parts)
    used = sum(part is not None for part in parts)
    console.print(
        f"{len(mean)} transmissions localized with {model.name} {model.version} → {out}"
        + (f" (the radio map used for {used})" if model.radio_map is not None else "")
    )
    labelled = np.isfinite(truth).all(axis=1)
    if labelled.any():
        err = np.linalg.norm(mean[labelled] - truth[labelled], axis=1)
        console.print(
            f"{labelled.sum()} labelled: median error {format_distance(np.median(err))}, "
            f"p90 {format_distance(np.percentile(err, 90))}"
        )
    return 0


FORMATS = ("csv", "json", "geojson", "kml")


def output_format(fmt: str | None, out: str | None) -> str:
    """The format asked for, else the one --out's suffix names, else csv."""
    if fmt:
        return fmt
    suffix = Path(out).suffix.lstrip(".") if out else ""
    return suffix if suffix in FORMATS else "csv"


def write_table(
    out: Path,
    fmt: str,
    names: list[str],
    mean: np.ndarray,
    cov: np.ndarray,
    lat_lon: np.ndarray,
    fields: list[dict[str, Any]],
    parts: list[MapPart | None],
) -> None:
    """The answers as JSON (as the service gives them) or CSV (one row per transmission), written atomically."""
    with atomic_open(out, "w") as f:
        if fmt == "json":
            answers = [
                {
                    "transmission": name,
                    "lat": float(lat_lon[i, 0]),
                    "lon": float(lat_lon[i, 1]),
                    "east_m": float(mean[i, 0]),
                    "north_m": float(mean[i, 1]),
                    "covariance_m2": cov[i].tolist(),
                    **fields[i],
                }
                for i, name in enumerate(names)
            ]
            json.dump(answers, f)
        else:
            rows = answer_rows(names, mean, cov, lat_lon, parts)
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def answer_rows(
    names: list[str], mean: np.ndarray, cov: np.ndarray, lat_lon: np.ndarray, parts: list[MapPart | None]
) -> list[dict[str, str]]:
    """One row per transmission: position, covariance and the 95 % ellipse; with a radio map also the number of
    modes and the 95 % region's area (empty where the map was not used). The name is spreadsheet_text."""
    rows = []
    for i in range(len(mean)):
        e = ellipse(cov[i], 0.95)
        row = {
            "transmission": spreadsheet_text(names[i]),
            "lat": f"{lat_lon[i, 0]:.6f}",
            "lon": f"{lat_lon[i, 1]:.6f}",
            "east_m": f"{mean[i, 0]:.1f}",
            "north_m": f"{mean[i, 1]:.1f}",
            "cov_ee_m2": f"{cov[i, 0, 0]:.6g}",
            "cov_en_m2": f"{cov[i, 0, 1]:.6g}",
            "cov_nn_m2": f"{cov[i, 1, 1]:.6g}",
            "semi_major_95_m": f"{e['semi_major_m']:.1f}",
            "semi_minor_95_m": f"{e['semi_minor_m']:.1f}",
            "orientation_95_deg": f"{e['orientation_deg']:.1f}",
        }
        if any(p is not None for p in parts):
            part = parts[i]
            row["n_modes"] = str(len(part.modes)) if part else ""
            row["hpd95_area_km2"] = f"{part.hpd95_area_km2:.1f}" if part else ""
        rows.append(row)
    return rows


def spreadsheet_text(text: str) -> str:
    """A CSV text cell that a spreadsheet shows as text: one leading `=`, `+`, `-`, `@`, tab or CR would make it a
    formula, so such text gets a leading apostrophe (which spreadsheets hide)."""
    return "'" + text if text.startswith(FORMULA_LEADS) else text


def _batched(
    model: ServedModel, feats: np.ndarray, rx: np.ndarray, present: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The model's (mean [n, 2] m, cov [n, 2, 2] m²) of features [n, R, F], rx [n, R, 2], present [n, R], BATCH at a
    time."""
    means, covs = [], []
    for s in range(0, len(feats), BATCH):
        m, c = model.predict(feats[s : s + BATCH], rx[s : s + BATCH], present[s : s + BATCH])
        means.append(m)
        covs.append(c)
    return np.concatenate(means), np.concatenate(covs)


def predict_table(
    data: Path, model: ServedModel, tolerance_m: float, skip_invalid: bool, console: Console
) -> Predictions:
    """The same for a power-reading table: one answer per transmission id, its rows read into features as `heimdall
    import` reads them (heimdall.datasets.power_import.readings); receivers unknown to the model join ad hoc where
    the rows place them. The model's spectral features (if any) are missing (NaN), as in a power-only request."""
    p = model.params
    if p.feature_names[p.power_index :] != list(SCALAR_FEATURES):
        raise DatasetError(
            f"model {model.name} {model.version}: its features end in {p.feature_names[p.power_index :]}, not "
            f"{list(SCALAR_FEATURES)}: it needs spectral features and cannot answer power readings"
        )
    table = read_table(data)
    matched = match_receivers(table, model.receiver_ids, model.rx_position_m, model.frame, tolerance_m)
    keep = table_problems(matched.table, skip_invalid)
    for _, exc in matched.table.problems:
        console.print(f"skipped {exc}", highlight=False, markup=False)
    ids = model.receiver_ids + matched.new_ids
    got = readings(matched.table, matched.index, len(ids), keep)
    if not len(got.names):
        raise DatasetError(f"{data}: no transmission could be localized")
    feats = np.full((*got.features.shape[:2], p.n_features), np.nan, np.float32)
    feats[..., p.power_index :] = got.features
    positions = np.concatenate([model.rx_position_m, model.frame.to_local(*matched.new_lat_lon.T).reshape(-1, 2)])
    rx = np.broadcast_to(positions.astype(np.float32), (len(feats), *positions.shape))
    present = got.present.astype(np.float32)
    mean, cov = _batched(model, feats, rx, present)
    labels = np.asarray([*model.receiver_ids, *([""] * len(matched.new_ids))], object)
    inputs = [
        (feats[i][got.present[i]], list(labels[got.present[i]]), got.heard[i][got.present[i]])
        for i in range(len(feats))
    ]
    lat_lon = got.tx_lat_lon
    truth = np.where(np.isfinite(lat_lon), model.frame.to_local(lat_lon[:, 0], lat_lon[:, 1]).reshape(-1, 2), np.nan)
    return [str(n) for n in got.names], mean, cov, truth, inputs


def predict_store(data: Path, split: str, model: ServedModel) -> Predictions:
    """(names, mean [n, 2] m, cov [n, 2, 2] m², truth [n, 2] m or NaN, (features, receiver ids) of each) for a
    store file or a folder's split."""
    files = split_files(data, split) if data.is_dir() else [data]
    if not files:
        raise DatasetError(f"{data}: no {split} split in the folder (and no SigMF collections)")
    ds = StoreDataset(files)
    check_same_frame(files[0], ds.infos[0].attrs, ds.meta.receivers, model)
    arrays = ds.read_split()
    feats, present = arrays.features, arrays.present
    rx = np.broadcast_to(arrays.rx_position_m, (len(feats), *arrays.rx_position_m.shape))
    mean, cov = _batched(model, feats, rx, present)
    try:  # imported stores name each transmission by its collection
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in ds.read_all("meta/collection")]
    except KeyError:
        names = [str(i) for i in range(len(feats))]
    ids = np.asarray(ds.meta.receivers["id"])
    # power readings (psd_bins 0): a present receiver not in the mask is censored, at or below its floor
    mask = arrays.heard if ds.meta.params.psd_bins == 0 else None
    inputs = [
        (feats[i][present[i] > 0], list(ids[present[i] > 0]), None if mask is None else mask[i][present[i] > 0])
        for i in range(len(feats))
    ]
    return names, mean, cov, arrays.target_m, inputs


def check_same_frame(path: Path, attrs: dict, receivers: dict[str, np.ndarray], model: ServedModel) -> None:
    """Refuse a store whose east/north coordinates are not the model's: another frame origin, unknown
    receivers, or a receiver somewhere else than in the model's table."""
    what = f"model {model.name} {model.version}"
    origin = np.asarray(attrs.get("frame_origin_lat_lon", [np.nan, np.nan]), np.float64)
    expected = np.array([model.frame.origin_lat, model.frame.origin_lon])
    if origin.shape != (2,) or not np.allclose(origin, expected, rtol=0, atol=FRAME_ORIGIN_TOLERANCE_DEG):
        raise DatasetError(
            f"{path}: attribute frame_origin_lat_lon is {origin.round(6).tolist()}, the frame of {what} "
            f"is centred on {expected.round(6).tolist()}; its positions are in another frame"
        )
    unknown = [i for i in receivers["id"] if i not in model.receiver_ids]
    if unknown:
        raise DatasetError(f"{path}: receivers {unknown} are not in {what}")
    rows = [model.receiver_ids.index(i) for i in receivers["id"]]
    offset_m = np.linalg.norm(
        np.stack([receivers["east_m"], receivers["north_m"]], -1) - model.rx_position_m[rows], axis=-1
    )
    if offset_m.max() > RECEIVER_TOLERANCE_M:
        worst = int(np.argmax(offset_m))
        raise DatasetError(
            f"{path}: receivers/east_m, north_m: receiver {receivers['id'][worst]!r} is "
            f"{offset_m[worst]:.1f} m from where {what} has it (tolerance {RECEIVER_TOLERANCE_M:g} m)"
        )


def predict_collections(
    data: Path, model: ServedModel, tolerance_m: float, skip_invalid: bool, console: Console, quiet: bool = False
) -> Predictions:
    """The same for one SigMF collection or a folder of them (receivers unknown to the model join ad hoc)."""
    paths = [data] if data.is_file() else find_collections(data)
    root = data.parent if data.is_file() else data
    if not paths:
        raise DatasetError(f"{data}: no *.sigmf-collection files found")
    names, means, covs, truth = [], [], [], []
    inputs: list[tuple[np.ndarray, list[str], np.ndarray | None]] = []
    for path in track(paths, description="predict", console=console, disable=quiet or len(paths) < 2):
        try:
            col = read_collection(path, root)
            feats, _ = recording_features(list(col.recordings), model.params, model.frequency_hz, model.full_scale_dbm)
            rows, en = resolve_recordings(
                col.recordings, model.frame, model.receiver_ids, model.rx_position_m, tolerance_m
            )
            positions = [model.rx_position_m[k] if k >= 0 else en[i] for i, k in enumerate(rows)]
            if len(positions) < model.min_receivers:
                raise RecordingError(
                    path,
                    "collection.core:streams",
                    f"{len(positions)} recordings, the model needs at least {model.min_receivers}",
                )
        except RecordingError as exc:
            if not skip_invalid:
                raise
            console.print(f"skipped {exc}", highlight=False, markup=False)
            continue
        m, c = model.predict(feats[None], np.asarray(positions, np.float32)[None], np.ones((1, len(positions))))
        names.append(col.name)
        inputs.append((feats, [model.receiver_ids[k] if k >= 0 else "" for k in rows], None))
        means.append(m[0])
        covs.append(c[0])
        tx = col.transmitter_lat_lon
        truth.append(model.frame.to_local(*tx).reshape(2) if tx is not None else np.full(2, np.nan))
    if not names:
        raise DatasetError(f"{data}: no collection could be localized")
    return names, np.stack(means), np.stack(covs), np.stack(truth), inputs
