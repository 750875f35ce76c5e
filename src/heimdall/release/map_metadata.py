"""The metadata entry of a map-carrying model that says how its map was fitted and how the hybrid weighs it.

FIT_KEY holds a JSON object: `alpha`, `beta` (the exponents of p_map^α · N_net^β, heimdall.radiomap.hybrid;
α = 1, β = 0: the map alone), `temperature` (T chosen on validation so that the regions cover what they claim;
already applied: alpha and beta are the chosen exponents divided by T, so whoever answers reads only α and β —
the answer's point from p_map · N_net^(β/α), its spread from that raised to α: heimdall.radiomap.hybrid.Weights),
`worse_than_centroid` (the choice found no localizer better than the weighted centroid on validation),
`spread_floor_db` (the floor the carried map's spreads were raised to: the map candidate's when the map alone is
shipped, else 0; `spread_floor` what each floor gave on validation at the chosen weight,
heimdall.evaluation.grid_estimators.map_variant_chosen), `log_distance_weight` (the weight the carried map's
log-distance partner is weighed in at, chosen together with the floor on the map candidate, and the hybrid's too;
`log_distance` what each weight gave at the chosen floor: heimdall.radiomap.log_distance), and the map's
provenance (`how`, `labels_used`, `store`, `store_sha256`, `fitted`, …),
written by heimdall.release.map_attach and read by whoever answers with the map.
"""

from __future__ import annotations

import json

from heimdall.errors import HeimdallError
from heimdall.radiomap.hybrid import MAX_RATIO, TEMPERATURES, Weights
from heimdall.radiomap.posterior import HPD_PROBABILITIES

FIT_KEY = "radiomap_fit"
MAX_EXPONENT = 1.0 / min(TEMPERATURES)  # the largest tempered exponent the choice can ship (α, β ≤ 1, T ≥ 0.5)


def read_weights(metadata: dict[str, str], where: str, error: type[HeimdallError]) -> Weights:
    """The weights (α, β, region masses) of a map-carrying model's FIT_KEY entry; `error` naming the field when
    missing or out of range (β/α at most MAX_RATIO, the exponents' grid; the choice ships at most
    MAX_NETWORK_WEIGHT)."""
    try:
        fit = json.loads(metadata[FIT_KEY])
        alpha, beta = float(fit["alpha"]), float(fit["beta"])
    except (KeyError, TypeError, ValueError, OverflowError):
        raise error(
            f"{where}: metadata {FIT_KEY}: missing or without alpha and beta (attach maps with `heimdall map fit`)"
        ) from None
    if not (0 < alpha <= MAX_EXPONENT and 0 <= beta <= MAX_EXPONENT and beta <= MAX_RATIO * alpha):
        raise error(
            f"{where}: metadata {FIT_KEY}: alpha {alpha:g} and beta {beta:g}; expected 0 < alpha ≤ {MAX_EXPONENT:g}, "
            f"0 ≤ beta ≤ {MAX_EXPONENT:g} and beta ≤ {MAX_RATIO:g} × alpha"
        )
    masses = fit.get("region_masses", list(HPD_PROBABILITIES))  # absent: the regions as claimed
    try:
        if not (isinstance(masses, list) and all(type(m) in (int, float) for m in masses)):
            raise TypeError("not a list of numbers")
        return Weights(alpha, beta, tuple(float(m) for m in masses))
    except (TypeError, ValueError, OverflowError):
        raise error(
            f"{where}: metadata {FIT_KEY}.region_masses {str(masses)[:80]}: expected {len(HPD_PROBABILITIES)} "
            "increasing masses in (0, 1], one per HPD region "
            f"({', '.join(f'{p:g}' for p in HPD_PROBABILITIES)})"
        ) from None
