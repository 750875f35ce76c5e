"""Which localizer a training run ships: the network, the radio map or their hybrid.

After the network is exported, a map is fitted on the training store (heimdall.release.map_attach.fit_store_map,
as `heimdall map fit` does) and the three are compared on the store's validation split by mean negative
log-likelihood of the true positions (nats per km², the same transmissions, each density floored alike:
heimdall.evaluation.radio_map.hybrid_exponents). The lowest among those whose validation coverage the champion
rule would accept wins (the lowest of all when none is calibrated), unless `--localizer` forces one. A map or hybrid
is shipped as the network model with the map attached (one new ONNX file with its own manifest); the network as
the exported model itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heimdall.budget import OutOfTime, TimeBudget
from heimdall.errors import ExportError
from heimdall.radiomap.fit import MapOptions
from heimdall.release.map_attach import AttachedMap, attach_map, fit_store_map, read_network
from heimdall.release.registry import COVERAGE_TOLERANCE, calibrated, coverages
from heimdall.signing import SigningKey
from heimdall.train.config import LOCALIZERS

AUTO, NETWORK, MAP, HYBRID = LOCALIZERS
MAP_MODEL_FILE = "model-map.onnx"  # beside the network's model.onnx


@dataclass(frozen=True)
class Choice:
    """The localizer shipped and why; `nll`: each candidate's mean validation NLL (empty when not compared);
    `exponents`: (α, β) of the map and the hybrid candidates, or of the map shipped without comparison."""

    localizer: str
    reason: str
    nll: dict[str, float] = field(default_factory=dict)
    exponents: dict[str, tuple[float, float]] = field(default_factory=dict)
    n_validation: int = 0
    coverage: dict[str, dict[str, float]] = field(default_factory=dict)  # each candidate's validation coverages

    def summary(self) -> dict[str, Any]:
        """Plain data for `train --json`: localizer, reason, validation_nll and validation_coverage (by localizer),
        validation_n, alpha and beta (of the map shipped, else null)."""
        alpha, beta = self.exponents.get(self.localizer, (None, None))
        return {
            "localizer": self.localizer,
            "reason": self.reason,
            "validation_nll": self.nll or None,
            "validation_n": self.n_validation or None,
            "validation_coverage": self.coverage or None,
            "alpha": alpha,
            "beta": beta,
        }


def choose(fit: dict[str, Any], forced: str) -> Choice:
    """The choice given a map's FIT_KEY entry (with `candidates` when the store had a validation split)."""
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
    nll = {name: float(candidates[name]["nll"]) for name in (NETWORK, MAP, HYBRID)}
    exponents = {name: (float(candidates[name]["alpha"]), float(candidates[name]["beta"])) for name in (MAP, HYBRID)}
    n = int(fit["validation_n"])
    coverage = {k: {c: float(v) for c, v in candidates[k].items() if c.startswith("coverage_")} for k in nll}
    winner = min(nll, key=nll.__getitem__)
    if forced == AUTO:
        # a champion must be calibrated (heimdall.release.registry): the lowest NLL among the calibrated ones
        off = {k: miscalibration(candidates[k]) for k in nll if not calibrated(candidates[k])}
        pool = sorted((k for k in nll if k not in off), key=nll.__getitem__) or sorted(nll, key=nll.__getitem__)
        winner = pool[0]
        reason = "lowest mean validation NLL" + (" of the calibrated" if len(pool) < len(nll) else "")
        reason += f": {nll[winner]:.3f}"
        if len(pool) > 1:
            reason += f" against {nll[pool[1]]:.3f} ({pool[1]})"
        reason += f" on {n} transmissions"
        if off:
            reason += "; not calibrated there: " + "; ".join(f"{k} ({why})" for k, why in off.items())
        return Choice(winner, reason, nll, exponents, n, coverage)
    reason = f"forced by --localizer {forced} (the lowest validation NLL is the {winner}'s, {nll[winner]:.3f})"
    return Choice(forced, reason, nll, exponents, n, coverage)


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
    if choice.localizer == NETWORK:
        return choice, None
    alpha, beta = choice.exponents[choice.localizer]
    fit = {**fit, "alpha": alpha, "beta": beta, "localizer": choice.localizer}
    if choice.localizer in choice.nll:
        fit["validation_nll"] = choice.nll[choice.localizer]
    with budget.phase("choice"):  # writing the map-carrying model and checking it loads
        attached = attach_map(network, radio_map, fit, network_model.with_name(MAP_MODEL_FILE), signer)
    return choice, attached


def miscalibration(candidate: dict[str, Any]) -> str:
    """What the champion rule would hold against a candidate's coverages (`coverage_*` keys, as registry.coverages)."""
    return (
        ", ".join(
            f"{name} holds {measured:.0%} (ideal {ideal:.0%})"
            for name, (measured, ideal) in coverages(candidate).items()
        )
        + f", tolerance {COVERAGE_TOLERANCE:.0%}"
    )
