"""The real poller against the simulator playing a knockout level after 90 minutes (SPEC §5.2):
through the brief 5 FT, 4 BREAK, 6, 21, 23 and 9 it stays live and prices move (in 23 too); the
close-out is enqueued once, at 8 FT_PEN."""

from __future__ import annotations

from ftl.market.poller import poll_once
from ftl.ops.scenarios import generate_scenario
from ftl.ops.simulator import Simulator, serve_in_thread
from ftl.sportmonks.breaker import SharedBreaker
from ftl.sportmonks.client import SportmonksClient
from ftl.store.services import Services
from tests.integration.simulated_match import SPEED, Clock
from tests.integration.test_knockouts import fixture_row
from tests.integration.test_poller import live_bases, moved

# (simulated minutes after the kick-off, the state Sportmonks shows then)
JOURNEY = [
    (80.0, 22),
    (105.5, 5),  # the brief FT before extra time
    (108.0, 4),
    (115.0, 6),
    (128.0, 21),
    (131.5, 23),
]
PENALTIES = [(148.0, 9), (157.0, 8)]


async def test_a_knockout_plays_through_extra_time_and_penalties_and_closes_at_8(
    market: Services, clock: Clock
) -> None:
    scenario = generate_scenario(seed=11, fixture_count=1)
    [knockout] = scenario.fixtures
    assert knockout.knockout and knockout.penalties, "the demo knockout goes to penalties"
    simulator = Simulator(scenario, speed=SPEED, clock_s=lambda: clock.seconds)
    breaker = SharedBreaker(market.redis, market.engine, market.scripts)
    with serve_in_thread(simulator) as url:
        client = SportmonksClient(url, "")
        try:
            for minute, state in JOURNEY:
                clock.at_minute(minute)
                outcome = await poll_once(market, client, breaker)
                row = await fixture_row(market, knockout.fixture_id)
                assert (row.feed_state_id, row.knockout) == (state, True)
                assert outcome.live_fixtures == [row.id], f"live in state {state}"
                assert outcome.newly_full_time == [], f"no close-out in state {state}"
            before = await live_bases(market)
            clock.at_minute(145.5)  # minute 120, still state 23
            in_23 = await poll_once(market, client, breaker)
            assert (await fixture_row(market, knockout.fixture_id)).feed_state_id == 23
            assert in_23.ticked_instruments and moved(before, await live_bases(market))
            closed: list[object] = []
            for minute, state in PENALTIES:
                clock.at_minute(minute)
                outcome = await poll_once(market, client, breaker)
                assert (await fixture_row(market, knockout.fixture_id)).feed_state_id == state
                closed.extend(outcome.newly_full_time)
            again = await poll_once(market, client, breaker)
        finally:
            await client.aclose()
    assert closed == [row.id] and again.newly_full_time == [], "closed out once, at 8"
