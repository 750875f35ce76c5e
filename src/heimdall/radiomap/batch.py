"""Many transmissions at once: a function of each index run by a bounded pool of threads, the results in order; a
transmission the map cannot read is named (its index and why) and the others are answered.

The posterior kernels release the GIL (heimdall.radiomap.kernel), so threads share the cores without the
processes' copies of the map; they also sit well beside torch's own OpenMP threads in the same process.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
AHEAD_PER_WORKER = 2  # results computed ahead of the consumer, per thread (bounds the memory of a slow consumer)


class MapInputError(ValueError):
    """A transmission the map cannot read: arrays of the wrong length, no usable receiver; the message says which."""


@dataclass(frozen=True)
class Unanswered:
    """A transmission of a batch that was not answered: its index in the batch and why."""

    index: int
    reason: str


def cpu_count() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_count(workers: int | None) -> int:
    """Threads for a batch: `workers` (≥ 1) bounded by the CPUs this process may run on; None: all of them."""
    if workers is None:
        return cpu_count()
    if workers < 1:
        raise ValueError(f"workers: expected ≥ 1 or None (every CPU), got {workers}")
    return min(workers, cpu_count())


def in_threads(fn: Callable[[int], T], n: int, workers: int | None = None) -> Iterator[T | Unanswered]:
    """fn(0), …, fn(n − 1) in order, computed by worker_count(workers) threads a few ahead of the consumer; an index
    whose fn raises MapInputError gives Unanswered(index, message) instead."""

    def guarded(i: int) -> T | Unanswered:
        try:
            return fn(i)
        except MapInputError as exc:
            return Unanswered(i, str(exc))

    threads = worker_count(workers)
    if threads == 1 or n <= 1:
        yield from (guarded(i) for i in range(n))
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="heimdall-map") as pool:
        pending: deque[Future] = deque()
        submitted = 0
        while pending or submitted < n:
            while submitted < n and len(pending) < AHEAD_PER_WORKER * threads:
                pending.append(pool.submit(guarded, submitted))
                submitted += 1
            yield pending.popleft().result()


def all_in_threads(fn: Callable[[int], T], n: int, workers: int | None = None) -> list[T]:
    """[fn(0), …, fn(n − 1)] computed by worker_count(workers) threads, where each must be answered: MapInputError
    naming the index when fn refuses one."""
    out: list[T] = []
    for result in in_threads(fn, n, workers):
        if isinstance(result, Unanswered):
            raise MapInputError(f"transmission {result.index}: {result.reason}")
        out.append(result)
    return out
