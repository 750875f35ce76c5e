"""Building a radio map: from the scenario's physics, unlabelled recordings and labelled transmissions.

Mean received power of receiver r at x for a 0 dBm transmitter:

    μ_r(x) = a_r − L_r(x) − 10·c_r·log10(d_r(x) / SLOPE_REFERENCE_M) + f_r(x)

L_r is the shape of the path loss: the scenario's median model (heimdall.scenario.path_loss) for a
transmitter at the scenario's typical antenna height, or a plain log-distance law (heimdall.scenario.path_loss)
when the recordings say the scenario's model does not fit the network. a_r (offset: calibration, antenna,
site) and c_r (slope correction) are fitted per receiver with every transmission's power unknown
(alternating least squares with weak priors):
  * from labelled transmissions (their positions known), for both shapes, keeping the one that leaves the
    smaller residual; then f_r, a residual field kriged from the labels (heimdall.radiomap.field), each
    label's transmit power read from the other receivers' powers less their own fields (a first pass);
  * without labels, from unlabelled recordings by Monte Carlo EM (`self_calibrate`): positions drawn from
    each transmission's posterior under the current map, the map refitted to them, a few rounds, the shape
    and round with the highest mean evidence kept; the map's spread is then set so that each receiver's
    power, predicted from the others, scatters as predicted (leave-one-receiver-out z-scores).
Receivers that measured a weak power (down to FIT_MIN_SNR_DB) count too, so the fit is not biased towards
places where a receiver barely hears. With neither labels nor recordings the map is the scenario's
physics alone: its shadowing σ plus PHYSICS_MODEL_SD_DB as spread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial import cKDTree

from heimdall.budget import Progress
from heimdall.features import FeatureParams
from heimdall.radiomap.batch import MapInputError, Unanswered, all_in_threads
from heimdall.radiomap.fading_kernel import scenario_fading
from heimdall.radiomap.field import (
    ROUGH_HYPER_FTOL,
    FieldHyper,
    fit_hyper,
    krige,
    krige_on_grid,
    with_own_measurement,
)
from heimdall.radiomap.fit_budget import Deadline, counter, each_on_threads
from heimdall.radiomap.grid import MapGrid
from heimdall.radiomap.kernel import POWER_STEP_DB
from heimdall.radiomap.log_distance import LogDistancePartner
from heimdall.radiomap.measurement_noise import power_noise_for
from heimdall.radiomap.model import STRONG_SNR_DB, RadioMap
from heimdall.radiomap.posterior import GridPosterior
from heimdall.scenario.path_loss import log_distance_loss_db, median_path_loss_db, slope_decades

if TYPE_CHECKING:
    from heimdall.scenario.domain import Scenario

log = logging.getLogger(__name__)

SHAPES = ("scenario", "log_distance")
FIT_MIN_SNR_DB = -8.0
PHYSICS_MODEL_SD_DB = 2.0
POWER_PRIOR_MARGIN_DB = 30.0  # the transmit power prior spans the scenario's range widened by this, each side
POWER_KDE_SD_DB = 3.0
POWER_PRIOR_FLAT_SHARE = 0.1
OFFSET_PRIOR_SD_DB = 10.0
UNCALIBRATED_OFFSET_PRIOR_SD_DB = 60.0  # a receiver read in its own dB scale: its offset is anyone's guess
SLOPE_PRIOR_SD = 1.0
MIN_FIELD_POINTS = 30
ALTERNATING_ROUNDS = 8
EM_TRANSMISSIONS = 400
EM_ROUNDS = 4  # refits per shape, at most
EM_TOLERANCE = 0.25  # nats: a refit raising the mean log evidence by less ends its shape's rounds
EM_SAMPLES = 4
WORK_CHUNK = 32  # transmissions handed to the threads at a time
MIN_UNLABELLED = 100
MIN_LABELLED = 30  # fewer labels fit no offsets, slopes or fields: the map is calibrated without their positions
SPREAD_CHECK_TRANSMISSIONS = 300
SPREAD_CHECK_COVERAGE = 0.95
SPREAD_SEARCH_DB = (2.0, 15.0)
SPREAD_BISECTIONS = 6


@dataclass(frozen=True)
class MapOptions:
    """How a map is built: its grid's cell side (m; None: from the network's geometry, Scenario.scale) and coarse
    factor (MapGrid), the seed of its draws, the fit's time budget (s; None: no limit — see fit_radio_map for what a
    budget cuts) and the threads it fits receivers' fields on (None: every core the process may use)."""

    spacing_m: float | None = None
    coarse_factor: int = 4
    seed: int = 0
    time_budget_s: float | None = None
    workers: int | None = None

    def spacing_for(self, scenario: Scenario) -> float:
        """The grid cell side (m) of a map of `scenario`: spacing_m, else the scenario's network scale's."""
        return scenario.scale.map_spacing_m if self.spacing_m is None else self.spacing_m


