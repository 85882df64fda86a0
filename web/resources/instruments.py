"""Instruments (public): the list with current prices, one instrument, its price history."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import falcon.asgi

from ftl.market import quotes
from ftl.store.services import Services
from web.schemas import InstrumentList, Ticks


class Instruments:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = InstrumentList(
            instruments=await quotes.list_instruments(
                self.services,
                req.get_param("team"),
                req.get_param("position"),
                req.get_param("fixtureId"),
            )
        )


class InstrumentOne:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, instrument_id: UUID
    ) -> None:
        resp.media = await quotes.get_instrument(self.services, instrument_id)


class PriceHistory:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, instrument_id: UUID
    ) -> None:
        resp.media = Ticks(
            ticks=await quotes.price_history(
                self.services, instrument_id, req.get_param("since"), req.get_param("limit")
            )
        )


def add_routes(app: falcon.asgi.App[Any, Any], services: Services) -> None:
    app.add_route("/api/instruments", Instruments(services))
    app.add_route("/api/instruments/{instrument_id:uuid}", InstrumentOne(services))
    app.add_route("/api/instruments/{instrument_id:uuid}/price-history", PriceHistory(services))
