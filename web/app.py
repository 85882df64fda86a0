"""create_app(): the Falcon ASGI application served by gunicorn's uvicorn workers."""

from __future__ import annotations

import logging
from typing import Any

import falcon
import falcon.asgi
from redis.exceptions import RedisError

from ftl.config import Settings, get_settings
from ftl.services import Services
from web import errors
from web.body import BodyLimit
from web.resources.health import Health, Ready

log = logging.getLogger(__name__)


class Lifespan:
    """Load the Lua scripts at start-up and close the pools at shutdown."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def process_startup(self, scope: object, event: object) -> None:
        try:
            await self.services.scripts.load()
        except RedisError as exc:
            # NOTE: Redis may come up after us; /ready says so and EVALSHA reloads on NOSCRIPT.
            log.warning("Lua scripts not loaded at start-up: %s", exc)

    async def process_shutdown(self, scope: object, event: object) -> None:
        await self.services.close()


def create_app(settings: Settings | None = None) -> falcon.asgi.App[Any, Any]:
    settings = settings or get_settings()
    services = Services.create(settings)
    middleware: list[Any] = [Lifespan(services), BodyLimit()]
    app: falcon.asgi.App[Any, Any] = falcon.asgi.App(middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = True
    errors.install(app)
    app.add_route("/health", Health())
    app.add_route("/ready", Ready(services))
    return app
