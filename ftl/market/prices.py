"""Base price changes (live stats, post-match re-basing, replays) and kMod changes (admin): one
`price_update.lua` call each, which emits the tick and closes the SL/TP positions it reaches."""

from __future__ import annotations

from uuid import UUID

from ftl.core.errors import NotFound
from ftl.store import keys
from ftl.store.services import Services
from ftl.store.ticks import Tick, TickSource


async def _price_update(
    services: Services,
    instrument_id: UUID,
    source: TickSource,
    *,
    live: int | str = "",
    base: int | str = "",
    k_mod: int | str = "",
) -> Tick:
    """One `price_update.lua` call; '' leaves a figure as it is."""
    reply = await services.scripts.call(
        "price_update",
        keys=[keys.instrument(instrument_id)],
        args=[str(instrument_id), live, base, int(source), k_mod],
    )
    if reply[0] == 0:
        raise NotFound(reply[1], "No such instrument.", {"instrumentId": str(instrument_id)})
    return Tick.from_json(reply[1])


async def apply_base_price(
    services: Services,
    instrument_id: UUID,
    live_base_price_cents: int,
    source: TickSource,
    *,
    base_price_cents: int | None = None,
) -> Tick:
    """Set the instrument's live base price (and its base price when given); the tick it made."""
    base = "" if base_price_cents is None else base_price_cents
    return await _price_update(
        services, instrument_id, source, live=live_base_price_cents, base=base
    )


async def set_k_mod(services: Services, instrument_id: UUID, k_mod_micros: int) -> Tick:
    """Set the instrument's kMod in hot state; the tick of the new price (source live: like a
    live base price, a change of the curve nobody traded), which settles the levels it reaches."""
    return await _price_update(services, instrument_id, TickSource.LIVE, k_mod=k_mod_micros)
