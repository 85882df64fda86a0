"""`ftl recover`: rebuild Redis hot state from Postgres after Redis was lost (SPEC §2).

Rebuilt: instrument hashes, `instruments`, `instrument_idx`, `prices`, every wallet with its open
positions, exposure, open positions per instrument (`held`), holders and stop sets
(lua/wallets_restore.lua), the leaderboards with `board:arrivals`, the margin watermarks of users
whose balance changed while they held positions, the recent tick log of every instrument and the
feature-flag hot copy; the margin safe boxes (a hint for the evaluator, docs/decisions/0046) are
cleared. Referral payouts credited
in the ledger but not yet marked paid are marked paid first, so none is paid twice.
Not rebuilt (docs/decisions/0050-recover.md): idempotency keys, leases, rate-limit counters and
sessions' own keys.

Run it while nothing else writes (the flusher has drained what it could). It replaces the keys
it owns, so running it twice gives the same state.

PERF (SPEC §8: < 10 s for 50,000 users and 150,000 open positions; docs/decisions/0052):
Postgres builds the hashes' JSON and the tick log members itself (the SQL below mirrors
`wallets.wallet_fields`, `wallets.position_fields` and `Tick.to_json`;
tests/integration/test_recover.py compares every rebuilt key with the one trading wrote), rows
come through a server-side cursor, one Lua call writes a chunk of wallets while the next chunk is
fetched, and the stages after the instruments run concurrently.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from redis.asyncio import Redis
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from ftl.market import rules
from ftl.market.instruments import InstrumentState
from ftl.market.leaderboard import DISTRICTS, board_member
from ftl.store import hotstore, keys
from ftl.store.db.engine import libpq_url
from ftl.store.db.models import Instrument
from ftl.store.scripts import Scripts
from ftl.store.services import Services
from ftl.trading.margin.replay import WARNING_LEVEL_BASIS, HeldPosition

BATCH = 2_000  # PERF: plain commands per pipeline round trip
HASH_CHUNK = 2_000  # PERF: hashes per hashes_replace.lua call
SCAN_COUNT = 10_000  # PERF: keys SCAN looks at per round trip
WALLET_CHUNK = 1_000  # PERF: wallets per wallets_restore.lua call (~0.7 MB of JSON)
PROGRESS_EVERY = 10_000  # wallets between two progress lines
REDIS_TIMEOUT_S = 120.0  # recover's own client: its commands queue behind long Lua calls

INSTRUMENT_TOTALS = """
SELECT i.id, coalesce(n.net, 0) AS net_lots, greatest(i.seq, coalesce(t.seq, 0)) AS seq
FROM instruments i
LEFT JOIN (SELECT instrument_id,
                  sum(CASE WHEN direction = 'long' THEN lot_size ELSE -lot_size END) AS net
           FROM cfd_positions WHERE status = 'open' GROUP BY instrument_id) n
    ON n.instrument_id = i.id
LEFT JOIN LATERAL (SELECT max(seq) AS seq FROM price_ticks p WHERE p.instrument_id = i.id) t
    ON true
"""
# NOTE: a referral whose bonus reached `wallet_ledger` while `referrals.paid_at` did not (the
# flusher died between referral_pay.lua and its UPDATE, and the credit was flushed before Redis
# was lost) is paid: left unpaid, the rebuilt wallet would carry its referralId again and the
# referred user's next open would pay it a second time (docs/decisions/0051).
COMPLETE_PAYOUTS = """
WITH credited AS (
    SELECT r.id, min(l.created_at) AS at, sum(l.amount) AS bonus
    FROM referrals r
    JOIN wallet_ledger l ON l.user_id = r.referrer_id AND l.referral_id = r.id
    WHERE r.paid_at IS NULL
    GROUP BY r.id)
UPDATE referrals r SET paid_at = credited.at, bonus = credited.bonus
FROM credited WHERE r.id = credited.id
"""
# NOTE: board arrival order = the order of each user's last close (ties: user id); the exact
# arrival counter of the lost Redis is not in Postgres (docs/decisions/0050-recover.md).
BOARD = """
SELECT w.user_id::text, u.district_id, (w.realized_pnl * 100)::bigint AS realized_cents
FROM wallets w
JOIN users u ON u.id = w.user_id
JOIN (SELECT user_id, max(closed_at) AS at FROM cfd_positions WHERE status = 'closed'
      GROUP BY user_id) last_close ON last_close.user_id = w.user_id
