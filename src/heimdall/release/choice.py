"""Which localizer a training run ships: the network, the radio map or their hybrid.

After the network is exported, a map is fitted on the training store (heimdall.release.map_attach.fit_store_map,
as `heimdall map fit` does) and the three are compared on the store's validation split by mean negative
log-likelihood of the true positions (nats per km², the same transmissions, each density floored alike:
heimdall.evaluation.grid_estimators.hybrid_exponents); the map's and the hybrid's regions are first recalibrated there
(a temperature on the log posterior when their 95 % regions hold the truth too rarely; it widens the regions and
leaves the answer's point, heimdall.radiomap.hybrid.answer). A candidate whose median
error on validation — over all of it, or over the transmissions far from every training label — is larger than the
weighted centroid's is passed over; among the others, the lowest NLL among those whose validation coverage the
champion rule would accept wins — when none is calibrated, the lowest median error on validation (away from the
labels where measured): the NLL's reward for calibration is then moot, and its floor lets a grid posterior's rare
misses outweigh a far better point — unless `--localizer` forces one. When
every candidate is worse than the centroid, the closest to it is shipped, flagged `worse_than_centroid` and said
so loudly (a model cannot carry the centroid's answer), and the registry never makes it champion
(heimdall.release.publish.centroid_refusal). A map or hybrid is shipped as the network model with the
map attached (one new ONNX file with its own manifest, its exponents and temperature in FIT_KEY); the network as
the exported model itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heimdall.budget import OutOfTime, TimeBudget
from heimdall.errors import ExportError
from heimdall.radiomap.fit import MapOptions
from heimdall.radiomap.model import RadioMap
from heimdall.radiomap.posterior import HPD_PROBABILITIES
from heimdall.release.map_attach import AttachedMap, NetworkModel, attach_map, fit_store_map, read_network
from heimdall.release.registry import COVERAGE_TOLERANCE, calibrated, coverages
from heimdall.signing import SigningKey
from heimdall.train.config import LOCALIZERS
from heimdall.units import format_distance

AUTO, NETWORK, MAP, HYBRID = LOCALIZERS
MAP_MODEL_FILE = "model-map.onnx"  # beside the network's model.onnx
COVERAGE_KEYS = ("coverage_1sigma", "coverage_2sigma", "coverage_region50", "coverage_region95")  # as judged


@dataclass(frozen=True)
class Choice:
    """The localizer shipped and why; `nll`: each candidate's mean validation NLL (empty when not compared);
    `exponents`: (α, β) of the map and the hybrid candidates (tempered), or of the map shipped without
    comparison; `temperature` and `region_masses` (heimdall.radiomap.hybrid.Weights), `spread_floor_db` (the
    floor its map's spreads are raised to, heimdall.evaluation.grid_estimators.map_variant_chosen) and
    `log_distance_weight` (its map's log-distance partner's, heimdall.radiomap.log_distance): theirs;
    `medians`: each candidate's validation median errors (`median_error_m`, and `median_error_far_m` away from the
    training labels), `centroid` the weighted centroid's; `worse_than_centroid`: the localizer shipped is worse
    than the centroid on validation (every candidate was)."""

    localizer: str
    reason: str
    nll: dict[str, float] = field(default_factory=dict)
    exponents: dict[str, tuple[float, float]] = field(default_factory=dict)
    n_validation: int = 0
    coverage: dict[str, dict[str, float]] = field(default_factory=dict)  # each candidate's validation coverages
    temperature: dict[str, float] = field(default_factory=dict)
    medians: dict[str, dict[str, float]] = field(default_factory=dict)
    centroid: dict[str, float] = field(default_factory=dict)
    worse_than_centroid: bool = False
    region_masses: dict[str, tuple[float, ...]] = field(default_factory=dict)
    spread_floor_db: dict[str, float] = field(default_factory=dict)
    log_distance_weight: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Plain data for `train --json`: localizer, reason, validation_nll, validation_coverage and
        validation_median_m (by localizer, the last with the far median), validation_n, alpha, beta, temperature,
        region_masses, spread_floor_db and log_distance_weight (of the map shipped, else null),
        centroid_validation_median_m (and its far median) and worse_than_centroid."""
        alpha, beta = self.exponents.get(self.localizer, (None, None))
        return {
            "localizer": self.localizer,
            "reason": self.reason,
            "validation_nll": self.nll or None,
            "validation_n": self.n_validation or None,
            "validation_coverage": self.coverage or None,
            "validation_median_m": self.medians or None,
            "alpha": alpha,
            "beta": beta,
            "temperature": self.temperature.get(self.localizer),
            "region_masses": list(self.region_masses[self.localizer]) if self.localizer in self.region_masses else None,
            "spread_floor_db": self.spread_floor_db.get(self.localizer),
            "log_distance_weight": self.log_distance_weight.get(self.localizer),
            "centroid_validation_median_m": self.centroid or None,
            "worse_than_centroid": self.worse_than_centroid,
        }


