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

    from heimdall.commands.flags import from_args
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
    settings = from_args(ServeSettings, args)
    app = create_app(source, settings)
    # what exists now (modules, the app) lives as long as the process: out of every collection from now on
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_level="warning", access_log=False, **uvicorn_options(settings)
    )
    return 0
