"""The FastAPI application: localization endpoints, health, metrics and hot reload.

Settings come from `ServeSettings`; the admin token from HEIMDALL_ADMIN_TOKEN (admin is disabled
without one). Bad input is answered 4xx with the field named, never 5xx.

A localization request goes: body read within its limit (limits.py) → JSON parsed, counts checked
(bodies.py) → its transmissions admitted whole or refused (429) → validated → each answered from the cache
or built into model inputs and micro-batched (batcher.py). One request is served by one model snapshot: a
hot swap in between changes neither its inputs, nor the model that runs them, nor the cache key it is
stored under. Answers are kept and sent as JSON bytes (few objects for the garbage collector to walk).

The live view (`settings.live_view`, off by default) sees only answers whose request asked for it (`?publish=true`;
the map page asks for its own), only those computed for that request (an answer from the cache is not published
again), and never an ad-hoc receiver's position: it is named AD_HOC there.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydantic_core
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel

from heimdall.errors import Forbidden, HeimdallError, InputError, ServeError, Unauthorized, Unavailable
from heimdall.features import receiver_reports
from heimdall.radiomap.batch import worker_count
from heimdall.serve.batcher import MicroBatcher
from heimdall.serve.bodies import parse, transmissions, validate
from heimdall.serve.events import EventRing
from heimdall.serve.geometry import response_geometry
from heimdall.serve.inputs import to_model_inputs
from heimdall.serve.limits import Admission, LimitsAndMetrics
from heimdall.serve.map_answers import NOT_USED, MapInput, hybrid_answers, map_input
from heimdall.serve.page import add_page
from heimdall.serve.responses import error_response
from heimdall.serve.runtime import ModelSource, ServedModel
from heimdall.serve.schemas import BatchRequest, BatchResponse, LocalizeRequest, LocalizeResponse
from heimdall.serve.settings import ServeSettings
from heimdall.serve.slices import Turns

JSON = "application/json"
AD_HOC = "ad hoc"  # what the live view shows instead of an ad-hoc receiver's label (its position)
TRUE, FALSE = ("true", "1"), ("false", "0", "")


class _Cache:
    """LRU of answers (JSON bytes) keyed by (model key, input hash)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def get(self, key: tuple[str, str]) -> bytes | None:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        return None

    def put(self, key: tuple[str, str], value: bytes) -> None:
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)

    def clear(self) -> None:
        self.items.clear()


def model_key(model: ServedModel) -> str:
    """Cache key of a model's answers: name, version and sha256 of its bytes."""
    return f"{model.name}:{model.version}:{model.sha256}"


@dataclass(frozen=True)
class Transmission:
    """What an answer needs besides the network's outputs: the receivers' labels, their SNR float [R'] dB (NaN
    where only the power was sent) and, for a model that carries a map, what the map reads (or why it cannot)."""

    labels: list[str]
    snr_db: np.ndarray
    map_input: MapInput | str | None = None


def answers(
    model: ServedModel, mean: np.ndarray, cov: np.ndarray, items: list[Transmission], pool: Executor
) -> list[bytes | None]:
    """The answers (JSON bytes, without `cached` and `latency_ms`) of a model call; None where not finite. With a
    map, the hybrid posteriors (computed in `pool`) replace the network's mean and covariance where the map reads
    the transmission, and add `map`, `modes` and `regions`."""
    extra: list[dict] = [{} for _ in items]
    if model.radio_map is not None:
        inputs = [it.map_input if it.map_input is not None else NOT_USED for it in items]
        mean, cov, extra, _ = hybrid_answers(model.radio_map, model.frame, mean, cov, inputs, pool.map)
    finite = np.isfinite(mean).all(axis=1) & np.isfinite(cov).all(axis=(1, 2))
    geometry = iter(response_geometry(mean[finite], cov[finite], model.frame) if finite.any() else ())
    about = {"name": model.name, "version": model.version, "sha256": model.sha256}
    return [
        pydantic_core.to_json(
            {
                **next(geometry),
                "receivers_used": it.labels,
                "receivers": receiver_reports(it.labels, it.snr_db, model.params),
                "model": about,
                **more,
            }
        )
        if ok
        else None
        for ok, it, more in zip(finite, items, extra, strict=True)
    ]


def for_live_view(answer: bytes, labels: list[str], table: frozenset[str]) -> bytes:
    """The answer as the live view shows it: receivers not in the model's table (ad hoc, labelled by their
    position) named AD_HOC in `receivers_used` and `receivers`."""
    if all(label in table for label in labels):
        return answer
    d = json.loads(answer)
    d["receivers_used"] = [r if r in table else AD_HOC for r in d["receivers_used"]]
    for report in d["receivers"]:
        if report["id"] not in table:
            report["id"] = AD_HOC
    return pydantic_core.to_json(d)


