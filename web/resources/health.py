"""GET /health (the process is alive) and GET /ready (it can serve trades)."""

from __future__ import annotations

import falcon
import falcon.asgi

from ftl.errors import Unavailable
from ftl.health import OK, readiness
from ftl.services import Services


class Health:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = {"status": "ok"}


class Ready:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        checks = await readiness(self.services)
        failing = [name for name, outcome in checks.items() if outcome != OK]
        if failing:
            raise Unavailable(
                "unavailable",
                f"Not ready: {', '.join(failing)}.",
                {"failing": failing, "checks": checks},
            )
        resp.status = falcon.HTTP_200
        resp.media = {"status": "ready", "checks": checks}
