"""The flusher drains the outbox into Postgres: everything once, in batches, crash-safe."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg

from ftl.market import prices
from ftl.ops import flush
from ftl.ops.flush import Flusher
from ftl.store import keys
from ftl.store.services import Services
from ftl.store.ticks import TickSource
from ftl.trading import trades
from tests.integration.trading_helpers import make_instrument, make_user
from web.body import decode
from web.schemas import OpenPositionBody


def open_body(instrument: UUID, request_id: str, **overrides: Any) -> trades.OpenOrder:
    body = {
        "instrumentId": str(instrument),
        "direction": "long",
        "lotSize": 1,
        "clientRequestId": request_id,
        "clientPrice": 100,
        "slippageTolerancePct": 0.05,
        **overrides,
    }
    return decode(json.dumps(body).encode(), OpenPositionBody).order()


async def trade_a_little(services: Services, pg: psycopg.Connection) -> tuple[UUID, list[UUID]]:
    instrument = await make_instrument(services, pg)
    users = [make_user(pg) for _ in range(3)]
    for n, user in enumerate(users):
        opened = json.loads(
            await trades.open_position(
                services,
                trades.Caller(user, "j"),
                open_body(instrument, f"o{n}", direction="short", lotSize=0.5 + n),
            )
        )
        if n == 0:
            await trades.close_position(
                services, trades.Caller(user, "j"), UUID(opened["position"]["id"]), f"c{n}"
            )
    await prices.apply_base_price(services, instrument, 10_250, TickSource.LIVE)
    return instrument, users


def snapshot(pg: psycopg.Connection) -> dict[str, Any]:
    def rows(sql: str) -> list[tuple[Any, ...]]:
        return pg.execute(sql).fetchall()

    return {
        "positions": rows(
            "SELECT id, status, lot_size, entry_price, margin, exit_price, realized_pnl, closed_by,"
            " open_seq, close_seq FROM cfd_positions ORDER BY id"
        ),
        "wallets": rows("SELECT user_id, balance, realized_pnl, version FROM wallets ORDER BY 1"),
        "ticks": rows(
            "SELECT instrument_id, seq, price, net_lots, source FROM price_ticks ORDER BY 1, 2"
        ),
        "ledger": rows("SELECT entry_key, amount, balance_after FROM wallet_ledger ORDER BY 1"),
        "instruments": rows(
            "SELECT id, net_lots, seq, live_base_price FROM instruments ORDER BY 1"
        ),
    }


async def test_a_flush_writes_what_redis_holds(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    instrument, _ = await trade_a_little(services, pg_admin)
    report = await Flusher(services, "test").flush()
    assert report.ticks == 5  # three opens, one close, one price update
    state = snapshot(pg_admin)
    assert [t[1] for t in state["ticks"]] == [1, 2, 3, 4, 5]
    assert [t[4] for t in state["ticks"]] == [1, 1, 1, 1, 0]
    hot: dict[str, str] = await services.redis.hgetall(keys.instrument(instrument))  # type: ignore[assignment]
    assert state["instruments"] == [
        (instrument, Decimal(hot["netLotsCentis"]) / 100, 5, Decimal("102.50"))
    ]
    # 1.5 + 2.5 lots still open
    assert sum(p[2] for p in state["positions"] if p[1] == "open") == Decimal("4.00")
    assert -sum(p[2] for p in state["positions"] if p[1] == "open") == state["instruments"][0][1]
    for user, balance, realized, version in state["wallets"]:
        wallet: dict[str, str] = await services.redis.hgetall(keys.wallet(user))  # type: ignore[assignment]
        assert balance == Decimal(wallet["balanceCents"]) / 100
        assert realized == Decimal(wallet["realizedCents"]) / 100
        assert version == int(wallet["version"])
    closed = [p for p in state["positions"] if p[1] == "closed"]
    assert len(closed) == 1 and closed[0][7] == "user"
    assert state["ledger"] == [
        (f"close:{closed[0][0]}", closed[0][6], Decimal("10000") + closed[0][6])
    ]
    # NOTE: a closed position, once in Postgres, leaves hot state; open ones stay.
    assert not await services.redis.exists(keys.position(closed[0][0]))
    assert await services.redis.xlen(keys.OUTBOX) == 0


async def test_entries_applied_twice_change_nothing(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    await trade_a_little(services, pg_admin)
    entries: list[tuple[str, dict[Any, Any]]] = await services.redis.xrange(keys.OUTBOX)  # type: ignore[assignment]
    await Flusher(services, "first").flush()
    once = snapshot(pg_admin)
    for _, fields in entries:
        await services.redis.xadd(keys.OUTBOX, fields)
    report = await Flusher(services, "second").flush()
    assert report.entries == len(entries)
    assert snapshot(pg_admin) == once


async def test_a_batch_taken_but_never_committed_is_flushed_after_a_restart(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    await trade_a_little(services, pg_admin)
    await flush.ensure_group(services.redis)
    taken = await flush.take(services.redis, "crashed")  # ... and the process dies here
    assert taken
    assert snapshot(pg_admin)["ticks"] == []
    report = await Flusher(services, "crashed").flush()  # the same consumer, restarted
    assert report.entries == len(taken)
    assert len(snapshot(pg_admin)["ticks"]) == 5
    pending = await services.redis.xpending(keys.OUTBOX, keys.OUTBOX_GROUP)
    assert pending["pending"] == 0


async def test_a_hundred_users_at_once_leave_net_lots_equal_to_the_open_rows(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    instrument = await make_instrument(services, pg_admin)
    users = [make_user(pg_admin) for _ in range(100)]

    # NOTE: 50 in flight at a time: the client pool's connection cap, not the engine's limit.
    in_flight = asyncio.Semaphore(50)

    async def trade(n: int, user: UUID) -> None:
        async with in_flight:
            await trade_once(n, user)

    async def trade_once(n: int, user: UUID) -> None:
        direction = "long" if n % 3 else "short"
        opened = json.loads(
            await trades.open_position(
                services,
                trades.Caller(user, "j"),
                open_body(instrument, "a", direction=direction, lotSize=(n % 7 + 1) / 4),
            )
        )
        if n % 4 == 0:
            await trades.close_position(
                services, trades.Caller(user, "j"), UUID(opened["position"]["id"]), "b"
            )

    flushing = asyncio.create_task(Flusher(services, "concurrent").flush())
    await asyncio.gather(*(trade(n, user) for n, user in enumerate(users)), flushing)
    await Flusher(services, "concurrent").flush()
    row = pg_admin.execute(
        "SELECT i.net_lots, i.seq, (SELECT coalesce(sum(CASE direction WHEN 'long' THEN lot_size"
        " ELSE -lot_size END), 0) FROM cfd_positions WHERE instrument_id = i.id"
        " AND status = 'open'), (SELECT count(*) FROM price_ticks WHERE instrument_id = i.id)"
        " FROM instruments i WHERE i.id = %s",
        (instrument,),
    ).fetchone()
    assert row is not None
    net_lots, seq, open_sum, tick_count = row
    assert net_lots == open_sum
    hot: str = await services.redis.hget(keys.instrument(instrument), "netLotsCentis")  # type: ignore[assignment]
    assert Decimal(hot) / 100 == net_lots
    assert seq == tick_count == 125  # 100 opens + 25 closes
