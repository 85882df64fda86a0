"""POST /api/admin/instruments/{id} {isActive?, kMod?} (SPEC §3.3): activate or deactivate an
instrument, set its kMod (a kMod change emits a tick). Admin only; 200 with the instrument."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import falcon.asgi

from ftl.market import instruments, quotes
from ftl.store.services import Services
from web.auth import require_admin
from web.body import read_body
from web.schemas import AdminInstrumentBody


class AdminInstrument:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, instrument_id: UUID
    ) -> None:
        await require_admin(req, self.services)
        change = (await read_body(req, AdminInstrumentBody)).change()
        await instruments.administer(self.services, instrument_id, change)
        resp.media = await quotes.get_instrument(self.services, instrument_id)


def add_routes(app: falcon.asgi.App[Any, Any], services: Services) -> None:
    app.add_route("/api/admin/instruments/{instrument_id:uuid}", AdminInstrument(services))