ORDER BY last_close.at, w.user_id
"""
# Net lots per (user, instrument) of the open positions, non-zero only: exposure:{userId}
# (lua/lib/engine.lua E.add_exposure keeps the same rule).
EXPOSURE = """
SELECT user_id, instrument_id,
       sum(CASE WHEN direction = 'long' THEN 1 ELSE -1 END * (lot_size * 100)::bigint) AS net
FROM cfd_positions WHERE status = 'open'
GROUP BY user_id, instrument_id
HAVING sum(CASE WHEN direction = 'long' THEN 1 ELSE -1 END * (lot_size * 100)::bigint) <> 0
"""
# One row per wallet: its id and its wallets_restore.lua entry, JSON built as text (a tenth of
# the cost of Postgres' json functions).
# NOTE: mirrors wallets.wallet_fields and wallets.position_fields in the order of the field
# lists in lua/wallets_restore.lua (cents and centilots of 2-decimal columns are exact; epoch ms
# floored like wallets.epoch_ms; open_request_id is the one client-chosen text, so to_json
# quotes it). costCents = Σ entry × lots × direction (lua/lib/engine.lua).
# APPSEC: the f-strings here only splice the constant EXPOSURE; no value enters the SQL text.
WALLETS = f"""
WITH open_positions AS (
    SELECT p.user_id, count(*) AS n, sum((p.margin * 100)::bigint) AS margin_cents,
           sum(CASE WHEN p.direction = 'long' THEN 1 ELSE -1 END * (p.lot_size * 100)::bigint
               * (p.entry_price * 100)::bigint) AS cost_cents,
           string_agg(format('["%s","%s","%s","%s","%s","%s","%s","%s","%s",%s,%s,%s]',
               p.id, p.instrument_id, i.idx, CASE WHEN p.direction = 'long' THEN 1 ELSE -1 END,
               (p.lot_size * 100)::bigint, (p.entry_price * 100)::bigint,
               (p.margin * 100)::bigint, floor(extract(epoch FROM p.opened_at) * 1000)::bigint,
               p.open_seq, to_json(p.open_request_id),
               coalesce('"' || (p.stop_loss * 100)::bigint || '"', 'null'),
               coalesce('"' || (p.take_profit * 100)::bigint || '"', 'null')), ',') AS rows
    FROM cfd_positions p JOIN instruments i ON i.id = p.instrument_id
    WHERE p.status = 'open'
    GROUP BY p.user_id),
exposure AS (
    SELECT user_id, string_agg(format('"%s","%s"', instrument_id, net), ',') AS pairs
    FROM ({EXPOSURE}) net GROUP BY user_id)
SELECT w.user_id::text,
       format('["%s","%s","%s","%s","%s","%s","%s","%s","%s","%s",%s,[%s],[%s]]',
           w.user_id, (w.balance * 100)::bigint, (w.realized_pnl * 100)::bigint,
           (w.bonus_total * 100)::bigint, coalesce(open_positions.margin_cents, 0),
           coalesce(open_positions.cost_cents, 0), coalesce(open_positions.n, 0), w.version,
           u.district_id, coalesce(paid.n, 0), coalesce('"' || unpaid.id || '"', 'null'),
           exposure.pairs, open_positions.rows)
FROM wallets w
JOIN users u ON u.id = w.user_id
LEFT JOIN open_positions ON open_positions.user_id = w.user_id
LEFT JOIN exposure ON exposure.user_id = w.user_id
LEFT JOIN (SELECT referrer_id, count(*) AS n FROM referrals WHERE paid_at IS NOT NULL
           GROUP BY referrer_id) paid ON paid.referrer_id = w.user_id
LEFT JOIN (SELECT DISTINCT ON (referred_id) referred_id, id FROM referrals
           WHERE paid_at IS NULL ORDER BY referred_id, id) unpaid
    ON unpaid.referred_id = w.user_id
