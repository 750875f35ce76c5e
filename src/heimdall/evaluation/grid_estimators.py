"""The grid-posterior estimators of an evaluation: the radio map, the map × model hybrid and the oracle.

A model that carries a radio map is scored with that map and its own exponents (nothing is fitted). Otherwise the
map is fitted for the evaluation on the labelled calibration split (the training split), or self-calibrated on the
test recordings' measurements when no labels are at hand (no position is read), and the hybrid's exponents are
chosen on the validation split by mean NLL. The oracle is the same posterior with the simulator's own maps and
noise (simulated stores only): a floor in NLL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from heimdall.baselines import weighted_centroid
from heimdall.budget import Progress
from heimdall.datasets.place_split import distance_to_nearest_m, place_scales_m
from heimdall.errors import ModelLoadError
from heimdall.evaluation.test_set import short_source
from heimdall.metrics import calibration_summary, error_m
from heimdall.radiomap.answer_arrays import AnswerCollector, MapAnswers, collect
from heimdall.radiomap.batch import Unanswered, all_in_threads, in_threads
from heimdall.radiomap.fit import MapOptions, Measured, fit_radio_map
from heimdall.radiomap.hybrid import (
    TEMPERATURES,
    UNTEMPERED,
    Weights,
    answer,
    best_exponents,
    calibrating_temperature,
    exponent_nlls,
    held_masses,
    network_nll,
    network_set_aside,
    recalibrated_masses,
    temperature_scores,
)
from heimdall.radiomap.log_distance import LOG_DISTANCE_WEIGHTS
from heimdall.radiomap.model import RadioMap
from heimdall.radiomap.oracle import oracle_answers

if TYPE_CHECKING:
    from heimdall.evaluation.test_set import Predict, TestSet
    from heimdall.radiomap.posterior import GridPosterior

PROGRESS_EVERY = 50  # transmissions between two progress reports
Level = tuple[float, float]  # a map's variant: (spread floor dB, log-distance weight)
Posteriors = tuple[np.ndarray, list["GridPosterior"]]  # the rows int [k] a map reads and their posteriors
PartnerAnswer = tuple[np.ndarray, np.ndarray] | None  # the log-distance partner's (mean [2] m, covariance [2, 2] m²)
SPREAD_FLOORS_DB = (0.0, 4.0, 6.0, 8.0)  # the map's spread floors map_variant_chosen tries, none first
VARIANT_GAIN = 0.02  # the share of the validation median error a floor and partner weight must save
PROVENANCE_CHARS = 300
PROVENANCE_KEYS = ("how", "labels_used", "spacing_m", "store_sha256", "store_files", "fitted", "map_version")


@dataclass
class GridEstimates:
    """Answers of the grid-posterior estimators on a test set, and how they were made."""

    answers: dict[str, MapAnswers]
    notes: dict[str, object]


@dataclass
class CarriedMap:
    """The radio map a model carries, how its answers weigh map and network and its FIT_KEY entry."""

    radio_map: RadioMap
    weights: Weights
    fit: dict[str, Any]

    def check_receivers(self, test: TestSet, where: str) -> None:
        """ModelLoadError naming `where` when the test set's receivers are not the map's (ids, in order)."""
        ids = [r.id for r in test.scenario.receivers] if test.scenario is not None else None
        if ids != list(self.radio_map.receiver_ids):
            raise ModelLoadError(
                f"{where}: its radio map's receivers {list(self.radio_map.receiver_ids)} are not those of the "
                f"evaluation set {test.source} ({ids if ids is not None else 'no scenario_yaml attribute'})"
            )

    def provenance(self) -> dict[str, Any]:
        """Which map is scored: the model's own, with what its fit recorded (how, labels, the store's fingerprint and
        files, spacing, when; plain values of at most PROVENANCE_CHARS characters: the entry is the model file's) and
        the floor its spreads were raised to."""
        fit = {k: _plain(self.fit[k]) for k in PROVENANCE_KEYS if k in self.fit}
        return {
            "map": "carried by the model (not refitted)",
            **fit,
            "kind": _plain(self.radio_map.info.get("kind")),
            "n_labels": self.radio_map.n_labels,
            "spacing_m": self.radio_map.grid.spacing_m,
            "spread_floor_db": _plain(self.radio_map.info.get("spread_floor_db", 0.0)),
            "log_distance_weight": self.radio_map.log_distance_weight,
        }


def _plain(value: object) -> object:
    """A number, or text of at most PROVENANCE_CHARS characters (a list: of its first 10 items)."""
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, list):
        return [_plain(v) for v in value[:10]]
    return str(value)[:PROVENANCE_CHARS]


def map_usable(m: Measured, net_mean_m: np.ndarray, net_cov_m2: np.ndarray) -> np.ndarray:
    """Bool [n]: the transmissions a map-carrying model answers with its map — some receiver measured them and the
    network's answer is finite (elsewhere it answers with the network, as the service does)."""
    usable = (m.present & np.isfinite(m.noise_dbm) & (np.isfinite(m.snr_db) | ~m.heard)).any(axis=1)
    return usable & np.isfinite(net_mean_m).all(axis=1) & np.isfinite(net_cov_m2).all(axis=(1, 2))