@dataclass(frozen=True)
class Measured:
    """Transmissions as the receivers measured them: SNR and noise power per receiver, which recorded, which heard.

    heard: bool [n, R] (None: every present receiver with a finite reading); a present receiver not heard is a
    censored reading (its power at or below its floor, given as its noise power): the posterior reads it as such
    and the fit never as a value. power_calibrated: bool [R] (None: all), False for receivers whose powers are in
    their own uncalibrated dB scale (an unknown offset the fit learns)."""

    snr_db: np.ndarray  # float [n, R]
    noise_dbm: np.ndarray  # float [n, R]
    present: np.ndarray  # bool [n, R]
    heard: np.ndarray = field(default=None, kw_only=True)  # type: ignore[arg-type]  # None: filled in __post_init__
    power_calibrated: np.ndarray | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if self.heard is None:
            finite = np.isfinite(self.snr_db) & np.isfinite(self.noise_dbm)
            object.__setattr__(self, "heard", np.asarray(self.present, bool) & finite)
        else:
            object.__setattr__(self, "heard", np.asarray(self.heard, bool) & np.asarray(self.present, bool))

    @classmethod
    def from_features(
        cls,
        features: np.ndarray,
        present: np.ndarray,
        params: FeatureParams,
        mask: np.ndarray | None = None,
        power_calibrated: np.ndarray | None = None,
    ) -> Measured:
        """From features [n, R, F] (heimdall.features, laid out by `params`), present [n, R] and the store's mask
        [n, R] and receivers/power_calibrated [R] where it has them. The mask tells heard from censored for power
        readings only (psd_bins 0: a present reading not in the mask is at or below the receiver's floor); features
        extracted from IQ carry the extractor's own floor and every present one is read as measured."""
        snr = features[..., params.snr_index].astype(np.float64)
        heard = None if mask is None or params.psd_bins else np.asarray(mask, bool)
        return cls(
            snr,
            features[..., params.power_index].astype(np.float64) - snr,
            np.asarray(present, bool),
            heard=heard,  # type: ignore[arg-type]  # None: every present one
            power_calibrated=power_calibrated,
        )

    def __len__(self) -> int:
        return len(self.snr_db)

    @property
    def power_dbm(self) -> np.ndarray:
        """Float [n, R]: the measured in-band power, dBm."""
        return self.snr_db + self.noise_dbm

    @property
    def calibrated(self) -> np.ndarray:
        """Bool [R]: the receivers whose powers are in dBm."""
        n_rx = self.snr_db.shape[1]
        return np.ones(n_rx, bool) if self.power_calibrated is None else np.asarray(self.power_calibrated, bool)

    def usable(self) -> np.ndarray:
        """Bool [n, R]: measurements precise enough to fit on (heard, finite, SNR ≥ FIT_MIN_SNR_DB)."""
        return self.heard & np.isfinite(self.snr_db) & (self.snr_db >= FIT_MIN_SNR_DB)

    def subset(self, rows: np.ndarray) -> Measured:
        """The transmissions `rows` (indices or bool [n])."""
        return Measured(
            self.snr_db[rows],
            self.noise_dbm[rows],
            self.present[rows],
            heard=self.heard[rows],
            power_calibrated=self.power_calibrated,
        )

    def unlabelled(self) -> Measured:
        """The same transmissions as a plain Measured (positions, if any, dropped)."""
        return Measured(
            self.snr_db, self.noise_dbm, self.present, heard=self.heard, power_calibrated=self.power_calibrated
        )

    def labelled(self, position_m: np.ndarray) -> Labelled:
        """The same transmissions labelled with their transmitters' positions [n, 2] m."""
        return Labelled(
            self.snr_db,
            self.noise_dbm,
            self.present,
            np.asarray(position_m, np.float64),
            heard=self.heard,
            power_calibrated=self.power_calibrated,
        )


@dataclass(frozen=True)
class Labelled(Measured):
    """Measured transmissions whose transmitter position is known."""

    position_m: np.ndarray  # float [n, 2]

    @classmethod
    def from_features(  # type: ignore[override]
        cls,
        features: np.ndarray,
        present: np.ndarray,
        params: FeatureParams,
        position_m: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        power_calibrated: np.ndarray | None = None,
    ) -> Labelled:
        """From features [n, R, F], present [n, R], mask, power_calibrated (as Measured.from_features) and
        position_m [n, 2]."""
        m = Measured.from_features(features, present, params, mask, power_calibrated)
        return m.labelled(np.asarray(position_m, np.float64))


def nominal_tx_height_m(scenario: Scenario) -> float:
    """The geometric mean of the scenario's transmitter antenna height range, m."""
    lo, hi = scenario.transmitter.antenna_height_m
    return float(np.sqrt(lo * hi))


def shape_loss_db(scenario: Scenario, points_m: np.ndarray, shape: str = "scenario") -> tuple[np.ndarray, np.ndarray]:
    """(path-loss shape [n, R] dB, distance [n, R] m) from points [n, 2] to the scenario's receivers."""
    rx = scenario.receiver_positions_m()
    d = np.linalg.norm(np.asarray(points_m, float)[:, None, :] - rx[None], axis=-1)
    if shape == "log_distance":
        return log_distance_loss_db(d), d
    heights = np.array([r.antenna_height_m for r in scenario.receivers])
    return median_path_loss_db(
        scenario.environment.path_loss, d, scenario.frequency_hz, nominal_tx_height_m(scenario), heights[None, :]
    ), d


