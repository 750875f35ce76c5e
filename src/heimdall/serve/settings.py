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
    events_size: int = 100  # answers the live view keeps and replays to a new page
    max_event_streams: int = 32  # live-view streams open at once
    map_threads: int = 2  # threads computing the radio-map posteriors of a model that carries a map
