"""The live view's feed: the last answers of the service, pushed to open pages as server-sent events.

Nothing is stored beyond a ring of the last `size` answers (the JSON bytes the clients were sent, not encoded
again). Publishing appends to the ring and wakes the open streams, never waits for them; at most
`max_streams` streams are open at once (more are refused 429), and a stream that falls more than the ring
behind, or whose socket takes no bytes for `SEND_TIMEOUT_S` (a slow client), is ended rather than buffered for.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncGenerator

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from heimdall.errors import Busy

HEARTBEAT_S = 15.0  # a comment line this often keeps proxies and browsers from closing an idle stream
SEND_TIMEOUT_S = 10.0
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once instead of buffering the stream
]


class EventRing:
    """The last `size` answers with their sequence numbers and arrival times; streams of them for the pages."""

    def __init__(self, size: int, max_streams: int) -> None:
        self.size, self.max_streams = size, max_streams
        self.ring: deque[tuple[int, float, bytes]] = deque(maxlen=size)
        self.seq = 0  # sequence number of the newest answer
        self.streams = 0
        self._changed = asyncio.Event()

    def publish(self, answers: list[bytes]) -> None:
        """Keep answers (JSON bytes) in the ring and wake the open streams; O(1) per answer kept."""
        now = time.time()
        for answer in answers[-self.size :]:
            self.seq += 1
            self.ring.append((self.seq, now, answer))
        if self.streams:
            self._changed.set()
            self._changed = asyncio.Event()

    def open(self) -> AsyncGenerator[bytes, None]:
        """A new stream (Busy when `max_streams` are open): the ring, then each answer as it comes."""
        if self.streams >= self.max_streams:
            raise Busy("events", f"{self.streams} event streams open, the limit is {self.max_streams}; retry later")
        self.streams += 1
        return self._stream()

    async def _stream(self) -> AsyncGenerator[bytes, None]:
        try:
            yield b"retry: 3000\n\n"
            sent = self.seq - len(self.ring)
            while True:
                oldest = self.seq - len(self.ring) + 1
                if sent + 1 < oldest:  # the ring moved past what this client has read: it is too slow
                    yield b"event: dropped\ndata: {}\n\n"
                    return
                for seq, at, answer in list(self.ring)[sent + 1 - oldest :]:
                    yield b'id: %d\ndata: {"seq":%d,"received_unix":%.3f,"answer":%s}\n\n' % (seq, seq, at, answer)
                    sent = seq
                if self.seq != sent:  # published while this stream was sending
                    continue
                try:
                    await asyncio.wait_for(self._changed.wait(), HEARTBEAT_S)
                except TimeoutError:
                    yield b": heartbeat\n\n"
        finally:
            self.streams -= 1


class EventStreamResponse(Response):
    """ASGI response sending `events` as text/event-stream until they end, the client leaves or stops reading."""

    def __init__(self, events: AsyncGenerator[bytes, None]) -> None:
        self.events = events
        self.status_code = 200
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the stream; the generator is closed (its slot freed) however the stream ends."""
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})

        async def pump() -> None:
            async for chunk in self.events:
                await asyncio.wait_for(
                    send({"type": "http.response.body", "body": chunk, "more_body": True}), SEND_TIMEOUT_S
                )
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def until_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        tasks = [asyncio.ensure_future(pump()), asyncio.ensure_future(until_disconnect())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # a timed-out or broken send ends only this stream
            await self.events.aclose()
