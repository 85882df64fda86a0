"""Knockouts and the real state catalogue (SPEC §5.2, §1.7): the brief 5 FT before extra time
does not close a level knockout out; 7 and 8 do; an abandoned match closes out without re-basing;
a fixture live again after its close-out closes what was opened since at its real end, and
nothing twice."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import psycopg
import pytest
from falcon import testing
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ftl.market.matches import BRIEF_FT_WAIT, LivescoreUpdate, apply_livescores
from ftl.sportmonks.breaker import set_fixtures_degraded
from ftl.sportmonks.payload import FeedFixture
from ftl.store.db.engine import libpq_url
from ftl.store.db.models import Fixture, FixtureStatus, Instrument
from ftl.store.services import Services
from ftl.trading.fulltime import close_out
from tests.integration.test_fulltime import instrument_of, open_position, position
from tests.integration.test_sportmonks_feed import degraded_players
from tests.integration.trading_helpers import make_user

ARG_FRA = 19000003  # a group fixture of the demo data
LAUTARO = 184020  # ARG
KICK_OFF = datetime(2026, 6, 28, 19, 0, tzinfo=UTC)


@pytest.fixture
def pg(schema: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(libpq_url(schema), autocommit=True) as conn:
        yield conn


def feed(
    state_id: int, home: int = 1, away: int = 1, *, fixture_id: int = ARG_FRA, **extra: bool
) -> FeedFixture:
    return FeedFixture(fixture_id, state_id, 1, 2, home, away, 90, (), **extra)


async def make_knockout(services: Services, fixture_id: int = ARG_FRA) -> UUID:
    async with services.engine.begin() as conn:
        return (
            await conn.execute(
                update(Fixture)
                .where(Fixture.sportmonks_fixture_id == fixture_id)
                .values(knockout=True, stage="Round of 32")
                .returning(Fixture.id)
            )
        ).scalar_one()


async def fixture_row(services: Services, fixture_id: int = ARG_FRA) -> Fixture:
    async with AsyncSession(services.engine) as session:
        return (
            await session.scalars(
                select(Fixture).where(Fixture.sportmonks_fixture_id == fixture_id)
            )
        ).one()


async def play(
    services: Services, states: list[tuple[int, int, int]], at: datetime = KICK_OFF
) -> list[LivescoreUpdate]:
    """Each (state, home goals, away goals) a minute after the one before."""
    return [
        await apply_livescores(services.engine, [feed(s, h, a)], now=at + timedelta(minutes=minute))
        for minute, (s, h, a) in enumerate(states)
    ]


async def test_a_level_knockout_plays_through_the_brief_ft_to_penalties(
    market: Services,
) -> None:
    fixture_id = await make_knockout(market)
    journey = [(2, 0, 0), (3, 0, 0), (22, 1, 1), (5, 1, 1), (4, 1, 1), (6, 1, 1), (21, 1, 1)]
    journey += [(23, 2, 2), (9, 2, 2), (25, 2, 2), (9, 2, 2)]
    updates = await play(market, journey)
    for (state, _, _), step in zip(journey, updates, strict=True):
        assert step.live == [fixture_id] and step.priced == [fixture_id], f"state {state} prices"
        assert step.newly_full_time == [], f"state {state} closes nothing"
    assert (await fixture_row(market)).status is FixtureStatus.live

    final = await apply_livescores(market.engine, [feed(8, 2, 2)], now=KICK_OFF)
    again = await apply_livescores(market.engine, [feed(8, 2, 2)], now=KICK_OFF)
    assert final.newly_full_time == [fixture_id] and final.live == []
    assert again.newly_full_time == [], "the close-out is enqueued once"
    row = await fixture_row(market)
    assert (row.status, row.feed_state_id) == (FixtureStatus.finished, 8)
    assert row.full_time_at is not None


@pytest.mark.parametrize(("knockout", "home", "away"), [(True, 2, 1), (False, 1, 1), (False, 0, 3)])
async def test_five_is_final_unless_a_knockout_is_level(
    market: Services, knockout: bool, home: int, away: int
) -> None:
    if knockout:
        await make_knockout(market)
    row = await fixture_row(market)
    [_, at_five] = await play(market, [(22, home, away), (5, home, away)])
    assert at_five.newly_full_time == [row.id] and at_five.live == []


async def test_a_level_knockout_five_unchanged_for_15_minutes_is_final(
    market: Services,
) -> None:
    fixture_id = await make_knockout(market)
    await play(market, [(22, 0, 0)])
    first = KICK_OFF + timedelta(minutes=95)
    seen = await apply_livescores(market.engine, [feed(5, 0, 0)], now=first)
    almost = await apply_livescores(
        market.engine, [feed(5, 0, 0)], now=first + BRIEF_FT_WAIT - timedelta(seconds=1)
    )
    assert seen.newly_full_time == almost.newly_full_time == []
    assert almost.live == [fixture_id], "still live: polled at the live rate"
    waited = await apply_livescores(market.engine, [feed(5, 0, 0)], now=first + BRIEF_FT_WAIT)
    assert waited.newly_full_time == [fixture_id]


async def test_the_stage_in_the_feed_sets_the_knockout_flag(market: Services) -> None:
    row = await fixture_row(market)
    await apply_livescores(market.engine, [feed(22, knockout=True)], now=KICK_OFF)
    at_five = await apply_livescores(
        market.engine, [feed(5, knockout=True)], now=KICK_OFF + timedelta(minutes=1)
    )
    assert (await fixture_row(market)).knockout is True
    assert at_five.newly_full_time == [] and at_five.live == [row.id]


@pytest.mark.parametrize("state_id", [11, 16, 18, 19])
async def test_a_held_match_stays_live_unpriced(market: Services, state_id: int) -> None:
    row = await fixture_row(market)
    [_, held] = await play(market, [(22, 1, 0), (state_id, 1, 0)])
    assert held.live == held.held == [row.id] and held.priced == []
    assert held.newly_full_time == []


@pytest.mark.parametrize("state_id", [12, 15, 16])
async def test_before_kick_off_a_cancellation_or_delay_changes_nothing(
    market: Services, state_id: int
) -> None:
    [update_] = await play(market, [(state_id, 0, 0)])
    assert update_.live == update_.newly_full_time == []
    assert (await fixture_row(market)).status is FixtureStatus.scheduled


async def record_score(pg: psycopg.Connection, fixture_id: UUID, instrument: Instrument) -> None:
    pg.execute(
        "INSERT INTO player_match_stats (fixture_id, instrument_id, stats, match_score)"
        " VALUES (%s, %s, '{}', 5)",
        (fixture_id, instrument.id),
    )


async def form_of(market: Services, instrument: Instrument) -> Decimal:
    async with AsyncSession(market.engine) as session:
        found = await session.get(Instrument, instrument.id)
        assert found is not None
        return found.form_index


@pytest.mark.parametrize("state_id", [12, 15])
async def test_an_abandoned_match_closes_out_without_rebasing(
    market: Services, api: testing.ASGIConductor, pg: psycopg.Connection, state_id: int
) -> None:
    lautaro = await instrument_of(market, LAUTARO)
    user = make_user(pg)
    opened = await open_position(api, market, user, lautaro.id, "long")
    assert opened.status_code == 201, opened.text
    [_, abandoned] = await play(market, [(22, 1, 0), (state_id, 1, 0)])
    [fixture_id] = abandoned.newly_full_time
    await record_score(pg, fixture_id, lautaro)

    report = await close_out(market, fixture_id)

    assert report.closed_positions == 1 and report.rebased_instruments == 0
    closed = await position(api, market, user, opened.json["position"]["id"])
    assert closed["status"] == "closed" and closed["closedBy"] == "auto_exit_ft"
    assert await form_of(market, lautaro) == lautaro.form_index, "form unchanged"


async def test_live_again_after_the_close_out_closes_what_opened_since_and_nothing_twice(
    market: Services, api: testing.ASGIConductor, pg: psycopg.Connection
) -> None:
    lautaro = await instrument_of(market, LAUTARO)
    user = make_user(pg)
    before = await open_position(api, market, user, lautaro.id, "long")
    assert before.status_code == 201, before.text
    [_, finished] = await play(market, [(22, 1, 0), (5, 1, 0)])
    [fixture_id] = finished.newly_full_time
    await record_score(pg, fixture_id, lautaro)
    first = await close_out(market, fixture_id)
    assert first.closed_positions == 1 and first.rebased_instruments == 1
    rebased_form = await form_of(market, lautaro)

    later = KICK_OFF + timedelta(hours=1)
    back = await apply_livescores(market.engine, [feed(22, 1, 0)], now=later)
    assert back.live == [fixture_id] and back.priced == [], "closed out: prices stay"
    after = await open_position(api, market, user, lautaro.id, "short")
    assert after.status_code == 201, after.text
    end = await apply_livescores(market.engine, [feed(5, 2, 0)], now=later + timedelta(minutes=30))
    assert end.newly_full_time == [fixture_id]

    second = await close_out(market, fixture_id)
    third = await close_out(market, fixture_id)

    assert (second.closed_positions, second.rebased_instruments, second.already_done) == (
        1,
        0,
        False,
    )
    assert third.already_done and third.closed_positions == 0
    closed = await position(api, market, user, after.json["position"]["id"])
    assert closed["status"] == "closed" and closed["closedBy"] == "auto_exit_ft"
    assert await form_of(market, lautaro) == rebased_form, "re-based once"


async def test_the_seed_flags_the_knockout_fixtures(market: Services) -> None:
    assert (await fixture_row(market, 19000013)).knockout is True  # round of 32
    assert (await fixture_row(market, 19000018)).knockout is True  # final
    assert (await fixture_row(market, ARG_FRA)).knockout is False  # group stage


async def test_a_held_match_flags_its_players_until_play_resumes(market: Services) -> None:
    [_, held] = await play(market, [(22, 1, 0), (18, 1, 0)])
    await set_fixtures_degraded(market.engine, market.scripts, held.held, degraded=True)
    flags = await degraded_players(market)
    assert flags.pop("ARG") == flags.pop("FRA") == {True}
    assert all(team == {False} for team in flags.values()), "only the held fixture's players"
    [resumed] = await play(market, [(22, 1, 0)], at=KICK_OFF + timedelta(minutes=10))
    await set_fixtures_degraded(market.engine, market.scripts, resumed.priced, degraded=False)
    assert all(team == {False} for team in (await degraded_players(market)).values())