def measured(test: TestSet) -> Measured:
    """The test set's measurements as the map reads them (SNR, noise power, which receivers recorded and, for power
    readings, which heard and which were censored; which are in an uncalibrated scale)."""
    return Measured.from_features(test.features, test.present > 0, test.params, test.heard, test.power_calibrated)


def fit_map(
    test: TestSet, calibration: TestSet | None, options: MapOptions, on_progress: Progress | None = None
) -> tuple[RadioMap, str]:
    """(map, how it was fitted): on the calibration split's labels, else self-calibrated on the test recordings."""
    assert test.scenario is not None  # callers fit a map only for a store with a scenario
    if calibration is not None:
        m = measured(calibration)
        labelled = m.labelled(calibration.target_m)
        return fit_radio_map(test.scenario, labelled, options=options, on_progress=on_progress), (
            f"fitted on {len(labelled)} labelled training transmissions"
        )
    return fit_radio_map(test.scenario, None, measured(test), options, on_progress), (
        "no labelled split: self-calibrated on the test recordings' measurements (positions unused)"
    )


def map_variant_chosen(
    radio_map: RadioMap,
    validation: TestSet,
    on_progress: Progress | None = None,
    workers: int | None = None,
    floors_db: tuple[float, ...] = SPREAD_FLOORS_DB,
    weights: tuple[float, ...] = LOG_DISTANCE_WEIGHTS,
    as_fitted: Posteriors | None = None,
    answers: list[PartnerAnswer] | None = None,
) -> tuple[dict, dict, np.ndarray]:
    """The spread floor of `floors_db` (dB; RadioMap.with_spread_floor) and the log-distance partner's weight of
    `weights` (RadioMap.with_log_distance_weight; heimdall.radiomap.log_distance) the map answers alone with — both 0
    first — chosen together: of the pairs in which each setting above 0 lowers the median error of the point (the
    posterior mean) on the validation split by VARIANT_GAIN at least against the same pair without it, (0, 0)
    included, the one with the lowest median. Returns what was measured — the floor's report (`spread_floor_db`,
    `median_error_m`: each floor's at the chosen weight), the weight's (`log_distance_weight`, `median_error_m`: each
    weight's at the chosen floor) — and the chosen map's points [n, 2] m (NaN where unanswered). A map without a
    partner keeps the weight 0.

    A map fitted where its labels are dense claims small spreads; at places away from them, as a spatial validation
    split shows, the posterior from such spreads can lean on a few receivers whose maps do not hold there, and the
    partner, a few parameters fitted to the same labels, errs differently there. The two interact (the partner makes
    a floor pay where the map alone would not), so they are chosen as the pair the map ships with. One pass of the
    map's kernel over the validation split per floor — but the floor 0 when `as_fitted` (the map's own posteriors of
    the transmissions it reads, neither floor nor partner weighed in: _answered) is given — and one of the
    partner's unless `answers` (each transmission's partner_answers) are: each weight is the kernel's posterior
    times the partner's answer (RadioMap.weighed_in); on_progress("spread floor and log-distance weight", done,
    total)."""
    if floors_db[0] != 0 or weights[0] != 0:
        raise ValueError(f"floors_db {floors_db}, weights {weights}: expected 0 first (the map as it is)")
    own = radio_map.with_log_distance_weight(0.0)
    tried = weights if own.log_distance is not None else weights[:1]
    vm = measured(validation)
    if answers is None and len(tried) > 1:
        answers = partner_answers(own, vm, workers)
    if answers is not None and len(answers) != len(vm):
        raise ValueError(f"answers: {len(answers)}, expected one per validation transmission ({len(vm)})")
    stage = "spread floor and log-distance weight"
    todo = [floor for floor in floors_db if floor != 0 or as_fitted is None]
    total, done = len(todo) * len(vm), 0
    points = {(f, w): np.full((len(vm), 2), np.nan) for f in floors_db for w in tried}

    def weighed(post: GridPosterior, i: int) -> np.ndarray:  # [W, 2] its points at each weight
        answer = None if answers is None else answers[i]
        return np.array([RadioMap.weighed_in(post, answer, w).mean_m for w in tried])

    def score(floor: float, rows: np.ndarray, fn: Callable[[int], np.ndarray]) -> None:  # fn(k): row k's points
        nonlocal done
        for row, answered in zip(rows, in_threads(fn, len(rows), workers), strict=True):
            if not isinstance(answered, Unanswered):
                for w, point in zip(tried, answered, strict=True):
                    points[(floor, w)][row] = point
            if floor in todo:
                done += 1
                if on_progress and (done % PROGRESS_EVERY == 0 or done == total):
                    on_progress(stage, done, total)

    def kernel_pass(floored: RadioMap) -> Callable[[int], np.ndarray]:  # transmission i's points on `floored`
        return lambda i: weighed(floored.localize(vm.snr_db[i], vm.noise_dbm[i], vm.present[i], vm.heard[i]), i)

    if as_fitted is not None:
        rows, posts = as_fitted
        score(0.0, rows, lambda k: weighed(posts[k], int(rows[k])))
    for floor in todo:
        score(floor, np.arange(len(vm)), kernel_pass(own.with_spread_floor(floor)))
    medians = {pair: _median_error_m(point, validation.target_m) for pair, point in points.items()}

    def earns(pair: Level) -> bool:  # each setting above 0 saves VARIANT_GAIN against the same pair without it
        floor, weight = pair
        saves = lambda other: medians[pair] <= (1 - VARIANT_GAIN) * medians[other]  # noqa: E731
        return (floor == 0 or saves((0.0, weight))) and (weight == 0 or saves((floor, 0.0)))

    floor, weight = min((pair for pair in points if earns(pair)), key=lambda pair: (medians[pair], pair))
    floor_report = _report("spread_floor_db", floor, {f: medians[(f, weight)] for f in floors_db})
    weight_report = _report("log_distance_weight", weight, {w: medians[(floor, w)] for w in tried})
    return floor_report, weight_report, points[(floor, weight)]


