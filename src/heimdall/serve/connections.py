"""Connection-level limits of the HTTP server (uvicorn): connections at once, idle keep-alive, slow request heads.

uvicorn bounds the time an idle keep-alive connection is kept (`timeout_keep_alive`) and the connections and tasks
it serves at once (`limit_concurrency`: beyond it every request is answered 503), but not the time a client may take
to send a request's line and headers: a client sending a byte now and then holds its connection for ever. Its HTTP
protocol classes are therefore extended here with a header timeout: from the moment a connection opens, or its
previous answer is sent, the next request's head must be complete within `header_timeout_s`, else the connection is
closed. A request whose head is complete is never cut by it (long answers and event streams go on).
"""

from __future__ import annotations

import asyncio
from typing import Any

from heimdall.serve.settings import ServeSettings


class HeaderTimeout:
    """Mixin for uvicorn's HTTP protocol classes (h11 or httptools): closes a connection whose next request head is
    not complete `header_timeout_s` after the connection opened or its previous answer was sent."""

    header_timeout_s: float
    # set by the protocol class mixed with (uvicorn's): the transport, the loop and the current request's cycle
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    cycle: Any

    def connection_made(self, transport: asyncio.Transport) -> None:
        """Open: the first request's head must come in time."""
        super().connection_made(transport)  # type: ignore[misc]
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_cycle: Any = None
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Bytes: once they complete a request's head (uvicorn starts a new cycle), the timer stops."""
        super().data_received(data)  # type: ignore[misc]
        if self._head_timer is not None and self.cycle is not self._head_cycle:
            self._disarm()

    def on_response_complete(self) -> None:
        """An answer sent: unless a pipelined request's head is already in, the next one must come in time."""
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Closed: nothing left to time."""
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        self._disarm()
        self._head_cycle = self.cycle
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.cycle is self._head_cycle and not self.transport.is_closing():
            self.transport.close()


def http_protocol(header_timeout_s: float) -> type:
    """The HTTP protocol class uvicorn would choose (httptools when installed, else h11), with the header timeout."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # httptools is optional for uvicorn
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base  # type: ignore[assignment]
    return type(f"HeaderTimeout{Base.__name__}", (HeaderTimeout, Base), {"header_timeout_s": header_timeout_s})


def uvicorn_options(settings: ServeSettings) -> dict[str, Any]:
    """The keyword arguments of uvicorn.run that bound connections, from the service's settings."""
    return {
        "http": http_protocol(settings.header_timeout_s),
        "limit_concurrency": settings.limit_concurrency,
        "timeout_keep_alive": settings.keep_alive_s,
    }
