"""Reading positions: the REST shape of SPEC §3.2, from hot state or from Postgres.

The `position:{id}` hash (fields: lua/lib/engine.lua) holds open positions and closed ones until
the flusher has persisted them; Postgres holds every position, trailing hot state by at most one
flush. Lists and fills read Postgres (the read replica when it holds the user's last flushed
trade, docs/decisions/0155); one position reads Redis first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar, cast
from uuid import UUID

from msgspec import Meta
from sqlalchemy import select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ftl.core.answers import Answer, Id, Idx, Points, Time
from ftl.core.cursors import FillsCursor, PositionsCursor
from ftl.core.errors import InvalidInput, NotFound
from ftl.core.instants import iso, iso_ms
from ftl.core.money import json_number, to_cents
from ftl.core.text import is_small_whole_number
from ftl.store import keys
from ftl.store.db.models import CfdPosition, Instrument, PositionStatus, Wallet
from ftl.store.services import Services

DEFAULT_PAGE = 50
MAX_PAGE = 100  # the `limit` of every list is 1 to 100 (SPEC §3.2, OpenAPI)

T = TypeVar("T")


ClosedBy = Literal["user", "stop_loss", "take_profit", "washout", "auto_exit_ft"]


class Position(Answer):
    """A position: open, or closed with its exit."""

    # NOTE: both readers below build it, and the OpenAPI document's `Position` schema is
    # generated from it (web/openapi.py). The open, close and level answers are written by
    # lua/lib/engine.lua in the same shape (PERF: one round trip on the hot path);
    # tests/integration/test_openapi.py holds every answer to this schema.

    id: Id
    instrument_id: Id
    idx: Idx
    direction: Literal["long", "short"]
    lot_size: Annotated[float, Meta(ge=0.01, le=100)]
    entry_price: Points
    margin: Points
    stop_loss: Points | None
    take_profit: Points | None
    opened_at: Time
    status: Literal["open", "closed"]
    exit_price: Points | None
    realized_pnl: Points | None
    closed_at: Time | None
    closed_by: ClosedBy | None


class PositionPage(Answer):
    positions: list[Position]
    next_cursor: str | None


class Fill(Answer):
    position_id: Id
    kind: Literal["open", "close"]
    at: Time
    instrument_id: Id
    idx: Idx
    side: Literal["buy", "sell"]
    lot_size: Points
    price: Points | None
    realized_pnl: Points | None
    closed_by: str | None


class FillPage(Answer):
    trades: list[Fill]
    next_cursor: str | None


def _points(cents: int | None) -> float | None:
    return None if cents is None else json_number(cents)


def _int_or_none(value: str | None) -> int | None:
    return None if value is None or value == "" else int(value)


def from_hash(position_id: str, f: dict[str, str]) -> Position:
    """The REST shape of a `position:{id}` hash (the same as lua/lib/engine.lua writes)."""
    return Position(
        id=position_id,
        instrument_id=f["instrumentId"],
        idx=int(f["idx"]),
        direction="long" if f["direction"] == "1" else "short",
        lot_size=json_number(int(f["lotsCentis"])),
        entry_price=json_number(int(f["entryCents"])),
        margin=json_number(int(f["marginCents"])),
        stop_loss=_points(_int_or_none(f.get("stopLossCents"))),
        take_profit=_points(_int_or_none(f.get("takeProfitCents"))),
        opened_at=iso_ms(f["openedAtMs"]),
        status="open" if f["status"] == "open" else "closed",
        exit_price=_points(_int_or_none(f.get("exitCents"))),
        realized_pnl=_points(_int_or_none(f.get("pnlCents"))),
        closed_at=iso_ms(f["closedAtMs"]) if f.get("closedAtMs") else None,
        closed_by=cast(ClosedBy | None, f.get("closedBy")),
    )


def _money(value: Any) -> float | None:
    return None if value is None else json_number(to_cents(value))


def from_row(row: CfdPosition, idx: int) -> Position:
    """The same shape from the Postgres row."""
    return Position(
        id=str(row.id),
        instrument_id=str(row.instrument_id),
        idx=idx,
        direction="long" if row.direction.value == "long" else "short",
        lot_size=json_number(to_cents(row.lot_size)),
        entry_price=json_number(to_cents(row.entry_price)),
        margin=json_number(to_cents(row.margin)),
        stop_loss=_money(row.stop_loss),
        take_profit=_money(row.take_profit),
        opened_at=iso(row.opened_at),
        status="open" if row.status.value == "open" else "closed",
        exit_price=_money(row.exit_price),
        realized_pnl=_money(row.realized_pnl),
        closed_at=iso(row.closed_at) if row.closed_at else None,
        closed_by=row.closed_by.value if row.closed_by else None,
    )


async def get(services: Services, user_id: UUID, position_id: UUID) -> Position:
    fields: dict[str, str] = await services.redis.hgetall(keys.position(position_id))  # type: ignore[assignment]
    # APPSEC: another user's position is answered exactly like a missing one.
    if fields and fields["userId"] == str(user_id):
        return from_hash(str(position_id), fields)
    async with AsyncSession(services.engine) as session:
        found = (
            await session.execute(
                select(CfdPosition, Instrument.idx)
                .join(Instrument, Instrument.id == CfdPosition.instrument_id)
                .where(CfdPosition.id == position_id, CfdPosition.user_id == user_id)
            )
        ).first()
    if found is None or fields:
        raise NotFound("not_found", "No such position.", {"positionId": str(position_id)})
    return from_row(found[0], found[1])


async def read_own(
    services: Services, user_id: UUID, work: Callable[[AsyncConnection], Awaitable[T]]
) -> T:
    """`work` on the read replica when it holds every trade of the user that the flusher has
    persisted, else on the primary: a user never misses a trade of their own that an earlier list
    showed. The wallet's `version` counts the user's trades in Redis and, as of the last flush,
    in Postgres (flushed in the same transaction as the positions)."""
    hot_version = await services.redis.hget(keys.wallet(user_id), "version")

    async def holds_the_users_trades(conn: AsyncConnection) -> bool:
        if hot_version is None:  # nothing in hot state: every trade is long flushed
            return True
        version = await conn.scalar(select(Wallet.version).where(Wallet.user_id == user_id))
        return version is not None and version >= int(hot_version)

    return await services.reads.read(work, caught_up=holds_the_users_trades)


def limit_param(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    if not is_small_whole_number(raw) or not 1 <= int(raw) <= MAX_PAGE:
        raise InvalidInput(
            "validation_error", f"limit must be 1 to {MAX_PAGE}.", {"field": "limit"}
        )
    return int(raw)


def status_param(raw: str | None) -> PositionStatus | None:
    if raw is None:
        return None
    try:
        return PositionStatus(raw)
    except ValueError:
        raise InvalidInput(
            "validation_error", "status must be open or closed.", {"field": "status"}
        ) from None


async def list_positions(
    services: Services,
    user_id: UUID,
    status: PositionStatus | None,
    limit: int,
    after: PositionsCursor | None,
) -> PositionPage:
    """The user's positions, newest opened first; `nextCursor` when there are more."""
    query = (
        select(CfdPosition, Instrument.idx)
        .join(Instrument, Instrument.id == CfdPosition.instrument_id)
        .where(CfdPosition.user_id == user_id)
    )
    if status is not None:
        query = query.where(CfdPosition.status == status)
    if after is not None:
        query = query.where(
            tuple_(CfdPosition.opened_at, CfdPosition.id)
            < tuple_(after.opened_at, after.position_id)
        )
    query = query.order_by(CfdPosition.opened_at.desc(), CfdPosition.id.desc()).limit(limit + 1)

    async def page(conn: AsyncConnection) -> list[Any]:
        async with AsyncSession(conn) as session:
            return list((await session.execute(query)).all())

    rows = await read_own(services, user_id, page)
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1][0] if rows else None
    return PositionPage(
        positions=[from_row(row, idx) for row, idx in rows],
        next_cursor=PositionsCursor(last.opened_at, last.id).encode() if more and last else None,
    )


