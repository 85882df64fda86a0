"""The Postgres peer of the open (bench/pg_open.py) is the Lua open at equal correctness: the same
orders through both designs give the same fills, margins, wallets and refusals, and leave the
instruments at the same net demand, so the benchmark compares like with like."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
import pytest
from sqlalchemy.engine import make_url

from bench import pg_open
from bench.pg_open import LuaTrader, PgTrader, Trader
from bench.trade import drop_database
from ftl.core.config import Settings
from ftl.core.errors import FtlError
from ftl.market import instruments, rules
from ftl.store import keys
from ftl.store.db.engine import libpq_url
from ftl.store.services import Services
from ftl.trading.trades import Caller, OpenOrder
from tests.conftest import ADMIN_DATABASE_URL, database_url_named, recreate_database
from tests.integration.trading_helpers import access_token, make_instrument, make_user

BALANCE_CENTS = 200_000  # 2,000.00: one 1-lot open at 100.00 takes half of it as margin
HIDDEN = ("id", "openedAt", "closedAt")  # made by each design itself


@pytest.fixture
async def peer(settings: Settings) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """The peer's tables in a scratch database beside the test database, dropped after."""
    name = f"{make_url(settings.database_url).database}{pg_open.PEER_SUFFIX}"
    recreate_database(name)
    conn = await pg_open.connect(database_url_named(name))
    await pg_open.create_schema(conn)
    yield conn
    await conn.close()
    with psycopg.connect(libpq_url(ADMIN_DATABASE_URL), autocommit=True) as admin:
        drop_database(admin, name)


def an_order(
    instrument_id: UUID,
    direction: int,
    lots_centis: int,
    request: str,
    *,
    client_price_cents: int | None = None,
    stop_loss_cents: int | None = None,
    take_profit_cents: int | None = None,
) -> OpenOrder:
    return OpenOrder(
        instrument_id=instrument_id,
        direction=direction,
        lots_centis=lots_centis,
        client_request_id=request,
        # NOTE: by default a price no fill slips from: far above for a long, the floor for a short.
        client_price_cents=client_price_cents
        or (100_000 if direction == rules.LONG else rules.PRICE_FLOOR_CENTS),
        tolerance_ppm=rules.SLIPPAGE_TOLERANCE_DEFAULT_PPM,
        stop_loss_cents=stop_loss_cents,
        take_profit_cents=take_profit_cents,
    )


async def outcome(answer: Awaitable[str]) -> tuple[Any, ...]:
    """What a trade answered, without what each design makes itself (ids, clock)."""
    try:
        reply = json.loads(await answer)
    except FtlError as refused:
        return (refused.code, refused.details)
    position = {k: v for k, v in reply["position"].items() if k not in HIDDEN}
    return ("ok", position, reply["wallet"], reply["replayed"])


async def trade(trader: Trader, orders: list[OpenOrder]) -> list[tuple[Any, ...]]:
    """The orders one after the other, then a close of the first position opened."""
    outcomes = [await outcome(trader.open(order)) for order in orders]
    first = json.loads(await trader.open(orders[0]))["position"]["id"]  # NOTE: a replay
    outcomes.append(await outcome(trader.close(UUID(first))))
    return outcomes


async def test_the_same_orders_give_the_same_answers_in_both_designs(
    services: Services, pg_admin: psycopg.Connection, peer: psycopg.AsyncConnection[Any]
) -> None:
    dear = await make_instrument(services, pg_admin, live_base_cents=10_000)
    # NOTE: 2.50 with a steep curve: a large short crosses the 1.00 floor inside its fill.
    cheap = await make_instrument(services, pg_admin, live_base_cents=250, k_mod=Decimal("0.5"))
    user = make_user(pg_admin, balance="2000.00")
    caller = Caller(user, access_token(services, user)[1])
    states = [await instruments.read(services.redis, iid) for iid in (dear, cheap)]
    await pg_open.add_instruments(peer, [s for s in states if s is not None])
    await pg_open.add_wallets(peer, [user], BALANCE_CENTS)
    orders = [
        an_order(dear, rules.LONG, 100, "first"),
        an_order(cheap, rules.SHORT, 50, "short"),
        an_order(cheap, rules.SHORT, 1_000, "through-the-floor"),
        an_order(dear, rules.LONG, 1, "slipped", client_price_cents=5_000),
        an_order(dear, rules.LONG, 1, "stop-above", stop_loss_cents=20_000),
        an_order(dear, rules.SHORT, 1, "tp-above", take_profit_cents=20_000),
        an_order(dear, rules.LONG, 1_000, "too-big"),
        an_order(dear, rules.LONG, 200, "first"),  # the first's id, another order
        an_order(dear, rules.LONG, 1, "levels", stop_loss_cents=9_000, take_profit_cents=11_000),
        *(an_order(cheap, rules.LONG, 1, f"small-{n}") for n in range(46)),
        an_order(cheap, rules.LONG, 1, "the-51st"),
    ]

    lua = await trade(LuaTrader(services, caller), orders)
    pg = await trade(PgTrader(peer, caller), orders)

    assert pg == lua
    codes = [o[0] for o in lua]
    assert codes[:9] == [
        "ok",
        "ok",
        "ok",
        "slippage_exceeded",
        "validation_error",
        "validation_error",
        "insufficient_margin",
        "idempotency_conflict",
        "ok",
    ]
    assert codes[-2:] == ["too_many_positions", "ok"]  # the 51st refused; the first closed
    assert lua[2][1]["entryPrice"] < 2.0  # the fill through the floor
    net = await peer.execute("SELECT id, net_lots, price FROM instruments ORDER BY idx")
    for iid, net_lots, price in await net.fetchall():
        state = await instruments.read(services.redis, iid)
        assert state is not None
        assert int(net_lots * 100) == state.net_lots_centis
        hot_price = await services.redis.hget(keys.PRICES, str(iid))
        assert int(price * 100) == int(hot_price or 0)


async def test_a_revoked_token_trades_in_neither_design(
    services: Services, pg_admin: psycopg.Connection, peer: psycopg.AsyncConnection[Any]
) -> None:
    iid = await make_instrument(services, pg_admin)
    user = make_user(pg_admin)
    caller = Caller(user, access_token(services, user)[1])
    state = await instruments.read(services.redis, iid)
    assert state is not None
    await pg_open.add_instruments(peer, [state])
    await pg_open.add_wallets(peer, [user], BALANCE_CENTS)
    await services.redis.set(keys.revoked_jti(caller.jti), "1")
    await peer.execute("INSERT INTO revoked_jtis (jti) VALUES (%s)", (caller.jti,))
    order = an_order(iid, rules.LONG, 1, "revoked")

    lua = await outcome(LuaTrader(services, caller).open(order))
    pg = await outcome(PgTrader(peer, caller).open(order))

    assert pg == lua == ("unauthorized", {})
