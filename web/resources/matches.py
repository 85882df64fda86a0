"""GET /api/matches and GET /api/matches/{id}: fixtures with status, minute, score and their
instruments (SPEC §3.2). Public."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import falcon.asgi

from ftl.market import matches
from ftl.store.services import Services
from web.schemas import MatchList


class Matches:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        status = matches.parse_status(req.get_param("status"))
        found = await matches.list_matches(self.services.engine, self.services.redis, status)
        resp.media = MatchList(matches=found)


class Match:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, match_id: UUID
    ) -> None:
        resp.media = await matches.get_match(self.services.engine, self.services.redis, match_id)


def add_routes(app: falcon.asgi.App[Any, Any], services: Services) -> None:
    app.add_route("/api/matches", Matches(services))
    # NOTE: the uuid converter answers 404 for an id that is not a UUID, before any query.
    app.add_route("/api/matches/{match_id:uuid}", Match(services))