def partner_answers(radio_map: RadioMap, vm: Measured, workers: int | None) -> list[PartnerAnswer]:
    """Each transmission's answer of the map's log-distance partner (RadioMap.partner_answer; None where it gives
    none or the map cannot read the transmission), in `workers` threads."""
    answers = in_threads(
        lambda i: radio_map.partner_answer(vm.snr_db[i], vm.noise_dbm[i], vm.present[i], vm.heard[i]), len(vm), workers
    )
    return [None if isinstance(a, Unanswered) else a for a in answers]


def as_shipped(radio_map: RadioMap, chosen: Mapping[str, Any]) -> RadioMap:
    """The map as a model carries it: its spreads floored at chosen["spread_floor_db"] and its log-distance partner
    weighed in at chosen["log_distance_weight"] (hybrid_exponents' result, a FIT_KEY entry or a choice's summary;
    absent or null: 0) — the floor 0 unless the map alone is shipped, the weight 0 when the network alone is."""
    floor_db, weight = (float(chosen.get(key) or 0.0) for key in ("spread_floor_db", "log_distance_weight"))
    return radio_map.with_spread_floor(floor_db).with_log_distance_weight(weight)


def _report(key: str, best: float, medians: dict[float, float]) -> dict:
    """What a choice among a map's variants measured: {key: the level kept, "median_error_m": level → median}."""
    return {key: best, "median_error_m": {f"{level:g}": m for level, m in medians.items()}}


