"""The estimators an evaluation scores, in one table: `ESTIMATORS`.

Each `Estimator` has its name (its key in metrics.json), a label and a colour for plots, a line saying what it is,
what it needs (`NEEDS`: a model, a scenario, a radio map, validation labels, the simulator's truth) and how it
runs. The evaluation (heimdall.evaluation.evaluate) runs them in the table's order; the console table of
`heimdall evaluate`, the plots and the report read names, labels and colours from here. An estimator whose needs
are not met, or that declines for a reason of its own (a model's network alone, when its hybrid is not scored), is
not scored and the reason is recorded (metrics.json: provenance.not_evaluated).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from heimdall.baselines import (
    Grid,
    LogDistanceFit,
    fit_log_distance,
    log_distance_crlb,
    log_distance_model,
    rss_ml,
    weighted_centroid,
)
from heimdall.budget import Progress
from heimdall.errors import HeimdallError
from heimdall.scale import network_scale

if TYPE_CHECKING:
    from heimdall.evaluation.grid_estimators import CarriedMap, GridEstimates
    from heimdall.evaluation.test_set import Predict, TestSet
    from heimdall.radiomap.answer_arrays import MapAnswers
    from heimdall.radiomap.fit import MapOptions

MAX_GRID_POINTS = 1_000_000  # candidate positions of one grid search (memory grows with them)


@dataclass
class Answers:
    """What an estimator answers on the test set: mean [n, 2] m, covariance [n, 2, 2] m² (None: no uncertainty),
    and its grid posterior's answers when it has one (its own density, HPD regions)."""

    mean_m: np.ndarray
    cov_m2: np.ndarray | None
    grid: MapAnswers | None = None


@dataclass
class Inputs:
    """Everything an evaluation hands its estimators; shared work (the classical fit, the model's answers, the radio
    map's estimates) is done once, by the first estimator that asks."""

    test: TestSet
    calibration: TestSet | None  # labelled (the training split); None: the classical fit uses the test set
    validation: TestSet | None  # labelled, for the hybrid's exponents
    predict: Predict | None  # the model; None: classical estimators only
    grid_spacing_m: float | None  # the classical ML's search grid; None: from the network's geometry
    seed: int  # the CRLB draws
    map_options: MapOptions | None  # the map fitted for the evaluation; None: none (but a carried one)
    on_progress: Progress | None
    carried: CarriedMap | None  # the radio map the model carries
    _grid_estimates: GridEstimates | None = field(default=None, init=False, repr=False)

    @cached_property
    def fit(self) -> LogDistanceFit:
        """The log-distance model fitted on the calibration split (the test set without one)."""
        cal = self.calibration or self.test
        return fit_log_distance(cal.power_dbm, cal.heard, cal.target_m, cal.rx_position_m)

    @cached_property
    def grid(self) -> Grid:
        """The classical ML's search grid over the area (refused above MAX_GRID_POINTS candidates)."""
        bounds = self.test.scenario.area_bounds_m() if self.test.scenario else _bounds_around(self.test)
        spacing_m = self.grid_spacing_m
        if spacing_m is None:
            spacing_m = network_scale(self.test.rx_position_m, bounds).search_spacing_m
        return search_grid(bounds, spacing_m, "--grid-spacing-m")

    @cached_property
    def network(self) -> Answers:
        """The model's own predictions (its network; a map-carrying model's served answer is `model`'s run)."""
        assert self.predict is not None  # asked only by estimators that need a model
        return Answers(*self.predict(self.test))

    def grid_estimates(self) -> GridEstimates:
        """The grid posteriors (radio map, hybrid, oracle) of heimdall.evaluation.grid_estimators, computed together the
        first time a grid estimator asks."""
        if self._grid_estimates is None:
            from heimdall.evaluation.grid_estimators import grid_estimates

            self._grid_estimates = grid_estimates(
                self.test,
                self.calibration,
                self.validation,
                self.predict,
                self.map_options,
                self.on_progress,
                self.carried,
            )
        return self._grid_estimates

    @property
    def grid_notes(self) -> dict[str, object]:
        """How the grid estimators were made (metrics.json's provenance); empty when none ran."""
        return {} if self._grid_estimates is None else self._grid_estimates.notes

    def grid_answers(self, name: str) -> Answers | str:
        """The grid estimator `name`'s answers, or why it has none."""
        answers = self.grid_estimates().answers.get(name)
        if answers is None:
            note = self.grid_estimates().notes.get(name)
            return note if isinstance(note, str) else "not computed"
        return Answers(answers.mean_m, answers.cov_m2, answers)


