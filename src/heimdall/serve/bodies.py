"""Request bodies to validated requests, cheapest checks first.

The parse's work is bounded before it starts: every JSON value or key but the first follows one of
`, : [ {`, so their count (one pass over the bytes) bounds what the parser will build. The JSON is then
parsed once (pydantic-core's parser: NaN and Infinity refused), and the counts (transmissions per batch,
receivers per transmission) are checked before any item is validated, so that an oversized request costs
only its parse; the caller admits the transmissions, then validates them one by one in slices.
"""

from __future__ import annotations

from typing import Any

import pydantic_core
from pydantic import ValidationError

from heimdall.errors import InputError, TooLarge
from heimdall.serve.responses import invalid
from heimdall.serve.schemas import MAX_RECEIVERS, MAX_TRANSMISSIONS, LocalizeRequest
from heimdall.serve.slices import Slices

KINDS = ("iq", "features")
# a batch of 1024 transmissions × 13 receivers × 35 features; parsing this many values takes ≈ 25–50 ms
MAX_JSON_VALUES = 1 << 19
_NOT_SEPARATORS = bytes(c for c in range(256) if c not in b",:[{")


def parse(body: bytes) -> Any:
    """The JSON value of a request body, its count of values bounded before parsing (TooLarge beyond)."""
    if len(body) > MAX_JSON_VALUES:  # a smaller body cannot hold more values than it has bytes
        n = len(body.translate(None, _NOT_SEPARATORS))
        if n > MAX_JSON_VALUES:
            raise TooLarge(
                "body",
                f"{n} JSON separators (, : [ {{), more than the limit of {MAX_JSON_VALUES}: too "
                "many values in one request; split the batch",
            )
    try:
        return pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        raise InputError("body", f"not valid JSON: {exc}") from None


def transmissions(data: Any, batch: bool) -> list[Any]:
    """The transmissions of a parsed body (not yet validated, one for /v1/localize) within the count limits."""
    if not batch:
        _check_receivers(data, "")
        return [data]
    if not isinstance(data, dict):
        raise InputError("body", 'expected an object {"transmissions": [...]}')
    for key in data:
        if key != "transmissions":
            raise InputError(key or "body", f"Extra inputs are not permitted ({key!r})")
    raw = data.get("transmissions")
    if not isinstance(raw, list) or not raw:
        raise InputError("transmissions", f"expected a list of 1 to {MAX_TRANSMISSIONS} transmissions")
    if len(raw) > MAX_TRANSMISSIONS:
        raise TooLarge("transmissions", f"{len(raw)} transmissions, more than the limit of {MAX_TRANSMISSIONS}")
    for i, t in enumerate(raw):
        _check_receivers(t, f"transmissions[{i}].")
    return raw


def _check_receivers(t: Any, prefix: str) -> None:
    for kind in KINDS:
        if isinstance(t, dict) and isinstance(t.get(kind), list) and len(t[kind]) > MAX_RECEIVERS:
            raise TooLarge(f"{prefix}{kind}", f"{len(t[kind])} receivers, more than the limit of {MAX_RECEIVERS}")


async def validate(raw: list[Any], batch: bool, slices: Slices) -> list[LocalizeRequest]:
    """Validated requests, one per raw transmission; InputError with all the errors of the first bad one."""
    out = []
    for i, t in enumerate(raw):
        try:
            out.append(LocalizeRequest.model_validate(t))
        except ValidationError as exc:
            raise invalid(exc, ("transmissions", i) if batch else ()) from None
        await slices.pause()
    return out
