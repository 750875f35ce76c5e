"""The local east/north frame in metres, and the only place latitude/longitude are converted.

Inside Heimdall every position is metres east/north of a frame origin (an azimuthal-equidistant
projection centred on the receiver network). Degrees appear only at the edges: files, CLI, HTTP API.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike
from pyproj import Transformer


@dataclass(frozen=True)
class LocalFrame:
    """Azimuthal-equidistant projection on WGS84 centred at (origin_lat, origin_lon), in metres."""

    origin_lat: float
    origin_lon: float

    @cached_property
    def _forward(self) -> Transformer:
        return Transformer.from_crs("EPSG:4326", self.proj_string, always_xy=True)

    @cached_property
    def _inverse(self) -> Transformer:
        return Transformer.from_crs(self.proj_string, "EPSG:4326", always_xy=True)

    @property
    def proj_string(self) -> str:
        """PROJ definition of the frame (stored with datasets and models)."""
        return f"+proj=aeqd +lat_0={self.origin_lat:.9f} +lon_0={self.origin_lon:.9f} +datum=WGS84 +units=m +no_defs"

    def to_local(self, lat: ArrayLike, lon: ArrayLike) -> np.ndarray:
        """Degrees → metres. lat, lon: float [...] → float64 [..., 2] (east_m, north_m)."""
        east, north = self._forward.transform(np.asarray(lon, float), np.asarray(lat, float))
        return np.stack([np.asarray(east), np.asarray(north)], axis=-1)

    def to_geodetic(self, east_north_m: ArrayLike) -> np.ndarray:
        """Metres → degrees. east_north_m: float [..., 2] → float64 [..., 2] (lat, lon)."""
        en = np.asarray(east_north_m, float)
        lon, lat = self._inverse.transform(en[..., 0], en[..., 1])
        return np.stack([np.asarray(lat), np.asarray(lon)], axis=-1)

    @classmethod
    def centred_on(cls, lat: ArrayLike, lon: ArrayLike) -> LocalFrame:
        """Frame whose origin is the centroid of the given points (mean of unit vectors on the sphere)."""
        la, lo = np.radians(np.asarray(lat, float)), np.radians(np.asarray(lon, float))
        v = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)]).mean(axis=1)
        return cls(
            origin_lat=float(np.degrees(np.arctan2(v[2], np.hypot(v[0], v[1])))),
            origin_lon=float(np.degrees(np.arctan2(v[1], v[0]))),
        )


@dataclass(frozen=True)
class LatLonLattice:
    """Latitude/longitude at the nodes of a regular east/north lattice (first node at east0_m, north0_m; `spacing_m`
    apart), read at points on or near it by bilinear interpolation. The nodes are held as unit vectors (float64
    [ny, nx, 3]: x towards lat 0 lon 0, z towards the north pole), so that a cell across the antimeridian or around
    a pole interpolates as any other.

    The frame's projection and the unit vectors are smooth: within one lattice cell they depart from linear by about
    the square of the spacing — measured (tests/test_geo.py) at most 0.13 mm from PROJ's conversion on a 500 m
    lattice 100 km around the origin, at any latitude and across the antimeridian, and 2 mm on a 2 km one. For the
    many points of a region's outline drawn on the lattice, it costs a few operations a point where PROJ computes a
    geodesic."""

    east0_m: float
    north0_m: float
    spacing_m: float
    unit: np.ndarray

    BYTES_PER_NODE = 96  # while built: the nodes' east/north, PROJ's lat/lon and their unit vectors (24 B kept)

    @classmethod
    def over(
        cls, frame: LocalFrame, east0_m: float, north0_m: float, spacing_m: float, nx: int, ny: int
    ) -> LatLonLattice:
        """The lattice of nx × ny nodes (nx, ny ≥ 2) converted by `frame` (one PROJ call)."""
        east, north = np.meshgrid(east0_m + np.arange(nx) * spacing_m, north0_m + np.arange(ny) * spacing_m)
        lat, lon = np.radians(frame.to_geodetic(np.stack([east, north], axis=-1))).transpose(2, 0, 1)
        unit = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)
        return cls(east0_m, north0_m, spacing_m, unit)

    def to_geodetic(self, east_north_m: np.ndarray) -> np.ndarray:
        """Metres → degrees, interpolated. east_north_m: float [n, 2] → float64 [n, 2] (lat, lon; lon in
        [−180°, 180°]); a point beyond the lattice is extrapolated from its edge cell."""
        ny, nx, _ = self.unit.shape
        nodes = self.unit.reshape(-1, 3)
        uv = (np.asarray(east_north_m, float) - (self.east0_m, self.north0_m)) / self.spacing_m  # in lattice steps
        corner = np.clip(np.floor(uv), 0, (nx - 2, ny - 2))
        fu, fv = np.hsplit(uv - corner, 2)
        k = corner[:, 1].astype(np.intp) * nx + corner[:, 0].astype(np.intp)
        sw, se, nw, ne = nodes[k], nodes[k + 1], nodes[k + nx], nodes[k + nx + 1]
        south = sw + (se - sw) * fu
        x, y, z = (south + (nw + (ne - nw) * fu - south) * fv).T
        return np.degrees(np.stack([np.arctan2(z, np.hypot(x, y)), np.arctan2(y, x)], axis=-1))