FILLS = text(
    """
    SELECT position_id, kind, at, instrument_id, instruments.idx, direction, lot_size, price,
           realized_pnl, closed_by
    FROM (
        SELECT id AS position_id, 'open' AS kind, opened_at AS at, instrument_id, direction,
               lot_size, entry_price AS price, NULL::numeric AS realized_pnl,
               NULL::text AS closed_by
        FROM cfd_positions WHERE user_id = :user_id
        UNION ALL
        SELECT id, 'close', closed_at, instrument_id, direction, lot_size, exit_price,
               realized_pnl, closed_by::text
        FROM cfd_positions WHERE user_id = :user_id AND status = 'closed'
    ) AS fills
    JOIN instruments ON instruments.id = fills.instrument_id
    WHERE (CAST(:after_at AS timestamptz) IS NULL
           OR (at, position_id, kind) < (:after_at, CAST(:after_id AS uuid), :after_kind))
    ORDER BY at DESC, position_id DESC, kind DESC
    LIMIT :limit
    """
)


async def list_fills(
    services: Services, user_id: UUID, limit: int, after: FillsCursor | None
) -> FillPage:
    """The user's fills, one per open and one per close, newest first."""
    params: dict[str, Any] = {
        "user_id": user_id,
        "limit": limit + 1,
        "after_at": after.at if after else None,
        "after_id": after.position_id if after else None,
        "after_kind": after.kind if after else None,
    }

    async def page(conn: AsyncConnection) -> list[Any]:
        return list((await conn.execute(FILLS, params)).all())

    rows = await read_own(services, user_id, page)
    more = len(rows) > limit
    rows = rows[:limit]
    fills = [
        Fill(
            position_id=str(row.position_id),
            kind=row.kind,
            at=iso(row.at),
            instrument_id=str(row.instrument_id),
            idx=row.idx,
            # NOTE: closing a long sells, closing a short buys.
            side="buy" if (row.direction == "long") == (row.kind == "open") else "sell",
            lot_size=json_number(to_cents(row.lot_size)),
            price=_money(row.price),
            realized_pnl=_money(row.realized_pnl),
            closed_by=row.closed_by,
        )
        for row in rows
    ]
    last = rows[-1] if rows else None
    return FillPage(
        trades=fills,
        next_cursor=FillsCursor(last.at, last.position_id, last.kind).encode()
        if more and last
        else None,
    )