"""  # noqa: S608
# NOTE: a holder has an open position on the instrument, even a hedged one with no net exposure
# (lua/lib/engine.lua, E.add_exposure; lua/wallets_restore.lua counts them into held:{userId}):
# full time closes his positions too.
HOLDERS = """
SELECT instrument_id::text, array_agg(DISTINCT user_id::text)
FROM cfd_positions WHERE status = 'open' GROUP BY 1
"""
# The SL/TP sets: a long's stop-loss and a short's take-profit wait below the price, the others
# above it (lua/lib/engine.lua).
STOPS = """
SELECT instrument_id::text, below,
       array_agg(ARRAY[(level * 100)::bigint::text, id::text] ORDER BY id)
FROM (SELECT instrument_id, id, true AS below,
             CASE WHEN direction = 'long' THEN stop_loss ELSE take_profit END AS level
      FROM cfd_positions WHERE status = 'open'
      UNION ALL
      SELECT instrument_id, id, false,
             CASE WHEN direction = 'long' THEN take_profit ELSE stop_loss END
      FROM cfd_positions WHERE status = 'open') stops
WHERE level IS NOT NULL
GROUP BY 1, 2
"""
# The last TICK_LOG_CAP ticks of every instrument as Tick.to_json (and the Lua) writes them.
# NOTE: price_ticks keeps neither the degraded flag nor kMod: each tick carries the instrument's
# current ones.
RECENT_TICKS = """
SELECT i.id::text, t.seq, format(
    '{"id":"%%s","i":%%s,"q":%%s,"p":%%s,"b":%%s,"n":%%s,"k":%%s,"s":%%s,"t":%%s,"d":%%s}',
    i.id, i.idx, t.seq, (t.price * 100)::bigint, (t.live_base_price * 100)::bigint,
    (t.net_lots * 100)::bigint, (i.k_mod * 1000000)::bigint, t.source,
    floor(extract(epoch FROM t.at) * 1000)::bigint, i.degraded::int)
FROM instruments i
CROSS JOIN LATERAL (SELECT * FROM price_ticks p WHERE p.instrument_id = i.id
                    ORDER BY p.seq DESC LIMIT %(cap)s) t
"""
# Where each user's margin replay resumes (docs/decisions/0051): his last close P (any reason) is
# the last change of his balance; for each instrument of a position he held then, the last tick
# at or before P in the replay's order (at, instrument id, seq), with its price.
LAST_CLOSES = """
WITH last_close AS (
    SELECT DISTINCT ON (user_id) user_id, closed_at AS at, instrument_id, close_seq AS seq
    FROM cfd_positions WHERE status = 'closed'
    ORDER BY user_id, closed_at DESC, instrument_id DESC, close_seq DESC)
"""
WATERMARKS = f"""{LAST_CLOSES},
held AS (
    SELECT p.user_id, p.instrument_id, min(p.opened_at) AS since, c.at,
           c.instrument_id AS at_instrument, c.seq
    FROM cfd_positions p JOIN last_close c ON c.user_id = p.user_id
    WHERE p.status = 'open' AND p.opened_at <= c.at
    GROUP BY p.user_id, p.instrument_id, c.at, c.instrument_id, c.seq)
SELECT h.user_id, h.instrument_id, t.seq, (t.price * 100)::bigint
FROM held h
CROSS JOIN LATERAL (
    SELECT t.seq, t.price FROM price_ticks t
    -- PERF: the tick sought is at or after the first open's own trade tick, so only the daily
    -- partitions from that open to P are searched.
    WHERE t.instrument_id = h.instrument_id AND t.at BETWEEN h.since AND h.at
      AND (t.at, t.instrument_id, t.seq) <= (h.at, h.at_instrument, h.seq)
    ORDER BY t.seq DESC LIMIT 1) t
"""  # noqa: S608
# The open positions and balance of every user with a close, for the watermark's `below` flag.
HELD_AT_WATERMARK = f"""{LAST_CLOSES}
SELECT w.user_id, (w.balance * 100)::bigint, p.id, p.instrument_id,
       CASE WHEN p.direction = 'long' THEN 1 ELSE -1 END, (p.lot_size * 100)::bigint,
       (p.entry_price * 100)::bigint, (p.margin * 100)::bigint, p.open_seq
