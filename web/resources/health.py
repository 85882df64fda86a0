"""GET /health (the process is alive) and GET /ready (it can serve trades)."""

from __future__ import annotations

import logging

import falcon
import falcon.asgi

from ftl.core.errors import Unavailable
from ftl.ops.health import OK, readiness
from ftl.store.services import Services
from web.schemas import Alive, Readiness

ALIVE = Alive(status="ok")

log = logging.getLogger(__name__)


class Health:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = ALIVE


class Ready:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        outcomes = await readiness(self.services)
        failing = [name for name, outcome in outcomes.items() if outcome != OK]
        if failing:
            # APPSEC: the reasons (exception text, host names, settings) go to the log only;
            # the probe learns which parts fail, which is all it acts on.
            log.warning("not ready: %s", "; ".join(f"{n}: {outcomes[n]}" for n in failing))
            raise Unavailable(
                "unavailable", f"Not ready: {', '.join(failing)}.", {"failing": failing}
            )
        resp.status = falcon.HTTP_200
        resp.media = Readiness(status="ready", checks=dict.fromkeys(outcomes, OK))
