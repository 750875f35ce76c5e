"""Limits on what the service takes in: body bytes, requests at once, transmissions in flight.

`LimitsAndMetrics` (ASGI middleware) refuses a request with a body when `max_requests` such requests are
already in progress (429, before reading it), reads the body itself, counting bytes as they arrive whatever
the headers say (413 as soon as the limit is passed; a Content-Length over the limit is refused before
reading; 408 when no byte of it comes for `body_timeout_s`), and hands the application the complete body. It also
counts requests and latency per route.
`Admission` bounds the transmissions the service works on at once; a request is admitted whole or not at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from heimdall.errors import Busy, ServeError, TooLarge, TooSlow
from heimdall.serve.responses import error_response

CLIENT_GONE = "499"  # status label of a request whose client left before the body was read


class LimitsAndMetrics:
    """Plain ASGI rather than Starlette's BaseHTTPMiddleware, which costs a task and a stream per request."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        max_requests: int,
        requests: Counter,
        latency: Histogram,
        body_timeout_s: float,
    ) -> None:
        self.app, self.max_body_bytes, self.max_requests = app, max_body_bytes, max_requests
        self.body_timeout_s = body_timeout_s
        self.requests, self.latency = requests, latency
        self.in_progress = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count, time and bound one HTTP request (ASGI)."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [CLIENT_GONE]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = str(message["status"])
            await send(message)

        # requests without a body (health, readiness, metrics, model info) are cheap and never refused
        limited = scope["method"] not in ("GET", "HEAD", "OPTIONS")
        try:
            if limited and self.in_progress >= self.max_requests:
                await error_response(
                    Busy(
                        "request",
                        f"{self.in_progress} requests in progress, the limit is {self.max_requests}; retry later",
                    )
                )(scope, receive, send_status)
                return
            self.in_progress += limited
            try:
                await self._with_body(scope, receive, send_status)
            finally:
                self.in_progress -= limited
        finally:
            route = scope.get("route")
            endpoint = route.path if route is not None else "other"
            self.requests.labels(endpoint, status[0]).inc()
            self.latency.labels(endpoint).observe(time.perf_counter() - t0)

    async def _with_body(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await self._read_body(scope, receive)
        except ServeError as exc:
            await error_response(exc)(scope, receive, send)
            return
        if body is None:
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # after the body: the disconnect, when it comes
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body (None if the client left); TooLarge as soon as it passes the limit, TooSlow when no byte of it
        comes for body_timeout_s (a slow client would hold one of the max_requests places)."""
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_body_bytes):
                raise self._too_large()
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except TimeoutError:
                raise TooSlow("body", f"no bytes of it for {self.body_timeout_s:g} s") from None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self) -> TooLarge:
        return TooLarge("body", f"larger than the limit of {self.max_body_bytes} bytes")


class Admission:
    """Transmissions in flight (parsed, not yet answered), at most `capacity`."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_flight = 0

    def check_room(self) -> None:
        """Busy when not even one more transmission fits: refused before its body is parsed."""
        if self.in_flight >= self.capacity:
            raise Busy("transmissions", f"{self.in_flight} of {self.capacity} transmissions in flight; retry later")

    @contextmanager
    def admit(self, n: int) -> Iterator[None]:
        """Hold n transmissions' places for the block; TooLarge if n can never fit, Busy if not now."""
        if n > self.capacity:
            raise TooLarge(
                "transmissions",
                f"{n} transmissions, more than the service works on at once ({self.capacity}); split the batch",
            )
        if self.in_flight + n > self.capacity:
            raise Busy(
                "transmissions",
                f"{self.in_flight} of {self.capacity} transmissions in flight, no room for {n} more; retry later",
            )
        self.in_flight += n
        try:
            yield
        finally:
            self.in_flight -= n
