"""The service's settings (limits, batching, cache, receiver matching, the map page); their defaults are
`heimdall serve`'s."""

from __future__ import annotations

from dataclasses import dataclass

from heimdall.datasets.spec import MATCH_TOLERANCE_M


@dataclass(frozen=True)
class ServeSettings:
    """How the service batches, caches and bounds its work."""

    max_batch: int = 64
    max_wait_ms: float = 0.0
    max_inflight: int = 2048
    max_requests: int = 64
    cache_size: int = 4096
    max_body_bytes: int = 16 * 1024 * 1024
    max_samples: int = 1 << 20
    match_tolerance_m: float = MATCH_TOLERANCE_M
    tile_url: str | None = None  # the map page's basemap (none: receivers, area and graticule only)
    live_view: bool = False  # the map page's live view (/v1/events) of the answers asked to be published
    events_size: int = 100  # answers the live view keeps and replays to a new page
    max_event_streams: int = 32  # live-view streams open at once
    max_event_streams_per_client: int = 4  # of them from one client address
    event_idle_s: float = 300.0  # a live-view stream with nothing to send for this long is ended (a page reconnects)
    map_threads: int = 2  # threads computing the radio-map posteriors of a model that carries a map
    # connections (heimdall.serve.connections, heimdall.serve.limits)
    limit_concurrency: int = 1024  # connections and tasks at once; beyond, uvicorn answers every request 503
    keep_alive_s: int = 5  # an idle keep-alive connection is closed after this
    header_timeout_s: float = 10.0  # a request's line and headers must be in this long after the connection opens
    body_timeout_s: float = 30.0  # a request body that sends no bytes for this long is answered 408
