"""The peer design of `POST /api/positions/open` on PostgreSQL row locks, measured against the
Redis Lua open (lua/position_open.lua) in the same run with the same client harness (issue #20).

The peer opens in one transaction: lock the wallet row and the instrument row (`SELECT … FOR
UPDATE`, always in that order, so opens and closes never deadlock), apply the Lua open's rules
with ftl/market/rules.py (the integers lua/lib/engine.lua mirrors: fill from the curve at the
instrument's net demand, slippage, SL/TP against the open's own price, margin against free
margin at current prices, at most MAX_OPEN_POSITIONS), then update the wallet (used margin,
cost) and the instrument (net lots, price, seq), insert the position and commit. Idempotency is
the unique (user_id, open_request_id) of the position row, which keeps the request's fingerprint
and first reply as the Lua call's idem key does; a revoked access token is a row of
`revoked_jtis`. Money and lots are NUMERIC as in ftl/store/db/models.py (Money = numeric(18,2),
lots numeric(7,2), kMod numeric(12,6)), turned into integer cents for the rules. Two round trips
a trade, pipelined (psycopg pipeline mode): the reads and locks, then the writes and COMMIT.

Not in the peer (the Lua open does them; the bench never reaches them, or they would be other
Postgres work): the trade tick's log, PUBLISH and outbox entry (the peer's commit is itself the
durable write), the SL/TP cascade after the tick, the referral payout, the refresh-family check.
The close (the harness closes every open, as bench/lua_trade.py does, so each user keeps 20 open
positions) is the mirror transaction, without close idempotency or leaderboard.

Prints one JSON object: the round trip floors (EVALSHA of ping.lua, `SELECT 1`), one caller
alone (open latency per design and the Lua open's own time on Redis's clock), then CALLERS
callers per contention variant ("hot": every user trades the same few instruments, the peer's
instrument row lock is the contention; "spread": users spread over every instrument): opens/s,
open and close latency p50/p95/p99 (ms), refusals, CPU per open+close of the servers (Redis main
thread; Postgres: every server process's utime+stime from /proc, when the server is on this
machine) and of the callers' own process, the Postgres settings that decide commit cost (fsync,
synchronous_commit), and the ratios.

    python -m bench.pg_open [--seconds 10] [--callers 50] [--hot-instruments 3]

Like bench/lua_trade.py it starts a private Redis and seeds a fresh database
`<DATABASE_URL's name>_bench`; the peer's tables live in a scratch database `<name>_pgpeer` on
the same server, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

import msgspec
import psycopg
import uvloop
from sqlalchemy.engine import make_url

from bench.lua_ping import ping, round_trips_us
from bench.lua_trade import lua_usec, order, redis_cpu_us
from bench.trade import (
    HOLDINGS,
    drop_database,
    fresh_database,
    latency,
    make_traders,
    start_redis,
)
from ftl.core.config import Settings
from ftl.core.errors import FtlError, NotFound
from ftl.core.instants import iso
from ftl.core.money import from_cents, json_number, to_cents
from ftl.market import instruments, rules
from ftl.market.instruments import MICROS, InstrumentState
from ftl.ops.seed import seed
from ftl.store import keys
from ftl.store.auth.tokens import TokenType, generate_private_key_b64
from ftl.store.db.engine import libpq_url
from ftl.store.db.migrate import upgrade
from ftl.store.services import Services
from ftl.trading import trades
from ftl.trading.portfolio import account_view
from ftl.trading.positions import Position
from ftl.trading.trades import Caller, OpenOrder

SCHEMA = """
CREATE TYPE direction AS ENUM ('long', 'short');
CREATE TYPE position_status AS ENUM ('open', 'closed');
CREATE TABLE instruments (
    id uuid PRIMARY KEY,
    idx integer NOT NULL UNIQUE,
    live_base_price numeric(18, 2) NOT NULL,
    k_mod numeric(12, 6) NOT NULL,
    net_lots numeric(12, 2) NOT NULL,
    price numeric(18, 2) NOT NULL,
    seq bigint NOT NULL,
    is_active boolean NOT NULL,
    frozen boolean NOT NULL
);
CREATE TABLE wallets (
    user_id uuid PRIMARY KEY,
    balance numeric(18, 2) NOT NULL,
    realized_pnl numeric(18, 2) NOT NULL DEFAULT 0,
    used_margin numeric(18, 2) NOT NULL DEFAULT 0,
    cost numeric(18, 2) NOT NULL DEFAULT 0,
    open_count integer NOT NULL DEFAULT 0,
    version bigint NOT NULL DEFAULT 0
);
CREATE TABLE revoked_jtis (jti varchar(64) PRIMARY KEY);
CREATE TABLE positions (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES wallets,
    instrument_id uuid NOT NULL REFERENCES instruments,
    direction direction NOT NULL,
    lot_size numeric(7, 2) NOT NULL,
    entry_price numeric(18, 2) NOT NULL,
    margin numeric(18, 2) NOT NULL,
    stop_loss numeric(18, 2),
    take_profit numeric(18, 2),
    status position_status NOT NULL DEFAULT 'open',
    exit_price numeric(18, 2),
    realized_pnl numeric(18, 2),
    open_request_id varchar(64) NOT NULL,
    open_fingerprint varchar(64) NOT NULL,
    open_reply text NOT NULL,
    close_request_id varchar(64),
    open_seq bigint NOT NULL,
    close_seq bigint,
    opened_at timestamptz NOT NULL,
    closed_at timestamptz,
    UNIQUE (user_id, open_request_id)
);
CREATE INDEX positions_open_by_user ON positions (user_id) WHERE status = 'open';
"""

REVOKED = "SELECT EXISTS (SELECT 1 FROM revoked_jtis WHERE jti = %s)"
WALLET_FOR_UPDATE = (
    "SELECT balance, used_margin, cost, open_count FROM wallets WHERE user_id = %s FOR UPDATE"
)
REPLAY = (
    "SELECT open_fingerprint, open_reply FROM positions WHERE user_id = %s AND open_request_id = %s"
)
INSTRUMENT_COLUMNS = (
    "i.id, i.idx, i.live_base_price, i.k_mod, i.net_lots, i.seq, i.is_active, i.frozen"
)
INSTRUMENT_FOR_UPDATE = f"SELECT {INSTRUMENT_COLUMNS} FROM instruments i WHERE i.id = %s FOR UPDATE"
POSITION_FOR_UPDATE = (
    "SELECT instrument_id, direction, lot_size, entry_price, margin, status, open_reply"
    " FROM positions WHERE id = %s AND user_id = %s FOR UPDATE"
)
INSTRUMENT_OF_POSITION_FOR_UPDATE = (
    f"SELECT {INSTRUMENT_COLUMNS} FROM instruments i WHERE i.id ="
    " (SELECT instrument_id FROM positions WHERE id = %s AND user_id = %s) FOR UPDATE OF i"
)
# NOTE: run after the locks, so the traded instrument's price is the one this transaction holds;
# the others are priced as one statement's snapshot sees them, as the Lua call sees them at once.
HELD_LOTS = (
    "SELECT p.instrument_id,"
    " sum(CASE p.direction WHEN 'long' THEN p.lot_size ELSE -p.lot_size END), i.price"
    " FROM positions p JOIN instruments i ON i.id = p.instrument_id"
    " WHERE p.user_id = %s AND p.status = 'open' GROUP BY p.instrument_id, i.price"
)
UPDATE_INSTRUMENT = "UPDATE instruments SET net_lots = %s, price = %s, seq = %s WHERE id = %s"
OPEN_WALLET = (
    "UPDATE wallets SET used_margin = %s, cost = %s, open_count = open_count + 1,"
    " version = version + 1 WHERE user_id = %s"
)
INSERT_POSITION = (
    "INSERT INTO positions (id, user_id, instrument_id, direction, lot_size, entry_price, margin,"
    " stop_loss, take_profit, open_request_id, open_fingerprint, open_reply, open_seq, opened_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
CLOSE_WALLET = (
    "UPDATE wallets SET balance = %s, realized_pnl = realized_pnl + %s, used_margin = %s,"
    " cost = %s, open_count = open_count - 1, version = version + 1 WHERE user_id = %s"
)
CLOSE_POSITION = (
    "UPDATE positions SET status = 'closed', exit_price = %s, realized_pnl = %s,"
    " close_request_id = %s, close_seq = %s, closed_at = %s WHERE id = %s"
)
# PERF: a trade's three writes as one statement (data-modifying CTEs, parameters in this order):
# the driver's CPU goes by statements, and it shares the cores with the server.
OPEN_WRITES = f"WITH w AS ({OPEN_WALLET}), i AS ({UPDATE_INSTRUMENT}) {INSERT_POSITION}"
CLOSE_WRITES = f"WITH w AS ({CLOSE_WALLET}), i AS ({UPDATE_INSTRUMENT}) {CLOSE_POSITION}"
INSERT_INSTRUMENT = (
    "INSERT INTO instruments (id, idx, live_base_price, k_mod, net_lots, price, seq, is_active,"
    " frozen) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)

Row = tuple[Any, ...]


# --- the peer ------------------------------------------------------------------------------------


async def create_schema(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute(SCHEMA)


async def add_instruments(
    conn: psycopg.AsyncConnection[Any], states: Sequence[InstrumentState]
) -> None:
    """The instruments as hot state holds them (the Lua design's starting point)."""
    async with conn.cursor() as cur:
        await cur.executemany(
            INSERT_INSTRUMENT,
            [
                (
                    s.id,
                    s.idx,
                    from_cents(s.live_base_price_cents),
                    Decimal(s.k_mod_micros) / MICROS,
                    from_cents(s.net_lots_centis),
                    from_cents(
                        rules.price_cents(
                            s.live_base_price_cents, s.k_mod_micros, s.net_lots_centis
                        )
                    ),
                    s.seq,
                    s.is_active,
                    s.frozen,
                )
                for s in states
            ],
        )


async def add_wallets(
    conn: psycopg.AsyncConnection[Any], user_ids: Sequence[UUID | str], balance_cents: int
) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO wallets (user_id, balance) VALUES (%s, %s)",
            [(u, from_cents(balance_cents)) for u in user_ids],
        )