FROM last_close c
JOIN wallets w ON w.user_id = c.user_id
JOIN cfd_positions p ON p.user_id = c.user_id AND p.status = 'open'
"""  # noqa: S608


@dataclass
class RecoverReport:
    instruments: int = 0
    wallets: int = 0
    positions: int = 0
    board_members: int = 0
    payouts_completed: int = 0
    watermarks: int = 0
    ticks: int = 0
    flags: int = 0
    seconds: float = 0.0


Command = tuple[Any, ...]
Progress = Callable[[str], None]


def _hset(key: str, fields: dict[str, str]) -> Command:
    return ("HSET", key, *(item for pair in fields.items() for item in pair))


async def _in_batches(redis: Redis, commands: Sequence[Command]) -> None:
    """Run the commands through pipelines, BATCH per round trip."""
    for start in range(0, len(commands), BATCH):
        async with redis.pipeline(transaction=False) as pipe:
            for command in commands[start : start + BATCH]:
                pipe.execute_command(*command)
            await pipe.execute()


async def _connect(services: Services) -> psycopg.AsyncConnection[Any]:
    """A plain psycopg connection: rows as Postgres sends them, no ORM decoding."""
    # NOTE: JIT compiling these one-off queries costs more than it saves; the aggregates over
    # every open position fit in memory with a little more room than the default 4 MB.
    return await psycopg.AsyncConnection.connect(
        libpq_url(services.settings.database_url), options="-c jit=off -c work_mem=64MB"
    )


async def _count(pg: psycopg.AsyncConnection[Any], query: str) -> int:
    found = await (await pg.execute(query)).fetchone()
    return int(found[0]) if found else 0


async def recover_instruments(services: Services) -> dict[UUID, InstrumentState]:
    """Instrument hashes with netLots from the open positions and seq from the last tick, the
    idx map, the id set and `prices`; stops, holders and tick logs are emptied for the next
    stages."""
    async with AsyncSession(services.engine) as session:
        rows = (await session.scalars(select(Instrument).order_by(Instrument.idx))).all()
        totals = {
            row.id: (row.net_lots, row.seq)
            for row in (await session.execute(text(INSTRUMENT_TOTALS))).all()
        }
    states = {}
    for row in rows:
        net_lots, seq = totals[row.id]
        states[row.id] = dataclasses.replace(
            InstrumentState.from_row(row), net_lots_centis=int(net_lots * 100), seq=seq
        )
    derived = (keys.stops_below, keys.stops_above, keys.holders, keys.tick_log)
    commands: list[Command] = [("DEL", keys.INSTRUMENT_IDX, keys.INSTRUMENT_IDS, keys.PRICES)]
    for state in states.values():
        iid = str(state.id)
        price = rules.price_cents(
            state.live_base_price_cents, state.k_mod_micros, state.net_lots_centis
        )
        commands += [
            ("DEL", keys.instrument(iid), *(k(iid) for k in derived)),
            _hset(keys.instrument(iid), state.to_hash()),
            ("HSET", keys.INSTRUMENT_IDX, state.idx, iid),
            ("SADD", keys.INSTRUMENT_IDS, iid),
            ("HSET", keys.PRICES, iid, price),
        ]
    await _in_batches(services.redis, commands)
    return states


async def complete_referral_payouts(services: Services) -> int:
    """Mark paid every referral the ledger shows credited; how many there were."""
    async with services.engine.begin() as conn:
        return (await conn.execute(text(COMPLETE_PAYOUTS))).rowcount


async def recover_boards(pg: psycopg.AsyncConnection[Any], redis: Redis) -> dict[str, str]:
    """The overall and district boards: every user with a closed position, score = realized
    PnL, arrivals renumbered in the order of last closes; the board member of each user."""
    members: dict[str, str] = {}
    boards: dict[str, list[Any]] = defaultdict(list)
    async with pg.cursor() as cur:
        await cur.execute(BOARD)
        for arrival, (uid, district_id, realized) in enumerate(await cur.fetchall(), 1):
            member = members[uid] = board_member(arrival, uid)
            for board in (keys.BOARD_OVERALL, keys.board_district(district_id)):
                boards[board] += (realized, member)
    commands: list[Command] = [
        ("DEL", keys.BOARD_OVERALL, *(keys.board_district(d) for d in DISTRICTS)),
        ("SET", keys.BOARD_ARRIVALS, len(members)),
        *(("ZADD", board, *scored) for board, scored in boards.items()),
    ]
    await _in_batches(redis, commands)
    return members


async def recover_instrument_indexes(pg: psycopg.AsyncConnection[Any], redis: Redis) -> None:
    """Each instrument's holders index and SL/TP sets, one command per key."""
    commands: list[Command] = [
        ("SADD", keys.holders(iid), *users)
        for iid, users in await (await pg.execute(HOLDERS)).fetchall()
    ]
    for iid, below, scored in await (await pg.execute(STOPS)).fetchall():
        stops = keys.stops_below(iid) if below else keys.stops_above(iid)
        commands.append(("ZADD", stops, *(item for pair in scored for item in pair)))
    await _in_batches(redis, commands)


