"""Answer geometry: lat/lon, covariance, 50/68/95 % ellipses and a GeoJSON polygon of the 95 % ellipse."""

from __future__ import annotations

import numpy as np

from heimdall.geo import LocalFrame

ELLIPSE_PROBABILITIES = (0.50, 0.68, 0.95)
POLYGON_POINTS = 72


def _k(probability: float) -> float:
    """Mahalanobis radius of the 2-D ellipse holding `probability`."""
    return float(np.sqrt(-2.0 * np.log(1.0 - probability)))


def principal_axes(cov_m2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cov_m2 [..., 2, 2] → standard deviations [..., 2] m (minor, major), eigenvectors [..., 2, 2] (columns)
    and the bearing of the major axis [...] in degrees clockwise from north, in [0, 180)."""
    vals, vecs = np.linalg.eigh(cov_m2)
    major = vecs[..., :, 1]
    bearing = np.degrees(np.arctan2(major[..., 0], major[..., 1])) % 180.0
    return np.sqrt(np.maximum(vals, 0.0)), vecs, bearing


def ellipse(cov_m2: np.ndarray, probability: float) -> dict:
    """Semi-axes (m) of the ellipse holding `probability` of N(·, cov) and its major axis bearing (° from north)."""
    sd, _, bearing = principal_axes(cov_m2)
    return _ellipse(probability, sd, bearing)


def _ellipse(probability: float, sd: np.ndarray, bearing: float) -> dict:
    k = _k(probability)
    return {"probability": probability, "semi_major_m": float(k * sd[1]), "semi_minor_m": float(k * sd[0]),
            "orientation_deg": float(bearing)}


def response_geometry(mean_m: np.ndarray, cov_m2: np.ndarray, frame: LocalFrame) -> list[dict]:
    """The geometry part of the answers for mean_m [B, 2] m and cov_m2 [B, 2, 2] m² (finite), one dict each."""
    sd, vecs, bearing = principal_axes(cov_m2)
    t = np.linspace(0, 2 * np.pi, POLYGON_POINTS, endpoint=False)
    unit = np.stack([np.cos(t), np.sin(t)], -1)  # [P, 2]
    ring = mean_m[:, None] + (unit[None] * _k(0.95) * sd[:, None]) @ np.swapaxes(vecs, 1, 2)  # [B, P, 2]
    lat_lon = frame.to_geodetic(np.concatenate([mean_m[:, None], ring], axis=1))  # [B, 1 + P, 2]: one PROJ call
    out = []
    for i in range(len(mean_m)):
        lat, lon = float(lat_lon[i, 0, 0]), float(lat_lon[i, 0, 1])
        coords = lat_lon[i, 1:, ::-1].tolist()
        coords.append(coords[0])
        out.append({
            "lat": lat,
            "lon": lon,
            "east_m": float(mean_m[i, 0]),
            "north_m": float(mean_m[i, 1]),
            "covariance_m2": cov_m2[i].tolist(),
            "ellipses": [_ellipse(p, sd[i], bearing[i]) for p in ELLIPSE_PROBABILITIES],
            "geojson": {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [coords]},
                        "properties": {"probability": 0.95, "lat": lat, "lon": lon}},
        })
    return out
