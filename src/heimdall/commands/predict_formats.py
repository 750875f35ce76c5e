"""`heimdall predict --format geojson|kml`: positions and 95 % regions for GIS users (QGIS, Google Earth).

GeoJSON: a FeatureCollection with, per transmission, a Point (the estimate) and a Polygon (the 95 % ellipse),
both carrying `transmission`. KML: one Folder per transmission with the same Point and Polygon.
Coordinates are [lon, lat] (GeoJSON) and lon,lat (KML), WGS84 degrees.
"""

from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from heimdall.atomic import atomic_write_text
from heimdall.ellipse import outline
from heimdall.geo import LocalFrame

REGION_PROBABILITY = 0.95
REGION_POINTS = 72


def regions_lat_lon(mean_m: np.ndarray, cov_m2: np.ndarray, frame: LocalFrame) -> np.ndarray:
    """The closed 95 % ellipse of each transmission: float64 [n, REGION_POINTS + 1, 2] (lat, lon)."""
    ring = outline(mean_m, cov_m2, REGION_PROBABILITY, REGION_POINTS)
    return frame.to_geodetic(np.concatenate([ring, ring[:, :1]], axis=1))


def write_geojson(path: Path, names: list[str], lat_lon: np.ndarray, regions: np.ndarray) -> None:
    """Write the GeoJSON FeatureCollection of names [n], lat_lon [n, 2] degrees and regions [n, P, 2] (lat, lon)."""
    features = []
    for name, (lat, lon), ring in zip(names, lat_lon.tolist(), regions, strict=True):
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [round(lon, 7), round(lat, 7)]},
                "properties": {"transmission": name, "kind": "estimate"},
            }
        )
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [np.round(ring[:, ::-1], 7).tolist()]},
                "properties": {"transmission": name, "kind": "region", "probability": REGION_PROBABILITY},
            }
        )
    atomic_write_text(path, json.dumps({"type": "FeatureCollection", "features": features}))


def write_kml(path: Path, names: list[str], lat_lon: np.ndarray, regions: np.ndarray) -> None:
    """The same as KML 2.2 (one Folder per transmission: the estimate and its 95 % region)."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<kml xmlns="http://www.opengis.net/kml/2.2"><Document><name>Heimdall predictions</name>',
    ]
    for name, (lat, lon), ring in zip(names, lat_lon.tolist(), regions, strict=True):
        coordinates = " ".join(f"{lo:.7f},{la:.7f}" for la, lo in ring.tolist())
        parts.append(
            f"<Folder><name>{escape(name)}</name>"
            f"<Placemark><name>{escape(name)}</name><Point><coordinates>{lon:.7f},{lat:.7f}</coordinates></Point>"
            f"</Placemark><Placemark><name>{escape(name)} {REGION_PROBABILITY:.0%} region</name><Polygon>"
            f"<outerBoundaryIs><LinearRing><coordinates>{coordinates}</coordinates></LinearRing></outerBoundaryIs>"
            "</Polygon></Placemark></Folder>"
        )
    parts.append("</Document></kml>")
    atomic_write_text(path, "\n".join(parts))