@dataclass(frozen=True)
class Instrument:
    """An instrument row in the rules' integers."""

    id: UUID
    idx: int
    live: int
    k_mod: int
    net: int
    seq: int
    active: bool
    frozen: bool

    @classmethod
    def of(cls, row: Row) -> Instrument:
        iid, idx, live, k_mod, net, seq, active, frozen = row
        return cls(
            iid, idx, to_cents(live), int(k_mod * MICROS), to_cents(net), seq, active, frozen
        )

    def fill(self, lots: int, side: int) -> int:
        return rules.fill_cents(self.live, self.k_mod, self.net, lots, side)


@dataclass(frozen=True)
class Wallet:
    """A wallet row in cents."""

    balance: int
    used: int
    cost: int
    open_count: int

    @classmethod
    def of(cls, row: Row) -> Wallet:
        balance, used, cost, open_count = row
        return cls(to_cents(balance), to_cents(used), to_cents(cost), open_count)


def _tradable(inst_row: Row, wallet_row: Row | None) -> tuple[Instrument, Wallet] | FtlError:
    """The instrument and the wallet of a trade, or the Lua scripts' refusal when the instrument
    may not trade (the peer has every wallet: no wallet_missing to load)."""
    inst = Instrument.of(inst_row)
    if not inst.active:
        return _refuse("instrument_inactive", instrumentId=str(inst.id))
    if inst.frozen:
        return _refuse("instrument_frozen", instrumentId=str(inst.id))
    if wallet_row is None:
        return NotFound("wallet_missing", "No wallet.")
    return inst, Wallet.of(wallet_row)


