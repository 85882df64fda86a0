"""`ftl recover`: trade through the API, flush, lose Redis entirely, rebuild it from Postgres and
find the same answers; trading then continues on the same sequences."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from falcon import testing

from ftl import instruments, keys, leaderboard
from ftl.config import Settings
from ftl.flush import Flusher
from ftl.portfolio import portfolio
from ftl.recover import recover
from ftl.services import Services
from tests.integration.trading_helpers import access_token, make_instrument, make_user
from web.app import create_app


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[testing.ASGIConductor]:
    async with testing.ASGIConductor(create_app(settings)) as conductor:
        yield conductor


class Trader:
    def __init__(self, client: testing.ASGIConductor, services: Services, user: UUID) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {access_token(services, user)[0]}"}

    async def open(self, instrument: UUID, request_id: str, **fields: Any) -> str:
        body = {
            "instrumentId": str(instrument),
            "direction": "long",
            "lotSize": 1,
            "clientRequestId": request_id,
            "clientPrice": 100,
            "slippageTolerancePct": 0.05,
            **fields,
        }
        result = await self.client.simulate_post(
            "/api/positions/open",
            body=json.dumps(body),
            headers={**self.headers, "Content-Type": "application/json"},
        )
        assert result.status_code == 201, result.text
        position_id: str = result.json["position"]["id"]
        return position_id

    async def close(self, position_id: str, request_id: str) -> None:
        result = await self.client.simulate_delete(
            f"/api/positions/{position_id}",
            params={"clientRequestId": request_id},
            headers=self.headers,
        )
        assert result.status_code == 200, result.text


async def drain(services: Services) -> None:
    flusher = Flusher(services, "recover")
    while (await flusher.flush()).entries:
        pass


async def snapshot(
    services: Services, users: list[UUID], instrument_ids: list[UUID]
) -> dict[str, Any]:
    """Every hot value recover owns, in comparable form (board members by user and rank)."""
    redis = services.redis
    state: dict[str, Any] = {"prices": await redis.hgetall(keys.PRICES)}
    state["idx"] = await redis.hgetall(keys.INSTRUMENT_IDX)
    state["flags"] = await redis.hgetall(keys.FEATURE_FLAGS)
    for user in users:
        wallet = await redis.hgetall(keys.wallet(user))
        wallet.pop("boardMember", None)  # NOTE: the arrival number is new; ranks are compared
        state[f"wallet {user}"] = wallet
        state[f"portfolio {user}"] = await portfolio(services, user)
        state[f"exposure {user}"] = await redis.hgetall(keys.exposure(user))
        state[f"board {user}"] = await leaderboard.leaderboard(
            services, "overall", None, None, None, user
        )
    for board in (keys.BOARD_OVERALL, keys.board_district(1), keys.board_district(7)):
        entries: list[tuple[str, float]] = await redis.zrevrange(board, 0, -1, withscores=True)  # type: ignore[assignment]
        state[board] = [(leaderboard.user_of(m), score) for m, score in entries]
    for iid in instrument_ids:
        state[f"instrument {iid}"] = await instruments.read(redis, iid)
        state[f"ticklog {iid}"] = await redis.zrange(keys.tick_log(iid), 0, -1, withscores=True)
        state[f"holders {iid}"] = await redis.smembers(keys.holders(iid))
        for stops in (keys.stops_below(iid), keys.stops_above(iid)):
            state[stops] = await redis.zrange(stops, 0, -1, withscores=True)
    return state


async def test_recover_rebuilds_hot_state_and_trading_continues(
    client: testing.ASGIConductor, services: Services, pg_admin: psycopg.Connection
) -> None:
    a = await make_instrument(services, pg_admin, live_base_cents=10_000)
    b = await make_instrument(services, pg_admin, live_base_cents=10_000)
    alice, bob, carol = make_user(pg_admin), make_user(pg_admin), make_user(pg_admin, district_id=7)
    pg_admin.execute(
        "INSERT INTO referrals (id, referrer_id, referred_id) VALUES (%s, %s, %s)",
        (uuid4(), alice, carol),
    )
    await services.flags.set("comingSoon", False)
    as_alice, as_bob, as_carol = (Trader(client, services, u) for u in (alice, bob, carol))

    await as_alice.open(a, "a1", lotSize=2, stopLoss=50, takeProfit=200)
    short = await as_alice.open(b, "a2", direction="short", clientPrice=101)
    bob_long = await as_bob.open(a, "b1", lotSize=3)
    await as_carol.open(b, "c1", lotSize=0.5, takeProfit=300)
    await as_alice.close(short, "a2x")
    await as_bob.close(bob_long, "b1x")
    await as_bob.open(b, "b2", direction="short", lotSize=1.5, stopLoss=150)
    await drain(services)
    await drain(services)  # NOTE: the referral payout the first flush made is flushed too

    users, instrument_ids = [alice, bob, carol], [a, b]
    before = await snapshot(services, users, instrument_ids)
    assert before[f"wallet {alice}"]["bonusCents"] == "50000"
    assert len(before[keys.BOARD_OVERALL]) == 2
    assert before[keys.stops_below(a)] and before[keys.stops_above(b)]

    await services.redis.flushdb()
    not_ready = await client.simulate_get("/ready")
    assert not_ready.status_code == 503
    assert not_ready.json["error"]["details"]["failing"] == ["hotState"]

    report = await recover(services)
    assert (report.instruments, report.wallets, report.positions) == (2, 3, 3)
    assert (await client.simulate_get("/ready")).status_code == 200
    assert await snapshot(services, users, instrument_ids) == before
    await recover(services)  # idempotent
    assert await snapshot(services, users, instrument_ids) == before

    last_seq = before[f"instrument {a}"].seq
    carol_long = await as_carol.open(a, "c2")
    await as_carol.close(carol_long, "c2x")
    log: list[tuple[str, float]] = await services.redis.zrange(
        keys.tick_log(a), 0, -1, withscores=True
    )  # type: ignore[assignment]
    assert [int(score) for _, score in log][-3:] == [last_seq, last_seq + 1, last_seq + 2]
    after = await portfolio(services, carol)
    assert (
        after["balance"]
        == before[f"portfolio {carol}"]["balance"]
        + after["realizedPnl"]
        - (before[f"portfolio {carol}"]["realizedPnl"])
    )
    await drain(services)
    seqs = [
        row[0]
        for row in pg_admin.execute(
            "SELECT seq FROM price_ticks WHERE instrument_id = %s ORDER BY seq", (a,)
        ).fetchall()
    ]
    assert seqs == list(range(1, last_seq + 3))
    board = await leaderboard.leaderboard(services, "overall", None, None, None, carol)
    assert len(board["entries"]) == 3 and board["me"] is not None  # one member per user