def _slope_regressor(d: np.ndarray) -> np.ndarray:
    return -10.0 * slope_decades(d)


def _flat_power_prior(scenario: Scenario) -> tuple[float, np.ndarray]:
    lo, hi = scenario.transmitter.power_dbm
    start = np.floor(lo - POWER_PRIOR_MARGIN_DB)
    n = int(np.ceil((hi + POWER_PRIOR_MARGIN_DB - start) / POWER_STEP_DB)) + 1
    return float(start), np.full(n, -np.log(n))


def physics_map(scenario: Scenario, options: MapOptions = MapOptions()) -> RadioMap:
    """The zero-label map: the scenario's path loss, its shadowing σ as the map's spread, a flat power prior."""
    grid = MapGrid.over(scenario.area_bounds_m(), options.spacing_for(scenario), options.coarse_factor)
    with ThreadPoolExecutor(2) as pool:  # two independent simulations, each with its own generator
        noise = pool.submit(power_noise_for, FeatureParams.from_scenario(scenario), seed=options.seed)
        kernels, weights = scenario_fading(scenario, seed=options.seed)
    mixture_mean = float(np.exp(weights) @ [k.mean_db for k in kernels])
    loss, _ = shape_loss_db(scenario, grid.centres())
    sd = float(np.hypot(scenario.environment.shadowing.sigma_db, PHYSICS_MODEL_SD_DB))
    start, prior = _flat_power_prior(scenario)
    return RadioMap(
        grid=grid,
        receiver_ids=tuple(r.id for r in scenario.receivers),
        rx_position_m=scenario.receiver_positions_m(),
        mean_dbm=(-loss).astype(np.float32),
        spread_db=np.full(loss.shape, sd, np.float32),
        noise=noise.result(),
        # offsets a_r and the unknown power absorb the fading's mean
        kernels=tuple(k.shifted(-mixture_mean) for k in kernels),
        component_log_weight=weights,
        power_start_dbm=start,
        power_log_prior=prior,
        n_labels=0,
        info={
            "kind": "physics",
            "shape": "scenario",
            "path_loss": scenario.environment.path_loss.model,
            "spread_db": sd,
            "fading_mean_db": mixture_mean,
        },
    )


def _parametric(
    base: RadioMap, scenario: Scenario, shape: str, a: np.ndarray | float, c: np.ndarray | float
) -> np.ndarray:
    """float32 [cells, R] mean power of the offset/slope-corrected shape on the map's grid."""
    loss, d = shape_loss_db(scenario, base.grid.centres(), shape)
    return (-loss + a + c * _slope_regressor(d)).astype(np.float32)


def fit_radio_map(
    scenario: Scenario,
    labelled: Labelled | None = None,
    unlabelled: Measured | None = None,
    options: MapOptions = MapOptions(),
    on_progress: Progress | None = None,
) -> RadioMap:
    """The best map the data allow: labelled fit, else self-calibration on unlabelled recordings, else physics.

    Fewer than MIN_LABELLED labels cannot fit offsets, slopes and field hyper-parameters: a warning, and the
    labelled recordings join the unlabelled ones (their positions unused). on_progress(stage, done, total)
    follows the long stages ("field": the receivers' two field passes; "calibrate": self-calibration's
    posteriors; "spread": its spread's bisection). With `options.time_budget_s` the fit stops refining when the
    budget is spent and warns what it cut (also in the map's info["time_budget"]); the map is always complete —
    _fit_labelled and self_calibrate say what each cuts.
    """
    deadline = Deadline.after(options.time_budget_s)
    base = physics_map(scenario, options)
    calibrated = next((d.calibrated for d in (labelled, unlabelled) if d is not None), np.ones(base.n_receivers, bool))
    return _uncalibrated_left_out(
        _fit(base, scenario, labelled, unlabelled, options, on_progress, deadline), calibrated
    )


def _fit(
    base: RadioMap,
    scenario: Scenario,
    labelled: Labelled | None,
    unlabelled: Measured | None,
    options: MapOptions,
    on_progress: Progress | None,
    deadline: Deadline,
) -> RadioMap:
    """fit_radio_map's choice of fit."""
    if labelled is not None and len(labelled) >= MIN_LABELLED:
        fitted = _fit_labelled(base, scenario, labelled, options, on_progress, deadline)
        power_dbm = np.where(labelled.heard, labelled.snr_db + labelled.noise_dbm, 0.0)
        partner = LogDistancePartner.fitted(power_dbm, labelled.heard, labelled.position_m, fitted.rx_position_m)
        return _keeping_table(fitted, log_distance=partner)  # weight 0: chosen on validation, if at all
    if labelled is not None and len(labelled):
        log.warning(
            "%d labelled transmissions are too few to fit the map on (at least %d): their positions are not used",
            len(labelled),
            MIN_LABELLED,
        )
        plain = labelled.unlabelled()
        unlabelled = plain if unlabelled is None else _concat(unlabelled, plain)
    if unlabelled is not None and len(unlabelled) >= MIN_UNLABELLED:
        return self_calibrate(base, scenario, unlabelled, options, on_progress, deadline)
    if unlabelled is not None and len(unlabelled):
        log.warning(
            "%d unlabelled transmissions are too few to calibrate the map on (at least %d): physics only",
            len(unlabelled),
            MIN_UNLABELLED,
        )
    return base


