"""`heimdall serve`: run the HTTP service with uvicorn."""

from __future__ import annotations

import argparse


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn

    from heimdall.commands.options import model_source
    from heimdall.serve.app import ServeSettings, create_app

    source = model_source(args)
    source.load()  # fail now, with a clear message, rather than inside the server
    settings = ServeSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                             cache_size=args.cache_size, max_body_bytes=int(args.max_body_mb * 1024 * 1024))
    uvicorn.run(create_app(source, settings), host=args.host, port=args.port, log_level="warning",
                access_log=False)
    return 0