def _median_error_m(points_m: np.ndarray, truth_m: np.ndarray) -> float:
    """The median error (m) of points [n, 2] (NaN where unanswered: left out) against truth [n, 2]; inf when none."""
    answered = np.isfinite(points_m).all(axis=1)
    errors = error_m(points_m[answered], truth_m[answered])
    return float(np.median(errors)) if len(errors) else float("inf")


def _answered(
    radio_map: RadioMap, vm: Measured, workers: int | None, on_progress: Progress | None, stage: str
) -> tuple[np.ndarray, list[GridPosterior]]:
    """(rows int [k], posteriors [k]) of the transmissions of `vm` the map can read; on_progress(stage, …)."""
    rows, posts = [], []
    for i, p in enumerate(radio_map.posteriors(vm.snr_db, vm.noise_dbm, vm.present, workers, vm.heard)):
        if not isinstance(p, Unanswered):
            rows.append(i)
            posts.append(p)
        if on_progress and ((i + 1) % PROGRESS_EVERY == 0 or i + 1 == len(vm)):
            on_progress(stage, i + 1, len(vm))
    return np.array(rows, np.int64), posts


def hybrid_exponents(
    radio_map: RadioMap,
    validation: TestSet,
    predict: Predict,
    on_progress: Progress | None = None,
    workers: int | None = None,
    labels_m: np.ndarray | None = None,
    spread_floors_db: tuple[float, ...] = SPREAD_FLOORS_DB,
    log_distance_weights: tuple[float, ...] = LOG_DISTANCE_WEIGHTS,
) -> dict:
    """The hybrid's exponents chosen on the validation split: alpha, beta, validation_nll (mean, nats per km²),
    validation_n, spread_floor_db and log_distance_weight (of the one with the lower NLL), `candidates`: the mean NLL
    of each localizer on the same transmissions and footing — `network` (its Gaussian), `map` (the best α with β = 0,
    the map's spreads floored at `spread_floor_db` among `spread_floors_db` and its log-distance partner weighed in at
    `log_distance_weight` among `log_distance_weights`, chosen together: map_variant_chosen) and `hybrid` (the best
    α, β with β > 0, the map with the same partner weight but its spreads as fitted: a wider map would hand more of
    each answer to a network that validation may judge well where it extrapolates badly, while the partner, which
    reads the same physics on every block, hands it less), the map and the hybrid at the temperature that brings their
    95 % regions to their coverage (heimdall.radiomap.hybrid.calibrating_temperature; `temperature`, exponents
    already divided by it; `region_masses`, the 50 % region's mass recalibrated after it,
    heimdall.radiomap.hybrid.recalibrated_masses, its coverage out of sample and `coverage_region50_as_claimed` beside
    it) — with its calibration as the champion rule
    reads it (the network's 1σ/2σ ellipses, the others' 50 %/95 % regions) and its median error (m; the map's and
    the hybrid's from their answer's point, heimdall.radiomap.hybrid.answer), the hybrid's with `network_set_aside`,
    the transmissions whose network it sets aside (heimdall.radiomap.hybrid.network_set_aside) — `spread_floor`
    and `log_distance`, what the choice of the floor and the weight measured (map_variant_chosen), and `centroid`:
    the weighted centroid's. `labels_m` [k, 2]: the training labels; the medians are also given on the validation
    transmissions far from all of them (`median_error_far_m`, heimdall.datasets.place_split) when there are at least
    MIN_FAR. Posteriors in `workers` threads (None: every CPU), on_progress("validation", done, total) as they are
    computed; transmissions the map cannot read are left out."""
    radio_map = radio_map.with_log_distance_weight(0.0)  # the map as fitted, where the choice starts
    vm = measured(validation)
    rows, posts = _answered(radio_map, vm, workers, on_progress, "validation")
    weighs = radio_map.log_distance is not None and len(log_distance_weights) > 1
    answers = partner_answers(radio_map, vm, workers) if weighs else None
    floor, partner, _ = map_variant_chosen(
        radio_map, validation, on_progress, workers, spread_floors_db, log_distance_weights, (rows, posts), answers
    )
    weight = partner["log_distance_weight"]

    def with_partner(these: list[GridPosterior]) -> list[GridPosterior]:  # the partner weighed in at `weight`
        if weight == 0 or answers is None:
            return these
        return all_in_threads(lambda k: RadioMap.weighed_in(these[k], answers[rows[k]], weight), len(these), workers)

    # the hybrid reads the map with the same partner, its spreads as fitted
    hybrid_posts = with_partner(posts)
    floor_db = floor["spread_floor_db"]
    map_posts = hybrid_posts
    if floor_db != 0:
        floored_rows, floored_posts = _answered(
            radio_map.with_spread_floor(floor_db), vm, workers, on_progress, "validation"
        )
        # which transmissions a map can read depends on neither its spreads nor its partner
        assert np.array_equal(floored_rows, rows)
        map_posts = with_partner(floored_posts)
    del posts  # the map as fitted's posteriors, held no longer than a candidate reads them (memory)
    net_mean, net_cov = predict(validation)
    net_mean, net_cov, truth = net_mean[rows], net_cov[rows], validation.target_m[rows]
    cal = calibration_summary(net_mean, net_cov, truth)
    far = _far_rows(truth, labels_m, validation.rx_position_m)
    centroid = weighted_centroid(validation.power_dbm[rows], validation.heard[rows], validation.rx_position_m)
    candidates: dict[str, dict] = {
        "network": {
            "nll": network_nll(net_mean, net_cov, truth),
            "coverage_1sigma": cal["coverage_1sigma"],
            "coverage_2sigma": cal["coverage_2sigma"],
            **_medians(error_m(net_mean, truth), far),
        }
    }
    nlls = exponent_nlls(hybrid_posts, net_mean, net_cov, truth, workers)
    map_nlls = nlls if map_posts is hybrid_posts else exponent_nlls(map_posts, net_mean, net_cov, truth, workers)
    for name, beta_positive, these, these_nlls in (
        ("map", False, map_posts, map_nlls),
        ("hybrid", True, hybrid_posts, nlls),
    ):
        alpha, beta, _ = best_exponents(these_nlls, beta_positive)
        scores, point_error_m = temperature_scores(these, net_mean, net_cov, truth, alpha, beta, workers)
        k = calibrating_temperature(scores[:, :, 2].mean(axis=0))
        t = TEMPERATURES[k]
        held = held_masses(these, net_mean, net_cov, truth, Weights(alpha / t, beta / t), workers)
        masses, (coverage50,) = recalibrated_masses(held)
        candidates[name] = {
            "alpha": alpha / t,
            "beta": beta / t,
            "nll": float(scores[:, k, 0].mean()),
            "temperature": t,
            "region_masses": list(masses),
            "spread_floor_db": floor["spread_floor_db"] if name == "map" else 0.0,
            "log_distance_weight": weight,
            "coverage_region50": float(coverage50),
            "coverage_region50_as_claimed": float(scores[:, k, 1].mean()),
            "coverage_region95": float(scores[:, k, 2].mean()),
            "coverage_region95_untempered": float(scores[:, UNTEMPERED, 2].mean()),
            **_medians(point_error_m, far),
        }
    candidates["hybrid"]["network_set_aside"] = sum(
        network_set_aside(p, net_mean[i], net_cov[i]) is not None for i, p in enumerate(hybrid_posts)
    )
    shipped = min(("map", "hybrid"), key=lambda name: candidates[name]["nll"])
    return {
        **{key: candidates[shipped][key] for key in ("alpha", "beta", "temperature", "region_masses")},
        "spread_floor_db": candidates[shipped]["spread_floor_db"],
        "log_distance_weight": candidates[shipped]["log_distance_weight"],
        "validation_nll": candidates[shipped]["nll"],
        "validation_n": len(rows),
        "candidates": candidates,
        "spread_floor": floor,
        "log_distance": partner,
        "centroid": _medians(error_m(centroid, truth), far),
    }


