"""Answer geometry: lat/lon, covariance, 50/68/95 % ellipses and a GeoJSON polygon of the 95 % ellipse."""

from __future__ import annotations

import numpy as np

from heimdall.ellipse import axes, outline, principal_axes
from heimdall.geo import LocalFrame

ELLIPSE_PROBABILITIES = (0.50, 0.68, 0.95)
POLYGON_POINTS = 72


def response_geometry(mean_m: np.ndarray, cov_m2: np.ndarray, frame: LocalFrame) -> list[dict]:
    """The geometry part of the answers for mean_m [B, 2] m and cov_m2 [B, 2, 2] m² (finite), one dict each."""
    sd, _, bearing = principal_axes(cov_m2)
    ring = outline(mean_m, cov_m2, 0.95, POLYGON_POINTS)  # [B, P, 2]
    lat_lon = frame.to_geodetic(np.concatenate([mean_m[:, None], ring], axis=1))  # [B, 1 + P, 2]: one PROJ call
    out = []
    for i in range(len(mean_m)):
        lat, lon = float(lat_lon[i, 0, 0]), float(lat_lon[i, 0, 1])
        coords = lat_lon[i, 1:, ::-1].tolist()
        coords.append(coords[0])
        out.append(
            {
                "lat": lat,
                "lon": lon,
                "east_m": float(mean_m[i, 0]),
                "north_m": float(mean_m[i, 1]),
                "covariance_m2": cov_m2[i].tolist(),
                "ellipses": [axes(p, sd[i], bearing[i]) for p in ELLIPSE_PROBABILITIES],
                "geojson": {
                    "type": "Feature",
                    "geometry": {"type": "Polygon", "coordinates": [coords]},
                    "properties": {"probability": 0.95, "lat": lat, "lon": lon},
                },
            }
        )
    return out