@dataclass(frozen=True)
class Holdings:
    """E.holdings: Σ price × lots × direction over the held instruments (cents), and the lots held
    on the traded one with the price they were valued at."""

    value: int
    lots_on: int
    price_on: int

    @classmethod
    def of(cls, rows: Sequence[Row], instrument_id: UUID) -> Holdings:
        value = lots_on = price_on = 0
        for iid, lots, price in rows:
            lots_centis, price_cents = to_cents(lots), to_cents(price)
            value += price_cents * lots_centis
            if iid == instrument_id:
                lots_on, price_on = lots_centis, price_cents
        return cls(value, lots_on, price_on)

    def after_trade(self, price: int, lots: int) -> int:
        """The value once the traded instrument is at `price` and `lots` more are held on it."""
        return self.value - self.price_on * self.lots_on + price * (self.lots_on + lots)


def _refuse(code: str, **details: Any) -> FtlError:
    return trades.refusal(code, json.dumps(details))


def _reply(position: dict[str, Any], account: rules.Account) -> str:
    wallet = msgspec.to_builtins(account_view(account))
    return json.dumps({"position": position, "wallet": wallet}, separators=(",", ":"))


def _moved(instrument_id: UUID, net: int, price: int, seq: int) -> Row:
    """The parameters of UPDATE_INSTRUMENT: the instrument after a trade."""
    return (from_cents(net), from_cents(price), seq, instrument_id)


