"""The live view's ring of answers (heimdall.serve.events), on its own event loop."""

import asyncio
import time

import pytest

from heimdall.errors import Busy
from heimdall.serve.events import EventRing


def test_a_client_that_falls_behind_the_ring_is_dropped():
    async def scenario():
        ring = EventRing(size=2, max_streams=1, max_per_client=1, idle_s=60)
        ring.publish([b'{"n":1}'])
        stream = ring.open("10.0.0.1")
        assert await anext(stream) == b"retry: 3000\n\n"
        assert b'"answer":{"n":1}' in await anext(stream)
        for n in (2, 3, 4):  # the client reads none of these: 3 > the ring of 2
            ring.publish([b'{"n":%d}' % n])
        assert await anext(stream) == b"event: dropped\ndata: {}\n\n"
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        assert ring.streams == 0 and len(ring.ring) == 2 and not ring.per_client
        ring.open("10.0.0.1")  # the slot is free again

    asyncio.run(scenario())


def test_one_client_cannot_take_every_stream():
    async def scenario():
        ring = EventRing(size=4, max_streams=3, max_per_client=2, idle_s=60)
        mine = [ring.open("10.0.0.1") for _ in range(2)]
        with pytest.raises(Busy, match="from 10.0.0.1, the limit is 2"):
            ring.open("10.0.0.1")
        operator = ring.open("10.0.0.2")  # the operators' page still gets its stream
        assert await anext(operator) == b"retry: 3000\n\n"
        with pytest.raises(Busy, match="3 event streams open, the limit is 3"):
            ring.open("10.0.0.3")
        for stream in [*mine, operator]:
            await stream.aclose()
        assert ring.streams == 0 and not ring.per_client

    asyncio.run(scenario())


def test_a_stream_with_nothing_to_send_ends_after_the_idle_time():
    async def scenario():
        ring = EventRing(size=4, max_streams=2, max_per_client=2, idle_s=0.3)
        stream = ring.open("10.0.0.1")
        assert await anext(stream) == b"retry: 3000\n\n"
        t0 = time.monotonic()
        ring.publish([b'{"n":1}'])
        assert b'"answer":{"n":1}' in await anext(stream)  # an event restarts the idle time
        with pytest.raises(StopAsyncIteration):
            await anext(stream)  # then nothing for 0.3 s: ended
        assert 0.25 <= time.monotonic() - t0 < 5 and ring.streams == 0

    asyncio.run(scenario())
