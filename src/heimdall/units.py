"""Distances for a person, in a unit that fits their scale: metres at a campus, kilometres across a region."""

from __future__ import annotations

import math

METRES_BELOW_M = 9_999.5  # distances that round to under 10 km print in metres


def format_distance(distance_m: float | None) -> str:
    """`distance_m` as text: whole metres below 10 km ("121 m", "1124 m"), km with one decimal up to 100 km
    ("42.3 km"), whole km beyond ("250 km"); "—" for None or a non-finite value."""
    if distance_m is None or not math.isfinite(distance_m):
        return "—"
    if abs(distance_m) < METRES_BELOW_M:
        return f"{distance_m:.0f} m"
    km = distance_m / 1e3
    return f"{km:.1f} km" if abs(km) < 99.95 else f"{km:.0f} km"


def distance_unit(typical_m: float) -> tuple[str, float]:
    """(unit, metres per unit) for an axis or a column of distances around `typical_m`: m below 10 km, else km."""
    return ("m", 1.0) if abs(typical_m) < METRES_BELOW_M else ("km", 1_000.0)