def _cents_or_none(cents: int | None) -> Decimal | None:
    return None if cents is None else from_cents(cents)


def _points_or_none(cents: int | None) -> float | None:
    return None if cents is None else json_number(cents)


Reads = tuple[Row | None, Row | None, Row | None, Row | None, list[Row]]
Decision = tuple[str | FtlError, list[tuple[str, Row]]]


async def _trade(
    conn: psycopg.AsyncConnection[Any],
    caller: Caller,
    lookups: list[tuple[str, Row]],
    decide: Callable[[Reads], Decision],
) -> str:
    """One trade's transaction in two pipelined round trips: the revoked token, the wallet lock,
    the trade's two `lookups` (the replay or the position, then the instrument lock) and the
    holdings; then the writes `decide` makes of them and COMMIT, or ROLLBACK and its refusal.

    NOTE: locks in one order, the wallet first (the user's own trades queue on it), the
    instrument last: trades never deadlock."""
    async with conn.pipeline():
        await conn.execute("BEGIN")
        queries = [
            await conn.execute(REVOKED, (caller.jti,)),
            await conn.execute(WALLET_FOR_UPDATE, (caller.user_id,)),
            *[await conn.execute(statement, params) for statement, params in lookups],
        ]
        holdings = await conn.execute(HELD_LOTS, (caller.user_id,))
        revoked, wallet, found, inst = [await q.fetchone() for q in queries]
        answer, writes = decide((revoked, found, inst, wallet, await holdings.fetchall()))
        for statement, params in writes:
            await conn.execute(statement, params)
        await conn.execute("COMMIT" if writes else "ROLLBACK")
    if isinstance(answer, FtlError):
        raise answer
    return answer