async def recover_wallets(services: Services, report: RecoverReport, progress: Progress) -> None:
    """Every wallet with its open positions, the boards, the holders index and the SL/TP sets.
    Postgres streams the wallets' JSON in chunks; each chunk is one wallets_restore.lua call,
    made while the next chunk is fetched."""
    report.payouts_completed = await complete_referral_payouts(services)
    script = services.scripts.scripts["wallets_restore"]
    async with await _connect(services) as pg:
        members = await recover_boards(pg, services.redis)
        await recover_instrument_indexes(pg, services.redis)
        report.board_members = len(members)
        total = await _count(pg, "SELECT count(*) FROM wallets")

        async def restore(chunk: list[tuple[str, str]]) -> None:
            on_board = {uid: members[uid] for uid, _ in chunk if uid in members}
            users = "[" + ",".join(entry for _, entry in chunk) + "]"
            await services.scripts.call(script.name, args=[users, json.dumps(on_board)])

        writing: asyncio.Task[None] | None = None
        async with pg.cursor(name="recover_wallets") as cur:
            await cur.execute(WALLETS)
            while chunk := await cur.fetchmany(WALLET_CHUNK):
                if writing is not None:
                    await writing
                writing = asyncio.create_task(restore(chunk))
                before, report.wallets = report.wallets, report.wallets + len(chunk)
                if report.wallets // PROGRESS_EVERY > before // PROGRESS_EVERY:
                    progress(f"recover: wallets: {report.wallets} of {total}")
        if writing is not None:
            await writing
        report.positions = await _count(
            pg, "SELECT count(*) FROM cfd_positions WHERE status = 'open'"
        )


def _below_warning(
    balance: int, held: Sequence[HeldPosition], at: dict[UUID, tuple[int, int]]
) -> bool:
    """Whether the margin level was under 100 % at the watermark `at` ({instrument: (seq,
    price)}): the replay's `below` flag (positions join at their open tick, as in
    ftl/trading/margin/replay.py)."""
    in_play = [p for p in held if p.instrument_id in at and p.open_seq <= at[p.instrument_id][0]]
    account = rules.Account(
        balance=balance,
        used_margin=sum(p.margin_cents for p in in_play),
        unrealized_pnl=sum(
            rules.pnl_cents(p.entry_cents, at[p.instrument_id][1], p.lots_centis, p.direction)
            for p in in_play
        ),
    )
    level = account.margin_level_basis
    return level is not None and level < WARNING_LEVEL_BASIS


async def recover_watermarks(services: Services) -> int:
    """The margin watermark of every user who holds a position opened before his last close;
    how many were written. Without one his replay would start at his opens and judge the ticks
    before that close against today's balance (docs/decisions/0051)."""
    async with await _connect(services) as pg:
        marks: dict[UUID, dict[UUID, tuple[int, int]]] = defaultdict(dict)
        for uid, iid, seq, price in await (await pg.execute(WATERMARKS)).fetchall():
            marks[uid][iid] = (seq, price)
        balances: dict[UUID, int] = {}
        held: dict[UUID, list[HeldPosition]] = defaultdict(list)
        for uid, balance, *position in await (await pg.execute(HELD_AT_WATERMARK)).fetchall():
            balances[uid] = balance
            held[uid].append(HeldPosition(*position))
    hashes = []
    for uid, at in marks.items():
        below = _below_warning(balances[uid], held[uid], at)
        seqs = (item for iid, (seq, _) in at.items() for item in (str(iid), str(seq)))
        hashes.append([keys.margin_watermark(uid), "v", "0", "below", str(int(below)), *seqs])
    for start in range(0, len(hashes), HASH_CHUNK):
        chunk = json.dumps(hashes[start : start + HASH_CHUNK])
        await services.scripts.call("hashes_replace", args=[chunk])
    return len(marks)


