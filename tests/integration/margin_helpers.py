"""A user with open positions and a price path, for the margin replay tests (real Redis and
Postgres; trades through the trading engine, prices through `price_update.lua`)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg

from ftl.market import prices, rules
from ftl.ops.flush import Flusher
from ftl.store import keys
from ftl.store.services import Services
from ftl.store.ticks import TickSource
from ftl.trading import trades
from ftl.trading.margin import evaluator, outbox

# NOTE: the replay defers ticks of the cut's own millisecond to the next run; waiting out one
# millisecond before a final evaluation makes it see every tick made so far (not a timing assert).
CLOCK_STEP_S = 0.002


def order(
    instrument_id: UUID, request_id: str, direction: str, lots_centis: int, price: int
) -> trades.OpenOrder:
    return trades.OpenOrder(
        instrument_id=instrument_id,
        direction=rules.LONG if direction == "long" else rules.SHORT,
        lots_centis=lots_centis,
        client_request_id=request_id,
        client_price_cents=price,
        tolerance_ppm=rules.SLIPPAGE_TOLERANCE_MAX_PPM,
        stop_loss_cents=None,
        take_profit_cents=None,
    )


async def open_position(
    services: Services, user: UUID, instrument: UUID, direction: str, lots_centis: int, price: int
) -> UUID:
    body = json.loads(
        await trades.open_position(
            services,
            trades.Caller(user, "jti"),
            order(
                instrument,
                f"open-{instrument.hex[:8]}-{direction}-{lots_centis}",
                direction,
                lots_centis,
                price,
            ),
        )
    )
    return UUID(body["position"]["id"])


async def move(services: Services, instrument: UUID, live_base_cents: int) -> int:
    """A live base price change; the seq of its tick."""
    tick = await prices.apply_base_price(services, instrument, live_base_cents, TickSource.LIVE)
    return tick.seq


async def evaluate(services: Services, user: UUID, *, quick: bool = True) -> evaluator.Evaluation:
    """A final evaluation that sees every tick made so far."""
    await asyncio.sleep(CLOCK_STEP_S)
    return await evaluator.evaluate_user(services, user, quick=quick)


async def persist(services: Services) -> None:
    """What the flusher and the margin actors do in the background: Postgres catches up."""
    await Flusher(services, consumer="test").flush()
    await outbox.drain_events(services)


async def position(services: Services, position_id: UUID) -> dict[str, str]:
    fields: dict[str, str] = await services.redis.hgetall(keys.position(position_id))  # type: ignore[assignment]
    return fields


def margin_events(pg: psycopg.Connection, user: UUID) -> list[tuple[Any, ...]]:
    return pg.execute(
        "SELECT kind::text, instrument_id, seq, position_id, price, equity, margin_level"
        " FROM margin_events WHERE user_id = %s ORDER BY seq, kind, position_id",
        (user,),
    ).fetchall()


def balance(pg: psycopg.Connection, user: UUID) -> Decimal:
    row = pg.execute("SELECT balance FROM wallets WHERE user_id = %s", (user,)).fetchone()
    assert row is not None
    value: Decimal = row[0]
    return value
