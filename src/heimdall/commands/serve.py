"""`heimdall serve`: run the HTTP service with uvicorn."""

from __future__ import annotations

import argparse
import gc
import logging

# Requests allocate many short-lived containers (parsed JSON, validated models) that reference counting frees.
# With the default thresholds (700, 10, 10) the collector runs so often that it walks the objects of the requests
# in flight again and again (full collections of 20–50 ms under large batches, measured); these let most request
# objects die before any collection, and full collections come rarely.
GC_THRESHOLDS = (50_000, 20, 100)
log = logging.getLogger(__name__)


def serve_command(args: argparse.Namespace) -> int:
    """`heimdall serve`: serve a model over HTTP until interrupted; exit code."""
    import uvicorn

    from heimdall.commands.options import model_source
    from heimdall.serve.app import create_app
    from heimdall.serve.connections import uvicorn_options
    from heimdall.serve.settings import ServeSettings

    source = model_source(args)
    writers = source.unchecked_writers()
    if writers is not None:
        log.warning(
            "heimdall: WARNING: no --verify-key: %s picks the model this service answers with. Sign models at "
            "export (--signing-key) and start the service with --verify-key PUBLIC_KEY (docs/MODELS.md, Security).",
            writers,
        )
    source.load()  # fail now, with a clear message, rather than inside the server
    settings = ServeSettings(
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_inflight=args.max_inflight,
        max_requests=args.max_requests,
        cache_size=args.cache_size,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        match_tolerance_m=args.match_tolerance_m,
        tile_url=args.tile_url,
        live_view=args.live_view,
        events_size=args.events_size,
        max_event_streams=args.max_event_streams,
        max_event_streams_per_client=args.max_event_streams_per_client,
        event_idle_s=args.event_idle_s,
        map_threads=args.map_threads,
        limit_concurrency=args.limit_concurrency,
        keep_alive_s=args.keep_alive_s,
        header_timeout_s=args.header_timeout_s,
        body_timeout_s=args.body_timeout_s,
    )
    app = create_app(source, settings)
    # what exists now (modules, the app) lives as long as the process: out of every collection from now on
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, **uvicorn_options(settings))
    return 0
