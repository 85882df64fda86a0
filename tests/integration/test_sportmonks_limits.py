"""The rate-limit-aware Sportmonks client and poller against the real simulator on loopback
(SPEC §5.2): a 429 waits and never opens the breaker, the budget is shared through Redis and
stretches the live interval, fixture lists are read to the last page, and odd items in a body are
skipped and counted while the rest prices."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
import redis
from prometheus_client import REGISTRY

from ftl.market.poller import poll_once
from ftl.ops.scenarios import generate_scenario
from ftl.ops.simulator import RATE_LIMIT_WAIT_S, Simulator, serve_in_thread
from ftl.sportmonks import budget
from ftl.sportmonks.breaker import FAILURES_TO_OPEN, BreakerState, SharedBreaker
from ftl.sportmonks.budget import RateLimit, RateLimited
from ftl.sportmonks.client import SportmonksClient, wait_to_s
from ftl.store import keys
from ftl.store.services import Services
from tests.integration.simulated_match import Clock
from tests.integration.test_poller import inject, live_bases, moved
from tests.integration.test_simulated_match import FULL_TIME_MOVES
from workers import poller
from workers.clock import sportmonks_poll_period_ms

PAGE = 4  # fixtures per page here, so the demo's few fixtures span several pages


@pytest.fixture
async def client(sim_url: str) -> AsyncIterator[SportmonksClient]:
    client = SportmonksClient(sim_url, "")
    yield client
    await client.aclose()


def skipped(reason: str) -> float:
    return REGISTRY.get_sample_value("ftl_sportmonks_skipped_total", {"reason": reason}) or 0.0


async def test_a_burst_of_429s_waits_and_never_opens_the_breaker(
    market: Services, client: SportmonksClient, sim_url: str, clock: Clock
) -> None:
    breaker = SharedBreaker(market.redis, market.engine, market.scripts)
    clock.at_minute(30)
    await inject(sim_url, "rate_limited", FAILURES_TO_OPEN * 2)
    with pytest.raises(RateLimited) as limited:
        await poll_once(market, client, breaker)
    assert limited.value.wait_s == RATE_LIMIT_WAIT_S, "the body's resets_in_seconds"
    for _ in range(FAILURES_TO_OPEN * 2):
        with pytest.raises(RateLimited):
            await poll_once(market, client, breaker)  # paused: no call goes out
    assert (await breaker.read()).state is BreakerState.CLOSED
    assert (await breaker.read()).failures == 0
    fields = await market.redis.hgetall(keys.SPORTMONKS_RATE_LIMIT)
    assert fields["remaining"] == "0" and int(fields["pausedUntilMs"]) > 0


@pytest.mark.parametrize(
    ("body", "headers", "wait_s"),
    [
        (b'{"rate_limit": {"resets_in_seconds": 12, "remaining": 0}}', {}, 12),
        (b'{"message": "Too many"}', {"Retry-After": "7"}, 7),
        (b"not json", {}, budget.DEFAULT_WAIT_S),
        (b'{"rate_limit": {"resets_in_seconds": "soon"}}', {"Retry-After": "Wed, 1 Jul"}, 60),
    ],
)
def test_a_429_says_how_long_to_wait(body: bytes, headers: dict[str, str], wait_s: int) -> None:
    assert wait_to_s(httpx.Response(429, content=body, headers=headers)) == wait_s


async def test_remaining_is_recorded_for_the_clock_and_as_a_gauge(
    market: Services, client: SportmonksClient, clock: Clock
) -> None:
    breaker = SharedBreaker(market.redis, market.engine, market.scripts)
    clock.at_minute(30)
    await poll_once(market, client, breaker)
    await poll_once(market, client, breaker)
    fields = await market.redis.hgetall(keys.SPORTMONKS_RATE_LIMIT)
    assert fields["remaining"] == "2998", "the simulator counts two calls of its 3,000"
    assert REGISTRY.get_sample_value("ftl_sportmonks_rate_limit_remaining") == 2998


@pytest.mark.parametrize(
    ("calls_per_hour", "limit", "paused_ms", "period_ms"),
    [
        (3_000, None, 0, 2_000),  # 1,800 calls an hour fit in 3,000
        (1_000, None, 0, 3_600),  # a smaller plan stretches the interval
        (3_000, RateLimit(remaining=100, resets_in_s=1_000), 0, 10_000),  # make what is left last
        (3_000, RateLimit(remaining=0, resets_in_s=40), 0, 40_000),  # spent: wait for the reset
        (3_000, None, 5_000, 5_000),  # after a 429
    ],
)
def test_the_live_interval_stretches_to_the_budget(
    calls_per_hour: int, limit: RateLimit | None, paused_ms: int, period_ms: int
) -> None:
    assert budget.live_period_ms(2_000, calls_per_hour, limit, paused_ms) == period_ms


def test_the_clock_reads_the_budget_from_redis(redis_admin: redis.Redis) -> None:
    redis_admin.set(keys.LIVE_FIXTURES, '["x"]')
    assert sportmonks_poll_period_ms(redis_admin, 3_000) == poller.LIVE_POLL_PERIOD_MS
    assert sportmonks_poll_period_ms(redis_admin, 900) == 4_000
    redis_admin.hset(keys.SPORTMONKS_RATE_LIMIT, mapping={"pausedUntilMs": str(2**62)})
    assert sportmonks_poll_period_ms(redis_admin, 3_000) > 60_000, "no poll while paused"


async def test_fixture_lists_are_read_to_the_last_page(clock: Clock) -> None:
    scenario = generate_scenario(seed=7, fixture_count=PAGE * 3 + 1, spacing_minutes=1.0)
    simulator = Simulator(scenario, speed=60, clock_s=lambda: clock.seconds)
    with serve_in_thread(simulator) as url:
        client = SportmonksClient(url, "", per_page=PAGE)
        try:
            today = simulator.started_at.date()
            fixtures = await client.fixtures_between(today, today + timedelta(days=1))
        finally:
            await client.aclose()
    assert len(fixtures) == len(scenario.fixtures) > PAGE * 3
    assert len({f.fixture_id for f in fixtures}) == len(fixtures)


async def test_odd_items_are_skipped_and_counted_and_the_rest_prices(
    market: Services, client: SportmonksClient, sim_url: str, clock: Clock
) -> None:
    breaker = SharedBreaker(market.redis, market.engine, market.scripts)
    before = await live_bases(market)
    counted = {r: skipped(r) for r in ("event_without_player", "event_player_not_in_lineups")}
    clock.at_minute(95)
    await inject(sim_url, "odd", 1)

    await poll_once(market, client, breaker)

    expected = {**FULL_TIME_MOVES, 184001: 3_780}
    assert moved(before, await live_bases(market)) == expected, "the rest of the body priced"
    assert (await breaker.read()).failures == 0
    for reason, was in counted.items():
        assert skipped(reason) == was + 1, reason
