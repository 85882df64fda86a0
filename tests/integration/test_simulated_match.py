"""A scripted match played by the simulator at high speed drives every player's live base exactly
as SPEC §1.3 says; the livescores move fixtures to live and to full time once; the operator's
weights (admin settings) are the ones applied."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ftl.core.errors import InvalidInput
from ftl.market import instruments
from ftl.market.matches import apply_livescores
from ftl.market.scoring import DEFAULT_WEIGHTS, Weights, live_prices
from ftl.market.weights import WEIGHTS_SETTING, read_weights, write_weights
from ftl.sportmonks.client import SportmonksClient
from ftl.sportmonks.payload import MatchPhase, Stat
from ftl.store.db.models import AdminSetting, Fixture, FixtureStatus, Instrument
from ftl.store.services import Services
from tests.integration.simulated_match import Clock

# Live-base change in cents at full time, worked out by hand from the scenario and SPEC §1.3:
# 0.7 × matchScore × 18 points.
FULL_TIME_MOVES = {
    184020: 3_780,  # Lautaro (FWD) goal 3.0
    184013: 2_520,  # Mac Allister (MID) assist 2.0
    184019: 3_780,  # Messi (FWD) 2 shots on target × 1.5
    184004: 7_560,  # Romero (DEF) 3 tackles won × 2.0
    184012: 3_780,  # Enzo Fernández (MID) 2 key passes × 1.5
    184001: 8_820,  # E. Martínez (GK) 1 save × 3.0 + clean sheet 4.0
    186001: 10_710,  # Maignan (GK) 2 saves × 3.0 + 1 inside the box × 2.5, conceded: no clean sheet
    186004: -1_260,  # Saliba yellow card −1.0
    186005: -3_780,  # Upamecano red card −3.0
    186019: -2_520,  # Mbappé penalty missed −2.0
}


async def priced_players(services: Services) -> dict[int, instruments.InstrumentState]:
    async with AsyncSession(services.engine) as session:
        ids = (await session.scalars(select(Instrument.id))).all()
    states = [await instruments.read(services.redis, i) for i in ids]
    return {s.sportmonks_player_id: s for s in states if s is not None}


async def moves(
    sim_url: str, players: dict[int, instruments.InstrumentState], weights: Weights
) -> dict[int, int]:
    client = SportmonksClient(sim_url, "")
    try:
        [fixture] = await client.inplay()
    finally:
        await client.aclose()
    prices = live_prices(
        fixture, players, weights, at_full_time=fixture.phase is MatchPhase.FULL_TIME
    )
    return {
        p.player_id: p.live_base_price_cents - players[p.player_id].base_price_cents
        for p in prices
        if p.live_base_price_cents != players[p.player_id].base_price_cents
    }


async def test_a_goal_by_a_forward_moves_his_price_by_0_7_x_3_x_18(
    market: Services, sim_url: str, clock: Clock
) -> None:
    players = await priced_players(market)
    clock.at_minute(11.5)  # minute 12: the goal is scored in it
    assert await moves(sim_url, players, DEFAULT_WEIGHTS) == {184020: 3_780, 184013: 2_520}
    clock.at_minute(10.5)
    assert await moves(sim_url, players, DEFAULT_WEIGHTS) == {}


async def test_the_whole_match_moves_every_player_as_the_formulas_say(
    market: Services, sim_url: str, clock: Clock
) -> None:
    players = await priced_players(market)
    clock.at_minute(95)  # second half, minute 81: every event played, not full time yet
    live = await moves(sim_url, players, DEFAULT_WEIGHTS)
    assert live == {**FULL_TIME_MOVES, 184001: 3_780}, "the clean sheet waits for full time"
    clock.at_minute(106)
    assert await moves(sim_url, players, DEFAULT_WEIGHTS) == FULL_TIME_MOVES


async def test_the_operators_weights_are_the_ones_applied(
    market: Services, sim_url: str, clock: Clock
) -> None:
    table = DEFAULT_WEIGHTS.to_json()
    table["FWD"]["goals"] = "5.0"
    await write_weights(market.engine, table)
    weights = await read_weights(market.engine)
    clock.at_minute(11.5)
    moved = await moves(sim_url, await priced_players(market), weights)
    assert moved[184020] == 6_300  # 0.7 × 5.0 × 18


async def test_weights_default_to_spec_and_bad_ones_change_nothing(market: Services) -> None:
    assert await read_weights(market.engine) == DEFAULT_WEIGHTS
    table = DEFAULT_WEIGHTS.to_json()
    table["MID"]["goals"] = "4.0"
    await write_weights(market.engine, table)
    with pytest.raises(InvalidInput):
        await write_weights(market.engine, {**table, "MID": {"goals": "x"}})
    assert (await read_weights(market.engine)).weight("MID", Stat.GOALS) == 4
    async with AsyncSession(market.engine) as session:
        stored = await session.get(AdminSetting, WEIGHTS_SETTING)
    assert stored is not None and stored.value["MID"]["goals"] == "4.0"


async def fixture_row(services: Services, sportmonks_id: int) -> Fixture:
    async with AsyncSession(services.engine) as session:
        row = (
            await session.scalars(
                select(Fixture).where(Fixture.sportmonks_fixture_id == sportmonks_id)
            )
        ).one()
    return row


async def test_livescores_move_a_fixture_to_live_and_to_full_time_once(
    market: Services, sim_url: str, clock: Clock
) -> None:
    client = SportmonksClient(sim_url, "")
    try:
        clock.at_minute(30)
        update = await apply_livescores(market.engine, await client.inplay())
        row = await fixture_row(market, 19000003)
        assert update.live == [row.id] and update.newly_full_time == []
        assert (row.status, row.minute, row.home_score, row.away_score) == (
            FixtureStatus.live,
            31,
            1,
            0,
        )
        clock.at_minute(110)
        finished = await client.inplay()
        first = await apply_livescores(market.engine, finished)
        again = await apply_livescores(market.engine, finished)
        assert first.newly_full_time == [row.id] and first.live == []
        assert again.newly_full_time == [], "full time is reported once, however often polled"
        row = await fixture_row(market, 19000003)
        assert row.status is FixtureStatus.finished and row.full_time_at is not None
        clock.at_minute(305)
        update = await apply_livescores(market.engine, await client.inplay())
        assert update.live == [(await fixture_row(market, 19000004)).id]
    finally:
        await client.aclose()
