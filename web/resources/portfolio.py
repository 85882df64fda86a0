"""GET /api/portfolio (the wallet at current prices) and GET /api/trades (my fills)."""

from __future__ import annotations

from typing import Any

import falcon.asgi

from ftl.core.cursors import FillsCursor
from ftl.store.services import Services
from ftl.trading import positions
from ftl.trading.portfolio import portfolio
from web.auth import authenticate


class Portfolio:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        claims = await authenticate(req, self.services)
        resp.media = await portfolio(self.services, claims.user_id)


class Trades:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        claims = await authenticate(req, self.services)
        resp.media = await positions.list_fills(
            self.services,
            claims.user_id,
            positions.limit_param(req.get_param("limit")),
            FillsCursor.decode(req.get_param("cursor")),
        )


def add_routes(app: falcon.asgi.App[Any, Any], services: Services) -> None:
    app.add_route("/api/portfolio", Portfolio(services))
    app.add_route("/api/trades", Trades(services))