def _uncalibrated_left_out(m: RadioMap, calibrated: np.ndarray) -> RadioMap:
    """`m`, leaving out of its posterior (info["left_out"]) the receivers in an uncalibrated scale when no offset
    was learned for them (a physics map: the scenario cannot place their readings), with a warning naming them."""
    ids = _uncalibrated_ids(m, calibrated)
    if not ids or "offset_db" in m.info:
        return m
    log.warning(
        "receivers %s read power in an uncalibrated scale and the map learned no offset for them (no labels, no "
        "self-calibration): left out of its posterior",
        ", ".join(ids),
    )
    return _leaving_out(m, ids)


def _uncalibrated_ids(m: RadioMap, calibrated: np.ndarray) -> list[str]:
    return [rid for rid, ok in zip(m.receiver_ids, calibrated, strict=True) if not ok]


def _leaving_out(m: RadioMap, ids: list[str]) -> RadioMap:
    """`m` with the receivers `ids` left out of its posterior (info["left_out"])."""
    return _keeping_table(m, info={**m.info, "left_out": ids}) if ids else m


def _concat(a: Measured, b: Measured) -> Measured:
    return Measured(
        *(
            np.concatenate([x, y])
            for x, y in ((a.snr_db, b.snr_db), (a.noise_dbm, b.noise_dbm), (a.present, b.present))
        ),
        heard=np.concatenate([a.heard, b.heard]),
        power_calibrated=a.power_calibrated,
    )


def self_calibrate(
    base: RadioMap,
    scenario: Scenario,
    unlabelled: Measured,
    options: MapOptions = MapOptions(),
    on_progress: Progress | None = None,
    deadline: Deadline | None = None,
) -> RadioMap:
    """Offsets, slopes, shape and spread from unlabelled recordings (see the module docstring).

    Monte Carlo EM on EM_TRANSMISSIONS of them: up to EM_ROUNDS refits per shape, a shape's rounds ending when
    one raises the mean log evidence by less than EM_TOLERANCE. Receivers in an uncalibrated scale are left out of
    each shape's first posteriors (the physics cannot place their readings) and start at the offset the others'
    positions imply (the first refit, its offset prior UNCALIBRATED_OFFSET_PRIOR_SD_DB wide); that first round is
    not compared on evidence with the later ones, which read every receiver. When every receiver is uncalibrated
    the first posteriors read them all as dBm (there are no others), and the refits learn each one's offset. Past
    the deadline no further round starts (the best map evaluated so far is kept) and the spread is still
    calibrated: a complete map."""
    deadline = deadline or Deadline.after(options.time_budget_s)
    rng = np.random.default_rng(options.seed)
    informative = np.flatnonzero((unlabelled.usable() & (unlabelled.snr_db >= STRONG_SNR_DB)).sum(1) >= 2)
    if len(informative) < MIN_UNLABELLED:
        log.warning(
            "only %d unlabelled transmissions are heard strongly by two receivers (at least %d are needed "
            "to calibrate the map): physics only",
            len(informative),
            MIN_UNLABELLED,
        )
        return base
    pick = rng.choice(informative, min(EM_TRANSMISSIONS, len(informative)), replace=False)
    data = unlabelled.subset(pick)
    residual_var = base.fading_var_db2 + float(base.spread_db.mean()) ** 2
    total = len(SHAPES) * (EM_ROUNDS + 1) * len(data)
    progress = counter(on_progress, "calibrate", total, every=WORK_CHUNK)
    uncalibrated = _uncalibrated_ids(base, unlabelled.calibrated)
    if len(uncalibrated) == base.n_receivers:
        # none in dBm to place the first posteriors: every receiver read at the physics' levels (a common offset
        # is the unknown transmit power's), the first refit learns their own
        log.warning("every receiver reads power in an uncalibrated scale: the first posteriors read them as dBm")
        uncalibrated = []
    best_map, best_evidence, history, cut = _leaving_out(base, uncalibrated), -np.inf, [], []
    for shape in SHAPES:
        current = _leaving_out(
            _keeping_table(base, mean_dbm=_parametric(base, scenario, shape, 0.0, 0.0)), uncalibrated
        )
        previous = -np.inf
        for r in range(EM_ROUNDS + 1):
            if deadline.passed():
                cut.append(f"self-calibration stopped before round {r} of shape {shape}")
                break
            points, evidence = _posterior_samples(current, data, rng, options, progress)
            history.append({"shape": shape, "round": r, "mean_log_evidence": evidence})
            if uncalibrated and r == 0:
                evidence = -np.inf  # fewer receivers read: not comparable; the first refit always follows
            elif evidence > best_evidence:
                best_map, best_evidence = current, evidence
            if r == EM_ROUNDS or evidence - previous < EM_TOLERANCE:
                break
            previous = evidence
            loss, d = shape_loss_db(scenario, points, shape)
            use = np.repeat(data.usable(), EM_SAMPLES, axis=0)
            a, c, _, _ = _fit_offsets(
                np.repeat(data.power_dbm, EM_SAMPLES, axis=0),
                use,
                -loss,
                _slope_regressor(d),
                residual_var,
                prior_power_dbm=float(np.mean(scenario.transmitter.power_dbm)),
                calibrated=unlabelled.calibrated,
            )
            current = _keeping_table(
                current,
                mean_dbm=_parametric(base, scenario, shape, a, c),
                info={
                    **base.info,
                    "kind": "self-calibrated",
                    "shape": shape,
                    "offset_db": a.tolist(),
                    "slope_correction": c.tolist(),
                },
            )
    if on_progress:
        on_progress("calibrate", total, total)
    deadline.warn(cut)
    spread = calibrate_spread(best_map, unlabelled, rng, options, on_progress)
    return _keeping_table(
        best_map,
        spread_db=np.full(base.spread_db.shape, spread, np.float32),
        info={
            **best_map.info,
            "spread_db": spread,
            "unlabelled": len(unlabelled),
            "calibration": history,
            **deadline.info(cut),
        },
    )


