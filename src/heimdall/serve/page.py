"""The map page of the service: `GET /` (index.html), its static files, and the live view's event stream.

The page is plain HTML, CSS and JS with a vendored Leaflet (serve/static/), read once from the package when the
app is built and sent from memory. It calls the same API as any client, by relative URLs (it works under a
reverse proxy's path prefix). Every response of the page carries a Content-Security-Policy that allows
scripts, styles and connections to this origin only, and images from here and the basemap's tile server.
"""

from __future__ import annotations

import html
from importlib.resources import files
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import Response

from heimdall.errors import Forbidden, ServeError
from heimdall.serve.events import EventRing, EventStreamResponse
from heimdall.serve.responses import error_response

STATIC = files("heimdall.serve") / "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
TILE_URL_OSM = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"


def tile_origin(tile_url: str) -> str:
    """The origin a tile URL template loads from, as a CSP source (`{s}` subdomains as a wildcard);
    ValueError when it is not an http(s) template with {z}, {x} and {y}."""
    parts = urlsplit(tile_url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or not all(k in tile_url for k in ("{z}", "{x}", "{y}"))
    ):
        raise ValueError(f"expected an http(s) URL template with {{z}}, {{x}} and {{y}} such as {TILE_URL_OSM}")
    if any(c in parts.netloc for c in " ;,'\""):
        raise ValueError("the host of the tile URL has characters a URL host cannot have")
    return f"{parts.scheme}://{parts.netloc.replace('{s}', '*')}"


def content_security_policy(tile_url: str | None) -> str:
    """The page's CSP: nothing from elsewhere but the basemap's images."""
    images = "'self' data:" + (f" {tile_origin(tile_url)}" if tile_url else "")
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        f"img-src {images}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def static_files() -> dict[str, tuple[bytes, str]]:
    """Every file the page may load, by its path under static/: (bytes, content type); nothing else is served."""
    out = {}
    stack = [(STATIC, "")]
    while stack:
        folder, prefix = stack.pop()
        for item in folder.iterdir():
            if item.is_dir():
                stack.append((item, f"{prefix}{item.name}/"))
            elif (suffix := "." + item.name.rpartition(".")[2]) in CONTENT_TYPES:
                out[prefix + item.name] = (item.read_bytes(), CONTENT_TYPES[suffix])
    return out


def add_page(app: FastAPI, events: EventRing | None, tile_url: str | None) -> None:
    """Add `GET /`, `GET /static/{path}` and `GET /v1/events` to app (the live view off, 403, without `events`)."""
    assets = static_files()
    index, _ = assets.pop("index.html")
    page = index.replace(b"{{TILE_URL}}", html.escape(tile_url or "").encode())
    page = page.replace(b"{{LIVE_VIEW}}", b"on" if events is not None else b"off")
    headers = {
        "content-security-policy": content_security_policy(tile_url),
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
    }

    @app.get("/", include_in_schema=False)
    async def map_page() -> Response:
        return Response(page, media_type=CONTENT_TYPES[".html"], headers={**headers, "cache-control": "no-cache"})

    @app.get("/static/{path:path}", include_in_schema=False)
    async def static(path: str) -> Response:
        if path not in assets:
            return Response(b"not found", status_code=404, media_type="text/plain")
        body, media_type = assets[path]
        return Response(body, media_type=media_type, headers={**headers, "cache-control": "public, max-age=3600"})

    @app.get("/v1/events", response_class=Response, response_model=None)
    async def event_stream(request: Request) -> Response:
        """Server-sent events: the last published answers of the service, then each new one (`data`: seq, time,
        answer). Off (403) unless the service runs with --live-view."""
        try:
            if events is None:
                raise Forbidden("events", "the live view is off (heimdall serve --live-view turns it on)")
            return EventStreamResponse(events.open(request.client.host if request.client else "unknown"))
        except ServeError as exc:
            return error_response(exc)
