"""How a map fit spends its time: the deadline of its time budget, progress counting and its worker threads.

The fit's numpy and LAPACK work releases the GIL, so receivers' fields and transmissions' posteriors run on
threads (one per core the process may use); BLAS is held to one thread meanwhile — several BLAS threads on
matrices of a few hundred rows gain little, and on a busy machine they wait on each other for seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import TypeVar

from threadpoolctl import threadpool_limits

from heimdall.budget import Progress
from heimdall.radiomap.batch import worker_count

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Deadline:
    """When a fit stops refining: `at` on time.monotonic() (None: never), from a budget of `budget_s`."""

    at: float | None = None
    budget_s: float | None = None

    @classmethod
    def after(cls, budget_s: float | None) -> Deadline:
        """The deadline `budget_s` seconds from now (None: none)."""
        return cls(None if budget_s is None else time.monotonic() + budget_s, budget_s)

    def passed(self) -> bool:
        """Whether the budget is spent."""
        return self.at is not None and time.monotonic() >= self.at

    def warn(self, cut: list[str]) -> None:
        """A warning naming what the budget cut, when it cut anything."""
        if cut:
            log.warning("the map fit's time budget of %g s ran out: %s", self.budget_s, "; ".join(cut))

    def info(self, cut: list[str]) -> dict[str, object]:
        """The map's info entry `time_budget` (budget_s, cut) when the budget cut anything, else nothing."""
        return {"time_budget": {"budget_s": self.budget_s, "cut": cut}} if cut else {}


def counter(on_progress: Progress | None, stage: str, total: int, every: int = 1) -> Callable[[], None]:
    """A callback counting finished steps of `stage` (of `total`) into on_progress, every `every` steps and at the
    last."""
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if on_progress and (done % every == 0 or done == total):
            on_progress(stage, done, total)

    return step


def each_on_threads(task: Callable[[int], T], n: int, workers: int | None, step: Callable[[], None]) -> list[T]:
    """[task(i) for i in range(n)] on worker_count(workers) threads (heimdall.radiomap.batch) with one BLAS thread,
    set here for all of them (a limit each task may enter and leave again then always restores this one); `step` is
    called in this thread as each task finishes."""
    with threadpool_limits(1), ThreadPoolExecutor(min(worker_count(workers), max(n, 1))) as pool:
        futures = [pool.submit(task, i) for i in range(n)]
        for f in as_completed(futures):
            f.result()
            step()
        return [f.result() for f in futures]
