"""One Sportmonks poll (SPEC §5.2): in-play livescores → fixture status, minute and score →
each player's matchScore → a `live` tick for every instrument whose live base price changed.

The poll is idempotent: replaying the same livescores writes the same rows and emits no tick,
because a tick is only made when the live base actually moves. Malformed payloads, timeouts and
5xx are counted by the shared breaker and never move a price.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from uuid import UUID

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from ftl.market import instruments
from ftl.market.matches import apply_livescores
from ftl.market.prices import apply_base_price
from ftl.market.scoring import LivePrice, live_prices
from ftl.market.weights import read_weights
from ftl.sportmonks import budget
from ftl.sportmonks.breaker import SharedBreaker, set_fixtures_degraded, wall_clock_ms
from ftl.sportmonks.budget import RateLimited
from ftl.sportmonks.client import SportmonksClient
from ftl.sportmonks.payload import FeedFixture
from ftl.store import keys
from ftl.store.db.models import Fixture, Instrument, PlayerMatchStats
from ftl.store.services import Services
from ftl.store.ticks import TickSource

LIVE_FIXTURES_TTL_S = 120  # the clock polls fast while this says a fixture is live


@dataclass
class PollOutcome:
    live_fixtures: list[UUID] = field(default_factory=list)
    newly_full_time: list[UUID] = field(default_factory=list)
    ticked_instruments: list[UUID] = field(default_factory=list)


async def _hot_states_by_player(
    services: Services, player_ids: Iterable[int]
) -> dict[int, instruments.InstrumentState]:
    """Hot state of the instruments of these Sportmonks players (players we do not trade are
    simply absent)."""
    async with AsyncSession(services.engine) as session:
        rows = (
            await session.scalars(
                select(Instrument).where(Instrument.sportmonks_player_id.in_(set(player_ids)))
            )
        ).all()
    states = await instruments.read_many(services.redis, rows)
    return {state.sportmonks_player_id: state for state in states}


Scored = tuple[FeedFixture, dict[int, instruments.InstrumentState], list[LivePrice]]


async def _record_stats(
    services: Services, fixture_ids: dict[int, UUID], scored: list[Scored]
) -> None:
    """Upsert the counts and matchScore so far of each priced player who took part
    (`player_match_stats`); the full-time re-basing reads exactly these rows."""
    rows: list[dict[str, object]] = []
    for feed, states, prices in scored:
        lines = {line.player_id: line for line in feed.players}
        rows.extend(
            {
                "fixture_id": fixture_ids[feed.fixture_id],
                "instrument_id": states[price.player_id].id,
                "stats": {
                    stat.value: count for stat, count in lines[price.player_id].stats.items()
                },
                "match_score": price.match_score,
            }
            for price in prices
            # NOTE: an unused substitute gets no row, so full time leaves his form alone.
            if lines[price.player_id].took_part
        )
    if not rows:
        return
    statement = insert(PlayerMatchStats).values(rows)
    async with services.engine.begin() as conn:
        await conn.execute(
            statement.on_conflict_do_update(
                index_elements=["fixture_id", "instrument_id"],
                set_={
                    "stats": statement.excluded.stats,
                    "match_score": statement.excluded.match_score,
                    "updated_at": func.now(),
                },
            )
        )


async def poll_once(
    services: Services, client: SportmonksClient, breaker: SharedBreaker
) -> PollOutcome:
    """Fetch in-play fixtures through the breaker and price every live player who moved.

    Held fixtures and those already closed out (live again afterwards, docs/decisions/0104) are
    not priced; a fixture that just reached a final state has its final stats recorded for the
    close-out, which prices full time itself.

    Raises BreakerOpen while the breaker is open, SportmonksFailure on a failed fetch (the
    breaker has counted it), RateLimited on a 429 or while its pause runs (not counted);
    nothing is priced then.
    """
    now_ms = wall_clock_ms()
    paused_for_ms = await budget.paused_for_ms(services.redis, now_ms)
    if paused_for_ms > 0:
        raise RateLimited(-(-paused_for_ms // 1000))  # NOTE: after a 429, no call until the reset
    try:
        feed = await breaker.call(client.inplay)
    except RateLimited as limited:
        await budget.pause(services.redis, limited.wait_s, now_ms)
        raise
    if client.rate_limit is not None:
        await budget.record(services.redis, client.rate_limit, now_ms)
    update = await apply_livescores(services.engine, feed)
    outcome = PollOutcome(list(update.live), list(update.newly_full_time))
    # NOTE: a hold keeps prices and flags them; play resumed (and the breaker closed, since
    # this poll answered) clears the flag.
    await set_fixtures_degraded(services.engine, services.scripts, update.held, degraded=True)
    await set_fixtures_degraded(services.engine, services.scripts, update.priced, degraded=False)
    await services.redis.set(
        keys.LIVE_FIXTURES, json.dumps([str(i) for i in update.live]), ex=LIVE_FIXTURES_TTL_S
    )
    async with services.engine.connect() as conn:
        known = await conn.execute(
            select(Fixture.sportmonks_fixture_id, Fixture.id).where(
                Fixture.id.in_([*update.priced, *update.newly_full_time])
            )
        )
        fixture_ids = {row[0]: row[1] for row in known}
    if not fixture_ids:
        return outcome
    weights = await read_weights(services.engine)
    scored: list[Scored] = []
    for fixture in feed:
        if fixture.fixture_id not in fixture_ids:
            continue
        states = await _hot_states_by_player(services, (p.player_id for p in fixture.players))
        at_full_time = fixture_ids[fixture.fixture_id] in update.newly_full_time
        prices = live_prices(fixture, states, weights, at_full_time=at_full_time)
        scored.append((fixture, states, prices))
        if at_full_time:
            # NOTE: the final scores (clean sheet included) are recorded for the close-out,
            # which prices full time itself.
            continue
        for price in prices:
            state = states[price.player_id]
            # NOTE: a frozen instrument (full-time close-out under way) keeps its snapshot price.
            if state.frozen or price.live_base_price_cents == state.live_base_price_cents:
                continue
            await apply_base_price(services, state.id, price.live_base_price_cents, TickSource.LIVE)
            outcome.ticked_instruments.append(state.id)
    await _record_stats(services, fixture_ids, scored)
    return outcome