def asks_to_publish(request: Request) -> bool:
    """Whether a localization request asks for its answers to be published to the live view (`?publish=true`)."""
    value = request.query_params.get("publish", "").lower()
    if value not in TRUE + FALSE:
        raise InputError("publish", f"expected true or false, got {value[:20]!r}")
    return value in TRUE


def _with_timing(answer: bytes, cached: bool, t0: float) -> bytes:
    latency_ms = (time.perf_counter() - t0) * 1e3
    return answer[:-1] + b',"cached":%s,"latency_ms":%.3f}' % (b"true" if cached else b"false", latency_ms)


def create_app(source: ModelSource, settings: ServeSettings = ServeSettings()) -> FastAPI:
    """The FastAPI application serving the model from `source` within `settings`' limits."""
    registry = CollectorRegistry()
    requests = Counter("heimdall_requests", "HTTP requests", ["endpoint", "status"], registry=registry)
    latency = Histogram(
        "heimdall_request_seconds",
        "request latency",
        ["endpoint"],
        registry=registry,
        buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
    )
    batch_sizes = Histogram(
        "heimdall_batch_size",
        "transmissions per model call",
        registry=registry,
        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    )
    cache_events = Counter("heimdall_cache", "answer cache lookups", ["result"], registry=registry)
    reloads = Counter("heimdall_reloads", "model swaps", registry=registry)
    state: dict = {"model": None}
    cache = _Cache(settings.cache_size)
    admission = Admission(settings.max_inflight)
    Gauge(
        "heimdall_inflight_transmissions", "transmissions admitted and not yet answered", registry=registry
    ).set_function(lambda: admission.in_flight)
    # the map posteriors of a batch: off the event loop, in threads of their own (the kernels release the GIL), at
    # most one per CPU
    map_pool = ThreadPoolExecutor(worker_count(settings.map_threads), thread_name_prefix="heimdall-map")
    respond = functools.partial(answers, pool=map_pool)
    batcher = MicroBatcher(respond, settings.max_batch, settings.max_wait_ms, on_batch=batch_sizes.observe)
    reload_lock = asyncio.Lock()
    turns = Turns()
    events = EventRing(
        settings.events_size, settings.max_event_streams, settings.max_event_streams_per_client, settings.event_idle_s
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state["model"] = await asyncio.get_running_loop().run_in_executor(None, source.load)
        batcher.start()
        yield
        await batcher.stop()
        map_pool.shutdown(wait=False)

    app = FastAPI(
        title="Heimdall",
        version="1",
        lifespan=lifespan,
        description="Locate VHF/UHF transmitters from multi-receiver recordings.",
    )
    app.add_middleware(
        LimitsAndMetrics,
        max_body_bytes=settings.max_body_bytes,
        max_requests=settings.max_requests,
        requests=requests,
        latency=latency,
        body_timeout_s=settings.body_timeout_s,
    )

    async def localize_all(raw: list, batch: bool, t0: float, publish: bool) -> tuple[list[bytes], list[bytes]]:
        """Answers of admitted transmissions, all by the model current now; and, to publish, those computed for
        this request (not from the cache) as the live view shows them."""
        model: ServedModel = state["model"]

        def field(i: int, name: str) -> str:
            return f"transmissions[{i}].{name}" if batch else name

        def build(i: int) -> tuple[np.ndarray, np.ndarray, Transmission]:
            try:
                feats, positions, labels = to_model_inputs(
                    reqs[i], model, settings.max_samples, settings.match_tolerance_m
                )
            except InputError as exc:
                raise InputError(field(i, exc.field), exc.message) from None
            snr_db = feats[:, model.params.snr_index].astype(np.float64)
            if model.radio_map is None:
                return feats, positions, Transmission(labels, snr_db)
            read = map_input(model.params, model.receiver_ids, feats, labels, reqs[i].features)
            return feats, positions, Transmission(labels, snr_db, read)

        async with turns.hold() as slices:
            reqs = await validate(raw, batch, slices)
            key, keys, answered = model_key(model), [], []
            for req in reqs:
                keys.append((key, hashlib.sha256(req.model_dump_json().encode()).hexdigest()))
                answered.append(cache.get(keys[-1]))
                await slices.pause()
            todo = [i for i, hit in enumerate(answered) if hit is None]
            built = {}
            for i in todo:
                if reqs[i].iq is None:
                    built[i] = build(i)
                    await slices.pause()
        cache_events.labels("hit").inc(len(reqs) - len(todo))
        cache_events.labels("miss").inc(len(todo))
        iq = [i for i in todo if i not in built]
        loop = asyncio.get_running_loop()  # FFTs: off the event loop
        built.update(zip(iq, await asyncio.gather(*(loop.run_in_executor(None, build, i) for i in iq)), strict=False))
        computed = await asyncio.gather(*(batcher.submit(model, *built[i]) for i in todo))
        async with turns.hold() as slices:
            fresh, table = [], frozenset(model.receiver_ids)
            for i, answer in zip(todo, computed, strict=False):
                if answer is None:
                    raise InputError(
                        field(i, "iq" if reqs[i].iq is not None else "features"),
                        "the model gives no finite answer for these inputs",
                    )
                if state["model"] is model:  # after a swap the cache holds the new model's answers only
                    cache.put(keys[i], answer)
                answered[i] = answer
                if publish:
                    fresh.append(for_live_view(answer, built[i][2].labels, table))
            out = []
            for i, answer in enumerate(answered):
                assert answer is not None  # every miss was computed above
                out.append(_with_timing(answer, i not in built, t0))
                await slices.pause()
            return out, fresh

    async def localize_body(request: Request, batch: bool) -> Response:
        t0 = time.perf_counter()
        body = await request.body()
        try:
            publish = asks_to_publish(request) and settings.live_view
            admission.check_room()
            async with turns.hold():
                raw = transmissions(parse(body), batch)
            with admission.admit(len(raw)):
                results, fresh = await localize_all(raw, batch, t0, publish)
        except ServeError as exc:
            return error_response(exc)
        events.publish(fresh)
        if batch:
            return Response(b'{"results":[' + b",".join(results) + b"]}", media_type=JSON)
        return Response(results[0], media_type=JSON)

    # The bodies are parsed and checked here (counts before items, admission before work) and the answers
    # are sent as built; the OpenAPI schema still documents both (see openapi() below).
    @app.post("/v1/localize", response_model=LocalizeResponse, openapi_extra=_body_schema(LocalizeRequest))
    async def localize(request: Request) -> Response:
        """Locate one transmission from raw IQ or features per receiver."""
        return await localize_body(request, batch=False)

    @app.post("/v1/localize/batch", response_model=BatchResponse, openapi_extra=_body_schema(BatchRequest))
    async def localize_batch(request: Request) -> Response:
        """Locate many transmissions in one call (answers in the same order)."""
        return await localize_body(request, batch=True)

    # response_model=None: FastAPI would otherwise make a response model of the return type; answers go as returned
    @app.get("/v1/model", response_model=None)
    async def model_info() -> dict[str, Any]:
        """Metadata of the model being served."""
        return state["model"].describe()

    @app.get("/healthz", response_model=None)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=None)
    async def readyz() -> Response | dict[str, Any]:
        if state["model"] is None:
            return error_response(Unavailable("model", "loading"))
        return {"status": "ready", "model": state["model"].version}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/admin/reload", response_model=None)
    async def reload(request: Request) -> Response | dict[str, Any]:
        """Swap to the model the source names now (e.g. the new champion); in-flight requests finish with the
        model they started with. If the new model cannot be loaded, the current one stays (503, with why)."""
        try:
            _check_admin(request.headers.get("authorization", ""))
            async with reload_lock:
                old = state["model"]
                try:
                    new = await asyncio.get_running_loop().run_in_executor(None, source.load)
                except Exception as exc:  # whatever the source raised, the service goes on with the old model
                    why = str(exc) if isinstance(exc, HeimdallError) else f"{type(exc).__name__}: {exc}"
                    raise Unavailable(
                        "model",
                        f"reload failed, still serving {old.name} {old.version} (sha256 {old.sha256[:12]}…): {why}",
                    ) from None
                state["model"] = new
                cache.clear()
                reloads.inc()
        except ServeError as exc:
            return error_response(exc)
        return {"previous": old.version, "current": new.version, "sha256": new.sha256}

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (LocalizeRequest, BatchRequest):
                definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(definition.pop("$defs", {}))
                components[model.__name__] = definition
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema
    add_page(app, events if settings.live_view else None, settings.tile_url)
    return app


def _body_schema(model: type[BaseModel]) -> dict:
    """OpenAPI requestBody of an endpoint that reads its JSON body itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


def _check_admin(authorization: str) -> None:
    token = os.environ.get("HEIMDALL_ADMIN_TOKEN")
    if not token:
        raise Forbidden("authorization", "admin is disabled (HEIMDALL_ADMIN_TOKEN is not set)")
    if not authorization.startswith("Bearer "):
        raise Unauthorized("authorization", "missing bearer token")
    if not hmac.compare_digest(authorization.removeprefix("Bearer ").encode(), token.encode()):
        raise Forbidden("authorization", "wrong token")