MIN_FAR = 20  # validation transmissions far from the training labels needed to judge on them


def _far_rows(truth_m: np.ndarray, labels_m: np.ndarray | None, rx_position_m: np.ndarray) -> np.ndarray | None:
    """Bool [n]: the validation truths at least the network's gap (place_scales_m) from every training label;
    None without labels or with fewer than MIN_FAR such."""
    if labels_m is None:
        return None
    far = distance_to_nearest_m(truth_m, labels_m) >= place_scales_m(rx_position_m)[1]
    return far if far.sum() >= MIN_FAR else None


def _medians(errors_m: np.ndarray, far: np.ndarray | None) -> dict[str, float]:
    """`median_error_m` of the errors [n] (m) and, with `far` (bool [n]), `median_error_far_m` and `n_far`."""
    out = {"median_error_m": float(np.median(errors_m))}
    if far is not None:
        out |= {"median_error_far_m": float(np.median(errors_m[far])), "n_far": int(far.sum())}
    return out


def grid_estimates(
    test: TestSet,
    calibration: TestSet | None,
    validation: TestSet | None,
    predict: Predict | None,
    options: MapOptions | None,
    on_progress: Progress | None = None,
    carried: CarriedMap | None = None,
    workers: int | None = None,
) -> GridEstimates:
    """Answers of radio_map, hybrid and oracle (simulated stores). With `carried` (a model's own map): its map and
    exponents, nothing fitted. Else a map fitted for the evaluation with `options` (`radio_map`: as fitted), and a
    hybrid when a model and a validation split are given (the exponents hybrid_exponents ships, on the map as
    `heimdall map fit` would attach it: floored when they are the map's alone). options None: no oracle (and,
    without `carried`, nothing). The posteriors in `workers` threads (None: every CPU)."""
    if carried is not None:
        radio_map = carried.radio_map
        notes: dict[str, object] = {"radio_map": carried.provenance()}
        weights: Weights | None = carried.weights
        weighed = radio_map  # the map the model carries: floored already when the map alone is shipped
        notes["hybrid"] = {
            "alpha": carried.weights.alpha,
            "beta": carried.weights.beta,
            "region_masses": list(carried.weights.region_masses),
            "chosen": "the model's own exponents",
        }
    else:
        assert options is not None  # no map to score without one
        radio_map, how = fit_map(test, calibration, options, on_progress)
        notes = {
            "radio_map": {
                "map": "fitted for this evaluation",
                "how": how,
                "fitted_on": short_source(calibration.source) if calibration is not None else "the test recordings",
                "kind": radio_map.info.get("kind"),
                "n_labels": radio_map.n_labels,
                "spacing_m": radio_map.grid.spacing_m,
            }
        }
        weights, weighed = None, radio_map
        if predict is not None and validation is not None:
            chosen = hybrid_exponents(radio_map, validation, predict, on_progress, workers)
            weights = Weights(chosen["alpha"], chosen["beta"], tuple(chosen["region_masses"]))
            weighed = as_shipped(radio_map, chosen)  # as `map fit` would attach it
            notes["hybrid"] = chosen
        elif predict is not None:
            notes["hybrid"] = "no validation split to choose the exponents on: not evaluated"
    tm = measured(test)
    n = len(test.target_m)
    collectors = {"radio_map": AnswerCollector(n, test.target_m)}
    if weights is not None and predict is not None:
        collectors["hybrid"] = AnswerCollector(n, test.target_m)
        net_mean, net_cov = predict(test)

    def answer_one(i: int) -> None:
        post = radio_map.localize(tm.snr_db[i], tm.noise_dbm[i], tm.present[i], tm.heard[i])
        collectors["radio_map"].add(i, post)
        if weights is not None:
            if weighed is not radio_map:
                post = weighed.localize(tm.snr_db[i], tm.noise_dbm[i], tm.present[i], tm.heard[i])
            collectors["hybrid"].add(i, answer(post, net_mean[i], net_cov[i], weights))

    progress = (lambda i, k: on_progress("radio map", i, k)) if on_progress else None
    collect(answer_one, n, list(collectors.values()), progress, workers)
    answers = {k: c.answers for k, c in collectors.items()}
    if options is None or test.scenario is None or test.tx_height_m is None or test.gain_offset_db is None:
        return GridEstimates(answers, notes)
    answers["oracle"] = oracle_answers(
        test.scenario,
        test.gain_offset_db,
        test.tx_height_m,
        tm.snr_db,
        tm.noise_dbm,
        tm.present,
        test.target_m,
        radio_map.grid.spacing_m,  # the scored map's grid: densities per km² on the same cells
        on_progress=(lambda i, k: on_progress("oracle", i, k)) if on_progress else None,
        workers=workers,
    )
    return GridEstimates(answers, notes)
