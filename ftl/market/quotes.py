"""Instruments with their current prices (hot state) and their price history (`price_ticks`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from msgspec import Meta
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ftl.core.answers import Answer, Points, Time
from ftl.core.errors import NotFound, invalid
from ftl.core.instants import iso
from ftl.core.money import json_number, to_cents
from ftl.core.text import is_small_whole_number
from ftl.market.instruments import read_many
from ftl.market.matches import Instrument, instrument_answer
from ftl.store.db.models import Fixture, PlayerPosition, PriceTick
from ftl.store.db.models import Instrument as InstrumentRow
from ftl.store.services import Services

MAX_HISTORY = 1_000


class Tick(Answer):
    seq: Annotated[int, Meta(ge=1)]
    at: Time
    price: Points
    live_base_price: Points
    net_lots: float
    source: Annotated[int, Meta(ge=0, le=4)]


async def list_instruments(
    services: Services, team: str | None, position: str | None, fixture_id: str | None
) -> list[Instrument]:
    query = select(InstrumentRow).order_by(InstrumentRow.idx)
    if team is not None:
        query = query.where(InstrumentRow.team == team.upper())
    if position is not None:
        try:
            query = query.where(InstrumentRow.position == PlayerPosition(position.upper()))
        except ValueError:
            raise invalid("position", "must be GK, DEF, MID or FWD") from None
    async with AsyncSession(services.engine) as session:
        if fixture_id is not None:
            try:
                fixture = await session.get(Fixture, UUID(fixture_id))
            except ValueError:
                raise invalid("fixtureId", "must be a UUID") from None
            if fixture is None:
                return []
            query = query.where(InstrumentRow.team.in_((fixture.home_team, fixture.away_team)))
        rows = list((await session.scalars(query)).all())
    return [instrument_answer(state) for state in await read_many(services.redis, rows)]


async def get_instrument(services: Services, instrument_id: UUID) -> Instrument:
    async with AsyncSession(services.engine) as session:
        row = await session.get(InstrumentRow, instrument_id)
    if row is None:
        raise NotFound("not_found", "No such instrument.", {"instrumentId": str(instrument_id)})
    return instrument_answer((await read_many(services.redis, [row]))[0])


async def price_history(
    services: Services, instrument_id: UUID, since: str | None, limit_raw: str | None
) -> list[Tick]:
    """Ticks oldest first, from `since` (ISO-8601) on, at most `limit` (≤ 1000)."""
    limit = MAX_HISTORY
    if limit_raw is not None:
        if not is_small_whole_number(limit_raw) or not 1 <= int(limit_raw) <= MAX_HISTORY:
            raise invalid("limit", f"must be 1 to {MAX_HISTORY}")
        limit = int(limit_raw)
    query = select(PriceTick).where(PriceTick.instrument_id == instrument_id)
    if since is not None:
        try:
            moment = datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            raise invalid("since", "must be an ISO-8601 time") from None
        if moment.tzinfo is None:
            raise invalid("since", "must carry a time zone")
        query = query.where(PriceTick.at >= moment)
    await get_instrument(services, instrument_id)

    async def page(conn: AsyncConnection) -> list[PriceTick]:
        async with AsyncSession(conn) as session:
            return list((await session.scalars(query.order_by(PriceTick.seq).limit(limit))).all())

    ticks = await services.reads.read(page)
    return [
        Tick(
            seq=t.seq,
            at=iso(t.at),
            price=json_number(to_cents(t.price)),
            live_base_price=json_number(to_cents(t.live_base_price)),
            net_lots=json_number(to_cents(t.net_lots)),
            source=t.source,
        )
        for t in ticks
    ]
