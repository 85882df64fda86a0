"""Full time (SPEC §1.7): freeze the fixture's instruments, drain in-flight trades, replay the
holders' margin up to now, close every open position at its instrument's snapshot unwind price
(`auto_exit_ft`, rounded against each trader), re-base the players who took part (`postmatch`
ticks), unfreeze.

Idempotent and safe to run twice or concurrently: one run at a time holds the renewed lease
`lease:fulltime:{fixtureId}` (ftl/store/leases.py); positions already closed are skipped by
position_system_close.lua; the re-basing commits in the same Postgres transaction that stamps
`fixtures.closed_out_at`, so it happens once; a rerun after a crash only re-applies the committed
bases to Redis and unfreezes.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ftl.core.errors import Conflict, NotFound
from ftl.core.money import from_cents
from ftl.market import instruments
from ftl.market.prices import apply_base_price
from ftl.market.rules import unwind_cents
from ftl.market.scoring import post_match_rebase
from ftl.sportmonks.payload import ABANDONED_STATE_IDS
from ftl.store import keys
from ftl.store.db.models import Fixture, Instrument, PlayerMatchStats
from ftl.store.leases import Lease
from ftl.store.services import Services
from ftl.store.ticks import TickSource
from ftl.trading import wallets
from ftl.trading.margin import evaluator

DRAIN_S = 0.5  # in-flight trades finish before the snapshot (SPEC §1.7)
LEASE_TTL_MS = 15_000  # renewed while the close-out runs; a dead run's lease is gone this soon
CLOSE_BATCH = 200  # positions per position_system_close.lua call


@dataclass(frozen=True)
class CloseOut:
    fixture_id: UUID
    closed_positions: int
    washouts: int
    rebased_instruments: int
    already_done: bool


async def _fixture_instruments(
    services: Services, fixture_id: UUID
) -> tuple[Fixture, list[Instrument]]:
    async with AsyncSession(services.engine) as session:
        fixture = await session.get(Fixture, fixture_id)
        if fixture is None:
            raise NotFound("not_found", "No such fixture.", {"fixtureId": str(fixture_id)})
        rows = (
            await session.scalars(
                select(Instrument).where(
                    or_(Instrument.team == fixture.home_team, Instrument.team == fixture.away_team)
                )
            )
        ).all()
    return fixture, list(rows)


async def _set_frozen(services: Services, rows: list[Instrument], frozen: bool) -> None:
    """Redis first: the trade scripts read the flag there (409 instrument_frozen)."""
    flag = str(int(frozen))
    async with services.redis.pipeline(transaction=True) as pipe:
        for row in rows:
            pipe.hset(keys.instrument(row.id), "frozen", flag)
        await pipe.execute()
    async with services.engine.begin() as conn:
        await conn.execute(
            update(Instrument).where(Instrument.id.in_([r.id for r in rows])).values(frozen=frozen)
        )


async def _open_positions_on(
    services: Services, instrument_ids: set[str]
) -> list[tuple[str, str, int]]:
    """(position id, instrument id, direction) of every open position on the instruments, from
    hot state (Postgres may lag the trade by one flush)."""
    holders = sorted(
        await evaluator.holders_of(services, [UUID(i) for i in instrument_ids]), key=str
    )
    # PERF: two pipelined round trips, however many holders and positions.
    async with services.redis.pipeline(transaction=False) as pipe:
        for user_id in holders:
            pipe.smembers(keys.open_positions(user_id))
        position_sets: list[set[str]] = await pipe.execute()
    position_ids = sorted(pid for ids in position_sets for pid in ids)
    async with services.redis.pipeline(transaction=False) as pipe:
        for position_id in position_ids:
            pipe.hmget(keys.position(position_id), ["instrumentId", "status", "direction"])
        fields: list[list[str | None]] = await pipe.execute()
    return [
        (position_id, str(instrument_id), int(direction or 0))
        for position_id, (instrument_id, status, direction) in zip(
            position_ids, fields, strict=True
        )
        if instrument_id in instrument_ids and status == "open"
    ]


async def _close_at_snapshot(services: Services, rows: list[Instrument], lease: str) -> int:
    """Close every open position at its instrument's unwind price as the snapshot saw it: the
    average fill of unwinding all of netLots along the curve (docs/decisions/0090), so the
    last traders' own impact is not paid out at the tick price."""
    snapshot = {str(s.id): s for s in await instruments.read_many(services.redis, rows)}
    closes = [
        {
            "p": position_id,
            "x": unwind_cents(
                snapshot[instrument_id].live_base_price_cents,
                snapshot[instrument_id].k_mod_micros,
                snapshot[instrument_id].net_lots_centis,
                direction,
            ),
        }
        for position_id, instrument_id, direction in await _open_positions_on(
            services, set(snapshot)
        )
    ]
    closed = 0
    # PERF: bounded batches, so one fixture's close-out never blocks Redis for long.
    for start in range(0, len(closes), CLOSE_BATCH):
        plan = json.dumps({"closes": closes[start : start + CLOSE_BATCH]})
        while True:
            reply = await services.scripts.call(
                "position_system_close",
                # NOTE: KEYS[1] is the margin watermark in margin runs; full time passes its lease.
                keys=[lease],
                args=["auto_exit_ft", plan],
            )
            if reply[0] == 1:
                break
            if reply[1] != "wallet_missing":
                raise RuntimeError(f"close-out refused: {reply[1]} {reply[2]}")
            # NOTE: the script refused before writing anything; load the wallet, run it again.
            await wallets.load(services, UUID(json.loads(reply[2])["userId"]))
        closed += int(reply[1])
    return closed


