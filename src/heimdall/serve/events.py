"""The live view's feed: the last published answers of the service, pushed to open pages as server-sent events.

Only what the application publishes is kept: answers that asked to be published (the map page's own, or an API
client's `?publish=true`), computed rather than taken from the cache, with ad-hoc receiver positions taken out
(heimdall.serve.app). Nothing is stored beyond a ring of the last `size` published answers (JSON bytes). Publishing
appends to the ring and wakes the open streams, never waits for them. At most `max_streams` streams are open at
once and `max_per_client` from one client address (more are refused 429); a stream that falls more than the ring
behind, whose socket takes no bytes for `SEND_TIMEOUT_S` (a slow client), or that had nothing to send for `idle_s`
(an abandoned page; a live one reconnects) is ended rather than kept.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
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
    """The last `size` published answers with their sequence numbers and arrival times; streams of them for the
    pages, at most `max_streams` at once and `max_per_client` per client address, each ended after `idle_s` with
    nothing to send."""

    def __init__(self, size: int, max_streams: int, max_per_client: int, idle_s: float) -> None:
        self.size, self.max_streams, self.max_per_client, self.idle_s = size, max_streams, max_per_client, idle_s
        self.ring: deque[tuple[int, float, bytes]] = deque(maxlen=size)
        self.seq = 0  # sequence number of the newest answer
        self.streams = 0
        self.per_client: Counter[str] = Counter()
        self._changed = asyncio.Event()

    def publish(self, answers: list[bytes]) -> None:
        """Keep answers (JSON bytes) in the ring and wake the open streams; O(1) per answer kept."""
        if not answers:
            return
        now = time.time()
        for answer in answers[-self.size :]:
            self.seq += 1
            self.ring.append((self.seq, now, answer))
        if self.streams:
            self._changed.set()
            self._changed = asyncio.Event()

    def open(self, client: str) -> EventStream:
        """A new stream for the client address `client` (Busy when `max_streams` are open, or `max_per_client` of
        this client's): the ring, then each answer as it comes."""
        if self.streams >= self.max_streams:
            raise Busy("events", f"{self.streams} event streams open, the limit is {self.max_streams}; retry later")
        if self.per_client[client] >= self.max_per_client:
            raise Busy(
                "events",
                f"{self.per_client[client]} event streams open from {client}, the limit is {self.max_per_client}",
            )
        self.streams += 1
        self.per_client[client] += 1
        return EventStream(self, client)

    def release(self, client: str) -> None:
        """A stream of `client` ended: its places are free."""
        self.streams -= 1
        self.per_client[client] -= 1
        if not self.per_client[client]:
            del self.per_client[client]

    async def events(self) -> AsyncGenerator[bytes, None]:
        """The chunks of one stream: the ring, then each answer as it comes, until the client falls behind the ring
        or nothing was sent for idle_s."""
        yield b"retry: 3000\n\n"
        sent = self.seq - len(self.ring)
        last_event = time.monotonic()
        while True:
            oldest = self.seq - len(self.ring) + 1
            if sent + 1 < oldest:  # the ring moved past what this client has read: it is too slow
                yield b"event: dropped\ndata: {}\n\n"
                return
            for seq, at, answer in list(self.ring)[sent + 1 - oldest :]:
                yield b'id: %d\ndata: {"seq":%d,"received_unix":%.3f,"answer":%s}\n\n' % (seq, seq, at, answer)
                sent, last_event = seq, time.monotonic()
            if self.seq != sent:  # published while this stream was sending
                continue
            idle_left = self.idle_s - (time.monotonic() - last_event)
            if idle_left <= 0:  # nothing to send for idle_s: end it (an open page reconnects)
                return
            try:
                await asyncio.wait_for(self._changed.wait(), min(HEARTBEAT_S, idle_left))
            except TimeoutError:
                if time.monotonic() - last_event < self.idle_s:
                    yield b": heartbeat\n\n"


class EventStream:
    """One client's stream (async iterator of chunks) holding its places in the ring's limits until it ends or is
    closed, whichever comes first, even if it was never started."""

    def __init__(self, ring: EventRing, client: str) -> None:
        self.ring, self.client = ring, client
        self.chunks = ring.events()
        self.open = True

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await anext(self.chunks)
        except StopAsyncIteration:
            self._release()
            raise

    async def aclose(self) -> None:
        """End the stream and free its places."""
        await self.chunks.aclose()
        self._release()

    def _release(self) -> None:
        if self.open:
            self.open = False
            self.ring.release(self.client)


class EventStreamResponse(Response):
    """ASGI response sending `events` as text/event-stream until they end, the client leaves or stops reading."""

    def __init__(self, events: EventStream) -> None:
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