def _keeping_table(m: RadioMap, **changes: object) -> RadioMap:
    """replace(m, **changes) sharing m's likelihood table and what the kernels read of it (built here if m has not
    yet): they depend on the noise and the fading kernels only, which `changes` must leave alone, and take longer
    to build than a posterior."""
    assert "noise" not in changes and "kernels" not in changes
    new = replace(m, **changes)  # type: ignore[arg-type]
    new.share_table(m)
    return new


def _posterior_samples(
    m: RadioMap, data: Measured, rng: np.random.Generator, options: MapOptions, step: Callable[[], None]
) -> tuple[np.ndarray, float]:
    """EM_SAMPLES positions [n·EM_SAMPLES, 2] drawn from each transmission's posterior, and the mean log evidence
    (the posteriors on threads, the draws in order)."""
    points, evidence = [], []
    half = m.grid.spacing_m / 2
    for post in _posteriors(m, data, options.workers):
        cells = post.cells[rng.choice(len(post.cells), EM_SAMPLES, p=post.weights)]
        points.append(m.grid.centres(cells) + rng.uniform(-half, half, (EM_SAMPLES, 2)))
        evidence.append(post.log_evidence)
        step()
    return np.concatenate(points), float(np.mean(evidence))


def _posteriors(m: RadioMap, data: Measured, workers: int | None) -> Iterator[GridPosterior]:
    """The posteriors of transmissions chosen as heard by receivers, in order (computed by `workers` threads, None:
    one per CPU); each must be answered (MapInputError naming the one that is not)."""
    for post in m.posteriors(data.snr_db, data.noise_dbm, data.present, workers, data.heard):
        if isinstance(post, Unanswered):
            raise MapInputError(f"transmission {post.index}: {post.reason}")
        yield post


def calibrate_spread(
    m: RadioMap,
    data: Measured,
    rng: np.random.Generator,
    options: MapOptions = MapOptions(),
    on_progress: Progress | None = None,
) -> float:
    """The map spread (dB, the same for every cell and receiver) at which a strongly heard receiver's power,
    predicted from the others, falls inside its central SPREAD_CHECK_COVERAGE predictive interval as often as
    that interval claims (coverage rather than E[z²]: real errors are heavier-tailed than a Gaussian).

    Bisection on the log spread. The other receivers' posterior sees the spread only through the likelihood
    table's spread level, and the held-out receiver's predictive variance is (what the others leave) + spread²:
    one set of predictions per level serves every spread that falls on it."""
    strong = data.usable() & (data.snr_db >= STRONG_SNR_DB)
    rows = np.flatnonzero(strong.sum(1) >= 3)
    rows = rng.choice(rows, min(SPREAD_CHECK_TRANSMISSIONS, len(rows)), replace=False)
    held = np.array([int(rng.choice(np.flatnonzero(strong[j]))) for j in rows], np.int64)
    measured = data.power_dbm[rows, held]
    lo, hi = SPREAD_SEARCH_DB
    by_level: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # level → (mean [k] dBm, variance less spread² [k])

    from scipy.stats import norm

    limit = norm.ppf(0.5 + SPREAD_CHECK_COVERAGE / 2)

    def coverage(spread: float) -> float:
        level = int(m.table.spread_index(np.array(spread)))
        spread2 = float(np.float32(spread)) ** 2  # as the map stores it
        if level not in by_level:
            trial = _keeping_table(m, spread_db=np.full(m.spread_db.shape, spread, np.float32))
            pred = np.array(
                all_in_threads(
                    lambda i: trial.predictive(
                        data.snr_db[rows[i]],
                        data.noise_dbm[rows[i]],
                        data.present[rows[i]],
                        int(held[i]),
                        data.heard[rows[i]],
                    ),
                    len(rows),
                    options.workers,
                )
            ).reshape(-1, 2)
            by_level[level] = (pred[:, 0], pred[:, 1] - spread2)
        mean, rest = by_level[level]
        return float(np.mean(np.abs(measured - mean) <= limit * np.sqrt(rest + spread2)))

    for i in range(SPREAD_BISECTIONS):  # on the log spread
        mid = float(np.sqrt(lo * hi))
        lo, hi = (mid, hi) if coverage(mid) < SPREAD_CHECK_COVERAGE else (lo, mid)
        if on_progress:
            on_progress("spread", i + 1, SPREAD_BISECTIONS)
    return float(np.sqrt(lo * hi))


