"""POST /api/admin/instruments/{id} {isActive?, kMod?} (SPEC §3.3): activate or deactivate an
instrument, set its kMod (a kMod change emits a tick). Admin only; 200 with the instrument."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

import falcon.asgi

from ftl.core.errors import InvalidInput
from ftl.market import instruments, quotes
from ftl.market.instruments import K_MOD_MAX_MICROS, InstrumentChange
from ftl.store.services import Services
from ftl.trading.trades import decimal_field, invalid, whole
from web.auth import require_admin
from web.body import read_json, refuse_unknown_fields

FIELDS = frozenset({"isActive", "kMod"})
K_MOD_MAX = Decimal(K_MOD_MAX_MICROS) / 1_000_000


def change_from_body(body: dict[str, Any]) -> InstrumentChange:
    refuse_unknown_fields(body, FIELDS)
    # NOTE: absent leaves a field as it is; null is neither a boolean nor a number (the document
    # agrees), so it is refused rather than read as absent.
    active = body.get("isActive")
    if "isActive" in body and not isinstance(active, bool):
        raise invalid("isActive", "must be true or false")
    if "kMod" in body and body["kMod"] is None:
        raise invalid("kMod", "must be a number")
    k_mod = decimal_field(body, "kMod")
    if k_mod is not None and not 0 <= k_mod <= K_MOD_MAX:
        raise invalid("kMod", f"must be between 0 and {K_MOD_MAX}")
    if active is None and k_mod is None:
        raise InvalidInput(
            "validation_error", "Give isActive, kMod or both.", {"field": "isActive"}
        )
    micros = None if k_mod is None else whole(k_mod, 1_000_000, "kMod", "0.000001")
    return InstrumentChange(active, micros)


class AdminInstrument:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, instrument_id: UUID
    ) -> None:
        await require_admin(req, self.services)
        change = change_from_body(await read_json(req))
        await instruments.administer(self.services, instrument_id, change)
        resp.media = await quotes.get_instrument(self.services, instrument_id)


def add_routes(app: falcon.asgi.App[Any, Any], services: Services) -> None:
    app.add_route("/api/admin/instruments/{instrument_id:uuid}", AdminInstrument(services))