def choose(fit: dict[str, Any], forced: str) -> Choice:
    """The choice given a map's FIT_KEY entry (with `candidates` when the store had a validation split, and
    `centroid` when it was compared with the weighted centroid)."""
    candidates = fit.get("candidates")
    if not candidates:
        if forced == HYBRID:
            raise ExportError(
                "--localizer hybrid: the store has no validation split (val.h5) to weigh map and network on"
            )
        if forced == MAP:
            why = "forced by --localizer map (no validation split: not compared)"
            return Choice(MAP, why, exponents={MAP: (1.0, 0.0)})
        return Choice(NETWORK, "the store has no validation split (val.h5) to compare the localizers on")
    names = (NETWORK, MAP, HYBRID)
    nll = {name: float(candidates[name]["nll"]) for name in names}
    exponents = {name: (float(candidates[name]["alpha"]), float(candidates[name]["beta"])) for name in (MAP, HYBRID)}
    temperature = {name: float(candidates[name].get("temperature", 1.0)) for name in (MAP, HYBRID)}
    masses = {name: tuple(candidates[name].get("region_masses", HPD_PROBABILITIES)) for name in (MAP, HYBRID)}
    n = int(fit["validation_n"])
    coverage = {k: {c: float(v) for c, v in candidates[k].items() if c.startswith("coverage_")} for k in nll}
    coverage = {k: {c: v for c, v in cov.items() if c in COVERAGE_KEYS} for k, cov in coverage.items()}
    medians = {k: _medians(candidates[k]) for k in names}
    centroid = _medians(fit.get("centroid", {}))
    worse = {k for k in names if centroid and worse_than(medians[k], centroid)}

    floors = {name: float(candidates[name].get("spread_floor_db", 0.0)) for name in (MAP, HYBRID)}
    partner = {name: float(candidates[name].get("log_distance_weight", 0.0)) for name in (MAP, HYBRID)}

    def made(localizer: str, reason: str, flagged: bool = False) -> Choice:
        if localizer == MAP and floors[MAP] > 0:
            level, tried = f"{floors[MAP]:g}", fit["spread_floor"]["median_error_m"]
            reason += (
                f"; the map's spreads floored at {level} dB (validation median {format_distance(tried[level])} "
                f"against {format_distance(tried['0'])} unfloored)"
            )
        if localizer in partner and partner[localizer] > 0:
            level, tried = f"{partner[localizer]:g}", fit["log_distance"]["median_error_m"]
            reason += (
                f"; the log-distance model fitted on its labels weighed in at {level} (the map's validation median "
                f"{format_distance(tried[level])} against {format_distance(tried['0'])} without)"
            )
        return Choice(
            localizer, reason, nll, exponents, n, coverage, temperature, medians, centroid, flagged, masses, floors,
            partner,
        )  # fmt: skip

    beside = f"; weighted centroid on validation: {describe_medians(centroid)}" if centroid else ""
    if forced != AUTO:
        winner = min(nll, key=nll.__getitem__)
        reason = f"forced by --localizer {forced} (the lowest validation NLL is the {winner}'s, {nll[winner]:.3f})"
        if forced in worse:
            reason += f"; WORSE than the weighted centroid on validation ({describe_medians(medians[forced])})"
        return made(forced, reason + beside, forced in worse)
    if len(worse) == len(names):
        # nothing beats the centroid: the closest to it, flagged (a model cannot carry the centroid's answer)
        winner = min(names, key=lambda k: judged_median(medians[k]))
        reason = (
            "WORSE THAN THE WEIGHTED CENTROID: every localizer has a larger validation median error than the "
            f"weighted centroid; the {winner} is shipped as the closest ({describe_medians(medians[winner])})"
        )
        return made(winner, reason + beside, True)
    # a champion must be calibrated (heimdall.release.registry): of those that beat the weighted centroid, the lowest
    # NLL among the calibrated ones
    beat = [k for k in names if k not in worse]
    off = {k: miscalibration(candidates[k]) for k in beat if not calibrated(candidates[k])}
    pool = sorted((k for k in beat if k not in off), key=nll.__getitem__)
    if not pool and all("median_error_m" in medians[k] for k in beat):
        # none calibrated: the NLL's reward for calibration is moot, and its floor lets a grid posterior's rare misses
        # outweigh a far better point; ranked by the error a user sees, away from the labels where measured
        ranked = sorted(beat, key=lambda k: judged_median(medians[k]))
        winner = ranked[0]
        reason = (
            f"none calibrated on validation: the lowest validation median error, {describe_medians(medians[winner])}"
        )
        if len(ranked) > 1:
            reason += f", against {describe_medians(medians[ranked[1]])} ({ranked[1]})"
        reason += f" on {n} transmissions (validation NLL {nll[winner]:.3f})"
    else:
        pool = pool or sorted(beat, key=nll.__getitem__)
        winner = pool[0]
        reason = "lowest mean validation NLL" + (" of the calibrated" if len(pool) < len(beat) else "")
        reason += f": {nll[winner]:.3f}"
        if len(pool) > 1:
            reason += f" against {nll[pool[1]]:.3f} ({pool[1]})"
        reason += f" on {n} transmissions"
    if off:
        reason += "; not calibrated there: " + "; ".join(f"{k} ({why})" for k, why in off.items())
    if worse:
        reason += "; worse than the weighted centroid on validation: " + ", ".join(
            f"{k} ({describe_medians(medians[k])})" for k in names if k in worse
        )
    aside = int(candidates[HYBRID].get("network_set_aside", 0))
    if winner == HYBRID and aside:
        reason += (
            f"; the network set aside on {aside} of {n} transmissions (its answer and the map's disagree beyond both "
            "their spreads)"
        )
    if winner in temperature and temperature[winner] > 1:
        reason += f"; its regions recalibrated on validation (temperature {temperature[winner]:g})"
    return made(winner, reason + beside)