@dataclass
class _ReceiverField:
    """One receiver's residual field, fitted in a pass of _fit_labelled: its labels (rows bool [n]), the
    hyper-parameters, the leave-one-out prediction at its labels (dB, dB²) and, in the final pass, the field on
    the grid (dB, dB² [cells]) and the mean at its labels given each one's own measurement (dB); residuals and their
    noise variances [k] at its labels."""

    rows: np.ndarray
    residual_db: np.ndarray
    noise_var_db2: np.ndarray
    hyper: FieldHyper
    loo_mean_db: np.ndarray
    loo_var_db2: np.ndarray
    refitted: bool = True
    grid_mean_db: np.ndarray | None = None
    grid_var_db2: np.ndarray | None = None
    at_labels_db: np.ndarray | None = None


def _fit_labelled(
    base: RadioMap,
    scenario: Scenario,
    labelled: Labelled,
    options: MapOptions,
    on_progress: Progress | None,
    deadline: Deadline,
) -> RadioMap:
    """Offsets and slopes of the scenario's shape, then a kriged residual field per receiver (receivers in
    parallel on `options.workers` threads). Past the deadline the first pass stops (receivers not reached
    correct no power) and the final pass keeps the first pass's hyper-parameters instead of refitting them (the
    scenario's shadowing where there are none); every receiver's field is still kriged: a complete map."""
    n_rx = base.n_receivers
    fade_var = base.fading_var_db2
    y = labelled.power_dbm
    use = labelled.usable()
    t = 10 ** (labelled.snr_db / 10)
    meas_var = (10 / np.log(10) * base.noise.sd(t) / np.maximum(t, 1e-3)) ** 2
    fits = _shape_fits(scenario, labelled, fade_var)
    shape = min(fits, key=lambda k: fits[k].rms_db)
    a, c, power, mu_param = fits[shape].offset_db, fits[shape].slope_correction, fits[shape].power_dbm, fits[shape].mu
    resid = np.where(use, y - mu_param, 0.0)
    n_use = use.sum(1)
    shrink = fade_var / 10.0**2
    correlation_bounds = scenario.scale.correlation_bounds_m
    initial = FieldHyper.initial(
        [(cp.sigma_db, cp.correlation_m) for cp in scenario.environment.shadowing.components]
    ).within(correlation_bounds)
    others = n_use[:, None] - use

    def field_data(r: int, resid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows [n] bool, residual [k] dB, its noise variance [k] dB²) of receiver r's field at its labels: its
        power minus the shape and the transmit power from the other receivers' `resid` only (so the residual is
        not pulled towards zero)."""
        p_loo = (resid.sum(1) - resid[:, r] + shrink * power) / (others[:, r] + shrink)
        sel = use[:, r] & (others[:, r] >= 1)
        nv = fade_var + fade_var / (others[:, r] + shrink) + meas_var[:, r]
        return sel, (y[:, r] - mu_param[:, r] - p_loo)[sel], nv[sel]

    def rng_of(fit_pass: int, r: int) -> np.random.Generator:
        return np.random.default_rng([options.seed, fit_pass, r])

    def first_pass(r: int, resid: np.ndarray) -> _ReceiverField | None:
        """Receiver r's field at its labels, each left out; None when too few labels or past the deadline."""
        sel, e, nv = field_data(r, resid)
        if sel.sum() < MIN_FIELD_POINTS or deadline.passed():
            return None
        pts = labelled.position_m[sel]
        h = fit_hyper(pts, e, nv, rng_of(0, r), initial, correlation_bounds_m=correlation_bounds, ftol=ROUGH_HYPER_FTOL)
        return _ReceiverField(sel, e, nv, h, *krige(pts, pts, e, nv, h, exclude_self=True))

    def final_pass(r: int, resid: np.ndarray, first: _ReceiverField | None) -> _ReceiverField | None:
        """Receiver r's field on the grid, its leave-one-out check and its mean at the labels; the
        hyper-parameters refitted from the first pass's (these residuals scatter less) while time is left."""
        sel, e, nv = field_data(r, resid)
        if sel.sum() < MIN_FIELD_POINTS:
            return None
        pts = labelled.position_m[sel]
        tree = cKDTree(pts)
        refit = not deadline.passed()
        h = first.hyper if first is not None else initial
        if refit:
            h = fit_hyper(pts, e, nv, rng_of(1, r), h, restart=first is None, correlation_bounds_m=correlation_bounds)
        grid_mean, grid_var = krige_on_grid(base.grid, pts, e, nv, h, tree)
        loo_mean, loo_var = krige(pts, pts, e, nv, h, exclude_self=True, tree=tree)
        at_labels = with_own_measurement(loo_mean, loo_var, e, nv, h)
        return _ReceiverField(sel, e, nv, h, loo_mean, loo_var, refit, grid_mean, grid_var, at_labels)

    # a first pass: each receiver's field at its labels (left out), so the transmit powers of the final pass
    # are read from the other receivers' powers less their fields, which then leak less into each residual
    progress = counter(on_progress, "field", 2 * n_rx)
    first = each_on_threads(lambda r: first_pass(r, resid), n_rx, options.workers, progress)
    field_loo = np.zeros_like(y)
    for r, f in enumerate(first):
        if f is not None:
            field_loo[f.rows, r] = f.loo_mean_db
    resid = np.where(use, resid - field_loo, 0.0)
    final = each_on_threads(lambda r: final_pass(r, resid, first[r]), n_rx, options.workers, progress)

    mean = _parametric(base, scenario, shape, a, c)
    spread = base.spread_db.copy()
    fitted_field = np.zeros_like(y)
    fields = {}
    for r, f in enumerate(final):
        rid = base.receiver_ids[r]
        if f is None:
            points = int(field_data(r, resid)[0].sum())
            fields[rid] = {"points": points, "field": "none (too few labelled points)"}
            log.warning(
                "receiver %s: %d labelled transmissions measured by it and another receiver; at least %d are "
                "needed for its residual field: offset, slope and physics spread only",
                rid,
                points,
                MIN_FIELD_POINTS,
            )
            continue
        assert f.grid_mean_db is not None and f.grid_var_db2 is not None and f.at_labels_db is not None
        h = f.hyper
        z2 = (f.residual_db - f.loo_mean_db) ** 2 / (f.loo_var_db2 + h.nugget_db**2 + f.noise_var_db2)
        inflation = float(np.clip(np.mean(z2), 1.0, 4.0))
        fitted_field[f.rows, r] = f.at_labels_db
        mean[:, r] += f.grid_mean_db.astype(np.float32)
        spread[:, r] = np.sqrt(inflation * (f.grid_var_db2 + h.nugget_db**2)).astype(np.float32)
        fields[rid] = {"points": int(f.rows.sum()), **h.as_dict(), "variance_inflation": inflation}
    cut = [
        f"receiver {rid}: first field pass skipped"
        for rid, f0, f1 in zip(base.receiver_ids, first, final, strict=True)
        if f0 is None and f1 is not None
    ] + [
        f"receiver {rid}: field hyper-parameters not refitted ({'first pass' if f0 is not None else 'scenario'}'s kept)"
        for rid, f0, f1 in zip(base.receiver_ids, first, final, strict=True)
        if f1 is not None and not f1.refitted
    ]
    deadline.warn(cut)
    start, prior = _learned_power_prior(scenario, y - mu_param - fitted_field, use)
    return replace(
        base,
        mean_dbm=mean,
        spread_db=spread,
        power_start_dbm=start,
        power_log_prior=prior,
        n_labels=len(labelled),
        info={
            "kind": "fitted",
            "shape": shape,
            "path_loss": scenario.environment.path_loss.model,
            "shape_rms_db": {k: v.rms_db for k, v in fits.items()},
            "offset_db": a.tolist(),
            "slope_correction": c.tolist(),
            "fields": fields,
            **deadline.info(cut),
        },
    )


