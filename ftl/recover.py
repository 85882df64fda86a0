"""`ftl recover`: rebuild Redis hot state from Postgres after Redis was lost (SPEC §2).

Rebuilt: instrument hashes, `instruments`, `instrument_idx`, `prices`, every wallet with its open
positions, exposure, holders and stop sets (lua/wallet_load.lua), the leaderboards with
`board:arrivals`, the recent tick log of every instrument and the feature-flag hot copy.
Not rebuilt (docs/decisions/0050-recover.md): idempotency keys, margin watermarks, leases,
rate-limit counters and sessions' own keys.

Run it while nothing else writes (the flusher has drained what it could). It replaces the keys
it owns, so running it twice gives the same state.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from redis.asyncio import Redis
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from ftl import keys, market, wallets
from ftl.db.models import CfdPosition, Instrument, PositionStatus
from ftl.instruments import InstrumentState
from ftl.leaderboard import DISTRICTS, board_member
from ftl.money import to_cents
from ftl.services import Services
from ftl.ticks import Tick, TickSource

BATCH = 2_000  # PERF: commands (a wallet_load call is one) per pipeline round trip

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
# NOTE: board arrival order = the order of each user's last close (ties: user id); the exact
# arrival counter of the lost Redis is not in Postgres (docs/decisions/0050-recover.md).
WALLETS = """
SELECT w.user_id, w.balance, w.realized_pnl, w.bonus_total, w.version, u.district_id,
       coalesce(paid.n, 0) AS paid, unpaid.id AS unpaid, last_close.at AS last_close
FROM wallets w
JOIN users u ON u.id = w.user_id
LEFT JOIN (SELECT referrer_id, count(*) AS n FROM referrals WHERE paid_at IS NOT NULL
           GROUP BY referrer_id) paid ON paid.referrer_id = w.user_id
LEFT JOIN (SELECT DISTINCT ON (referred_id) referred_id, id FROM referrals
           WHERE paid_at IS NULL ORDER BY referred_id, id) unpaid
    ON unpaid.referred_id = w.user_id
LEFT JOIN (SELECT user_id, max(closed_at) AS at FROM cfd_positions WHERE status = 'closed'
           GROUP BY user_id) last_close ON last_close.user_id = w.user_id
"""
RECENT_TICKS = """
SELECT instrument_id, seq, at, price, live_base_price, net_lots, source
FROM (SELECT t.*, row_number() OVER (PARTITION BY instrument_id ORDER BY seq DESC) AS n
      FROM price_ticks t) recent