@dataclass(frozen=True)
class Need:
    """Something an estimator needs: `met(inputs)` says whether the evaluation has it, `missing` why not."""

    met: Callable[[Inputs], bool]
    missing: str


NEEDS: dict[str, Need] = {
    "model": Need(lambda i: i.predict is not None, "no model given"),
    "carried map": Need(lambda i: i.carried is not None, "the model carries no radio map"),
    "scenario": Need(lambda i: i.test.scenario is not None, "the test set has no scenario"),
    "radio map": Need(
        lambda i: i.map_options is not None or i.carried is not None,
        "no radio map (--map-spacing-m 0 and the model carries none)",
    ),
    "map grid": Need(lambda i: i.map_options is not None, "no map grid (--map-spacing-m 0)"),
    "validation labels": Need(
        lambda i: i.validation is not None or i.carried is not None,
        "no validation split to choose its exponents on (and the model carries none)",
    ),
    "transmitter heights": Need(lambda i: i.test.tx_height_m is not None, "not a simulated store"),
    "gain offsets": Need(lambda i: i.test.gain_offset_db is not None, "not a simulated store"),
}


@dataclass(frozen=True)
class Estimator:
    """One row of the table: `run(inputs)` → its answers, or a reason it has none; it runs only when every entry of
    `needs` (keys of NEEDS) is met."""

    name: str
    label: str
    colour: str
    doc: str
    needs: tuple[str, ...]
    run: Callable[[Inputs], Answers | str]

    def answer(self, inputs: Inputs) -> Answers | str:
        """Its answers on inputs.test, or why it is not evaluated."""
        for need in self.needs:
            if not NEEDS[need].met(inputs):
                return NEEDS[need].missing
        return self.run(inputs)


def power_only(test: TestSet) -> TestSet:
    """The test set as a power-only request sees it: every feature but the power missing (NaN)."""
    power = test.params.power_index
    features = np.full_like(test.features, np.nan)
    features[..., power] = test.features[..., power]
    return replace(test, features=features)


def served_answers(test: TestSet, network: Answers, hybrid: Answers) -> Answers:
    """What a map-carrying model answers: its hybrid posterior's moments where the map reads a receiver
    (map_usable), the network's elsewhere."""
    from heimdall.evaluation.grid_estimators import map_usable, measured

    assert network.cov_m2 is not None and hybrid.cov_m2 is not None  # both answer with a covariance
    usable = map_usable(measured(test), network.mean_m, network.cov_m2)
    return Answers(
        np.where(usable[:, None], hybrid.mean_m, network.mean_m),
        np.where(usable[:, None, None], hybrid.cov_m2, network.cov_m2),
    )


def _model(i: Inputs) -> Answers | str:
    if i.carried is not None and i.test.scenario is not None:
        hybrid = i.grid_answers("hybrid")
        if isinstance(hybrid, Answers):
            return served_answers(i.test, i.network, hybrid)
    return i.network


def _model_network(i: Inputs) -> Answers | str:
    hybrid = i.grid_answers("hybrid")
    return i.network if isinstance(hybrid, Answers) else f"the model's hybrid is not evaluated ({hybrid})"


def _model_power_only(i: Inputs) -> Answers:
    assert i.predict is not None  # needs a model
    return Answers(*i.predict(power_only(i.test)))


def _weighted_centroid(i: Inputs) -> Answers:
    return Answers(weighted_centroid(i.test.power_dbm, i.test.heard, i.test.rx_position_m), None)


def _classical_ml(i: Inputs) -> Answers:
    model = log_distance_model(i.test.rx_position_m, i.fit.exponent, i.fit.offsets_db)
    return Answers(*rss_ml(i.test.power_dbm, i.test.heard, model, i.grid, i.fit.sigma_db))