def _decide_open(
    caller: Caller,
    order: OpenOrder,
    position_id: UUID,
    now: datetime,
    reads: Reads,
) -> Decision:
    """The answer (a reply, or the refusal to raise) and the writes of an open, from its reads,
    in lua/position_open.lua's order of checks."""
    revoked, replay, inst_row, wallet_row, held_rows = reads
    if revoked is not None and revoked[0]:
        return _refuse("unauthorized"), []
    if replay is not None:
        fingerprint, first_reply = replay
        if fingerprint != order.fingerprint():
            return _refuse("idempotency_conflict"), []
        return trades.with_replayed(first_reply, True), []
    if inst_row is None:
        return _refuse("not_found", instrumentId=str(order.instrument_id)), []
    tradable = _tradable(inst_row, wallet_row)
    if isinstance(tradable, FtlError):
        return tradable, []
    inst, w = tradable
    if w.open_count >= rules.MAX_OPEN_POSITIONS:
        return _refuse("too_many_positions", limit=rules.MAX_OPEN_POSITIONS), []
    side, lots = order.direction, order.lots_centis
    fill = inst.fill(lots, side)
    if rules.slippage_exceeded(side, fill, order.client_price_cents, order.tolerance_ppm):
        return _refuse(
            "slippage_exceeded",
            fillPrice=json_number(fill),
            clientPrice=json_number(order.client_price_cents),
        ), []
    net = inst.net + side * lots
    price = rules.price_cents(inst.live, inst.k_mod, net)
    bad = rules.invalid_level(side, price, order.stop_loss_cents, order.take_profit_cents)
    if bad is not None:
        return _refuse("validation_error", field=bad, price=json_number(price)), []
    margin = rules.margin_cents(fill, lots)
    held = Holdings.of(held_rows, order.instrument_id)
    free = w.balance + held.value - w.cost - w.used
    if margin > free:
        return _refuse(
            "insufficient_margin",
            requiredMargin=json_number(margin),
            freeMargin=json_number(free),
        ), []
    used, cost, seq = w.used + margin, w.cost + side * lots * fill, inst.seq + 1
    position = Position(
        id=str(position_id),
        instrument_id=str(inst.id),
        idx=inst.idx,
        direction="long" if side == rules.LONG else "short",
        lot_size=json_number(lots),
        entry_price=json_number(fill),
        margin=json_number(margin),
        stop_loss=_points_or_none(order.stop_loss_cents),
        take_profit=_points_or_none(order.take_profit_cents),
        opened_at=iso(now),
        status="open",
        exit_price=None,
        realized_pnl=None,
        closed_at=None,
        closed_by=None,
    )
    account = rules.Account(w.balance, used, held.after_trade(price, side * lots) - cost)
    reply = _reply(msgspec.to_builtins(position), account)
    writes: list[tuple[str, Row]] = [
        (
            OPEN_WRITES,
            (
                from_cents(used),
                from_cents(cost),
                caller.user_id,
                *_moved(inst.id, net, price, seq),
                position_id,
                caller.user_id,
                inst.id,
                position.direction,
                from_cents(lots),
                from_cents(fill),
                from_cents(margin),
                _cents_or_none(order.stop_loss_cents),
                _cents_or_none(order.take_profit_cents),
                order.client_request_id,
                order.fingerprint(),
                reply,
                seq,
                now,
            ),
        ),
    ]
    return trades.with_replayed(reply, False), writes


async def open_position(
    conn: psycopg.AsyncConnection[Any], caller: Caller, order: OpenOrder
) -> str:
    """The peer of ftl.trading.trades.open_position on an autocommit connection: the same
    answer text, the same refusals raised."""
    lookups = [
        (REPLAY, (caller.user_id, order.client_request_id)),
        (INSTRUMENT_FOR_UPDATE, (order.instrument_id,)),
    ]
    decide = partial(_decide_open, caller, order, uuid.uuid4(), datetime.now(UTC))
    return await _trade(conn, caller, lookups, decide)


