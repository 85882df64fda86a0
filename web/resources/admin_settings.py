"""GET/PUT /api/admin/settings (SPEC §3.3): the operator's settings, today the scoring weights
of SPEC §1.3 (`scoringWeights`, shape in ftl/market/scoring.py). Admin only."""

from __future__ import annotations

from typing import Any

import falcon.asgi

from ftl.core.errors import InvalidInput
from ftl.market.weights import read_weights, write_weights
from ftl.store.services import Services
from web.auth import require_admin
from web.body import read_body
from web.schemas import OperatorSettings, SettingsBody

SCORING_WEIGHTS = "scoringWeights"


class AdminSettings:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        await require_admin(req, self.services)
        weights = await read_weights(self.services.engine)
        resp.media = OperatorSettings(scoring_weights=weights.to_json())

    async def on_put(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        await require_admin(req, self.services)
        body = await read_body(req, SettingsBody)
        try:
            weights = await write_weights(self.services.engine, body.scoring_weights)
        except InvalidInput as refused:
            where = refused.details.get("field", "$")
            field = SCORING_WEIGHTS if where == "$" else f"{SCORING_WEIGHTS}.{where}"
            raise InvalidInput(refused.code, refused.message, {"field": field}) from None
        resp.media = OperatorSettings(scoring_weights=weights.to_json())


def add_routes(app: falcon.asgi.App[Any, Any], services: Services) -> None:
    app.add_route("/api/admin/settings", AdminSettings(services))
