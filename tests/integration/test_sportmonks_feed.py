"""The Sportmonks client against the real simulator server on a free loopback port, and the
shared breaker it feeds: faults of each kind, degraded flags in Redis and Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ftl.market import instruments
from ftl.ops.scenarios import load_scenario
from ftl.ops.seed import seed
from ftl.ops.simulator import Simulator, serve_in_thread
from ftl.sportmonks.breaker import OPEN_FOR_MS, BreakerOpen, BreakerState, SharedBreaker
from ftl.sportmonks.client import SportmonksClient
from ftl.sportmonks.failures import FailureKind, SportmonksFailure
from ftl.sportmonks.payload import MatchPhase, Stat
from ftl.store import keys
from ftl.store.db.models import Fixture, FixtureStatus, Instrument
from ftl.store.services import Services
from ftl.store.ticks import Tick

SCENARIO = Path(__file__).resolve().parents[1] / "fixtures" / "sportmonks" / "scripted_match.json"
CLIENT_TIMEOUT_S = 0.2
LIVE_FIXTURE = 19000003  # ARG v FRA in the scenario


class Clock:
    """Seconds for the simulator, milliseconds for the breaker; moved by hand."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def ms(self) -> int:
        return int(self.seconds * 1000)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def simulator(clock: Clock) -> Simulator:
    # speed 60: one match minute per simulated second
    return Simulator(
        load_scenario(SCENARIO), speed=60, clock_s=lambda: clock.seconds, timeout_fault_s=1.0
    )


@pytest.fixture
def sim_url(simulator: Simulator) -> Iterator[str]:
    with serve_in_thread(simulator) as url:
        yield url


@pytest.fixture
async def client(sim_url: str) -> AsyncIterator[SportmonksClient]:
    client = SportmonksClient(sim_url, "", timeout_s=CLIENT_TIMEOUT_S)
    yield client
    await client.aclose()


async def test_inplay_reads_the_match_as_scripted(client: SportmonksClient, clock: Clock) -> None:
    clock.seconds = 25.5  # match minute 26
    [fixture] = await client.inplay()
    assert (fixture.fixture_id, fixture.phase, fixture.minute) == (
        LIVE_FIXTURE,
        MatchPhase.LIVE,
        26,
    )
    assert (fixture.home_goals, fixture.away_goals) == (1, 0)
    stats = {p.player_id: dict(p.stats) for p in fixture.players if p.stats}
    assert stats == {
        184020: {Stat.GOALS: 1},
        184013: {Stat.ASSISTS: 1},
        184019: {Stat.SHOTS_ON_TARGET: 2},
        184004: {Stat.TACKLES: 3},
    }
    assert len(fixture.players) == 46, "both squads: starters and bench"


async def test_full_time_and_the_schedule(client: SportmonksClient, clock: Clock) -> None:
    clock.seconds = 106
    [fixture] = await client.inplay()
    assert (fixture.phase, fixture.minute) == (MatchPhase.FULL_TIME, 90)
    clock.seconds = 130
    assert await client.inplay() == [], "gone 15 minutes after full time"
    today = datetime.now(UTC).date()
    schedule = await client.fixtures_between(today, today + timedelta(days=1))
    assert {f.fixture_id: f.phase for f in schedule} == {
        LIVE_FIXTURE: MatchPhase.FULL_TIME,
        19000004: MatchPhase.SCHEDULED,
    }


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ("server_error", FailureKind.SERVER_ERROR),
        ("timeout", FailureKind.TIMEOUT),
        ("malformed", FailureKind.MALFORMED),
        ("schema", FailureKind.MALFORMED),
    ],
)
async def test_each_injected_fault_is_a_typed_failure(
    client: SportmonksClient, simulator: Simulator, clock: Clock, fault: str, kind: FailureKind
) -> None:
    clock.seconds = 10
    simulator.inject(fault, 1)
    with pytest.raises(SportmonksFailure) as failed:
        await client.inplay()
    assert failed.value.failure is kind
    assert len(await client.inplay()) == 1, "the next answer is good again"


async def test_faults_are_injected_over_http(sim_url: str, client: SportmonksClient) -> None:
    control = sim_url.split("/v3/")[0] + "/_sim/faults"
    async with httpx.AsyncClient() as http:
        assert (
            await http.post(control, json={"kind": "server_error", "count": 2})
        ).status_code == 202
        assert (await http.post(control, json={"kind": "flood", "count": 2})).status_code == 400
    for _ in range(2):
        with pytest.raises(SportmonksFailure):
            await client.inplay()
    assert await client.inplay() is not None


async def test_the_token_is_checked(clock: Clock) -> None:
    guarded = Simulator(load_scenario(SCENARIO), api_token="s3cret", clock_s=lambda: clock.seconds)
    with serve_in_thread(guarded) as url:
        wrong = SportmonksClient(url, "guess")
        right = SportmonksClient(url, "s3cret")
        try:
            with pytest.raises(SportmonksFailure) as refused:
                await wrong.inplay()
            assert refused.value.failure is FailureKind.SERVER_ERROR
            assert len(await right.inplay()) == 1
            async with httpx.AsyncClient() as http:
                as_query = await http.get(
                    f"{url}/livescores/inplay", params={"api_token": "s3cret"}
                )
            assert as_query.status_code == 200
        finally:
            await wrong.aclose()
            await right.aclose()


