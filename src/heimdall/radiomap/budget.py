"""How a map fit spends its time: the deadline of its time budget, progress counting and its worker threads.

The fit's numpy and LAPACK work releases the GIL, so receivers' fields and transmissions' posteriors run on
threads (one per core the process may use); BLAS is held to one thread meanwhile — several BLAS threads on
matrices of a few hundred rows gain little, and on a busy machine they wait on each other for seconds.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import TypeVar

from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # on_progress(stage, done, total)
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


def worker_count(workers: int | None) -> int:
    """`workers`, or every core this process may use when None."""
    if workers:
        return max(1, workers)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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
    """[task(i) for i in range(n)] on worker_count(workers) threads with one BLAS thread, set here for all of them
    (a limit each task may enter and leave again then always restores this one); `step` is called in this thread
    as each task finishes."""
    with threadpool_limits(1), ThreadPoolExecutor(min(worker_count(workers), max(n, 1))) as pool:
        futures = [pool.submit(task, i) for i in range(n)]
        for f in as_completed(futures):
            f.result()
            step()
        return [f.result() for f in futures]


def in_order_on_threads(fn: Callable[[int], T], n: int, workers: int | None, chunk: int) -> Iterator[T]:
    """fn(0) … fn(n − 1) in order, computed `chunk` at a time on worker_count(workers) threads."""
    with ThreadPoolExecutor(worker_count(workers)) as pool:
        for s in range(0, n, chunk):
            yield from pool.map(fn, range(s, min(s + chunk, n)))
