"""create_app(): the Falcon ASGI application served by gunicorn's uvicorn workers."""

from __future__ import annotations

import logging
from typing import Any

import falcon
import falcon.asgi
import falcon.media
import msgspec
from redis.exceptions import RedisError

from ftl.core.config import Settings, get_settings
from ftl.store.services import Services
from web import errors, openapi, telemetry
from web.body import BodyLimit
from web.params import QueryText
from web.ratelimit import RateLimit
from web.resources import accounts as account_routes
from web.resources import admin_instruments as admin_instrument_routes
from web.resources import admin_replay as admin_replay_routes
from web.resources import admin_settings as admin_settings_routes
from web.resources import auth as auth_routes
from web.resources import console as console_routes
from web.resources import instruments as instrument_routes
from web.resources import leaderboard as leaderboard_routes
from web.resources import matches as match_routes
from web.resources import portfolio as portfolio_routes
from web.resources import positions as position_routes
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


class Cors(falcon.CORSMiddleware[falcon.asgi.Request, falcon.asgi.Response]):
    """Falcon's CORS, plus `Vary: Origin` on every answer.

    APPSEC: the allowed origin is echoed with credentials, so the answer depends on the Origin
    header; without Vary a shared cache could hand one origin's answer to another."""

    async def process_response_async(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        req_succeeded: bool,
    ) -> None:
        self.process_response(req, resp, resource, req_succeeded)
        resp.append_header("Vary", "Origin")


# PERF: answers are written by msgspec's encoder (Falcon's msgspec recipe): C-speed, and a
# Struct of web/schemas.py can be answered as it is. Request bodies are not read through
# media handlers at all (web/body.py decodes them, typed).
JSON_ANSWERS = falcon.media.JSONHandler(dumps=msgspec.json.Encoder().encode)


def create_app(settings: Settings | None = None) -> falcon.asgi.App[Any, Any]:
    settings = settings or get_settings()
    services = Services.create(settings)
    # NOTE: Telemetry first, so the request id and the timing cover every other middleware.
    middleware: list[Any] = [telemetry.Telemetry(), Lifespan(services), BodyLimit(), QueryText()]
    middleware += [
        Cors(
            allow_origins=list(settings.cors_origins),
            allow_credentials=list(settings.cors_origins),
        ),
        RateLimit(services),
        auth_routes.GoogleKeysRefresh(services),
    ]
    app: falcon.asgi.App[Any, Any] = falcon.asgi.App(middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = True
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = JSON_ANSWERS
    errors.install(app)
    app.add_route("/health", Health())
    app.add_route("/ready", Ready(services))
    telemetry.add_routes(app, settings.prometheus_multiproc_dir, settings.metrics_token)
    auth_routes.add_routes(app, services)
    account_routes.add_routes(app, services)
    match_routes.add_routes(app, services)
    position_routes.add_routes(app, services)
    portfolio_routes.add_routes(app, services)
    instrument_routes.add_routes(app, services)
    leaderboard_routes.add_routes(app, services)
    admin_settings_routes.add_routes(app, services)
    admin_replay_routes.add_routes(app, services)
    admin_instrument_routes.add_routes(app, services)
    console_routes.add_routes(app, services)
    openapi.add_routes(app, services)
    return app
