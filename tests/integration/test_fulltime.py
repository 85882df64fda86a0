"""Full time (SPEC §1.7): every open position on the fixture closes once at its instrument's
snapshot unwind price, nobody trades during the freeze, the players who took part are re-based,
and running the close-out twice or concurrently closes nothing twice."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
import pytest
from falcon import testing
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ftl.core.errors import Conflict
from ftl.market import instruments
from ftl.market.poller import poll_once
from ftl.market.rules import pre_match_base_price_cents, price_cents, unwind_cents
from ftl.sportmonks.breaker import SharedBreaker
from ftl.sportmonks.client import SportmonksClient
from ftl.store import keys
from ftl.store.db.engine import libpq_url
from ftl.store.db.models import Fixture, Instrument, PlayerMatchStats
from ftl.store.services import Services
from ftl.trading.fulltime import CLOSE_BATCH, close_out
from tests.integration.simulated_match import Clock
from tests.integration.trading_helpers import access_token, make_user

LAUTARO, MBAPPE, MARTINEZ, VINICIUS_TEAM = 184020, 186019, 184001, "BRA"


@pytest.fixture
def pg(schema: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(libpq_url(schema), autocommit=True) as conn:
        yield conn


async def instrument_of(services: Services, player_id: int) -> Instrument:
    async with AsyncSession(services.engine) as session:
        return (
            await session.scalars(
                select(Instrument).where(Instrument.sportmonks_player_id == player_id)
            )
        ).one()


async def any_instrument_of_team(services: Services, team: str) -> Instrument:
    async with AsyncSession(services.engine) as session:
        return (
            await session.scalars(select(Instrument).where(Instrument.team == team).limit(1))
        ).one()


async def open_position(
    api: testing.ASGIConductor,
    services: Services,
    user: UUID,
    instrument: UUID,
    direction: str,
    lot_size: float = 1,
) -> testing.Result:
    token, _ = access_token(services, user)
    state = await instruments.read(services.redis, instrument)
    assert state is not None
    price = price_cents(state.live_base_price_cents, state.k_mod_micros, state.net_lots_centis)
    return await api.simulate_post(
        "/api/positions/open",
        json={
            "instrumentId": str(instrument),
            "direction": direction,
            "lotSize": lot_size,
            "clientRequestId": uuid.uuid4().hex,
            "clientPrice": price / 100,
            "slippageTolerancePct": 0.05,
        },
        headers={"Authorization": f"Bearer {token}"},
    )


async def position(
    api: testing.ASGIConductor, services: Services, user: UUID, position_id: str
) -> dict[str, Any]:
    token, _ = access_token(services, user)
    result = await api.simulate_get(
        f"/api/positions/{position_id}", headers={"Authorization": f"Bearer {token}"}
    )
    assert result.status_code == 200, result.text
    body: dict[str, Any] = result.json
    found: dict[str, Any] = body.get("position", body)
    return found


async def reach_full_time(services: Services, sim_url: str, clock: Clock) -> UUID:
    client = SportmonksClient(sim_url, "")
    breaker = SharedBreaker(services.redis, services.engine, services.scripts)
    try:
        clock.at_minute(95)
        await poll_once(services, client, breaker)
        clock.at_minute(110)
        outcome = await poll_once(services, client, breaker)
    finally:
        await client.aclose()
    [fixture_id] = outcome.newly_full_time
    return fixture_id


async def test_full_time_closes_the_fixture_at_one_price_and_rebases(
    market: Services, api: testing.ASGIConductor, pg: psycopg.Connection, sim_url: str, clock: Clock
) -> None:
    lautaro = await instrument_of(market, LAUTARO)
    mbappe = await instrument_of(market, MBAPPE)
    outsider = await any_instrument_of_team(market, VINICIUS_TEAM)
    users = [make_user(pg) for _ in range(3)]
    opened = []
    for user, (instrument, direction) in zip(
        users, [(lautaro.id, "long"), (lautaro.id, "short"), (mbappe.id, "long")], strict=True
    ):
        result = await open_position(api, market, user, instrument, direction)
        assert result.status_code == 201, result.text
        opened.append((user, result.json["position"]["id"], instrument))
    outside = await open_position(api, market, users[0], outsider.id, "long")
    assert outside.status_code == 201, outside.text

    fixture_id = await reach_full_time(market, sim_url, clock)
    states = {s.id: s for s in await instruments.read_many(market.redis, [lautaro, mbappe])}

    report = await close_out(market, fixture_id)

    assert report.closed_positions == 3 and not report.already_done
    for user, position_id, instrument in opened:
        closed = await position(api, market, user, position_id)
        assert closed["status"] == "closed" and closed["closedBy"] == "auto_exit_ft"
        # the snapshot's unwind price, rounded against each trader
        state = states[instrument]
        unwind = unwind_cents(
            state.live_base_price_cents,
            state.k_mod_micros,
            state.net_lots_centis,
            1 if closed["direction"] == "long" else -1,
        )
        assert Decimal(str(closed["exitPrice"])) == Decimal(unwind) / 100
    still = await position(api, market, users[0], outside.json["position"]["id"])
    assert still["status"] == "open", "other fixtures' instruments are untouched"

    async with AsyncSession(market.engine) as session:
        scores = dict(
            (
                await session.execute(
                    select(PlayerMatchStats.instrument_id, PlayerMatchStats.match_score).where(
                        PlayerMatchStats.fixture_id == fixture_id
                    )
                )
            ).all()
        )
        fixture = await session.get(Fixture, fixture_id)
        rebased = await session.get(Instrument, lautaro.id)
        martinez = (
            await session.scalars(
                select(Instrument).where(Instrument.sportmonks_player_id == MARTINEZ)
            )
        ).one()
    assert fixture is not None and fixture.closed_out_at is not None
    assert scores[lautaro.id] == Decimal("3.0")
    assert scores[martinez.id] == Decimal("7.0"), "one save 3.0 + the clean sheet 4.0 at full time"
    expected_form = (Decimal("0.7") * Decimal(3) + Decimal("0.3") * lautaro.form_index).quantize(
        Decimal("0.01")
    )
    assert rebased is not None and rebased.form_index == expected_form
    hot = await instruments.read(market.redis, lautaro.id)
    assert hot is not None
    assert (
        hot.base_price_cents
        == hot.live_base_price_cents
        == pre_match_base_price_cents(expected_form)
    )
    assert not hot.frozen
    [member] = await market.redis.zrange(keys.tick_log(lautaro.id), -1, -1)
    assert '"s":2' in str(member), "the re-basing is a postmatch tick"


async def test_running_the_close_out_again_changes_nothing(
    market: Services, api: testing.ASGIConductor, pg: psycopg.Connection, sim_url: str, clock: Clock
) -> None:
    lautaro = await instrument_of(market, LAUTARO)
    user = make_user(pg)
    assert (await open_position(api, market, user, lautaro.id, "long")).status_code == 201
    fixture_id = await reach_full_time(market, sim_url, clock)
    first = await close_out(market, fixture_id)
    after_first = await instruments.read(market.redis, lautaro.id)

    second = await close_out(market, fixture_id)

    assert (first.closed_positions, second.closed_positions) == (1, 0)
    assert second.already_done and second.rebased_instruments == 0
    assert await instruments.read(market.redis, lautaro.id) == after_first


async def test_concurrent_close_outs_close_each_position_once(
    market: Services, api: testing.ASGIConductor, pg: psycopg.Connection, sim_url: str, clock: Clock
) -> None:
    lautaro = await instrument_of(market, LAUTARO)
    for _ in range(4):
        assert (
            await open_position(api, market, make_user(pg), lautaro.id, "long")
        ).status_code == 201
    fixture_id = await reach_full_time(market, sim_url, clock)

    results = await asyncio.gather(
        close_out(market, fixture_id), close_out(market, fixture_id), return_exceptions=True
    )

    done = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, Conflict)]
    assert len(done) + len(refused) == 2 and done
    assert sum(r.closed_positions for r in done) == 4
    hot = await instruments.read(market.redis, lautaro.id)
    assert hot is not None and hot.net_lots_centis == 0


async def test_nobody_opens_a_position_during_the_freeze(
    market: Services, api: testing.ASGIConductor, pg: psycopg.Connection, sim_url: str, clock: Clock
) -> None:
    lautaro = await instrument_of(market, LAUTARO)
    fixture_id = await reach_full_time(market, sim_url, clock)
    running = asyncio.create_task(close_out(market, fixture_id))
    while await market.redis.hget(keys.instrument(lautaro.id), "frozen") != "1":  # noqa: ASYNC110
        await asyncio.sleep(0.01)

    during = await open_position(api, market, make_user(pg), lautaro.id, "long")
    await running
    after = await open_position(api, market, make_user(pg), lautaro.id, "long")

    assert during.status_code == 409 and during.json["error"]["code"] == "instrument_frozen"
    assert after.status_code == 201


async def test_a_squad_player_who_did_not_take_part_keeps_his_form(
    market: Services, sim_url: str, clock: Clock
) -> None:
    fixture_id = await reach_full_time(market, sim_url, clock)
    async with AsyncSession(market.engine) as session:
        fixture = await session.get(Fixture, fixture_id)
        assert fixture is not None
        squad = (
            await session.scalars(
                select(Instrument).where(
                    Instrument.team.in_([fixture.home_team, fixture.away_team])
                )
            )
        ).all()
        played = set(
            (
                await session.scalars(
                    select(PlayerMatchStats.instrument_id).where(
                        PlayerMatchStats.fixture_id == fixture_id
                    )
                )
            ).all()
        )
    bench = [row for row in squad if row.id not in played]
    assert played and bench, "the scenario has starters and unused substitutes"

    await close_out(market, fixture_id)

    async with AsyncSession(market.engine) as session:
        for row in bench:
            after = await session.get(Instrument, row.id)
            assert after is not None and after.form_index == row.form_index


async def test_a_close_out_larger_than_one_batch_closes_every_position_once(
    market: Services, api: testing.ASGIConductor, pg: psycopg.Connection, sim_url: str, clock: Clock
) -> None:
    lautaro = await instrument_of(market, LAUTARO)
    per_user, users = 41, 5
    assert per_user * users > CLOSE_BATCH
    for user in [make_user(pg) for _ in range(users)]:
        for _ in range(per_user):
            opened = await open_position(api, market, user, lautaro.id, "long", lot_size=0.01)
            assert opened.status_code == 201, opened.text
    fixture_id = await reach_full_time(market, sim_url, clock)

    first = await close_out(market, fixture_id)
    again = await close_out(market, fixture_id)

    assert (first.closed_positions, again.closed_positions) == (per_user * users, 0)
    hot = await instruments.read(market.redis, lautaro.id)
    assert hot is not None and hot.net_lots_centis == 0