def _decide_close(
    caller: Caller,
    position_id: UUID,
    client_request_id: str,
    now: datetime,
    reads: Reads,
) -> Decision:
    """lua/position_close.lua's checks and writes (without its idempotency and board); the
    position's view is the open's reply, closed."""
    revoked, p, inst_row, wallet_row, held_rows = reads
    if revoked is not None and revoked[0]:
        return _refuse("unauthorized"), []
    if p is None:
        return _refuse("not_found", positionId=str(position_id)), []
    iid, direction, lot_size, entry, margin, status, open_reply = p
    if status != "open":
        return _refuse("position_closed", positionId=str(position_id)), []
    assert inst_row is not None  # NOTE: the foreign key holds it
    tradable = _tradable(inst_row, wallet_row)
    if isinstance(tradable, FtlError):
        return tradable, []
    inst, w = tradable
    side = rules.LONG if direction == "long" else rules.SHORT
    lots, entry_cents, margin_cents = to_cents(lot_size), to_cents(entry), to_cents(margin)
    exit_cents = inst.fill(lots, -side)
    pnl = rules.pnl_cents(entry_cents, exit_cents, lots, side)
    net = inst.net - side * lots
    price = rules.price_cents(inst.live, inst.k_mod, net)
    held = Holdings.of(held_rows, iid)
    balance, used, cost = w.balance + pnl, w.used - margin_cents, w.cost - side * lots * entry_cents
    seq = inst.seq + 1
    position: dict[str, Any] = json.loads(open_reply)["position"]
    position.update(
        status="closed",
        exitPrice=json_number(exit_cents),
        realizedPnl=json_number(pnl),
        closedAt=iso(now),
        closedBy="user",
    )
    account = rules.Account(balance, used, held.after_trade(price, -side * lots) - cost)
    writes: list[tuple[str, Row]] = [
        (
            CLOSE_WRITES,
            (
                from_cents(balance),
                from_cents(pnl),
                from_cents(used),
                from_cents(cost),
                caller.user_id,
                *_moved(iid, net, price, seq),
                from_cents(exit_cents),
                from_cents(pnl),
                client_request_id,
                seq,
                now,
                position_id,
            ),
        ),
    ]
    return trades.with_replayed(_reply(position, account), False), writes


async def close_position(
    conn: psycopg.AsyncConnection[Any], caller: Caller, position_id: UUID, client_request_id: str
) -> str:
    """The peer of ftl.trading.trades.close_position (locks: wallet, position, instrument)."""
    lookups = [
        (POSITION_FOR_UPDATE, (position_id, caller.user_id)),
        (INSTRUMENT_OF_POSITION_FOR_UPDATE, (position_id, caller.user_id)),
    ]
    decide = partial(_decide_close, caller, position_id, client_request_id, datetime.now(UTC))
    return await _trade(conn, caller, lookups, decide)


# --- the harness -------------------------------------------------------------------------------

PEER_SUFFIX = "_pgpeer"
FLOOR_CALLS = 5_000
TRADER_BALANCE_CENTS = 100_000_000  # bench.trade.make_traders' 1,000,000.00: margin never limits


class Trader(Protocol):
    async def open(self, order: OpenOrder) -> str: ...

    async def close(self, position_id: UUID) -> str: ...


@dataclass(frozen=True)
class LuaTrader:
    """The product's trade path (ftl/trading/trades.py: one Redis Function call a trade)."""

    services: Services
    caller: Caller

    async def open(self, order: OpenOrder) -> str:
        return await trades.open_position(self.services, self.caller, order)

    async def close(self, position_id: UUID) -> str:
        return await trades.close_position(
            self.services, self.caller, position_id, uuid.uuid4().hex
        )


@dataclass(frozen=True)
class PgTrader:
    """The peer, on a connection of its own (the callers' pool holds one per caller, as the
    Redis pool of the Lua side holds at least one per caller)."""

    conn: psycopg.AsyncConnection[Any]
    caller: Caller

    async def open(self, order: OpenOrder) -> str:
        return await open_position(self.conn, self.caller, order)

    async def close(self, position_id: UUID) -> str:
        return await close_position(self.conn, self.caller, position_id, uuid.uuid4().hex)


@dataclass
class Run:
    seconds: float
    open_ms: list[float]
    close_ms: list[float]
    refusals: dict[str, int]


async def trade_for(
    traders: Sequence[Trader], instrument_ids: Sequence[str], seconds: float
) -> Run:
    """Each trader opens a position (trader n on instrument n mod len) and closes it, again and
    again, until `seconds` have passed: a closed loop, latency seen by the caller."""
    run = Run(seconds, [], [], {})
    deadline = time.monotonic() + seconds

    async def loop(trader: Trader, instrument_id: str) -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                reply = await trader.open(order(instrument_id))
            except FtlError as refused:
                run.refusals[refused.code] = run.refusals.get(refused.code, 0) + 1
                continue
            run.open_ms.append((time.perf_counter() - started) * 1e3)
            started = time.perf_counter()
            await trader.close(UUID(json.loads(reply)["position"]["id"]))
            run.close_ms.append((time.perf_counter() - started) * 1e3)

    started = time.monotonic()
    await asyncio.gather(
        *(loop(t, instrument_ids[n % len(instrument_ids)]) for n, t in enumerate(traders))
    )
    run.seconds = time.monotonic() - started
    return run