def _done_for_this_final(fixture: Fixture) -> bool:
    """Closed out since it last reached a final state. A fixture live again after its close-out
    (docs/decisions/0104) has `full_time_at` stamped anew at its real end, after the old stamp."""
    return fixture.closed_out_at is not None and (
        fixture.full_time_at is None or fixture.closed_out_at >= fixture.full_time_at
    )


def _rebases(fixture: Fixture) -> bool:
    """Re-base once per fixture, and never for a match abandoned or cancelled (SPEC §1.7)."""
    return fixture.closed_out_at is None and fixture.feed_state_id not in ABANDONED_STATE_IDS


async def _rebase_in_postgres(services: Services, fixture: Fixture, rows: list[Instrument]) -> bool:
    """Stamp the close-out and re-base every player with match stats, in one transaction; False
    when another run already did. Only the first close-out of a fixture re-bases."""
    async with services.engine.begin() as conn:
        previous = (
            Fixture.closed_out_at.is_(None)
            if fixture.closed_out_at is None
            else Fixture.closed_out_at == fixture.closed_out_at
        )
        stamped = await conn.execute(
            update(Fixture)
            .where(Fixture.id == fixture.id, previous)
            .values(closed_out_at=func.now())
            .returning(Fixture.id)
        )
        if stamped.first() is None:
            return False
        if not _rebases(fixture):
            return True
        scores = dict(
            (
                await conn.execute(
                    select(PlayerMatchStats.instrument_id, PlayerMatchStats.match_score).where(
                        PlayerMatchStats.fixture_id == fixture.id
                    )
                )
            ).all()
        )
        for row in rows:
            # NOTE: a squad player who did not take part has no stats row and keeps his form.
            score: Decimal | None = scores.get(row.id)
            if score is None:
                continue
            rebase = post_match_rebase(row.form_index, score)
            base = from_cents(rebase.base_price_cents)
            await conn.execute(
                update(Instrument)
                .where(Instrument.id == row.id)
                .values(form_index=rebase.form_index, base_price=base, live_base_price=base)
            )
    return True


async def _apply_bases(services: Services, fixture_id: UUID) -> int:
    """Make Redis carry the re-based prices Postgres committed (a `postmatch` tick each)."""
    _, rows = await _fixture_instruments(services, fixture_id)
    applied = 0
    for row, state in zip(rows, await instruments.read_many(services.redis, rows), strict=True):
        base = int(row.base_price * 100)
        if state.base_price_cents != base:
            await apply_base_price(
                services, row.id, base, TickSource.POSTMATCH, base_price_cents=base
            )
            applied += 1
    return applied


async def close_out(services: Services, fixture_id: UUID) -> CloseOut:
    """Run the full-time close-out of one fixture (SPEC §1.7)."""
    fixture, rows = await _fixture_instruments(services, fixture_id)
    if fixture.full_time_at is None:
        raise Conflict("not_full_time", "The fixture has not reached full time.")
    lease = Lease(services.scripts, f"fulltime:{fixture_id}", LEASE_TTL_MS)
    async with lease as held:
        if not held:
            raise Conflict("close_out_running", "Another close-out of this fixture is running.")
        await _set_frozen(services, rows, True)
        washouts = closed = 0
        already_done = _done_for_this_final(fixture)
        if not already_done:
            await asyncio.sleep(DRAIN_S)
            holders = await evaluator.holders_of(services, [r.id for r in rows])
            washouts = await evaluator.evaluate_users(services, holders)
            closed = await _close_at_snapshot(services, rows, lease.key)
            await _rebase_in_postgres(services, fixture, rows)
        rebased = await _apply_bases(services, fixture_id)
        await _set_frozen(services, rows, False)
    return CloseOut(fixture_id, closed, washouts, rebased, already_done)
