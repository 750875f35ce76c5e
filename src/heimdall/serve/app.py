"""The FastAPI application: localization endpoints, health, metrics and hot reload.

Settings come from `ServeSettings`; the admin token from HEIMDALL_ADMIN_TOKEN (admin is disabled
without one). Bad input is answered 4xx with the field named, never 5xx.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from heimdall.errors import HeimdallError
from heimdall.serve.batcher import MicroBatcher, QueueFull
from heimdall.serve.geometry import response_geometry
from heimdall.serve.inputs import InputError, to_model_inputs
from heimdall.serve.runtime import ModelSource, ServedModel
from heimdall.serve.schemas import BatchRequest, BatchResponse, LocalizeRequest, LocalizeResponse


@dataclass(frozen=True)
class ServeSettings:
    max_batch: int = 64
    max_wait_ms: float = 0.0
    max_queue: int = 1024
    cache_size: int = 4096
    max_body_bytes: int = 16 * 1024 * 1024
    max_samples: int = 1 << 20


class _Cache:
    """LRU of answers keyed by (model version, input hash)."""

    def __init__(self, size: int):
        self.size = size
        self.items: OrderedDict[tuple[str, str], dict] = OrderedDict()

    def get(self, key):
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        return None

    def put(self, key, value) -> None:
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)

    def clear(self) -> None:
        self.items.clear()


class LimitsAndMetrics:
    """ASGI middleware: refuse bodies over the size limit (413) and count requests and latency per route.

    Plain ASGI rather than Starlette's BaseHTTPMiddleware, which costs a task and a stream per request."""

    def __init__(self, app, max_body_bytes: int, requests: Counter, latency: Histogram):
        self.app, self.max_body_bytes, self.requests, self.latency = app, max_body_bytes, requests, latency

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]

        async def send_status(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        length = dict(scope["headers"]).get(b"content-length")
        try:
            if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                response = JSONResponse({"detail": f"body: larger than the limit of {self.max_body_bytes} bytes"},
                                        status_code=413)
                await response(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            endpoint = route.path if route is not None else "other"
            self.requests.labels(endpoint, str(status[0])).inc()
            self.latency.labels(endpoint).observe(time.perf_counter() - t0)


def _json(body: dict) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


def kind_of(req: LocalizeRequest) -> str:
    return "iq" if req.iq is not None else "features"


def create_app(source: ModelSource, settings: ServeSettings = ServeSettings()) -> FastAPI:
    registry = CollectorRegistry()
    requests = Counter("heimdall_requests", "HTTP requests", ["endpoint", "status"], registry=registry)
    latency = Histogram("heimdall_request_seconds", "request latency", ["endpoint"], registry=registry,
                        buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))
    batch_sizes = Histogram("heimdall_batch_size", "transmissions per model call", registry=registry,
                            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
    cache_events = Counter("heimdall_cache", "answer cache lookups", ["result"], registry=registry)
    reloads = Counter("heimdall_reloads", "model swaps", registry=registry)
    state: dict = {"model": None}
    cache = _Cache(settings.cache_size)
    batcher = MicroBatcher(lambda: state["model"], settings.max_batch, settings.max_wait_ms, settings.max_queue,
                           on_batch=batch_sizes.observe)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["model"] = await asyncio.get_running_loop().run_in_executor(None, source.load)
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="Heimdall", version="1", lifespan=lifespan,
                  description="Locate VHF/UHF transmitters from multi-receiver recordings.")
    app.add_middleware(LimitsAndMetrics, max_body_bytes=settings.max_body_bytes, requests=requests, latency=latency)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = [{"field": ".".join(str(p) for p in e["loc"] if p != "body") or "body", "message": e["msg"]}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    async def localize_one(req: LocalizeRequest, t0: float) -> dict:
        model: ServedModel = state["model"]
        key = (model.version + model.sha256, hashlib.sha256(req.model_dump_json().encode()).hexdigest())
        hit = cache.get(key)
        if hit is not None:
            cache_events.labels("hit").inc()
            return {**hit, "cached": True, "latency_ms": (time.perf_counter() - t0) * 1e3}
        cache_events.labels("miss").inc()
        if req.iq is not None:  # FFTs: off the event loop
            feats, pos, labels = await asyncio.get_running_loop().run_in_executor(
                None, to_model_inputs, req, model, settings.max_samples)
        else:
            feats, pos, labels = to_model_inputs(req, model, settings.max_samples)
        mean, cov, answered_by = await batcher.submit(feats, pos)
        if not (np.isfinite(mean).all() and np.isfinite(cov).all()):
            raise InputError(kind_of(req), "the model gives no finite answer for these inputs")
        body = {**response_geometry(mean, cov, answered_by.frame), "receivers_used": labels,
                "model": {"name": answered_by.name, "version": answered_by.version}}
        cache.put((answered_by.version + answered_by.sha256, key[1]), body)
        return {**body, "cached": False, "latency_ms": (time.perf_counter() - t0) * 1e3}

    def _error(exc: Exception) -> JSONResponse:
        if isinstance(exc, InputError):
            return JSONResponse({"detail": [{"field": exc.field, "message": str(exc)}]}, status_code=422)
        if isinstance(exc, QueueFull):
            return JSONResponse({"detail": f"busy: {exc}; retry later"}, status_code=429)
        raise exc

    # The answers are built here from checked numbers and sent as they are (response_model documents them;
    # returning a Response skips FastAPI's re-validation of every answer, a large share of a request's cost).
    @app.post("/v1/localize", response_model=LocalizeResponse)
    async def localize(req: LocalizeRequest):
        """Locate one transmission from raw IQ or features per receiver."""
        try:
            return _json(await localize_one(req, time.perf_counter()))
        except (InputError, QueueFull) as exc:
            return _error(exc)

    @app.post("/v1/localize/batch", response_model=BatchResponse)
    async def localize_batch(req: BatchRequest):
        """Locate many transmissions in one call (answers in the same order)."""
        t0 = time.perf_counter()

        async def one(i: int, r: LocalizeRequest) -> dict:
            try:
                return await localize_one(r, t0)
            except InputError as exc:
                raise InputError(f"transmissions[{i}].{exc.field}", exc.message) from None

        try:
            results = await asyncio.gather(*(one(i, r) for i, r in enumerate(req.transmissions)))
        except (InputError, QueueFull) as exc:
            return _error(exc)
        return _json({"results": results})

    @app.get("/v1/model")
    async def model_info():
        """Metadata of the model being served."""
        return state["model"].describe()

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        if state["model"] is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ready", "model": state["model"].version}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics():
        return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/admin/reload")
    async def reload(request: Request):
        """Swap to the model the source names now (e.g. the new champion); in-flight requests finish."""
        token = os.environ.get("HEIMDALL_ADMIN_TOKEN")
        if not token:
            return JSONResponse({"detail": "admin is disabled (HEIMDALL_ADMIN_TOKEN is not set)"}, status_code=403)
        given = request.headers.get("authorization", "")
        if not given.startswith("Bearer "):
            return JSONResponse({"detail": "missing bearer token"}, status_code=401)
        if not hmac.compare_digest(given.removeprefix("Bearer ").encode(), token.encode()):
            return JSONResponse({"detail": "wrong token"}, status_code=403)
        try:
            new = await asyncio.get_running_loop().run_in_executor(None, source.load)
        except HeimdallError as exc:  # refused or unreachable: keep serving the model already loaded
            current = state["model"].version if state["model"] else None
            return JSONResponse({"detail": f"reload refused: {exc}", "current": current}, status_code=409)
        old = state["model"]
        state["model"] = new
        cache.clear()
        reloads.inc()
        return {"previous": old.version if old else None, "current": new.version, "sha256": new.sha256}

    return app

