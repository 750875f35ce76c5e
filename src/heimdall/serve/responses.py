"""Error answers of the service: every error is answered with the HTTP status its class declares
(heimdall.errors), and a body `{"detail": [{"field": ..., "message": ...}, ...]}` naming the field at fault."""

from __future__ import annotations

from pydantic import ValidationError
from starlette.responses import JSONResponse

from heimdall.errors import HeimdallError, InputError, ServeError


def error_response(exc: HeimdallError) -> JSONResponse:
    """The answer to `exc`: its class's `http_status`, its detail (or its message under field 'request')."""
    detail = exc.detail if isinstance(exc, ServeError) else [{"field": "request", "message": str(exc)}]
    return JSONResponse({"detail": detail}, status_code=exc.http_status, headers=getattr(exc, "headers", None))


def invalid(exc: ValidationError, prefix: tuple = ()) -> InputError:
    """Pydantic's errors as one InputError; fields dotted (transmissions.3.features.0.id), 'body' for the root."""
    first, *more = [
        {"field": ".".join(str(p) for p in (*prefix, *e["loc"])) or "body", "message": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]
    return InputError(first["field"], first["message"], more)