@dataclass(frozen=True)
class ShapeFit:
    """One path-loss shape fitted to labelled transmissions: μ = P_t − L_r + a_r + c_r·(−10·log10(d / 10 km))."""

    shape: str
    offset_db: np.ndarray  # a, float [R]
    slope_correction: np.ndarray  # c, float [R]
    power_dbm: np.ndarray  # each transmission's fitted power, float [n]
    mu: np.ndarray  # the shape's mean power for a 0 dBm transmitter, float [n, R] dBm
    rms_db: float  # residual over the used measurements


def _shape_fits(
    scenario: Scenario,
    labelled: Labelled,
    fade_var: float,
    shapes: tuple[str, ...] = SHAPES,
    common_slope: bool = False,
) -> dict[str, ShapeFit]:
    """Offsets and slope corrections of every shape, each transmission's power unknown; with `common_slope` one
    slope correction for all receivers (their use-weighted mean), the offsets refitted with it."""
    y, use = labelled.power_dbm, labelled.usable()
    lo, hi = scenario.transmitter.power_dbm
    residual_var = fade_var + scenario.environment.shadowing.sigma_db**2
    fits = {}
    for shape in shapes:
        loss, d = shape_loss_db(scenario, labelled.position_m, shape)
        reg = _slope_regressor(d)
        a, c, power, _ = _fit_offsets(y, use, -loss, reg, residual_var, (lo + hi) / 2, labelled.calibrated)
        if common_slope:
            c = np.full_like(c, np.average(c, weights=np.maximum(use.sum(0), 1e-9)))
            # a zero regressor keeps the slope where it is: only the offsets and powers are refitted
            a, _, power, _ = _fit_offsets(
                y, use, -loss + c * reg, np.zeros_like(reg), residual_var, (lo + hi) / 2, labelled.calibrated
            )
        mu = -loss + a + c * reg
        rms = float(np.sqrt(np.mean((y - mu - power[:, None])[use] ** 2)))
        fits[shape] = ShapeFit(shape, a, c, power, mu, rms)
    return fits


