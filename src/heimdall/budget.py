"""A command's time budget: the deadline its long steps share, their progress, and the seconds of each phase.

Long steps report progress through `TimeBudget.progress(stage, done, total)`, which shows it (a rich bar, given
`show`) and ends the step with OutOfTime once the deadline has passed; `phase(name)` adds the seconds a block
takes to `seconds[name]`. Deadlines are time.monotonic() values.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from heimdall.errors import HeimdallError

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class OutOfTime(HeimdallError):
    """A step was still running when its command's time budget ran out."""

    http_status = 503

    def __init__(self, stage: str, done: int, total: int) -> None:
        super().__init__(f"{stage}: the time budget ran out after {done} of {total}")
        self.stage, self.done, self.total = stage, done, total


@dataclass
class TimeBudget:
    """When a command's long steps must end (None: no limit), how they show progress, and the seconds each phase
    took (in the order they first ran)."""

    deadline: float | None = None
    show: Progress | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of_seconds(cls, seconds: float | None, show: Progress | None = None) -> TimeBudget:
        """A budget ending `seconds` from now (None or 0: no limit)."""
        return cls(time.monotonic() + seconds if seconds else None, show)

    def progress(self, stage: str, done: int, total: int) -> None:
        """Show that `done` of `total` of `stage` are done; OutOfTime when the deadline has passed."""
        if self.show is not None:
            self.show(stage, done, total)
        if self.deadline is not None and time.monotonic() > self.deadline and done < total:
            raise OutOfTime(stage, done, total)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the wall-clock seconds of the block to `seconds[name]` (also when it raises)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
