"""Base price changes (live stats, post-match re-basing, replays): one `price_update.lua` call
each, which emits the tick and closes the SL/TP positions it reaches."""

from __future__ import annotations

from uuid import UUID

from ftl import keys
from ftl.errors import NotFound
from ftl.services import Services
from ftl.ticks import Tick, TickSource


async def apply_base_price(
    services: Services,
    instrument_id: UUID,
    live_base_price_cents: int,
    source: TickSource,
    *,
    base_price_cents: int | None = None,
) -> Tick:
    """Set the instrument's live base price (and its base price when given); the tick it made."""
    reply = await services.scripts.call(
        "price_update",
        keys=[keys.instrument(instrument_id)],
        args=[
            str(instrument_id),
            live_base_price_cents,
            "" if base_price_cents is None else base_price_cents,
            int(source),
        ],
    )
    if reply[0] == 0:
        raise NotFound(reply[1], "No such instrument.", {"instrumentId": str(instrument_id)})
    return Tick.from_json(reply[1])