WHERE n <= :cap
"""


@dataclass
class RecoverReport:
    instruments: int = 0
    wallets: int = 0
    positions: int = 0
    board_members: int = 0
    ticks: int = 0
    flags: int = 0
    seconds: float = 0.0


Command = tuple[Any, ...]


def _hset(key: str, fields: dict[str, str]) -> Command:
    return ("HSET", key, *(item for pair in fields.items() for item in pair))


async def _in_batches(redis: Redis, commands: Sequence[Command]) -> None:
    """Run the commands through pipelines, BATCH per round trip."""
    for start in range(0, len(commands), BATCH):
        async with redis.pipeline(transaction=False) as pipe:
            for command in commands[start : start + BATCH]:
                pipe.execute_command(*command)
            await pipe.execute()


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
        price = market.price_cents(
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


async def recover_wallets(services: Services, report: RecoverReport) -> None:
    """Every wallet with its open positions (lua/wallet_load.lua, pipelined)
    and the boards: every user with a closed position, in the order of their last close."""
    position_table = CfdPosition.__table__
    async with AsyncSession(services.engine) as session:
        positions = (
            await session.execute(
                select(position_table, Instrument.idx)
                .join(Instrument, Instrument.id == position_table.c.instrument_id)
                .where(position_table.c.status == PositionStatus.open)
            )
        ).all()
        rows = (await session.execute(text(WALLETS))).all()
    by_user: dict[UUID, list[dict[str, Any]]] = defaultdict(list)
    used: dict[UUID, int] = defaultdict(int)
    for position in positions:
        by_user[position.user_id].append(
            {"id": str(position.id), "fields": wallets.position_fields(position, position.idx)}
        )
        used[position.user_id] += to_cents(position.margin)
    on_board = sorted((r for r in rows if r.last_close is not None), key=_arrival_order)
    members = {row.user_id: board_member(n, row.user_id) for n, row in enumerate(on_board, 1)}

    script = services.scripts.scripts["wallet_load"]
    await services.redis.script_load(script.source)
    commands: list[Command] = [
        ("DEL", keys.BOARD_OVERALL, *(keys.board_district(d) for d in DISTRICTS)),
        ("SET", keys.BOARD_ARRIVALS, len(on_board)),
    ]
    for row in rows:
        uid = row.user_id
        fields = wallets.wallet_fields(
            row.balance,
            row.realized_pnl,
            row.bonus_total,
            row.version,
            row.district_id,
            row.paid,
            row.unpaid,
            len(by_user[uid]),
            used[uid],
        )
        load_keys, load_args = wallets.load_call(uid, fields | _member(members, uid), by_user[uid])
        commands += [
            ("DEL", keys.wallet(uid)),
            ("EVALSHA", script.sha, len(load_keys), *load_keys, *load_args),
        ]
        if uid in members:
            score = to_cents(row.realized_pnl)
            for board in (keys.BOARD_OVERALL, keys.board_district(row.district_id)):
                commands.append(("ZADD", board, score, members[uid]))
    await _in_batches(services.redis, commands)
    report.wallets, report.positions, report.board_members = len(rows), len(positions), len(members)


def _arrival_order(row: Any) -> tuple[Any, str]:
    return row.last_close, str(row.user_id)


def _member(members: dict[UUID, str], user_id: UUID) -> dict[str, str]:
    return {"boardMember": members[user_id]} if user_id in members else {}


async def recover_tick_logs(services: Services, states: dict[UUID, InstrumentState]) -> int:
    """The last TICK_LOG_CAP ticks of every instrument, as the Lua scripts write them.
    NOTE: price_ticks keeps no degraded flag; each tick carries the instrument's current one."""
    async with services.engine.connect() as conn:
        rows = (await conn.execute(text(RECENT_TICKS), {"cap": keys.TICK_LOG_CAP})).all()
    commands: list[Command] = []
    for row in rows:
        state = states[row.instrument_id]
        tick = Tick(
            instrument_id=row.instrument_id,
            idx=state.idx,
            seq=row.seq,
            price_cents=to_cents(row.price),
            live_base_price_cents=to_cents(row.live_base_price),
            net_lots_centis=int(row.net_lots * 100),
            source=TickSource(row.source),
            at_ms=wallets.epoch_ms(row.at),
            degraded=state.degraded,
        )
        commands.append(("ZADD", keys.tick_log(row.instrument_id), row.seq, tick.to_json()))
    await _in_batches(services.redis, commands)
    return len(rows)


async def recover(
    services: Services, progress: Callable[[str], None] = lambda _: None
) -> RecoverReport:
    """Rebuild every hot key listed above from Postgres; `progress` gets a line per stage."""
    report = RecoverReport()
    start = time.monotonic()

    async def stage(name: str, run: Callable[[], Awaitable[str]]) -> None:
        began = time.monotonic()
        outcome = await run()
        progress(f"recover: {name}: {outcome} ({time.monotonic() - began:.2f} s)")

    states: dict[UUID, InstrumentState] = {}

    async def instruments() -> str:
        states.update(await recover_instruments(services))
        report.instruments = len(states)
        return f"{report.instruments} instruments"

    async def wallets_and_boards() -> str:
        await recover_wallets(services, report)
        return (
            f"{report.wallets} wallets, {report.positions} open positions,"
            f" {report.board_members} on the boards"
        )

    async def tick_logs() -> str:
        report.ticks = await recover_tick_logs(services, states)
        return f"{report.ticks} ticks"

    async def flags() -> str:
        report.flags = await services.flags.restore()
        return f"{report.flags} flags"

    await stage("instruments", instruments)
    await stage("wallets", wallets_and_boards)
    await stage("tick logs", tick_logs)
    await stage("flags", flags)
    report.seconds = time.monotonic() - start
    return report
