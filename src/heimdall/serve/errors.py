"""Errors the service answers, each with its HTTP status; every one names the field at fault.

The body of every error answer is `{"detail": [{"field": ..., "message": ...}, ...]}`.
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.responses import JSONResponse


class ServeError(Exception):
    """A request the service does not answer; `field` names where (e.g. iq[2].samples_base64)."""

    status = 422
    headers: dict[str, str] | None = None

    def __init__(self, field: str, message: str, more: list[dict] | None = None):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.detail = [{"field": field, "message": message}, *(more or [])]

    def response(self) -> JSONResponse:
        return error_response(self.status, self.detail, self.headers)


class InputError(ServeError):
    """Bad input (422)."""


class TooLarge(ServeError):
    """More than the service takes in one request, whenever it is sent (413)."""

    status = 413


class Busy(ServeError):
    """The service is at its limit now; the same request may succeed later (429)."""

    status = 429
    headers = {"Retry-After": "1"}


class Unauthorized(ServeError):
    """No credentials (401)."""

    status = 401


class Forbidden(ServeError):
    """Wrong credentials, or the endpoint is disabled (403)."""

    status = 403


class Unavailable(ServeError):
    """The service cannot do it now, for a reason the detail gives (503)."""

    status = 503


def error_response(status: int, detail: list[dict], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def invalid(exc: ValidationError, prefix: tuple = ()) -> InputError:
    """pydantic's errors as one InputError; fields dotted (transmissions.3.features.0.id), 'body' for the root."""
    first, *more = [{"field": ".".join(str(p) for p in (*prefix, *e["loc"])) or "body", "message": e["msg"]}
                    for e in exc.errors(include_url=False, include_input=False)]
    return InputError(first["field"], first["message"], more)
