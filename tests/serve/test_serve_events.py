"""The live view's ring of answers (heimdall.serve.events), on its own event loop."""

import asyncio

import pytest

from heimdall.serve.events import EventRing


def test_a_client_that_falls_behind_the_ring_is_dropped():
    async def scenario():
        ring = EventRing(size=2, max_streams=1)
        ring.publish([b'{"n":1}'])
        stream = ring.open()
        assert await anext(stream) == b"retry: 3000\n\n"
        assert b'"answer":{"n":1}' in await anext(stream)
        for n in (2, 3, 4):  # the client reads none of these: 3 > the ring of 2
            ring.publish([b'{"n":%d}' % n])
        assert await anext(stream) == b"event: dropped\ndata: {}\n\n"
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        assert ring.streams == 0 and len(ring.ring) == 2
        ring.open()  # the slot is free again

    asyncio.run(scenario())
