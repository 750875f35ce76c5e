"""Answer geometry: lat/lon, covariance, 50/68/95 % ellipses and a GeoJSON polygon of the 95 % ellipse."""

from __future__ import annotations

import numpy as np

from heimdall.geo import LocalFrame

ELLIPSE_PROBABILITIES = (0.50, 0.68, 0.95)
POLYGON_POINTS = 72


def ellipse(cov_m2: np.ndarray, probability: float) -> dict:
    """Semi-axes (m) of the ellipse holding `probability` of N(·, cov) and its major axis bearing (° from north)."""
    k = np.sqrt(-2.0 * np.log(1.0 - probability))
    vals, vecs = np.linalg.eigh(cov_m2)
    major = vecs[:, 1]
    bearing = float(np.degrees(np.arctan2(major[0], major[1])) % 180.0)
    return {"probability": probability, "semi_major_m": float(k * np.sqrt(max(vals[1], 0.0))),
            "semi_minor_m": float(k * np.sqrt(max(vals[0], 0.0))), "orientation_deg": bearing}


def response_geometry(mean_m: np.ndarray, cov_m2: np.ndarray, frame: LocalFrame) -> dict:
    lat, lon = frame.to_geodetic(mean_m)
    k = np.sqrt(-2.0 * np.log(0.05))
    vals, vecs = np.linalg.eigh(cov_m2)
    t = np.linspace(0, 2 * np.pi, POLYGON_POINTS, endpoint=False)
    ring = mean_m + (np.stack([np.cos(t), np.sin(t)], -1) * k * np.sqrt(np.maximum(vals, 0))) @ vecs.T
    ring_ll = frame.to_geodetic(ring)
    coords = [[float(lo), float(la)] for la, lo in ring_ll]
    coords.append(coords[0])
    return {
        "lat": float(lat),
        "lon": float(lon),
        "east_m": float(mean_m[0]),
        "north_m": float(mean_m[1]),
        "covariance_m2": cov_m2.tolist(),
        "ellipses": [ellipse(cov_m2, p) for p in ELLIPSE_PROBABILITIES],
        "geojson": {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [coords]},
                    "properties": {"probability": 0.95, "lat": float(lat), "lon": float(lon)}},
    }
