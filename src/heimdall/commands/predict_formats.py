"""`heimdall predict --format geojson|kml`: positions and credible regions for GIS users (QGIS, Google Earth).

Per transmission: the estimate (a Point) and its 50 % and 95 % regions. Where a model's radio map was used these
are the answer's `regions` (Polygon or MultiPolygon, holes kept) and its `modes` (Points with their probability
mass), exactly as the service answers them; otherwise the 50 % and 95 % ellipses of the answer's covariance.
GeoJSON: a FeatureCollection whose features carry `transmission`, `kind` (estimate, region or mode), and for regions
and modes `probability`; regions also `shape` (hpd_region or ellipse), modes `rank` (1: the most probable). KML: one
Folder per transmission holding the same Placemarks (a MultiPolygon as a MultiGeometry, holes as inner
boundaries) with the same properties as ExtendedData. Coordinates are [lon, lat] (GeoJSON) and lon,lat (KML),
WGS84 degrees. Text in the KML (a transmission's name comes from a file name) is escaped, and the characters XML 1.0
cannot hold (control characters, lone surrogates) are written as U+FFFD, so the file stays well-formed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from heimdall.atomic import atomic_write_text
from heimdall.ellipse import outline
from heimdall.geo import LocalFrame
from heimdall.serve.hybrid_answers import REGION_PROBABILITIES

ELLIPSE_POINTS = 72
DECIMALS = 7  # degrees: about 1 cm
# what XML 1.0 cannot hold, not even escaped: C0 controls but tab, LF and CR; surrogates; U+FFFE and U+FFFF
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def transmission_features(
    names: list[str], mean_m: np.ndarray, cov_m2: np.ndarray, frame: LocalFrame, fields: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """GeoJSON Features of n transmissions: mean_m [n, 2] m, cov_m2 [n, 2, 2] m² and each answer's map fields
    (`regions` and `modes` where the radio map was used, heimdall.serve.hybrid_answers)."""
    lat_lon = frame.to_geodetic(mean_m)
    plain = [i for i, more in enumerate(fields) if "regions" not in more]
    ellipses = {
        key: _ellipse_rings(mean_m[plain], cov_m2[plain], float(key), frame) if plain else np.empty((0, 0, 2))
        for key in REGION_PROBABILITIES
    }
    ring_of = {i: k for k, i in enumerate(plain)}
    features = []
    for i, name in enumerate(names):
        lat, lon = lat_lon[i].tolist()
        features.append(_feature(_point(lat, lon), name, "estimate"))
        more = fields[i]
        for key in REGION_PROBABILITIES:
            if "regions" in more:
                geometry, shape = more["regions"][key], "hpd_region"
            else:
                ring = np.round(ellipses[key][ring_of[i]][:, ::-1], DECIMALS).tolist()
                geometry, shape = {"type": "Polygon", "coordinates": [ring]}, "ellipse"
            features.append(_feature(geometry, name, "region", probability=float(key), shape=shape))
        for rank, mode in enumerate(more.get("modes", []), start=1):
            point = _point(mode["lat"], mode["lon"])
            features.append(_feature(point, name, "mode", probability=mode["probability"], rank=rank))
    return features


def _ellipse_rings(mean_m: np.ndarray, cov_m2: np.ndarray, probability: float, frame: LocalFrame) -> np.ndarray:
    """The closed ellipse holding `probability` of each transmission: float64 [n, ELLIPSE_POINTS + 1, 2] (lat, lon)."""
    ring = outline(mean_m, cov_m2, probability, ELLIPSE_POINTS)
    return frame.to_geodetic(np.concatenate([ring, ring[:, :1]], axis=1))


def _point(lat: float, lon: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [round(lon, DECIMALS), round(lat, DECIMALS)]}


def _feature(geometry: dict[str, Any], name: str, kind: str, **properties: Any) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geometry, "properties": {"transmission": name, "kind": kind, **properties}}


def write_geojson(path: Path, features: list[dict[str, Any]]) -> None:
    """Write the features as a GeoJSON FeatureCollection (atomically)."""
    atomic_write_text(path, json.dumps({"type": "FeatureCollection", "features": features}))


def write_kml(path: Path, features: list[dict[str, Any]]) -> None:
    """Write the features as KML 2.2, one Folder per transmission (atomically)."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<kml xmlns="http://www.opengis.net/kml/2.2"><Document><name>Heimdall predictions</name>',
    ]
    folder = None
    for feature in features:
        props = feature["properties"]
        if props["transmission"] != folder:
            if folder is not None:
                parts.append("</Folder>")
            folder = props["transmission"]
            parts.append(f"<Folder><name>{xml_text(folder)}</name>")
        data = "".join(
            f'<Data name="{xml_text(k)}"><value>{xml_text(str(v))}</value></Data>'
            for k, v in props.items()
            if k != "transmission"
        )
        parts.append(
            f"<Placemark><name>{xml_text(_placemark_name(props))}</name><ExtendedData>{data}</ExtendedData>"
            f"{_kml_geometry(feature['geometry'])}</Placemark>"
        )
    if folder is not None:
        parts.append("</Folder>")
    parts.append("</Document></kml>")
    atomic_write_text(path, "\n".join(parts))


def xml_text(text: str) -> str:
    """Text as XML 1.0 character data or attribute value: escaped, and what XML cannot hold replaced by U+FFFD."""
    return escape(NOT_XML.sub("\ufffd", text), {'"': "&quot;"})


def _placemark_name(props: dict[str, Any]) -> str:
    name = props["transmission"]
    if props["kind"] == "region":
        return f"{name} {props['probability']:.0%} {'region' if props['shape'] == 'hpd_region' else 'ellipse'}"
    if props["kind"] == "mode":
        return f"{name} mode {props['rank']} ({props['probability']:.0%})"
    return name


def _kml_geometry(geometry: dict[str, Any]) -> str:
    """KML of a GeoJSON Point, Polygon or MultiPolygon."""
    kind, coordinates = geometry["type"], geometry["coordinates"]
    if kind == "Point":
        return f"<Point><coordinates>{_kml_coordinates([coordinates])}</coordinates></Point>"
    if kind == "Polygon":
        outer, *holes = coordinates
        inner = "".join(
            f"<innerBoundaryIs><LinearRing><coordinates>{_kml_coordinates(h)}</coordinates></LinearRing>"
            "</innerBoundaryIs>"
            for h in holes
        )
        return (
            f"<Polygon><outerBoundaryIs><LinearRing><coordinates>{_kml_coordinates(outer)}</coordinates>"
            f"</LinearRing></outerBoundaryIs>{inner}</Polygon>"
        )
    if kind == "MultiPolygon":
        polygons = "".join(_kml_geometry({"type": "Polygon", "coordinates": p}) for p in coordinates)
        return f"<MultiGeometry>{polygons}</MultiGeometry>"
    raise ValueError(f"geometry type {kind!r}: expected Point, Polygon or MultiPolygon")


def _kml_coordinates(lon_lat: list[list[float]]) -> str:
    return " ".join(f"{lon:.{DECIMALS}f},{lat:.{DECIMALS}f}" for lon, lat in lon_lat)
