"""Answers of a model that carries a radio map: the hybrid posterior of map and network per transmission.

The map reads each receiver's SNR and noise power from the feature vector the network reads
(FeatureParams.snr_index, power_index; noise = power − SNR), for the receivers of the model's table. A power
reading (power_dbm only) is read with its noise_dbm where given, else as well above its noise (UNKNOWN_NOISE_SNR_DB:
a precise power); one with status not_heard is a censored reading at its floor. An ad-hoc receiver has no map: the
map leaves it out, and a transmission left with none is answered by the network alone, with a note. A transmission
of power readings only, sent to a model whose network reads spectral features (psd_bins > 0), is answered by the
map alone; so is one the network gives no finite answer for. The posterior (a few ms in compiled kernels that
release the GIL) runs in a pool of threads; the conversion to lat/lon, one PROJ call per batch, in the caller's
thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from heimdall.errors import ModelLoadError, RadioMapFormatError
from heimdall.features import FeatureParams
from heimdall.geo import LocalFrame
from heimdall.radiomap import io as map_io
from heimdall.radiomap.batch import MapInputError
from heimdall.radiomap.hybrid import Weights, hybrid_answer
from heimdall.radiomap.likelihood import U_MAX_DB
from heimdall.radiomap.model import RadioMap
from heimdall.radiomap.posterior import HPD_PROBABILITIES, Mode
from heimdall.release.map_metadata import read_weights
from heimdall.serve.schemas import FeatureVector

REGION_PROBABILITIES = tuple(str(p) for p in HPD_PROBABILITIES)  # the keys of `regions`: "0.5", "0.95"
MODE_PROBABILITY = 0.95  # modes are the connected parts of this HPD region
COORDINATE_DECIMALS = 6  # degrees: about 0.1 m
NOT_USED = "not used: no receiver of the model's table (ad-hoc receivers only)"
UNKNOWN_NOISE_SNR_DB = U_MAX_DB  # a power reading without its noise: read as this far above it
MAP_ALONE = "used alone: power readings only, and this model's network reads spectral features"
NO_NETWORK_ANSWER = "used alone: the network gave no finite answer"


@dataclass(frozen=True)
class ServedMap:
    """A model's radio map and how its answers weigh map and network (heimdall.radiomap.hybrid.Weights)."""

    radio_map: RadioMap
    weights: Weights

    def describe(self) -> dict[str, Any]:
        """What GET /v1/model says of the map."""
        m, w = self.radio_map, self.weights
        return {"alpha": w.alpha, "beta": w.beta, "spacing_m": m.grid.spacing_m, "n_labels": m.n_labels}


@dataclass(frozen=True)
class MapInput:
    """One transmission as the map reads it, over the map's receivers R: snr_db, noise_dbm float64 [R]
    (NaN where not measured), present and heard bool [R] (present, not heard: a censored reading at noise_dbm);
    `alone`: answered by the map alone (why), not the hybrid."""

    snr_db: np.ndarray
    noise_dbm: np.ndarray
    present: np.ndarray
    heard: np.ndarray
    alone: str | None = None


@dataclass(frozen=True)
class MapPart:
    """The hybrid posterior's answer in metres: mean [2], covariance [2, 2], modes, the HPD regions (key →
    polygons, each a list of closed rings float64 [n, 2] east/north) and the 95 % region's area (its cells, km²)."""

    mean_m: np.ndarray
    cov_m2: np.ndarray
    modes: list[Mode]
    regions: dict[str, list[list[np.ndarray]]]
    hpd95_area_km2: float


Jobs = list[tuple[int, MapInput]]
MapOver = Callable[[Callable[[tuple[int, MapInput]], MapPart | str], Jobs], Iterable[MapPart | str]]


def load_map(proto, metadata: dict[str, str], receiver_ids: list[str], where: str) -> ServedMap | None:  # noqa: ANN001
    """The map inside an onnx.ModelProto, or None when it carries none; ModelLoadError naming what is wrong."""
    if not map_io.has_map(proto):
        return None
    try:
        radio_map = map_io.from_onnx(proto)
    except RadioMapFormatError as exc:
        raise ModelLoadError(f"{where}: {exc}") from None
    if list(radio_map.receiver_ids) != receiver_ids:
        raise ModelLoadError(
            f"{where}: metadata {map_io.METADATA_KEY}.receiver_ids {list(radio_map.receiver_ids)} are not the "
            f"model's receivers {receiver_ids}"
        )
    # the table built and the kernels compiled (or loaded from numba's cache) now, not at the first request
    return ServedMap(radio_map.prepare(), read_weights(metadata, where, ModelLoadError))


def map_input(
    params: FeatureParams,
    receiver_ids: list[str],
    features: np.ndarray,
    labels: list[str],
    readings: Sequence[FeatureVector] | None = None,
    heard: np.ndarray | None = None,
) -> MapInput | str:
    """What the map reads of one transmission (features [R', F] of the receivers `labels`), or why it cannot.
    `readings`, the request's feature items in the same order, tell a power reading's noise and status; `heard`
    (bool [R'], None: all) marks the others' censored readings (their power at or below the floor, noise = floor)."""
    row_of = {rid: k for k, rid in enumerate(receiver_ids)}
    r = len(receiver_ids)
    snr, noise, present, hears = np.full(r, np.nan), np.full(r, np.nan), np.zeros(r, bool), np.zeros(r, bool)
    power_only = 0
    for i, (values, label) in enumerate(zip(features, labels, strict=True)):
        k = row_of.get(label)
        s, p = float(values[params.snr_index]), float(values[params.power_index])
        if k is None or not np.isfinite(p):
            continue
        if heard is not None and not heard[i]:  # censored: at or below its floor p − s
            snr[k], noise[k], present[k] = 0.0, p - s if np.isfinite(s) else p, True
            continue
        if np.isfinite(s):
            snr[k], noise[k], present[k], hears[k] = s, p - s, True, True
            continue
        item = readings[i] if readings is not None else None
        power_only += 1
        if item is not None and item.status == "not_heard":  # censored: at or below its floor p
            snr[k], noise[k], present[k] = 0.0, p, True
        else:
            n = item.noise_dbm if item is not None and item.noise_dbm is not None else p - UNKNOWN_NOISE_SNR_DB
            snr[k], noise[k], present[k], hears[k] = p - n, n, True, True
    if not present.any():
        return NOT_USED
    alone = MAP_ALONE if power_only == len(labels) and params.psd_bins > 0 else None
    return MapInput(snr, noise, present, hears, alone)


