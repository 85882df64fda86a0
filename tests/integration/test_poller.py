"""The poller turns a simulated match into `live` ticks exactly as the scoring formulas say, is
idempotent, and never moves a price on a failed or malformed poll."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ftl.core.errors import Unavailable
from ftl.market import instruments
from ftl.market.poller import poll_once
from ftl.sportmonks.breaker import SharedBreaker
from ftl.sportmonks.client import SportmonksClient
from ftl.sportmonks.failures import SportmonksFailure
from ftl.store import keys
from ftl.store.db.models import Instrument
from ftl.store.services import Services
from ftl.store.ticks import Tick, TickSource
from tests.integration.simulated_match import Clock
from tests.integration.test_simulated_match import FULL_TIME_MOVES

ARG_FRA = 19000003


@pytest.fixture
async def client(sim_url: str) -> AsyncIterator[SportmonksClient]:
    client = SportmonksClient(sim_url, "")
    yield client
    await client.aclose()


async def hot_states(services: Services) -> dict[int, instruments.InstrumentState]:
    """Sportmonks player id → the instrument's hot state."""
    async with AsyncSession(services.engine) as session:
        rows = (await session.scalars(select(Instrument))).all()
    return {s.sportmonks_player_id: s for s in await instruments.read_many(services.redis, rows)}


async def live_bases(services: Services) -> dict[int, int]:
    return {p: s.live_base_price_cents for p, s in (await hot_states(services)).items()}


async def last_tick(services: Services, player_id: int) -> Tick:
    instrument_id = (await hot_states(services))[player_id].id
    members = await services.redis.zrange(keys.tick_log(instrument_id), -1, -1)
    return Tick.from_json(str(members[0]))


async def inject(sim_url: str, fault: str, count: int) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            sim_url.split("/v3/")[0] + "/_sim/faults", json={"kind": fault, "count": count}
        )
        answer.raise_for_status()


def moved(before: dict[int, int], after: dict[int, int]) -> dict[int, int]:
    return {p: after[p] - before[p] for p in before if after[p] != before[p]}


async def test_a_live_match_ticks_every_player_who_moved_by_the_formula(
    market: Services, client: SportmonksClient, clock: Clock
) -> None:
    breaker = SharedBreaker(market.redis, market.engine, market.scripts)
    before = await live_bases(market)
    clock.at_minute(95)  # minute 81 of the match: every event played, not yet full time

    outcome = await poll_once(market, client, breaker)

    expected = {**FULL_TIME_MOVES, 184001: 3_780}  # the clean sheet waits for full time
    assert moved(before, await live_bases(market)) == expected
    assert len(outcome.ticked_instruments) == len(expected)
    assert len(outcome.live_fixtures) == 1 and outcome.newly_full_time == []
    goal = await last_tick(market, 184020)
    assert (goal.source, goal.live_base_price_cents) == (TickSource.LIVE, before[184020] + 3_780)
    assert await market.redis.get(keys.LIVE_FIXTURES) == f'["{outcome.live_fixtures[0]}"]'


async def test_polling_the_same_minute_again_makes_no_tick(
    market: Services, client: SportmonksClient, clock: Clock
) -> None:
    breaker = SharedBreaker(market.redis, market.engine, market.scripts)
    clock.at_minute(15)
    first = await poll_once(market, client, breaker)
    again = await poll_once(market, client, breaker)
    assert len(first.ticked_instruments) == 2  # the goal: scorer and assist
    assert again.ticked_instruments == []


async def test_full_time_is_reported_once_and_not_priced_by_the_poller(
    market: Services, client: SportmonksClient, clock: Clock
) -> None:
    breaker = SharedBreaker(market.redis, market.engine, market.scripts)
    clock.at_minute(110)
    first = await poll_once(market, client, breaker)
    again = await poll_once(market, client, breaker)
    assert len(first.newly_full_time) == 1 and again.newly_full_time == []
    assert first.ticked_instruments == [], "the close-out prices full time, not the poller"


@pytest.mark.parametrize("fault", ["server_error", "malformed", "schema"])
async def test_a_failed_poll_moves_no_price(
    market: Services, client: SportmonksClient, clock: Clock, sim_url: str, fault: str
) -> None:
    breaker = SharedBreaker(market.redis, market.engine, market.scripts)
    before = await live_bases(market)
    clock.at_minute(95)
    await inject(sim_url, fault, 1)
    with pytest.raises(SportmonksFailure):
        await poll_once(market, client, breaker)
    assert await live_bases(market) == before


async def test_an_open_breaker_stops_polling_and_moves_no_price(
    market: Services, client: SportmonksClient, clock: Clock, sim_url: str
) -> None:
    breaker = SharedBreaker(market.redis, market.engine, market.scripts)
    before = await live_bases(market)
    clock.at_minute(95)
    await inject(sim_url, "server_error", 5)
    for _ in range(5):
        with pytest.raises(SportmonksFailure):
            await poll_once(market, client, breaker)
    with pytest.raises(Unavailable):
        await poll_once(market, client, breaker)
    assert await live_bases(market) == before