async def degraded_players(services: Services) -> dict[str, set[bool]]:
    """Per team: the set of degraded flags of its instruments, in Postgres and in Redis."""
    async with AsyncSession(services.engine) as session:
        rows = (await session.scalars(select(Instrument))).all()
    flags: dict[str, set[bool]] = {}
    for row in rows:
        hot = await instruments.read(services.redis, row.id)
        assert hot is not None
        flags.setdefault(row.team, set()).update({row.degraded, hot.degraded})
    return flags


@pytest.fixture
async def market(services: Services) -> Services:
    """The seeded market with ARG v FRA live in Postgres."""
    await seed(services.engine, services.redis, admin_email="admin@ftl.test")
    async with services.engine.begin() as conn:
        await conn.execute(
            update(Fixture)
            .where(Fixture.sportmonks_fixture_id == LIVE_FIXTURE)
            .values(status=FixtureStatus.live)
        )
    return services


@pytest.mark.parametrize("fault", ["server_error", "timeout", "malformed", "schema"])
async def test_five_failures_of_a_kind_open_the_breaker_and_degrade_the_live_fixture(
    market: Services, client: SportmonksClient, simulator: Simulator, clock: Clock, fault: str
) -> None:
    breaker = SharedBreaker(market.redis, market.engine, market.scripts, clock_ms=clock.ms)
    clock.seconds = 10
    simulator.inject(fault, 5)
    for _ in range(4):
        with pytest.raises(SportmonksFailure):
            await breaker.call(client.inplay)
    assert (await breaker.read()).state is BreakerState.CLOSED
    assert all(flags == {False} for flags in (await degraded_players(market)).values())

    with pytest.raises(SportmonksFailure):
        await breaker.call(client.inplay)
    assert (await breaker.read()).state is BreakerState.OPEN
    flags = await degraded_players(market)
    assert flags.pop("ARG") == flags.pop("FRA") == {True}
    assert all(team == {False} for team in flags.values()), "only the live fixture's players"

    with pytest.raises(BreakerOpen):
        await breaker.call(client.inplay)  # the feed is good again, but nobody asks it yet

    clock.seconds += OPEN_FOR_MS / 1000
    assert len(await breaker.call(client.inplay)) == 1, "the probe goes through"
    assert (await breaker.read()).state is BreakerState.CLOSED
    assert all(flags == {False} for flags in (await degraded_players(market)).values())


async def test_a_failed_probe_keeps_it_open_and_degraded(
    market: Services, client: SportmonksClient, simulator: Simulator, clock: Clock
) -> None:
    breaker = SharedBreaker(market.redis, market.engine, market.scripts, clock_ms=clock.ms)
    simulator.inject("server_error", 6)
    for _ in range(5):
        with pytest.raises(SportmonksFailure):
            await breaker.call(client.inplay)
    clock.seconds += OPEN_FOR_MS / 1000
    with pytest.raises(SportmonksFailure):
        await breaker.call(client.inplay)  # the probe fails
    assert (await breaker.read()).state is BreakerState.OPEN
    with pytest.raises(BreakerOpen):
        await breaker.call(client.inplay)
    assert (await degraded_players(market))["ARG"] == {True}


async def test_two_pollers_share_one_breaker(
    market: Services, client: SportmonksClient, simulator: Simulator, clock: Clock
) -> None:
    first = SharedBreaker(market.redis, market.engine, market.scripts, clock_ms=clock.ms)
    second = SharedBreaker(market.redis, market.engine, market.scripts, clock_ms=clock.ms)
    simulator.inject("server_error", 5)
    for breaker in (first, second, first, second, first):
        with pytest.raises(SportmonksFailure):
            await breaker.call(client.inplay)
    with pytest.raises(BreakerOpen):
        await second.call(client.inplay)


async def last_tick(services: Services, team: str) -> Tick:
    async with AsyncSession(services.engine) as session:
        row = (
            await session.scalars(
                select(Instrument).where(Instrument.team == team).order_by(Instrument.idx)
            )
        ).first()
    assert row is not None
    members = await services.redis.zrange(keys.tick_log(row.id), -1, -1)
    return Tick.from_json(str(members[0]))


async def test_subscribers_see_degraded_flip_in_a_tick_at_the_same_price(
    market: Services, client: SportmonksClient, simulator: Simulator, clock: Clock
) -> None:
    breaker = SharedBreaker(market.redis, market.engine, market.scripts, clock_ms=clock.ms)
    clock.seconds = 10
    simulator.inject("server_error", 5)
    for _ in range(5):
        with pytest.raises(SportmonksFailure):
            await breaker.call(client.inplay)

    flagged = await last_tick(market, "ARG")
    assert flagged.degraded and flagged.seq == 1
    assert flagged.price_cents == flagged.live_base_price_cents, "the price did not move"

    clock.seconds += OPEN_FOR_MS / 1000
    await breaker.call(client.inplay)
    cleared = await last_tick(market, "ARG")
    assert not cleared.degraded and cleared.seq == 2
    assert cleared.price_cents == flagged.price_cents
