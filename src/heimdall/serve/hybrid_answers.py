"""Answers of a model that carries a radio map: the hybrid posterior of map and network per transmission.

The map reads each receiver's SNR and noise power from the feature vector the network reads (FeatureParams.snr_index,
power_index; noise = power − SNR), for the receivers of the model's table. A power reading (power_dbm only) is read
with its noise_dbm where given, else as well above its noise (UNKNOWN_NOISE_SNR_DB: a precise power); one with status
not_heard is a censored reading at its floor. An ad-hoc receiver has no map: the map leaves it out, and a
transmission left with none is answered by the network alone, with a note. A transmission of power readings only,
sent to a model whose network reads spectral features (psd_bins > 0), is answered by the map alone; so is one the
network gives no finite answer for, and one whose network answer disagrees with the map's beyond both their spreads
(heimdall.radiomap.hybrid.network_set_aside). The posterior (a few ms in compiled kernels that release the GIL) runs
in a pool of threads, and so does what an answer adds from it (`map`, `modes`, `regions`), written there as JSON
members: the regions' lat/lon (interpolated from those of the map's cells, heimdall.geo.LatLonLattice, computed when
the model is loaded) and their coordinate text (heimdall.serve.coordinates_json) take little time under the GIL, and
few Python objects are made.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydantic_core

from heimdall.errors import ModelLoadError, RadioMapFormatError
from heimdall.features import FeatureParams
from heimdall.geo import LatLonLattice, LocalFrame
from heimdall.radiomap import io as map_io
from heimdall.radiomap.batch import MapInputError
from heimdall.radiomap.hybrid import DISAGREEMENT_D2, Weights, answer, network_set_aside
from heimdall.radiomap.likelihood import U_MAX_DB
from heimdall.radiomap.model import RadioMap
from heimdall.radiomap.posterior import HPD_PROBABILITIES, Mode
from heimdall.release.map_metadata import read_weights
from heimdall.serve.coordinates_json import rings_json
from heimdall.serve.schemas import FeatureVector

REGION_PROBABILITIES = tuple(str(p) for p in HPD_PROBABILITIES)  # the keys of `regions`: "0.5", "0.95"
MODE_PROBABILITY = 0.95  # modes are the connected parts of this HPD region
COORDINATE_DECIMALS = 6  # degrees: about 0.1 m
NOT_USED = "not used: no receiver of the model's table (ad-hoc receivers only)"
UNKNOWN_NOISE_SNR_DB = U_MAX_DB  # a power reading without its noise: read as this far above it
MAP_ALONE = "used alone: power readings only, and this model's network reads spectral features"
NO_NETWORK_ANSWER = "used alone: the network gave no finite answer (or a singular covariance)"
SET_ASIDE = (  # heimdall.radiomap.hybrid.network_set_aside
    "used alone: the network's answer and the map's disagree beyond both their spreads (d² {d2:.1f} > {limit:g})"
)


@dataclass(frozen=True)
class ServedMap:
    """A model's radio map, how its answers weigh map and network (heimdall.radiomap.hybrid.Weights), and the lat/lon
    of its grid's cell centres with a border of one cell (what regions are drawn on)."""

    radio_map: RadioMap
    weights: Weights
    lattice: LatLonLattice

    @classmethod
    def ready(cls, radio_map: RadioMap, weights: Weights, frame: LocalFrame) -> ServedMap:
        """The map made ready to answer: its likelihood table built, its kernels compiled (or loaded from numba's
        cache) and its cells' lat/lon computed now, not at the first request."""
        g = radio_map.grid
        border_m = (g.east0_m - g.spacing_m, g.north0_m - g.spacing_m)
        lattice = LatLonLattice.over(frame, *border_m, g.spacing_m, g.nx + 2, g.ny + 2)
        rings_json(np.zeros((1, 2)), np.array([1]), COORDINATE_DECIMALS)  # the regions' writer compiled too
        return cls(radio_map.prepare(), weights, lattice)

    def describe(self) -> dict[str, Any]:
        """What GET /v1/model says of the map."""
        m, w = self.radio_map, self.weights
        masses = dict(zip(REGION_PROBABILITIES, w.region_masses, strict=True))
        return {"alpha": w.alpha, "beta": w.beta, "region_masses": masses, "spacing_m": m.grid.spacing_m,
                "n_labels": m.n_labels, "spread_floor_db": float(m.info.get("spread_floor_db", 0.0)),
                "log_distance_weight": m.log_distance_weight}  # fmt: skip


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
    polygons, each a list of closed rings float64 [n, 2] east/north) and the 95 % region's area (its cells, km²);
    `set_aside`: why the network did not weigh in (its answer disagrees with the map's), None where it did."""

    mean_m: np.ndarray
    cov_m2: np.ndarray
    modes: list[Mode]
    regions: dict[str, list[list[np.ndarray]]]
    hpd95_area_km2: float
    set_aside: str | None = None


Jobs = list[tuple[int, MapInput]]
Answered = tuple[MapPart | None, bytes]  # a transmission's part (None: the map not used) and its JSON members
MapOver = Callable[[Callable[[tuple[int, MapInput]], Answered], Jobs], Iterable[Answered]]


def load_map(
    proto,  # noqa: ANN001
    metadata: dict[str, str],
    receiver_ids: list[str],
    frame: LocalFrame,
    where: str,
) -> ServedMap | None:
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
    return ServedMap.ready(radio_map, read_weights(metadata, where, ModelLoadError), frame)


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
        map_post = served.radio_map.localize(inp.snr_db, inp.noise_dbm, inp.present, inp.heard)
    except MapInputError as exc:
        return f"not used: {exc}"
    d2 = network_set_aside(map_post, net_mean_m, net_cov_m2) if weights.beta > 0 else None
    set_aside = None if d2 is None else SET_ASIDE.format(d2=d2, limit=DISAGREEMENT_D2)
    post = answer(map_post, net_mean_m, net_cov_m2, weights)
    drawn = post.regions(tuple(float(key) for key in REGION_PROBABILITIES))
    regions = {key: drawn[float(key)] for key in REGION_PROBABILITIES}
    modes = post.modes(MODE_PROBABILITY)
    return MapPart(post.mean_m, post.cov_m2, modes, regions, post.hpd_area_km2(0.95), set_aside)


def hybrid_answers(
    served: ServedMap,
    mean_m: np.ndarray,
    cov_m2: np.ndarray,
    inputs: list[MapInput | str],
    map_over: MapOver = map,
) -> tuple[np.ndarray, np.ndarray, list[bytes], list[MapPart | None]]:
    """The answers of n transmissions given the network's mean [n, 2] m and covariance [n, 2, 2] m² and what the map
    reads of each: (mean, covariance) with the hybrid's where the map is used (the map's alone where the input
    says so, the network's answer is not finite or its covariance singular, or the two disagree: SET_ASIDE), the
    fields each answer adds as JSON object members (`map`; `modes` and `regions` where used: map_members) and
    the parts (None where not used). `map_over(f, jobs)` applies f to every job (a thread pool's map)."""
    net_mean_m, net_cov_m2 = mean_m, cov_m2  # the network's answers, read by the jobs; the copies below are written
    finite = np.isfinite(mean_m).all(axis=1) & np.isfinite(cov_m2).all(axis=(1, 2))
    finite[finite] &= np.linalg.det(cov_m2[finite]) > 0  # a singular Gaussian cannot weigh the map: none

    def answer(job: tuple[int, MapInput]) -> Answered:
        i, inp = job
        why_alone = inp.alone or (None if finite[i] else NO_NETWORK_ANSWER)
        part = map_part(served, inp, net_mean_m[i], net_cov_m2[i], why_alone is not None)
        if isinstance(part, str):
            return None, _map_note(part)
        return part, _map_note(why_alone or part.set_aside or "used") + b"," + map_members(part, served.lattice)

    jobs = [(i, inp) for i, inp in enumerate(inputs) if isinstance(inp, MapInput)]
    mean_m, cov_m2 = mean_m.copy(), cov_m2.copy()
    fields = [_map_note(inp) if isinstance(inp, str) else b"" for inp in inputs]
    by_row: list[MapPart | None] = [None] * len(inputs)
    for (i, _), (part, members) in zip(jobs, map_over(answer, jobs), strict=True):
        fields[i] = members
        if part is not None:
            mean_m[i], cov_m2[i], by_row[i] = part.mean_m, part.cov_m2, part
    return mean_m, cov_m2, fields, by_row


def _map_note(note: str) -> bytes:
    return b'"map":' + pydantic_core.to_json(note)


def map_members(part: MapPart, lattice: LatLonLattice) -> bytes:
    """`modes` (probability, lat, lon; most probable first) and `regions` (GeoJSON geometries in lon/lat) of a part,
    as JSON object members (`"modes":[…],"regions":{…}`), their lat/lon read from the lattice of the map's cells."""
    rings = [ring for key in REGION_PROBABILITIES for poly in part.regions[key] for ring in poly]
    modes_m = np.array([[m.east_m, m.north_m] for m in part.modes]).reshape(-1, 2)
    lat_lon = lattice.to_geodetic(np.concatenate([modes_m, *rings]))
    n_modes = len(part.modes)
    modes = [
        {"probability": round(m.mass, 4), "lat": lat, "lon": lon}
        for m, (lat, lon) in zip(part.modes, lat_lon[:n_modes].round(COORDINATE_DECIMALS).tolist(), strict=True)
    ]
    text = iter(rings_json(lat_lon[n_modes:], np.cumsum([len(ring) for ring in rings]), COORDINATE_DECIMALS))
    regions = []
    for key in REGION_PROBABILITIES:
        polygons = [b"[" + b",".join(next(text) for _ in poly) + b"]" for poly in part.regions[key]]
        geometry = (
            b'{"type":"Polygon","coordinates":' + polygons[0]
            if len(polygons) == 1
            else b'{"type":"MultiPolygon","coordinates":[' + b",".join(polygons) + b"]"
        )
        regions.append(b'"%s":%s}' % (key.encode(), geometry))
    return b'"modes":' + pydantic_core.to_json(modes) + b',"regions":{' + b",".join(regions) + b"}"


def members_dict(members: bytes) -> dict[str, Any]:
    """The fields of JSON object members (hybrid_answers' `fields`) as a dict."""
    return json.loads(b"{" + members + b"}")
