"""The trade scripts against real Redis: the rules of SPEC §1.4 to the cent."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
import pytest

from ftl.market import prices, rules
from ftl.ops.flush import Flusher
from ftl.store import keys
from ftl.store.services import Services
from ftl.store.ticks import Tick, TickSource
from ftl.trading import referral_payout, trades
from tests.integration.trading_helpers import make_instrument, make_user
from web.body import decode
from web.schemas import OpenPositionBody


def order(instrument_id: UUID, request_id: str, **overrides: Any) -> trades.OpenOrder:
    body = {
        "instrumentId": str(instrument_id),
        "direction": "long",
        "lotSize": 1,
        "clientRequestId": request_id,
        "clientPrice": 100,
        "slippageTolerancePct": 0.05,
    }
    body.update(overrides)
    return decode(json.dumps(body).encode(), OpenPositionBody).order()


@pytest.mark.parametrize(
    ("lot_size", "pnl"),
    [
        (2, 0),  # the fill 123.45 + 0.05 × 1 is a whole cent: the round trip is free
        (3.57, -3.57),  # 123.53925 buys at 123.54 and sells at 123.53: a cent a share
    ],
)
async def test_open_then_close_of_the_same_size_gives_zero_or_a_cent_level_loss(
    services: Services, pg_admin: psycopg.Connection, lot_size: float, pnl: float
) -> None:
    user = make_user(pg_admin)
    instrument = await make_instrument(services, pg_admin, live_base_cents=12_345)
    opened = json.loads(
        await trades.open_position(
            services,
            trades.Caller(user, "j"),
            order(instrument, "o1", lotSize=lot_size, clientPrice=123.45),
        )
    )
    position = opened["position"]
    closed = json.loads(
        await trades.close_position(services, trades.Caller(user, "j"), UUID(position["id"]), "c1")
    )
    assert closed["position"]["realizedPnl"] == pnl
    balance = 10_000 + pnl
    assert closed["wallet"] == {
        "balance": balance,
        "usedMargin": 0,
        "equity": balance,
        "freeMargin": balance,
        "marginLevel": None,
    }
    fields = await services.redis.hgetall(keys.instrument(instrument))
    assert fields["netLotsCentis"] == "0"
    assert fields["seq"] == "2"
    lots = round(lot_size * 100)
    entry = rules.fill_cents(12_345, 50_000, 0, lots, rules.LONG)
    assert round(position["entryPrice"] * 100) == entry
    exit_ = rules.fill_cents(12_345, 50_000, lots, lots, rules.SHORT)
    assert round(closed["position"]["exitPrice"] * 100) == exit_


async def test_a_tick_at_the_stop_loss_closes_walking_the_curve_and_tells_the_owner(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    user = make_user(pg_admin)
    instrument = await make_instrument(services, pg_admin, live_base_cents=10_000)
    pubsub = services.redis.pubsub()
    await pubsub.subscribe(keys.portfolio_channel(user), keys.price_channel(instrument))
    await pubsub.get_message(timeout=1)
    await pubsub.get_message(timeout=1)
    caller = trades.Caller(user, "j")
    opened = json.loads(
        await trades.open_position(
            services, caller, order(instrument, "o", lotSize=2, stopLoss=95, takeProfit=130)
        )
    )
    # a live tick above the stop leaves it; one at 94.90 + impact 0.10 = 95.00 reaches it exactly
    await prices.apply_base_price(services, instrument, 9_600, TickSource.LIVE)
    assert await services.redis.sismember(keys.open_positions(user), opened["position"]["id"])
    tick = await prices.apply_base_price(services, instrument, 9_490, TickSource.LIVE)
    assert tick.price_cents == 9_500
    fields = await services.redis.hgetall(keys.position(opened["position"]["id"]))
    # the tick decides when, the curve the price: selling 2 lots from the tick's netLots 2 fills
    # at 94.90 + 0.05 × (2 − 1) = 94.95, not at the tick's 95.00
    assert (fields["status"], fields["closedBy"], fields["exitCents"]) == (
        "closed",
        "stop_loss",
        "9495",
    )
    assert fields["pnlCents"] == str((9_495 - 10_005) * 200)
    assert await services.redis.zcard(keys.stops_below(instrument)) == 0
    assert await services.redis.zcard(keys.stops_above(instrument)) == 0

    frames = []
    while (message := await pubsub.get_message(timeout=1)) is not None:
        frames.append((message["channel"], json.loads(message["data"])))
    await pubsub.aclose()
    ticks = [data for channel, data in frames if channel == keys.price_channel(instrument)]
    assert [(t["q"], t["s"]) for t in ticks] == [(1, 1), (2, 0), (3, 0), (4, 1)]
    assert set(ticks[0]) == {"id", "i", "q", "p", "b", "n", "k", "s", "t", "d"}
    events = [data for channel, data in frames if channel == keys.portfolio_channel(user)]
    assert [(e["type"], e["event"]) for e in events] == [
        ("portfolio", "position_opened"),
        ("portfolio", "position_closed"),
    ]
    assert events[1]["position"]["closedBy"] == "stop_loss"
    assert events[1]["wallet"]["balance"] == (1_000_000 + (9_495 - 10_005) * 200) / 100


async def test_the_referrer_is_paid_once_on_the_first_position_even_when_retried(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    instrument = await make_instrument(services, pg_admin)
    referrer = make_user(pg_admin)
    referred = [make_user(pg_admin) for _ in range(5)]
    referrals = []
    for user in referred:
        row = pg_admin.execute(
            "INSERT INTO referrals (id, referrer_id, referred_id)"
            " VALUES (gen_random_uuid(), %s, %s) RETURNING id",
            (referrer, user),
        ).fetchone()
        assert row is not None
        referrals.append(row[0])
    for n, user in enumerate(referred):
        caller = trades.Caller(user, "j")
        await trades.open_position(services, caller, order(instrument, "first"))
        await trades.open_position(services, caller, order(instrument, "second"))
        if n == 0:
            # the payout retried (a flusher crashed after paying): nothing is paid twice
            assert await referral_payout.pay(services, referrals[0]) == 50_000
            assert await referral_payout.pay(services, referrals[0]) == 0
            await services.redis.xadd(keys.OUTBOX, {"referral": str(referrals[0])})
        await Flusher(services, "t").flush()
    await Flusher(services, "t").flush()  # the payouts' own ledger entries
    ledger = pg_admin.execute(
        "SELECT reason, amount FROM wallet_ledger WHERE user_id = %s ORDER BY id", (referrer,)
    ).fetchall()
    # 5 × 500, and at the 5th paid referral 100 × 5 / 5
    assert sorted(ledger) == sorted(
        [("referral_bonus", Decimal("500.00"))] * 5 + [("referral_milestone", Decimal("100.00"))]
    )
    wallet = pg_admin.execute(
        "SELECT balance, bonus_total FROM wallets WHERE user_id = %s", (referrer,)
    ).fetchone()
    assert wallet == (Decimal("12600.00"), Decimal("2600.00"))
    paid = pg_admin.execute(
        "SELECT count(*), sum(bonus) FROM referrals WHERE paid_at IS NOT NULL"
    ).fetchone()
    assert paid == (5, Decimal("2600.00"))
    hot = await services.redis.hgetall(keys.wallet(referrer))
    assert hot["balanceCents"] == "1260000"


async def test_the_tick_log_keeps_the_last_ticks_in_seq_order(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    instrument = await make_instrument(services, pg_admin)
    for n in range(keys.TICK_LOG_CAP + 5):
        await prices.apply_base_price(services, instrument, 10_000 + n, TickSource.SYNTHETIC)
    log: list[tuple[str, float]] = await services.redis.zrange(  # type: ignore[assignment]
        keys.tick_log(instrument), 0, -1, withscores=True
    )
    assert len(log) == keys.TICK_LOG_CAP
    assert [int(score) for _, score in log] == list(range(6, keys.TICK_LOG_CAP + 6))
    last = Tick.from_json(log[-1][0])
    assert (last.seq, last.live_base_price_cents, last.source) == (
        keys.TICK_LOG_CAP + 5,
        10_000 + keys.TICK_LOG_CAP + 4,
        TickSource.SYNTHETIC,
    )