def _medians(entry: dict[str, Any]) -> dict[str, float]:
    """The median errors of a candidate's (or the centroid's) entry: median_error_m, median_error_far_m, n_far."""
    return {k: float(v) for k, v in entry.items() if k.startswith("median_") or k == "n_far"}


def worse_than(medians: dict[str, float], centroid: dict[str, float]) -> bool:
    """Whether a localizer's validation median errors (`median_error_m`, `median_error_far_m` away from the training
    labels) exceed the weighted centroid's on either."""
    return any(
        k in medians and k in centroid and medians[k] > centroid[k] for k in ("median_error_m", "median_error_far_m")
    )


def judged_median(medians: dict[str, float]) -> float:
    """The median a localizer is ranked by when nothing beats the centroid or none is calibrated: away from the
    labels where measured."""
    return medians.get("median_error_far_m", medians["median_error_m"])


def describe_medians(medians: dict[str, float]) -> str:
    """`median 120 m, 250 m away from the training labels (n 40)` from `median_error_m`, `median_error_far_m`,
    `n_far` (heimdall.units.format_distance)."""
    text = f"median {format_distance(medians['median_error_m'])}"
    if "median_error_far_m" in medians:
        far = format_distance(medians["median_error_far_m"])
        text += f", {far} away from the training labels (n {medians['n_far']:.0f})"
    return text


