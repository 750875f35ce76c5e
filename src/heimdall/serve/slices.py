"""Long work on the event loop, one stretch at a time and in slices, so that short requests are answered between.

Work that can take long (parsing a large body, validating or building a batch's transmissions) runs inside
`async with turns.hold() as slices:` and calls `await slices.pause()` between units of work. One holder at a
time: the others wait their turn (first come, first served) instead of all running in the same pass of the
event loop; and a holder gives the event loop a pass once it has worked for SLICE_S, also before it hands the
turn on. A health check therefore waits for about one slice (or one parse), however many large requests are
in progress.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

SLICE_S = 0.002  # longest run of work before the event loop gets a pass


class Slices:
    """Time since a turn began, so a long loop yields the event loop at every slice."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    async def pause(self) -> None:
        """Let the event loop serve others once this slice is used up (the turn is kept)."""
        if time.perf_counter() - self.start > SLICE_S:
            await asyncio.sleep(0)
            self.start = time.perf_counter()


class Turns:
    """One request at a time works on the event loop; the others wait their turn."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[Slices]:
        """The turn to work on the event loop, for the block (the next holder starts a pass of the loop later)."""
        async with self._lock:
            slices = Slices()
            yield slices
            await slices.pause()