def fit_propagation(
    scenario: Scenario, labelled: Labelled, options: MapOptions = MapOptions(), shapes: tuple[str, ...] = SHAPES
) -> tuple[ShapeFit, RadioMap]:
    """The path-loss shape (of `shapes`) that fits `labelled` best with per-receiver offsets and one common slope
    correction, the transmit powers unknown; and the physics map, whose fading (mean in info["fading_mean_db"],
    variance fading_var_db2) the offsets and the residual hold."""
    base = physics_map(scenario, options)
    fits = _shape_fits(scenario, labelled, base.fading_var_db2, shapes, common_slope=True)
    return min(fits.values(), key=lambda f: f.rms_db), base


def _fit_offsets(
    y: np.ndarray,
    use: np.ndarray,
    base: np.ndarray,
    reg: np.ndarray,
    residual_var: float,
    prior_power_dbm: float,
    calibrated: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-receiver offset a [R] and slope correction c [R], each transmission's power [n] and its variance [n].

    y = P_t + base + a_r + c_r·reg + noise(residual_var) over the used measurements; P_t unknown (a weak prior
    around prior_power_dbm keeps a transmission heard by one receiver from fixing its receiver's offset). The
    offsets' prior is OFFSET_PRIOR_SD_DB wide, UNCALIBRATED_OFFSET_PRIOR_SD_DB for receivers not `calibrated` (bool
    [R], None: all), whose readings do not count towards the powers until their offsets are first fitted.
    """
    n_rx = y.shape[1]
    a, c = np.zeros(n_rx), np.zeros(n_rx)
    known = np.ones(n_rx, bool) if calibrated is None else np.asarray(calibrated, bool)
    shrink_p = residual_var / 20.0**2
    power = np.full(len(y), prior_power_dbm)
    for round_ in range(ALTERNATING_ROUNDS):
        counted = use & known if round_ == 0 else use
        r = np.where(counted, y - base - a - c * reg, 0.0)
        power = (r.sum(1) + shrink_p * prior_power_dbm) / (counted.sum(1) + shrink_p)
        for k in range(n_rx):
            s = use[:, k]
            if not s.any():
                continue
            offset_sd = OFFSET_PRIOR_SD_DB if known[k] else UNCALIBRATED_OFFSET_PRIOR_SD_DB
            ridge = np.diag([residual_var / offset_sd**2, residual_var / SLOPE_PRIOR_SD**2])
            design = np.stack([np.ones(s.sum()), reg[s, k]], axis=1)
            a[k], c[k] = np.linalg.solve(design.T @ design + ridge, design.T @ (y[s, k] - power[s] - base[s, k]))
    return a, c, power, residual_var / (use.sum(1) + shrink_p)


def _learned_power_prior(scenario: Scenario, implied_power: np.ndarray, use: np.ndarray) -> tuple[float, np.ndarray]:
    """A prior over the transmit power from the labelled transmissions heard by ≥ 2 receivers (their mean
    implied power, smoothed by POWER_KDE_SD_DB), mixed with the flat prior."""
    start, flat = _flat_power_prior(scenario)
    several = use.sum(1) >= 2
    if several.sum() < 20:
        return start, flat
    p_hat = np.where(use, implied_power, 0.0).sum(1)[several] / use.sum(1)[several]
    lo = min(start, np.floor(p_hat.min() - 15))
    hi = max(start + POWER_STEP_DB * (len(flat) - 1), np.ceil(p_hat.max() + 15))
    grid = np.arange(lo, hi + POWER_STEP_DB / 2, POWER_STEP_DB)
    dens = np.exp(-0.5 * ((grid[:, None] - p_hat[None, :]) / POWER_KDE_SD_DB) ** 2).sum(1)
    dens /= dens.sum()
    flat_part = np.where((grid >= start) & (grid <= start + POWER_STEP_DB * (len(flat) - 1)), 1.0, 0.0)
    mixed = (1 - POWER_PRIOR_FLAT_SHARE) * dens + POWER_PRIOR_FLAT_SHARE * flat_part / flat_part.sum()
    return float(lo), np.log(np.maximum(mixed, 1e-300))