def choose_and_attach(
    network_model: Path,
    store: Path | None,
    forced: str,
    signer: SigningKey | None = None,
    options: MapOptions | None = None,
    budget: TimeBudget | None = None,
) -> tuple[Choice, AttachedMap | None]:
    """Fit a map on `store` for the exported `network_model`, choose (or take the forced) localizer, and write the
    map-carrying model (MAP_MODEL_FILE beside the network's, with its manifest) when a map is shipped. `budget`:
    the training run's deadline, progress and phase times; an automatic choice that runs past the deadline ships
    the network, a forced map or hybrid is refused (ExportError)."""
    if forced not in LOCALIZERS:
        raise ExportError(f"--localizer {forced!r:.40}: expected one of {', '.join(LOCALIZERS)}")
    if forced == NETWORK:
        return Choice(NETWORK, "forced by --localizer network (no map fitted)"), None
    if store is None or not store.is_dir():
        why = f"the training store {store} is not on this machine to fit a map on"
        if forced != AUTO:
            raise ExportError(f"--localizer {forced}: {why}")
        return Choice(NETWORK, why), None
    budget = budget or TimeBudget()
    network = read_network(network_model, network_model.with_name(MAP_MODEL_FILE))
    try:
        radio_map, fit = fit_store_map(network, store, options or MapOptions(), budget=budget)
    except OutOfTime as exc:
        why = f"the map's fit and comparison did not finish within the run's time budget ({exc})"
        if forced != AUTO:
            raise ExportError(
                f"--localizer {forced}: {why}; the network is exported at {network_model}: attach a map with "
                "`heimdall map fit`, or give the run more --max-time-minutes"
            ) from None
        return Choice(NETWORK, f"{why}: the network is shipped (attach a map later with `heimdall map fit`)"), None
    choice = choose(fit, forced)
    return choice, ship(choice, network, radio_map, fit, network_model.with_name(MAP_MODEL_FILE), signer, budget)


def ship(
    choice: Choice,
    network: NetworkModel,
    radio_map: RadioMap,
    fit: dict[str, Any],
    out: Path,
    signer: SigningKey | None = None,
    budget: TimeBudget | None = None,
) -> AttachedMap | None:
    """The map-carrying model of a map or hybrid `choice` written to `out` (its exponents, temperature and
    centroid flag in FIT_KEY), or None when the network is chosen."""
    if choice.localizer == NETWORK:
        return None
    budget = budget or TimeBudget()
    alpha, beta = choice.exponents[choice.localizer]
    temperature = choice.temperature.get(choice.localizer, 1.0)
    fit = {**fit, "alpha": alpha, "beta": beta, "temperature": temperature, "localizer": choice.localizer}
    fit["region_masses"] = list(choice.region_masses.get(choice.localizer, HPD_PROBABILITIES))
    fit["spread_floor_db"] = choice.spread_floor_db.get(choice.localizer, 0.0)  # heimdall.release.map_attach
    fit["log_distance_weight"] = choice.log_distance_weight.get(choice.localizer, 0.0)
    fit["worse_than_centroid"] = choice.worse_than_centroid
    if choice.localizer in choice.nll:
        fit["validation_nll"] = choice.nll[choice.localizer]
    with budget.phase("choice"):  # writing the map-carrying model and checking it loads
        return attach_map(network, radio_map, fit, out, signer)


def miscalibration(candidate: dict[str, Any]) -> str:
    """What the champion rule would hold against a candidate's coverages (`coverage_*` keys, as registry.coverages)."""
    return (
        ", ".join(
            f"{name} holds {measured:.0%} (ideal {ideal:.0%})"
            for name, (measured, ideal) in coverages(candidate).items()
        )
        + f", tolerance {COVERAGE_TOLERANCE:.0%}"
    )