def map_part(
    served: ServedMap, inp: MapInput, net_mean_m: np.ndarray, net_cov_m2: np.ndarray, alone: bool = False
) -> MapPart | str:
    """The answer of one transmission (network mean [2] m, covariance [2, 2] m²; `alone`: the map's own, Weights
    .without_network) in metres — its point from the untempered posterior, its covariance, modes and regions from the
    calibrated one (heimdall.radiomap.hybrid.answer) — or why the map does not answer it."""
    weights = served.weights.without_network() if alone else served.weights
    try:
        post = hybrid_answer(
            served.radio_map, inp.snr_db, inp.noise_dbm, inp.present, net_mean_m, net_cov_m2, weights, inp.heard
        )
    except MapInputError as exc:
        return f"not used: {exc}"
    drawn = post.regions(tuple(float(key) for key in REGION_PROBABILITIES))
    regions = {key: drawn[float(key)] for key in REGION_PROBABILITIES}
    return MapPart(post.mean_m, post.cov_m2, post.modes(MODE_PROBABILITY), regions, post.hpd_area_km2(0.95))


def hybrid_answers(
    served: ServedMap,
    frame: LocalFrame,
    mean_m: np.ndarray,
    cov_m2: np.ndarray,
    inputs: list[MapInput | str],
    map_over: MapOver = map,
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]], list[MapPart | None]]:
    """The answers of n transmissions given the network's mean [n, 2] m and covariance [n, 2, 2] m² and what the
    map reads of each: (mean, covariance) with the hybrid's where the map is used (the map's alone where the input
    says so or the network's answer is not finite), the fields each answer adds (`map`; `modes` and `regions` where
    used) and the parts (None where not used). `map_over(f, jobs)` applies f to every job (a thread pool's map)."""
    finite = np.isfinite(mean_m).all(axis=1) & np.isfinite(cov_m2).all(axis=(1, 2))
    why_alone = [
        None if not isinstance(inp, MapInput) else inp.alone or (None if finite[i] else NO_NETWORK_ANSWER)
        for i, inp in enumerate(inputs)
    ]
    jobs = [(i, inp) for i, inp in enumerate(inputs) if isinstance(inp, MapInput)]
    results = list(
        map_over(
            lambda job: map_part(served, job[1], mean_m[job[0]], cov_m2[job[0]], why_alone[job[0]] is not None), jobs
        )
    )
    mean_m, cov_m2 = mean_m.copy(), cov_m2.copy()
    fields: list[dict[str, Any]] = [{"map": inp} if isinstance(inp, str) else {} for inp in inputs]
    for (i, _), result in zip(jobs, results, strict=True):
        if isinstance(result, str):
            fields[i] = {"map": result}
    used = [(i, part) for (i, _), part in zip(jobs, results, strict=True) if isinstance(part, MapPart)]
    by_row: list[MapPart | None] = [None] * len(inputs)
    for (i, part), more in zip(used, map_fields([part for _, part in used], frame), strict=True):
        mean_m[i], cov_m2[i], by_row[i] = part.mean_m, part.cov_m2, part
        fields[i] = {"map": why_alone[i] or "used", **more}
    return mean_m, cov_m2, fields, by_row


def map_fields(parts: list[MapPart], frame: LocalFrame) -> list[dict]:
    """`modes` (probability, lat, lon; most probable first) and `regions` (GeoJSON geometries in lon/lat) of each
    part; one PROJ call for all of them."""
    points = [np.array([[m.east_m, m.north_m] for m in part.modes]).reshape(-1, 2) for part in parts]
    points += [ring for part in parts for key in REGION_PROBABILITIES for poly in part.regions[key] for ring in poly]
    if not points:
        return []
    lat_lon = frame.to_geodetic(np.concatenate(points)).round(COORDINATE_DECIMALS)
    lon_lat = lat_lon[:, ::-1].tolist()  # one conversion to Python floats, then slices of it
    at = 0

    def take(n: int) -> list[list[float]]:
        nonlocal at
        at += n
        return lon_lat[at - n : at]

    out: list[dict[str, Any]] = []
    for part in parts:
        modes = take(len(part.modes))
        out.append(
            {
                "modes": [
                    {"probability": round(m.mass, 4), "lat": ll[1], "lon": ll[0]}
                    for m, ll in zip(part.modes, modes, strict=True)
                ]
            }
        )
    for i, part in enumerate(parts):
        regions = {}
        for key in REGION_PROBABILITIES:
            polygons = [[take(len(ring)) for ring in poly] for poly in part.regions[key]]
            regions[key] = (
                {"type": "Polygon", "coordinates": polygons[0]}
                if len(polygons) == 1
                else {"type": "MultiPolygon", "coordinates": polygons}
            )
        out[i]["regions"] = regions
    return out
