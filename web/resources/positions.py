"""Positions (SPEC §3.2): open, list, read, set levels, close. Thin: parse, call ftl, answer.

PERF: open and close authenticate without the revocation read; the Lua call checks the token's
jti and session family itself, so a trade is one Redis round trip.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import falcon
import falcon.asgi

from ftl.core.cursors import PositionsCursor
from ftl.store.services import Services
from ftl.trading import positions, trades
from web.auth import authenticate
from web.body import read_body
from web.schemas import LevelsBody, OpenPositionBody, client_request_id


def _json(resp: falcon.asgi.Response, text: str, status: str = falcon.HTTP_200) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.text = text


async def _caller(req: falcon.asgi.Request, services: Services) -> trades.Caller:
    """The trader of an open, a close or a level change: the maintenance gate applies."""
    claims = await authenticate(req, services, check_revoked=False, maintenance_gate=True)
    return trades.Caller.from_claims(claims)


class OpenPosition:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        caller = await _caller(req, self.services)
        order = (await read_body(req, OpenPositionBody)).order()
        _json(resp, await trades.open_position(self.services, caller, order), falcon.HTTP_201)


class Positions:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        claims = await authenticate(req, self.services)
        resp.media = await positions.list_positions(
            self.services,
            claims.user_id,
            positions.status_param(req.get_param("status")),
            positions.limit_param(req.get_param("limit")),
            PositionsCursor.decode(req.get_param("cursor")),
        )


class Position:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, position_id: UUID
    ) -> None:
        claims = await authenticate(req, self.services)
        resp.media = await positions.get(self.services, claims.user_id, position_id)

    async def on_patch(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, position_id: UUID
    ) -> None:
        caller = await _caller(req, self.services)
        levels = (await read_body(req, LevelsBody)).levels()
        _json(resp, await trades.modify_position(self.services, caller, position_id, levels))

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, position_id: UUID
    ) -> None:
        caller = await _caller(req, self.services)
        request_id = client_request_id(req.get_param("clientRequestId"))
        _json(resp, await trades.close_position(self.services, caller, position_id, request_id))


def add_routes(app: falcon.asgi.App[Any, Any], services: Services) -> None:
    app.add_route("/api/positions/open", OpenPosition(services))
    app.add_route("/api/positions", Positions(services))
    # NOTE: the uuid converter answers 404 for an id that is not a UUID, before any work.
    app.add_route("/api/positions/{position_id:uuid}", Position(services))
