"""The flusher (SPEC §5.3): drain the Redis outbox stream into Postgres in batches.

Every trade script appends to the `outbox` stream in the same Lua call that changes hot state:
`position` / `wallet` / `instrument` ids whose current hash must be written, immutable `tick`
and `ledger` JSON, and `referral` ids due a payout. Entries are read through the consumer group
`flusher`, so several flusher processes share the work:

- crash-safe: an entry stays pending in the group until its batch has committed; a restarted
  flusher re-reads its own pending entries and any flusher claims entries another one left idle
  for RECLAIM_IDLE_MS (it died, or is stuck);
- idempotent: rows are upserts that never go backwards (positions never leave `closed`, wallets
  and instruments carry a version / seq) and ticks and ledger rows are insert-or-ignore by key,
  so an entry applied twice changes nothing the second time.

A batch that carried ticks other than live ones (trades, washouts, SL/TP closes, post-match)
hands their instruments to `after_ticks` once it has committed, before the ack: the margin
evaluation of their holders (SPEC §1.5, docs/decisions/0045).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ftl.core import metrics
from ftl.core.money import from_cents
from ftl.store import keys
from ftl.store.services import Services
from ftl.store.ticks import Tick, TickSource
from ftl.trading import referral_payout
from ftl.trading.margin.evaluator import WASHOUT

FLUSH_INTERVAL_MS = 100  # how often hot state is drained into Postgres
FLUSH_RUN_MS = 1_000  # one flush message drains every FLUSH_INTERVAL_MS for this long
FLUSH_BATCH_ENTRIES = 2_000  # outbox entries per batch
RECLAIM_IDLE_MS = 2_000  # pending this long without a commit: its flusher is presumed dead
MAX_BATCHES_PER_FLUSH = 20  # a flush call returns within a bounded time even under load


def consumer_name() -> str:
    """This process's name in the consumer group."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class FlushReport:
    entries: int = 0
    positions: int = 0
    wallets: int = 0
    ticks: int = 0
    ledger: int = 0
    referrals: int = 0
    max_lag_ms: int = 0

    def add(self, other: FlushReport) -> None:
        for name in ("entries", "positions", "wallets", "ticks", "ledger", "referrals"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.max_lag_ms = max(self.max_lag_ms, other.max_lag_ms)


Entry = tuple[str, dict[str, str]]
# Told the instruments of a committed batch's ticks the poller does not follow (not `live`).
AfterTicks = Callable[[Services, list[UUID]], Awaitable[None]]


async def ensure_group(redis: Redis) -> None:
    try:
        await redis.xgroup_create(keys.OUTBOX, keys.OUTBOX_GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def take(redis: Redis, consumer: str) -> list[Entry]:
    """The next batch: this consumer's own pending entries first (it restarted), then entries
    other consumers left idle too long, then new ones."""
    streams: Any = await redis.xreadgroup(
        keys.OUTBOX_GROUP, consumer, {keys.OUTBOX: "0"}, count=FLUSH_BATCH_ENTRIES
    )
    own: list[Entry] = streams[0][1] if streams else []
    if own:
        return own
    claimed: Any = await redis.xautoclaim(
        keys.OUTBOX, keys.OUTBOX_GROUP, consumer, RECLAIM_IDLE_MS, "0-0", FLUSH_BATCH_ENTRIES
    )
    if claimed[1]:
        entries: list[Entry] = claimed[1]
        return entries
    streams = await redis.xreadgroup(
        keys.OUTBOX_GROUP, consumer, {keys.OUTBOX: ">"}, count=FLUSH_BATCH_ENTRIES
    )
    return streams[0][1] if streams else []


# PERF: each table is written by one statement over `unnest` of column arrays: the SQL text does
# not grow with the batch and nothing is compiled per row (SQLAlchemy multi-row VALUES spent
# ~0.5 ms a row compiling).
POSITIONS_UPSERT = """
INSERT INTO cfd_positions (id, user_id, instrument_id, direction, lot_size, entry_price, margin,
    stop_loss, take_profit, status, exit_price, realized_pnl, closed_by, open_request_id,
    close_request_id, open_seq, close_seq, opened_at, closed_at)
SELECT id, user_id, instrument_id, direction::direction, lot_size, entry_price, margin,
    stop_loss, take_profit, status::position_status, exit_price, realized_pnl,
    closed_by::close_reason, open_request_id, close_request_id, open_seq, close_seq, opened_at,
    closed_at
FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], %s::text[], %s::numeric[], %s::numeric[],
    %s::numeric[], %s::numeric[], %s::numeric[], %s::text[], %s::numeric[], %s::numeric[],
    %s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::timestamptz[],
    %s::timestamptz[])
    AS t(id, user_id, instrument_id, direction, lot_size, entry_price, margin, stop_loss,
         take_profit, status, exit_price, realized_pnl, closed_by, open_request_id,
         close_request_id, open_seq, close_seq, opened_at, closed_at)
ON CONFLICT (id) DO UPDATE SET stop_loss = excluded.stop_loss,
    take_profit = excluded.take_profit, status = excluded.status,
    exit_price = excluded.exit_price, realized_pnl = excluded.realized_pnl,
    closed_by = excluded.closed_by, close_request_id = excluded.close_request_id,
    close_seq = excluded.close_seq, closed_at = excluded.closed_at
-- NOTE: a closed row is final; a late copy of its open state never reopens it.
WHERE cfd_positions.status = 'open'
"""
WALLETS_UPDATE = """
UPDATE wallets AS w SET balance = t.balance, realized_pnl = t.realized_pnl,
    bonus_total = t.bonus_total, version = t.version, updated_at = now()
FROM unnest(%s::uuid[], %s::numeric[], %s::numeric[], %s::numeric[], %s::bigint[])
    AS t(user_id, balance, realized_pnl, bonus_total, version)
WHERE w.user_id = t.user_id AND w.version < t.version
"""
INSTRUMENTS_UPDATE = """
UPDATE instruments AS i SET live_base_price = t.live_base_price, base_price = t.base_price,
    net_lots = t.net_lots, seq = t.seq, updated_at = now()
FROM unnest(%s::uuid[], %s::numeric[], %s::numeric[], %s::numeric[], %s::bigint[])
    AS t(id, live_base_price, base_price, net_lots, seq)
WHERE i.id = t.id AND i.seq <= t.seq
"""
TICKS_INSERT = """
INSERT INTO price_ticks (instrument_id, seq, at, price, live_base_price, net_lots, source)
SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::timestamptz[], %s::numeric[],
    %s::numeric[], %s::numeric[], %s::smallint[])
ON CONFLICT DO NOTHING
"""
LEDGER_INSERT = """
INSERT INTO wallet_ledger (user_id, entry_key, reason, amount, balance_after, position_id,
    referral_id, created_at)
SELECT user_id, entry_key, reason::ledger_reason, amount, balance_after, position_id,
    referral_id, created_at
FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::numeric[], %s::numeric[], %s::uuid[],
    %s::uuid[], %s::timestamptz[])
    AS t(user_id, entry_key, reason, amount, balance_after, position_id, referral_id, created_at)
ON CONFLICT (entry_key) DO NOTHING
"""

Row = tuple[Any, ...]


def _ms_to_datetime(ms: str | int) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


def _cents(value: str | None) -> Decimal | None:
    return None if value is None or value == "" else from_cents(int(value))


def _lots(centis: str | int) -> Decimal:
    return Decimal(int(centis)) / 100


def position_row(position_id: str, f: dict[str, str]) -> Row:
    """A `position:{id}` hash as the columns of POSITIONS_UPSERT."""
    closed = f["status"] == "closed"
    return (
        UUID(position_id),
        UUID(f["userId"]),
        UUID(f["instrumentId"]),
        "long" if f["direction"] == "1" else "short",
        _lots(f["lotsCentis"]),
        _cents(f["entryCents"]),
        _cents(f["marginCents"]),
        _cents(f.get("stopLossCents")),
        _cents(f.get("takeProfitCents")),
        f["status"],
        _cents(f.get("exitCents")) if closed else None,
        _cents(f.get("pnlCents")) if closed else None,
        f.get("closedBy") if closed else None,
        f["openRequestId"],
        f.get("closeRequestId") or None,
        int(f["openSeq"]),
        int(f["closeSeq"]) if closed else None,
        _ms_to_datetime(f["openedAtMs"]),
        _ms_to_datetime(f["closedAtMs"]) if closed else None,
    )


def wallet_row(user_id: str, f: dict[str, str]) -> Row:
    return (
        UUID(user_id),
        from_cents(int(f["balanceCents"])),
        from_cents(int(f["realizedCents"])),
        from_cents(int(f["bonusCents"])),
        int(f["version"]),
    )


def instrument_row(instrument_id: str, f: dict[str, str]) -> Row:
    return (
        UUID(instrument_id),
        from_cents(int(f["liveBasePriceCents"])),
        from_cents(int(f["basePriceCents"])),
        _lots(f["netLotsCentis"]),
        int(f["seq"]),
    )


def tick_row(t: Tick) -> Row:
    return (
        t.instrument_id,
        t.seq,
        _ms_to_datetime(t.at_ms),
        from_cents(t.price_cents),
        from_cents(t.live_base_price_cents),
        _lots(t.net_lots_centis),
        int(t.source),
    )


def ledger_row(e: dict[str, Any]) -> Row:
    return (
        UUID(e["userId"]),
        e["entryKey"],
        e["reason"],
        from_cents(e["amountCents"]),
        from_cents(e["balanceAfterCents"]),
        UUID(e["positionId"]) if "positionId" in e else None,
        UUID(e["referralId"]) if "referralId" in e else None,
        _ms_to_datetime(e["atMs"]),
    )


async def _write(conn: AsyncConnection, statement: str, rows: Sequence[Row]) -> None:
    """Run `statement` once with one array per column of `rows`."""
    if rows:
        await conn.exec_driver_sql(
            statement, tuple(list(column) for column in zip(*rows, strict=True))
        )


class Flusher:
    """One flusher: its consumer name and the partitions it has made sure of."""

    def __init__(
        self,
        services: Services,
        consumer: str | None = None,
        after_ticks: AfterTicks | None = None,
    ) -> None:
        self.services = services
        self.consumer = consumer or consumer_name()
        self.after_ticks = after_ticks
        self.partitions_ready: set[date] = set()

    async def flush(self) -> FlushReport:
        """Drain the outbox until it is empty (or MAX_BATCHES_PER_FLUSH batches)."""
        await ensure_group(self.services.redis)
        total = FlushReport()
        for _ in range(MAX_BATCHES_PER_FLUSH):
            report = await self.flush_batch()
            total.add(report)
            if report.entries < FLUSH_BATCH_ENTRIES:
                break
        return total

    async def run_for(self, duration_ms: int = FLUSH_RUN_MS) -> FlushReport:
        """Flush every FLUSH_INTERVAL_MS for `duration_ms`.

        PERF: one message per second then drives ten flushes, so the lag does not pay the
        message queue's pick-up delay (the worker's idle polling backs off) on every flush."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        total = FlushReport()
        while True:
            total.add(await self.flush())
            elapsed_ms = (loop.time() - start) * 1000
            if elapsed_ms + FLUSH_INTERVAL_MS > duration_ms:
                return total
            await asyncio.sleep((FLUSH_INTERVAL_MS - elapsed_ms % FLUSH_INTERVAL_MS) / 1000)

    async def flush_batch(self) -> FlushReport:
        redis = self.services.redis
        entries = await take(redis, self.consumer)
        if not entries:
            return FlushReport()
        position_ids: set[str] = set()
        wallet_ids: set[str] = set()
        instrument_ids: set[str] = set()
        ticks: dict[tuple[str, int], Tick] = {}
        ledger: list[dict[str, Any]] = []
        referrals: set[str] = set()
        for _, fields in entries:
            if "position" in fields:
                position_ids.add(fields["position"])
            if "wallet" in fields:
                wallet_ids.add(fields["wallet"])
            if "instrument" in fields:
                instrument_ids.add(fields["instrument"])
            if "tick" in fields:
                tick = Tick.from_json(fields["tick"])
                ticks[(str(tick.instrument_id), tick.seq)] = tick
            if "ledger" in fields:
                ledger.append(json.loads(fields["ledger"]))
            if "referral" in fields:
                referrals.add(fields["referral"])
        for tick in ticks.values():
            instrument_ids.add(str(tick.instrument_id))

        async with redis.pipeline(transaction=False) as pipe:
            for pid in position_ids:
                pipe.hgetall(keys.position(pid))
            for uid in wallet_ids:
                pipe.hgetall(keys.wallet(uid))
            for iid in instrument_ids:
                pipe.hgetall(keys.instrument(iid))
            hashes = await pipe.execute()
        positions = dict(zip(position_ids, hashes[: len(position_ids)], strict=True))
        wallet_hashes = hashes[len(position_ids) : len(position_ids) + len(wallet_ids)]
        instrument_hashes = hashes[len(position_ids) + len(wallet_ids) :]

        position_rows = [position_row(pid, f) for pid, f in positions.items() if f]
        wallet_rows = [
            wallet_row(uid, f) for uid, f in zip(wallet_ids, wallet_hashes, strict=True) if f
        ]
        instrument_rows = [
            instrument_row(iid, f)
            for iid, f in zip(instrument_ids, instrument_hashes, strict=True)
            if f
        ]
        tick_rows = [tick_row(t) for t in ticks.values()]
        ledger_rows = [ledger_row(e) for e in ledger]

        async with self.services.engine.begin() as conn:
            await self._ensure_partitions(conn)
            await _write(conn, INSTRUMENTS_UPDATE, instrument_rows)
            await _write(conn, POSITIONS_UPSERT, position_rows)
            await _write(conn, WALLETS_UPDATE, wallet_rows)
            await _write(conn, TICKS_INSERT, tick_rows)
            await _write(conn, LEDGER_INSERT, ledger_rows)
        for referral in referrals:
            await referral_payout.pay(self.services, UUID(referral))
        # NOTE: a washout's close tick already has its follow-up pass, sent at once by the pass
        # that made it (docs/decisions/0044); a trade pass after it would box-check every holder
        # of the instrument again (docs/decisions/0164).
        washed_out = {
            (f["instrumentId"], int(f["closeSeq"]))
            for f in positions.values()
            if f.get("closedBy") == WASHOUT and f.get("closeSeq")
        }
        traded = {
            t.instrument_id
            for key, t in ticks.items()
            if t.source != TickSource.LIVE and key not in washed_out
        }
        if traded and self.after_ticks is not None:
            # NOTE: before the ack, so a flusher that dies here re-reads the batch and asks
            # again; the live batches' holders are evaluated by the poller's message.
            await self.after_ticks(self.services, sorted(traded, key=str))

        committed_ms = int(time.time() * 1000)
        lag = max((committed_ms - t.at_ms for t in ticks.values()), default=0)
        finished = [pid for pid, f in positions.items() if f.get("status") == "closed"]
        ids = [entry_id for entry_id, _ in entries]
        async with redis.pipeline(transaction=False) as pipe:
            pipe.xack(keys.OUTBOX, keys.OUTBOX_GROUP, *ids)
            pipe.xdel(keys.OUTBOX, *ids)
            if finished:
                # NOTE: a closed position is final and now in Postgres; reads fall back there.
                pipe.delete(*(keys.position(pid) for pid in finished))
            if ticks:
                pipe.lpush(keys.FLUSH_LAG_SAMPLES, lag)
                pipe.ltrim(keys.FLUSH_LAG_SAMPLES, 0, keys.FLUSH_LAG_SAMPLES_CAP - 1)
            await pipe.execute()
        if ticks:
            metrics.FLUSH_LAG_SECONDS.observe(lag / 1000)
        return FlushReport(
            entries=len(entries),
            positions=len(position_rows),
            wallets=len(wallet_rows),
            ticks=len(tick_rows),
            ledger=len(ledger_rows),
            referrals=len(referrals),
            max_lag_ms=lag,
        )

    async def _ensure_partitions(self, conn: AsyncConnection) -> None:
        """Daily `price_ticks` partitions for today and tomorrow, once per day per process."""
        today = datetime.now(UTC).date()
        if today in self.partitions_ready:
            return
        for day in (today, today + timedelta(days=1)):
            await conn.execute(text("SELECT ftl_ensure_price_ticks_partition(:day)"), {"day": day})
        self.partitions_ready.add(today)