async def recover_tick_logs(services: Services) -> int:
    """The last TICK_LOG_CAP ticks of every instrument, one ZADD per instrument."""
    logs: dict[str, list[Any]] = defaultdict(list)
    async with await _connect(services) as pg:
        rows = await (await pg.execute(RECENT_TICKS, {"cap": keys.TICK_LOG_CAP})).fetchall()
    for iid, seq, tick in rows:
        logs[iid] += (seq, tick)
    await _in_batches(
        services.redis, [("ZADD", keys.tick_log(iid), *ticks) for iid, ticks in logs.items()]
    )
    return len(rows)


async def clear_margin_boxes(services: Services) -> int:
    """Delete every margin safe box and its index; how many boxes. A box is a hint made for a
    wallet as it was: after a recover every restored user is in margin:unboxed (wallets_restore)
    and the evaluator makes new ones as it goes (docs/decisions/0046, 0166)."""
    boxes = 0
    for prefix in keys.MARGIN_INDEX_PREFIXES:
        names = [name async for name in services.redis.scan_iter(f"{prefix}*", SCAN_COUNT)]
        boxes += len(names) if prefix == keys.margin_box("") else 0
        for start in range(0, len(names), HASH_CHUNK):
            await services.redis.unlink(*names[start : start + HASH_CHUNK])
    # NOTE: every user recover restores joins margin:unboxed (lua/wallets_restore.lua): the new
    # index needs no seeding from a scan of every holder.
    await services.redis.set(keys.MARGIN_INDEXED, 1)
    return boxes


async def recover(services: Services, progress: Progress = lambda _: None) -> RecoverReport:
    """Rebuild every hot key listed above from Postgres; `progress` gets a line per stage as it
    ends (and one every PROGRESS_EVERY wallets)."""
    report = RecoverReport()
    start = time.monotonic()
    # NOTE: recover is Redis' only client and keeps it busy with long Lua calls from several
    # stages at once: a command may wait far longer than the 3 s the trading path allows.
    redis = hotstore.connect(services.settings, socket_timeout=REDIS_TIMEOUT_S)
    services = dataclasses.replace(services, redis=redis, scripts=Scripts(redis))

    async def stage(name: str, run: Callable[[], Awaitable[str]]) -> None:
        began = time.monotonic()
        outcome = await run()
        progress(f"recover: {name}: {outcome} ({time.monotonic() - began:.2f} s)")

    async def instruments() -> str:
        report.instruments = len(await recover_instruments(services))
        return f"{report.instruments} instruments"

    async def wallets_and_boards() -> str:
        await recover_wallets(services, report, progress)
        return (
            f"{report.wallets} wallets, {report.positions} open positions,"
            f" {report.board_members} on the boards,"
            f" {report.payouts_completed} interrupted referral payouts marked paid"
        )

    async def watermarks() -> str:
        report.watermarks = await recover_watermarks(services)
        return f"{report.watermarks} users"

    async def tick_logs() -> str:
        report.ticks = await recover_tick_logs(services)
        return f"{report.ticks} ticks"

    async def margin_boxes() -> str:
        return f"{await clear_margin_boxes(services)} cleared"

    async def flags() -> str:
        report.flags = await services.flags.restore()
        return f"{report.flags} flags"

    try:
        await stage("instruments", instruments)
        # PERF: the other stages write disjoint keys: run together, Postgres' share of one
        # overlaps Redis' share of another.
        await asyncio.gather(
            stage("wallets", wallets_and_boards),
            stage("margin watermarks", watermarks),
            stage("tick logs", tick_logs),
            stage("flags", flags),
            stage("margin boxes", margin_boxes),
        )
    finally:
        await redis.aclose()
    report.seconds = time.monotonic() - start
    return report