async def postgres_cpu_us(conn: psycopg.AsyncConnection[Any]) -> float | None:
    """CPU (user + system) that the server's processes have used so far, in microseconds, read
    from /proc; None when the server is not on this machine."""
    cursor = await conn.execute("SELECT pid FROM pg_stat_activity")
    return processes_cpu_us([pid for (pid,) in await cursor.fetchall()], "postgres")


def processes_cpu_us(pids: Sequence[int], command: str) -> float | None:
    """CPU (user + system) these processes have used so far, in microseconds; None when one of
    them is not `command` on this machine."""
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        if stat[stat.index("(") + 1 : stat.rindex(")")] != command:
            return None
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks * 1e6 / os.sysconf("SC_CLK_TCK")


async def measure(
    services: Services,
    admin: psycopg.AsyncConnection[Any],
    traders: Sequence[Trader],
    instrument_ids: Sequence[str],
    seconds: float,
) -> dict[str, Any]:
    """One timed run's figures, with the servers' CPU per open (and its close)."""
    await services.redis.config_resetstat()
    redis_before, pg_before = await redis_cpu_us(services), await postgres_cpu_us(admin)
    client_before = time.process_time()
    run = await trade_for(traders, instrument_ids, seconds)
    client_us = (time.process_time() - client_before) * 1e6
    redis_after, pg_after = await redis_cpu_us(services), await postgres_cpu_us(admin)
    opens = max(1, len(run.open_ms))
    pg_cpu = None if pg_before is None or pg_after is None else (pg_after - pg_before) / opens
    stats = await services.redis.info("commandstats")
    fcalls = int(stats.get("cmdstat_fcall", {}).get("calls", 0))
    return {
        "opens": len(run.open_ms),
        "opens_per_s": round(len(run.open_ms) / run.seconds, 1),
        "open_ms": latency(run.open_ms),
        "close_ms": latency(run.close_ms),
        "refusals": run.refusals,
        "redis_cpu_us_per_open_and_close": round((redis_after - redis_before) / opens, 1),
        "postgres_cpu_us_per_open_and_close": None if pg_cpu is None else round(pg_cpu, 1),
        # NOTE: the callers' own process (the web's share of a trade, drivers included).
        "client_cpu_us_per_open_and_close": round(client_us / opens, 1),
        # NOTE: the Lua design's own time a trade on Redis's clock (opens and closes alike).
        "lua_usec_per_call": round(await lua_usec(services) / fcalls, 1) if fcalls else None,
    }