def _crlb(i: Inputs) -> Answers:
    truth = i.test.target_m
    crlb = log_distance_crlb(truth, i.test.heard, i.test.rx_position_m, i.fit.exponent, i.fit.sigma_db)
    rng = np.random.default_rng(i.seed)
    draws = truth + np.einsum("nij,nj->ni", np.linalg.cholesky(crlb), rng.standard_normal(truth.shape))
    return Answers(draws, None)


ESTIMATORS: dict[str, Estimator] = {
    e.name: e
    for e in (
        Estimator(
            "model",
            "model",
            "C0",
            "the model's answer: its network, or where it carries a radio map its hybrid posterior wherever the map "
            "reads a receiver, as the service answers",
            ("model",),
            _model,
        ),
        Estimator(
            "model_network",
            "model's network",
            "C4",
            "the bare network of a model that carries a radio map",
            ("model", "carried map", "scenario"),
            _model_network,
        ),
        Estimator(
            "model_power_only",
            "model, power only",
            "C9",
            "the model given only the power of each receiver (every other feature missing)",
            ("model",),
            _model_power_only,
        ),
        Estimator(
            "weighted_centroid",
            "weighted centroid",
            "C2",
            "the receivers' positions weighted by the power they measured",
            (),
            _weighted_centroid,
        ),
        Estimator(
            "classical_ml",
            "log-distance ML",
            "C1",
            "maximum likelihood over a grid under a log-distance model fitted on the training split",
            (),
            _classical_ml,
        ),
        Estimator(
            "radio_map",
            "radio map",
            "C5",
            "the radio map's grid posterior (the model's own map, or one fitted for the evaluation)",
            ("scenario", "radio map"),
            lambda i: i.grid_answers("radio_map"),
        ),
        Estimator(
            "hybrid",
            "hybrid (map × network)",
            "C6",
            "the radio map's posterior times the network's Gaussian, with exponents chosen on the validation split "
            "(or the model's own)",
            ("model", "scenario", "radio map", "validation labels"),
            lambda i: i.grid_answers("hybrid"),
        ),
        Estimator(
            "oracle",
            "oracle",
            "C3",
            "the radio-map posterior with the simulator's own maps (true path loss at each transmitter's height, in "
            "16 bins; shadowing fields; gain offsets), its fading and measurement noise, and the true transmit power "
            "range: a floor in NLL",
            ("scenario", "map grid", "transmitter heights", "gain offsets"),
            lambda i: i.grid_answers("oracle"),
        ),
        Estimator(
            "crlb",
            "CRLB draw",
            "C7",
            "errors of an efficient estimator: one draw from N(truth, CRLB) per transmission, log-distance model "
            "with the classical fit",
            ("scenario", "transmitter heights"),
            _crlb,
        ),
    )
}


def ordered(names: Collection[str]) -> list[str]:
    """`names` in the table's order; names the table does not hold (an older metrics.json) follow as given."""
    return [n for n in ESTIMATORS if n in names] + [n for n in names if n not in ESTIMATORS]


def search_grid(bounds_m: tuple[float, float, float, float], spacing_m: float, what: str) -> Grid:
    """A search grid, refused when it would hold more than MAX_GRID_POINTS candidates."""
    e0, n0, e1, n1 = bounds_m
    if not spacing_m > 0:
        raise HeimdallError(f"{what}: grid spacing must be > 0 m, got {spacing_m:g}")
    points = (np.floor((e1 - e0) / spacing_m) + 1) * (np.floor((n1 - n0) / spacing_m) + 1)
    if points > MAX_GRID_POINTS:
        raise HeimdallError(
            f"{what}: a {spacing_m:g} m grid over the area has {points:.3g} points, more than "
            f"{MAX_GRID_POINTS}; use a coarser spacing"
        )
    return Grid(bounds_m, spacing_m)


def _bounds_around(test: TestSet) -> tuple[float, float, float, float]:
    pts = np.concatenate([test.target_m, test.rx_position_m])
    margin = network_scale(test.rx_position_m).margin_m
    lo, hi = pts.min(0) - margin, pts.max(0) + margin
    return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
