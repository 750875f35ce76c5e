"""A radio map applied to many transmissions: the arrays evaluation and prediction read."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from heimdall.radiomap.batch import Unanswered, in_threads
from heimdall.radiomap.model import RadioMap
from heimdall.radiomap.posterior import GridPosterior, TemperedPosterior

log = logging.getLogger(__name__)


@dataclass
class MapAnswers:
    """Per transmission (n): moments, most probable cell and, given the truth, how the posterior scored it."""

    mean_m: np.ndarray  # [n, 2]
    cov_m2: np.ndarray  # [n, 2, 2]
    map_m: np.ndarray  # [n, 2]
    hpd95_area_km2: np.ndarray  # [n]
    n_modes: np.ndarray  # int [n], parts of the 95 % region
    log_density_at_truth: np.ndarray | None = None  # [n] per km²
    in_hpd50: np.ndarray | None = None  # bool [n]
    in_hpd95: np.ndarray | None = None  # bool [n]


class AnswerCollector:
    """Collects the answers of n posteriors one by one (so several estimators can share one map search)."""

    def __init__(self, n: int, truth_m: np.ndarray | None = None) -> None:
        self.truth_m = truth_m
        self.answers = MapAnswers(
            np.empty((n, 2)), np.empty((n, 2, 2)), np.empty((n, 2)), np.empty(n), np.empty(n, np.int64)
        )
        if truth_m is not None:
            self.answers.log_density_at_truth = np.empty(n)
            self.answers.in_hpd50, self.answers.in_hpd95 = np.empty(n, bool), np.empty(n, bool)

    def add(self, i: int, post: GridPosterior | TemperedPosterior) -> None:
        """Record the answer of transmission i (threads may add different transmissions at once)."""
        a = self.answers
        a.mean_m[i], a.cov_m2[i], a.map_m[i] = post.mean_m, post.cov_m2, post.map_m
        a.hpd95_area_km2[i] = post.hpd_area_km2(0.95)
        a.n_modes[i] = len(post.modes(0.95))
        if self.truth_m is not None:
            # __init__ made these arrays whenever it was given truth_m
            assert a.log_density_at_truth is not None and a.in_hpd50 is not None and a.in_hpd95 is not None
            t = self.truth_m[i][None]
            a.log_density_at_truth[i] = post.log_density_at(t)[0]
            a.in_hpd50[i], a.in_hpd95[i] = post.in_hpd(t, 0.5)[0], post.in_hpd(t, 0.95)[0]

    def skip(self, i: int) -> None:
        """Record that transmission i has no answer: NaN (its in_hpd flags False)."""
        a = self.answers
        a.mean_m[i], a.cov_m2[i], a.map_m[i], a.hpd95_area_km2[i], a.n_modes[i] = np.nan, np.nan, np.nan, np.nan, 0
        if self.truth_m is not None:
            assert a.log_density_at_truth is not None and a.in_hpd50 is not None and a.in_hpd95 is not None
            a.log_density_at_truth[i], a.in_hpd50[i], a.in_hpd95[i] = np.nan, False, False


def collect(
    answer: Callable[[int], None],
    n: int,
    collectors: list[AnswerCollector],
    on_progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> None:
    """Run `answer(i)` (which adds transmission i's answers to the collectors) for i = 0..n-1 in `workers` threads
    (None: every CPU); a transmission the map refuses (MapInputError) is answered NaN and named in a warning."""
    unanswered = []
    for done, result in enumerate(in_threads(answer, n, workers), 1):
        if isinstance(result, Unanswered):
            for collector in collectors:
                collector.skip(result.index)
            unanswered.append(result)
        if on_progress and done % 50 == 0:
            on_progress(done, n)
    if unanswered:
        log.warning(
            "%d of %d transmissions have no radio-map answer (NaN), e.g. transmission %d: %s",
            len(unanswered),
            n,
            unanswered[0].index,
            unanswered[0].reason,
        )


def localize_all(
    localize: Callable[[int], GridPosterior],
    n: int,
    truth_m: np.ndarray | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> MapAnswers:
    """Apply `localize(i)` (the posterior of transmission i) to i = 0..n-1 and collect the answers (`collect`)."""
    collector = AnswerCollector(n, truth_m)
    collect(lambda i: collector.add(i, localize(i)), n, [collector], on_progress, workers)
    return collector.answers


def answers_of(
    radio_map: RadioMap,
    snr_db: np.ndarray,
    noise_dbm: np.ndarray,
    present: np.ndarray,
    truth_m: np.ndarray | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    heard: np.ndarray | None = None,
) -> MapAnswers:
    """The map's answers for transmissions given as arrays [n, R] (its own receivers, in its order; heard as
    RadioMap.localize reads it, None: every present receiver), computed by `workers` threads (None: every CPU)."""
    return localize_all(
        lambda i: radio_map.localize(snr_db[i], noise_dbm[i], present[i], None if heard is None else heard[i]),
        len(snr_db),
        truth_m,
        on_progress,
        workers,
    )