def floor_us(samples_us: list[float]) -> dict[str, float]:
    return {
        "p50": round(samples_us[len(samples_us) // 2], 1),
        "p99": round(samples_us[int(len(samples_us) * 0.99)], 1),
    }


def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 2) if denominator else None


async def connect(url: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(libpq_url(url), autocommit=True)


async def bench(
    settings: Settings, peer_url: str, seconds: float, callers: int, hot: int
) -> dict[str, Any]:
    services = Services.create(settings)
    admin = await connect(peer_url)
    conns: list[psycopg.AsyncConnection[Any]] = []
    try:
        await seed(services.engine, services.redis, admin_email=settings.admin_email)
        await services.scripts.load()
        members: set[str] = await services.redis.smembers(keys.INSTRUMENT_IDS)  # type: ignore[assignment]
        ids = sorted(members)
        states = [await instruments.read(services.redis, UUID(i)) for i in ids]
        users = await make_traders(services, callers)
        issued = [services.tokens.issue(TokenType.ACCESS, user)[1] for user in users]
        who = [Caller.from_claims(claims) for claims in issued]
        await create_schema(admin)
        await add_instruments(admin, [s for s in states if s is not None])
        await add_wallets(admin, users, TRADER_BALANCE_CENTS)
        conns = [await connect(peer_url) for _ in who]
        designs: dict[str, list[Trader]] = {
            "lua": [LuaTrader(services, c) for c in who],
            "pg": [PgTrader(conn, c) for conn, c in zip(conns, who, strict=True)],
        }

        async def hold(trader: Trader) -> None:
            for iid in ids[:HOLDINGS]:
                await trader.open(order(iid))

        for traders in designs.values():
            await asyncio.gather(*(hold(t) for t in traders))
        floors = {
            "evalsha_us": floor_us(await round_trips_us(lambda: ping(services), FLOOR_CALLS)),
            "select_1_us": floor_us(
                await round_trips_us(lambda: conns[0].execute("SELECT 1"), FLOOR_CALLS)
            ),
        }
        alone = {
            name: await measure(services, admin, traders[:1], ids[HOLDINGS : HOLDINGS + 1], seconds)
            for name, traders in designs.items()
        }
        variants = {"hot": ids[HOLDINGS : HOLDINGS + hot], "spread": ids}
        loaded = {
            variant: {
                name: await measure(services, admin, traders, traded, seconds)
                for name, traders in designs.items()
            }
            for variant, traded in variants.items()
        }
        pg_settings = {
            name: (await (await admin.execute(f"SHOW {name}")).fetchone() or ("?",))[0]
            for name in ("server_version", "fsync", "synchronous_commit")
        }
    finally:
        for conn in (*conns, admin):
            await conn.close()
        await services.close()
    evalsha, select_1 = floors["evalsha_us"]["p50"], floors["select_1_us"]["p50"]
    return {
        "bench": "pg_open",
        "machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end",
        "postgres": pg_settings,
        "seconds_per_run": seconds,
        "callers": callers,
        "hot_instruments": hot,
        "spread_instruments": len(ids),
        "open_positions_per_user": HOLDINGS + 1,
        "floors": floors,
        "alone": alone,
        **loaded,
        "ratios": {
            "lua_open_p50_over_evalsha_p50": ratio(alone["lua"]["open_ms"]["p50"] * 1e3, evalsha),
            "pg_open_p50_over_select_1_p50": ratio(alone["pg"]["open_ms"]["p50"] * 1e3, select_1),
            "pg_over_lua_open_p50_alone": ratio(
                alone["pg"]["open_ms"]["p50"], alone["lua"]["open_ms"]["p50"]
            ),
            **{
                f"pg_over_lua_{figure}_{variant}": ratio(
                    pick(loaded[variant]["pg"]), pick(loaded[variant]["lua"])
                )
                for variant in variants
                for figure, pick in FIGURES.items()
            },
        },
    }


FIGURES: dict[str, Callable[[dict[str, Any]], float]] = {
    "opens_per_s": lambda figures: float(figures["opens_per_s"]),
    "open_p50": lambda figures: float(figures["open_ms"]["p50"]),
    "open_p99": lambda figures: float(figures["open_ms"]["p99"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per timed run (5 runs)")
    parser.add_argument("--callers", type=int, default=50, help="concurrent callers, one user each")
    parser.add_argument(
        "--hot-instruments", type=int, default=3, help="instruments every user trades in 'hot'"
    )
    args = parser.parse_args()
    env = dict(os.environ)
    env.setdefault("JWT_PRIVATE_KEY_B64", generate_private_key_b64())
    server = env.get("DATABASE_URL", Settings().database_url)
    env["DATABASE_URL"] = fresh_database(server)
    peer_url = fresh_database(server, PEER_SUFFIX)
    try:
        with ExitStack() as stack:
            env["REDIS_URL"] = start_redis(stack)
            settings = Settings.from_env(env)
            upgrade(settings.database_url)
            # NOTE: uvloop, as bench/trade.py and the web run; one loop drives both designs.
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                result = runner.run(
                    bench(settings, peer_url, args.seconds, args.callers, args.hot_instruments)
                )
    finally:
        with psycopg.connect(libpq_url(server), autocommit=True) as conn:
            drop_database(conn, str(make_url(peer_url).database))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
