"""`ftl recover`: trade through the API, flush, lose Redis entirely, rebuild it from Postgres and
find the same answers; trading then continues on the same sequences. A referral payout cut off
halfway is not paid again, and a margin replay after the loss does not judge old ticks against
the balance a later washout left (docs/decisions/0051)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from falcon import testing

from ftl.core.config import Settings
from ftl.market import instruments, leaderboard
from ftl.ops.flush import Flusher
from ftl.ops.health import hot_state_lost
from ftl.ops.recover import recover
from ftl.store import keys
from ftl.store.services import Services
from ftl.trading.portfolio import portfolio
from tests.integration.margin_helpers import (
    CLOCK_STEP_S,
    balance,
    evaluate,
    move,
    open_position,
    persist,
)
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
        state[f"held {user}"] = await redis.hgetall(keys.held(user))
        open_ids: set[str] = await redis.smembers(keys.open_positions(user))  # type: ignore[assignment]
        state[f"positions {user}"] = open_ids
        for pid in open_ids:
            state[f"position {pid}"] = await redis.hgetall(keys.position(pid))
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
    # NOTE: scores apart (bob 0.00, alice −3.00): recover orders a tie by the close time, in ms
    bob_long = await as_bob.open(a, "b1", lotSize=2)
    await as_carol.open(b, "c1", lotSize=0.5, takeProfit=300)
    await as_alice.close(short, "a2x")
    await as_bob.close(bob_long, "b1x")
    await as_bob.open(b, "b2", direction="short", lotSize=1.5, stopLoss=150)
    # NOTE: hedged (no net lots on a) yet a holder of a: full time must find him (0090's fills)
    carol_hedge = [
        await as_carol.open(a, "c-long", lotSize=1),
        await as_carol.open(a, "c-short", direction="short", lotSize=1),
    ]
    await drain(services)
    await drain(services)  # NOTE: the referral payout the first flush made is flushed too

    users, instrument_ids = [alice, bob, carol], [a, b]
    before = await snapshot(services, users, instrument_ids)
    assert before[f"wallet {alice}"]["bonusCents"] == "50000"
    assert len(before[keys.BOARD_OVERALL]) == 2
    assert before[keys.stops_below(a)] and before[keys.stops_above(b)]
    assert str(carol) in before[f"holders {a}"]
    assert before[f"held {carol}"] == {str(a): "2", str(b): "1"}

    assert not await hot_state_lost(services)
    await services.redis.flushdb()
    assert await hot_state_lost(services)  # what `ftl recover --if-lost` (make run) asks
    not_ready = await client.simulate_get("/ready")
    assert not_ready.status_code == 503
    assert not_ready.json["error"]["details"]["failing"] == ["hotState"]

    report = await recover(services)
    assert (report.instruments, report.wallets, report.positions) == (2, 3, 5)
    assert (await client.simulate_get("/ready")).status_code == 200
    assert not await hot_state_lost(services)
    assert await snapshot(services, users, instrument_ids) == before
    # NOTE: no safe box survives: every restored holder waits for his next margin pass (0166).
    unboxed: set[str] = await services.redis.smembers(keys.MARGIN_UNBOXED)  # type: ignore[assignment]
    assert {str(u) for u in users} <= unboxed
    assert await services.redis.exists(keys.MARGIN_INDEXED)
    await recover(services)  # idempotent
    assert await snapshot(services, users, instrument_ids) == before

    # Instruments present (as `ftl seed` reloads them) but the boards gone: not ready either.
    await services.redis.delete(keys.BOARD_OVERALL)
    not_ready = await client.simulate_get("/ready")
    assert not_ready.status_code == 503
    assert not_ready.json["error"]["details"]["failing"] == ["hotState"]
    await recover(services)
    assert (await client.simulate_get("/ready")).status_code == 200

    # Hot state from before the holders' counts (decision 0094's addendum): a recover is due.
    await services.redis.delete(*(keys.held(u) for u in users))
    assert await hot_state_lost(services)
    await recover(services)
    assert await snapshot(services, users, instrument_ids) == before
    assert not await hot_state_lost(services)

    last_seq = before[f"instrument {a}"].seq
    carol_long = await as_carol.open(a, "c2")
    await as_carol.close(carol_long, "c2x")
    log: list[tuple[str, float]] = await services.redis.zrange(
        keys.tick_log(a), 0, -1, withscores=True
    )  # type: ignore[assignment]
    assert [int(score) for _, score in log][-3:] == [last_seq, last_seq + 1, last_seq + 2]
    after = await portfolio(services, carol)
    assert after.balance == before[f"portfolio {carol}"].balance + after.realized_pnl - (
        before[f"portfolio {carol}"].realized_pnl
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
    assert len(board.entries) == 3 and board.me is not None  # one member per user

    # The rebuilt counts keep the index: a close of one leg of the hedge (net lots back to ±1,
    # then 0 with the other) leaves carol a holder until her last position on `a` closes.
    await as_carol.close(carol_hedge[0], "c-long-x")
    assert await services.redis.sismember(keys.holders(a), str(carol))
    await as_carol.close(carol_hedge[1], "c-short-x")
    assert not await services.redis.sismember(keys.holders(a), str(carol))
    assert await services.redis.hgetall(keys.held(carol)) == {str(b): "1"}


async def test_a_referral_credited_before_redis_was_lost_is_not_paid_again(
    client: testing.ASGIConductor, services: Services, pg_admin: psycopg.Connection
) -> None:
    a = await make_instrument(services, pg_admin, live_base_cents=10_000)
    alice, carol = make_user(pg_admin), make_user(pg_admin)
    referral = uuid4()
    pg_admin.execute(
        "INSERT INTO referrals (id, referrer_id, referred_id) VALUES (%s, %s, %s)",
        (referral, alice, carol),
    )
    await services.flags.set("comingSoon", False)
    as_carol = Trader(client, services, carol)
    await as_carol.open(a, "c1")
    await drain(services)  # carol's first open, and alice's payout (referral_pay.lua)
    # NOTE: as if the flusher died between referral_pay.lua and its UPDATE of the row ...
    pg_admin.execute("UPDATE referrals SET paid_at = NULL, bonus = 0 WHERE id = %s", (referral,))
    await drain(services)  # ... and another flush wrote the credit before Redis was lost
    assert balance(pg_admin, alice) == Decimal("10500.00")

    await services.redis.flushdb()
    report = await recover(services)

    assert report.payouts_completed == 1
    row = pg_admin.execute(
        "SELECT paid_at IS NOT NULL, bonus FROM referrals WHERE id = %s", (referral,)
    ).fetchone()
    assert row == (True, Decimal("500.00"))
    assert "referralId" not in await services.redis.hgetall(keys.wallet(carol))
    assert await services.redis.hget(keys.wallet(alice), "paidReferrals") == "1"
    await as_carol.open(a, "c2")
    await drain(services)
    await drain(services)
    assert balance(pg_admin, alice) == Decimal("10500.00")
    assert await services.redis.hget(keys.wallet(alice), "balanceCents") == "1050000"


async def test_recover_clears_the_margin_safe_boxes(services: Services) -> None:
    boxes = [keys.margin_box(uuid4()) for _ in range(3)]
    for name in boxes:
        await services.redis.set(name, "1:100000:0:1|")
    instrument, user = uuid4(), str(uuid4())
    await services.redis.zadd(keys.margin_floor(instrument), {user: 9_000})
    await services.redis.zadd(keys.margin_since(instrument), {user: 7})
    await services.redis.set(keys.margin_checked(instrument), 7)

    lines: list[str] = []
    await recover(services, lines.append)

    assert await services.redis.exists(*boxes) == 0
    # NOTE: the index goes with the boxes; every restored user is in margin:unboxed instead.
    index = [keys.margin_floor, keys.margin_since, keys.margin_checked]
    assert not await services.redis.exists(*(name(instrument) for name in index))
    assert await services.redis.exists(keys.MARGIN_INDEXED)
    assert any(line.startswith("recover: margin boxes: 3 cleared") for line in lines)


async def test_a_replay_after_recover_starts_at_the_last_close_not_at_the_opens(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    """2,000.00 points, a long lot on X and one on Y at 100.00 (margin 1,000.00 each). X rises
    while Y dips to 94.00 (level 120 %), Y recovers, then X falls to 88.00: 40 %, X washes out
    (-1,200.00) and 80 % remain. Judged from the opens against the balance after that washout,
    Y's dip would read 20 % and wash Y out as well, for a loss that had not happened yet."""
    user = make_user(pg_admin, balance="2000.00")
    x = await make_instrument(services, pg_admin, live_base_cents=10_000, k_mod=Decimal(0))
    y = await make_instrument(services, pg_admin, live_base_cents=10_000, k_mod=Decimal(0))
    on_x = await open_position(services, user, x, "long", 100, 10_000)
    on_y = await open_position(services, user, y, "long", 100, 10_000)

    async def step(instrument: UUID, live_base_cents: int) -> int:
        # NOTE: a millisecond apart, so the replay's order is the order of the moves.
        await asyncio.sleep(CLOCK_STEP_S)
        return await move(services, instrument, live_base_cents)

    await step(x, 11_000)
    await step(y, 9_400)
    y_seq = await step(y, 10_000)
    await step(x, 8_800)
    assert (await evaluate(services, user)).closed == 1
    await persist(services)
    await persist(services)
    assert balance(pg_admin, user) == Decimal("800.00")

    await services.redis.flushdb()
    report = await recover(services)

    assert report.watermarks == 1
    watermark = await services.redis.hgetall(keys.margin_watermark(user))
    assert watermark == {"v": "0", "below": "1", str(y): str(y_seq)}
    assert (await evaluate(services, user)).closed == 0
    assert await services.redis.smembers(keys.open_positions(user)) == {str(on_y)}
    closed = pg_admin.execute(
        "SELECT id FROM cfd_positions WHERE user_id = %s AND status = 'closed'", (user,)
    ).fetchall()
    assert closed == [(on_x,)]
