"""The service's settings (address, limits, batching, cache, receiver matching, the map page); their defaults and
help are `heimdall serve`'s flags (heimdall.commands.flags)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from heimdall.datasets.spec import MATCH_TOLERANCE_M
from heimdall.option_field import mebibytes, option, positive_float, positive_int


def tile_url(text: str) -> str:
    """A basemap tile URL template the map page can use (argparse error otherwise)."""
    from heimdall.serve.page import tile_origin  # FastAPI: only when the flag is given

    try:
        tile_origin(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    return text


@dataclass(frozen=True)
class ServeSettings:
    """Where the service listens and how it batches, caches and bounds its work."""

    host: str = option("127.0.0.1", "bind address")
    port: int = option(8000, "port")
    threads: int = option(1, "ONNX Runtime intra-op threads")
    max_batch: int = option(64, "micro-batch size limit")
    max_wait_ms: float = option(0.0, "extra wait for a fuller micro-batch (ms; 0: batch what is already waiting)")
    max_inflight: int = option(
        2048, "transmissions worked on at once; a request that does not fit answers 429", parse=positive_int
    )
    max_requests: int = option(64, "requests with a body in progress at once, beyond which 429", parse=positive_int)
    cache_size: int = option(4096, "answers kept in the LRU cache")
    max_body_bytes: int = option(
        16 * 1024 * 1024, "request body limit (MB)", flag="--max-body-mb", parse=mebibytes, default_text="16"
    )
    max_samples: int = option(
        1 << 20, "IQ samples of one recording in a request, beyond which 422", flag="--max-recording-samples"
    )
    match_tolerance_m: float = option(
        MATCH_TOLERANCE_M,
        "an ad-hoc receiver within this distance of a model receiver is that receiver; a receiver given by id and "
        "position must be this close to its table position (m)",
    )
    tile_url: str | None = option(
        None,
        "basemap tile URL template of the map page at / (default none: receivers, area and graticule only), e.g. "
        "https://tile.openstreetmap.org/{z}/{x}/{y}.png (mind the tile server's usage policy)",
        parse=tile_url,
    )
    live_view: bool = option(
        False,
        "turn on the map page's live view (GET /v1/events): the localizations asked to be published (the page's own, "
        "or ?publish=true) pushed to every page that can reach the service (default off)",
    )
    events_size: int = option(100, "localizations the map page's live view keeps in memory", parse=positive_int)
    max_event_streams: int = option(32, "live-view event streams open at once, beyond which 429", parse=positive_int)
    max_event_streams_per_client: int = option(
        4, "live-view event streams open at once from one client address, beyond which 429", parse=positive_int
    )
    event_idle_s: float = option(
        300.0,
        "a live-view stream with nothing to send for this long is ended; an open page reconnects (s)",
        parse=positive_float,
    )
    map_threads: int = option(
        2, "threads computing the radio-map posteriors of a model that carries a map", parse=positive_int
    )
    # connections (heimdall.serve.connections, heimdall.serve.limits)
    limit_concurrency: int = option(
        1024, "connections and requests at once, beyond which every request answers 503", parse=positive_int
    )
    keep_alive_s: int = option(5, "an idle keep-alive connection is closed after this (s)", parse=positive_int)
    header_timeout_s: float = option(
        10.0,
        "a request's line and headers must arrive within this, else the connection is closed (s)",
        parse=positive_float,
    )
    body_timeout_s: float = option(
        30.0, "a request body that sends nothing for this long answers 408 (s)", parse=positive_float
    )
