"""GET /console: the live console, a static page (HTML, JavaScript, CSS; no build step) that uses
the public API and the ws process like any other client. GET /console/config.json tells the page
where the ws process listens. Outside production only: it signs in with the dev sign-in
(decision 0066)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import falcon
import falcon.asgi

from ftl.core.config import Settings
from ftl.core.errors import NotFound
from ftl.store.services import Services
from web.schemas import ConsoleConfig

STATIC_DIR = Path(__file__).resolve().parents[1] / "static" / "console"
PAGE = "index.html"
CONTENT_TYPES = {
    PAGE: "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "msgpack.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
WS_PATH = "/ws/prices"


def ws_url(settings: Settings, req: falcon.asgi.Request) -> str:
    """WS_PUBLIC_URL, or the ws process on the host the page was loaded from."""
    if settings.ws_public_url:
        return settings.ws_public_url
    scheme = "wss" if req.scheme == "https" else "ws"
    host = f"[{req.host}]" if ":" in req.host else req.host  # NOTE: an IPv6 literal
    return f"{scheme}://{host}:{settings.ws_port}{WS_PATH}"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class ConsoleFiles:
    """The page and its assets, read once at start-up (a few kilobytes)."""

    def __init__(self, services: Services) -> None:
        self.settings = services.settings
        self.files = {name: (STATIC_DIR / name).read_bytes() for name in CONTENT_TYPES}

    def _send(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str) -> None:
        resp.content_type = CONTENT_TYPES[name]
        resp.data = self.files[name]
        # NOTE: no build step means no hashed file names; revalidate so an edit shows at once.
        resp.set_header("Cache-Control", "no-cache")
        resp.set_header("X-Content-Type-Options", "nosniff")
        if name == PAGE:
            # APPSEC: only our own scripts run, and the page talks to this API and the ws process.
            resp.set_header(
                "Content-Security-Policy",
                "default-src 'self'; connect-src 'self' "
                f"{_origin(ws_url(self.settings, req))}; img-src 'self' data:;"
                " object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
            )

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        self._send(req, resp, PAGE)

    async def on_get_asset(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str
    ) -> None:
        if name == "config.json":
            resp.set_header("Cache-Control", "no-store")
            resp.media = ConsoleConfig(ws_url=ws_url(self.settings, req))
            return
        if name not in CONTENT_TYPES or name == PAGE:
            raise NotFound("not_found", "No such console file.")
        self._send(req, resp, name)


def add_routes(app: falcon.asgi.App[Any, Any], services: Services) -> None:
    if services.settings.is_production:
        return  # APPSEC: the console signs in with the dev sign-in, which production lacks
    console = ConsoleFiles(services)
    app.add_route("/console", console)
    app.add_route("/console/{name}", console, suffix="asset")
