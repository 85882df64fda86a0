"""GET /api/leaderboard?scope=overall|district&districtId=&limit=&offset= (public; `me` is
filled in when the caller presents a valid access token)."""

from __future__ import annotations

from typing import Any

import falcon.asgi

from ftl.market.leaderboard import leaderboard
from ftl.store.services import Services
from web.auth import authenticate, presented_token


class Leaderboard:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        me = None
        if presented_token(req) is not None:
            me = (await authenticate(req, self.services)).user_id
        resp.media = await leaderboard(
            self.services,
            req.get_param("scope"),
            req.get_param("districtId"),
            req.get_param("limit"),
            req.get_param("offset"),
            me,
        )


def add_routes(app: falcon.asgi.App[Any, Any], services: Services) -> None:
    app.add_route("/api/leaderboard", Leaderboard(services))
