"""The FastAPI application: localization endpoints, health, metrics and hot reload, as thin routes over the
service object on `app.state.service` (heimdall.serve.service), which holds the state and does the work.

Settings come from `ServeSettings`; the admin token from HEIMDALL_ADMIN_TOKEN (admin is disabled
without one). Bad input is answered 4xx with the field named, never 5xx.

The live view (`settings.live_view`, off by default) sees only answers whose request asked for it (`?publish=true`;
the map page asks for its own).
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel

from heimdall.errors import Forbidden, InputError, ServeError, Unauthorized
from heimdall.serve.limits import LimitsAndMetrics
from heimdall.serve.page import add_page
from heimdall.serve.responses import error_response
from heimdall.serve.runtime import ModelSource
from heimdall.serve.schemas import BatchRequest, BatchResponse, LocalizeRequest, LocalizeResponse
from heimdall.serve.service import LocalizationService
from heimdall.serve.settings import ServeSettings

JSON = "application/json"
TRUE, FALSE = ("true", "1"), ("false", "0", "")


def create_app(source: ModelSource, settings: ServeSettings = ServeSettings()) -> FastAPI:
    """The FastAPI application serving the model from `source` within `settings`' limits."""
    service = LocalizationService(source, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        yield
        await service.stop()

    app = FastAPI(
        title="Heimdall",
        version="1",
        lifespan=lifespan,
        description="Locate VHF/UHF transmitters from multi-receiver recordings.",
    )
    app.state.service = service
    app.add_middleware(
        LimitsAndMetrics,
        max_body_bytes=settings.max_body_bytes,
        max_requests=settings.max_requests,
        requests=service.metrics.requests,
        latency=service.metrics.latency,
        body_timeout_s=settings.body_timeout_s,
    )
    app.include_router(routes)

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
    add_page(app, service.events if settings.live_view else None, settings.tile_url)
    return app


def service_of(request: Request) -> LocalizationService:
    """The service of the application answering `request`."""
    return request.app.state.service


def asks_to_publish(request: Request) -> bool:
    """Whether a localization request asks for its answers to be published to the live view (`?publish=true`)."""
    value = request.query_params.get("publish", "").lower()
    if value not in TRUE + FALSE:
        raise InputError("publish", f"expected true or false, got {value[:20]!r}")
    return value in TRUE


async def localize_body(request: Request, batch: bool) -> Response:
    """The answer to a localization request: its answers as sent (a batch's in `results`), or the error's."""
    t0 = time.perf_counter()
    body = await request.body()
    service = service_of(request)
    try:
        publish = asks_to_publish(request) and service.settings.live_view
        results = await service.localize(body, batch, publish, t0)
    except ServeError as exc:
        return error_response(exc)
    if batch:
        return Response(b'{"results":[' + b",".join(results) + b"]}", media_type=JSON)
    return Response(results[0], media_type=JSON)


def _body_schema(model: type[BaseModel]) -> dict:
    """OpenAPI requestBody of an endpoint that reads its JSON body itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


routes = APIRouter()


# The bodies are parsed and checked by the service (counts before items, admission before work) and the answers
# are sent as built; the OpenAPI schema still documents both (see openapi() in create_app).
@routes.post("/v1/localize", response_model=LocalizeResponse, openapi_extra=_body_schema(LocalizeRequest))
async def localize(request: Request) -> Response:
    """Locate one transmission from raw IQ or features per receiver."""
    return await localize_body(request, batch=False)


@routes.post("/v1/localize/batch", response_model=BatchResponse, openapi_extra=_body_schema(BatchRequest))
async def localize_batch(request: Request) -> Response:
    """Locate many transmissions in one call (answers in the same order)."""
    return await localize_body(request, batch=True)


# response_model=None: FastAPI would otherwise make a response model of the return type; answers go as returned
@routes.get("/v1/model", response_model=None)
async def model_info(request: Request) -> dict[str, Any]:
    """Metadata of the model being served."""
    return service_of(request).served().describe()


@routes.get("/healthz", response_model=None)
async def healthz() -> dict[str, str]:
    """The process answers (liveness)."""
    return {"status": "ok"}


@routes.get("/readyz", response_model=None)
async def readyz(request: Request) -> Response | dict[str, Any]:
    """The model is loaded and requests are answered (readiness; 503 while it loads)."""
    try:
        model = service_of(request).served()
    except ServeError as exc:
        return error_response(exc)
    return {"status": "ready", "model": model.version}


@routes.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> PlainTextResponse:
    """The service's metrics in Prometheus' text format."""
    return PlainTextResponse(service_of(request).metrics.text(), media_type="text/plain; version=0.0.4")


@routes.post("/v1/admin/reload", response_model=None)
async def reload(request: Request) -> Response | dict[str, Any]:
    """Swap to the model the source names now (e.g. the new champion); in-flight requests finish with the
    model they started with. If the new model cannot be loaded, the current one stays (503, with why)."""
    try:
        _check_admin(request.headers.get("authorization", ""))
        return await service_of(request).reload()
    except ServeError as exc:
        return error_response(exc)


def _check_admin(authorization: str) -> None:
    token = os.environ.get("HEIMDALL_ADMIN_TOKEN")
    if not token:
        raise Forbidden("authorization", "admin is disabled (HEIMDALL_ADMIN_TOKEN is not set)")
    if not authorization.startswith("Bearer "):
        raise Unauthorized("authorization", "missing bearer token")
    if not hmac.compare_digest(authorization.removeprefix("Bearer ").encode(), token.encode()):
        raise Forbidden("authorization", "wrong token")
