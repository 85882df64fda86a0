"""The reproductions of issue 16, each once a way to farm the leaderboard, now ending at or below
the starting balance (SPEC §1.4: nobody profits from his own price impact)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import psycopg

from ftl.market import rules
from ftl.store.services import Services
from ftl.trading.margin import evaluator
from tests.integration.fills_helpers import Trader, full_time
from tests.integration.margin_helpers import CLOCK_STEP_S
from tests.integration.trading_helpers import make_instrument, make_user

START = 1_000_000  # 10,000.00 points
LIVE = 5_000  # 50.00, kMod 0.05 (the default)


async def trader(services: Services, pg: psycopg.Connection) -> Trader:
    instrument = await make_instrument(services, pg, live_base_cents=LIVE)
    return Trader(services, make_user(pg), instrument)


async def test_a_take_profit_inside_the_opens_own_impact_is_refused_every_time(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    """Measured: long 19 lots at 50.00 with takeProfit 50.01 paid +893.00 at once, and 7 calls
    took a wallet from 10,000 to 23,785. The level is now checked against the price after the
    open (50.95), so it is refused; so is the short's mirror."""
    me = await trader(services, pg_admin)
    for _ in range(7):
        assert await me.open(rules.LONG, 1_900, take_profit=5_001) is None
        assert await me.open(rules.SHORT, 1_900, take_profit=4_999) is None
    assert await me.balance() == START
    assert await me.open_ids() == set()


async def test_a_take_profit_just_past_the_opens_own_impact_pays_nothing(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    me = await trader(services, pg_admin)
    for direction, level in ((rules.LONG, 5_096), (rules.SHORT, 4_904)):
        opened = await me.open(direction, 1_900, take_profit=level)
        assert opened is not None and opened["status"] == "open"
        closed = await me.close(opened["id"])
        assert closed is not None
        assert closed["realizedPnl"] <= 0
    assert await me.balance() <= START


async def test_a_take_profit_pushed_through_by_a_second_own_long_fills_along_the_curve(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    me = await trader(services, pg_admin)
    first = await me.open(rules.LONG, 1_000)  # fills at 50.25, price 50.50
    assert first is not None and first["entryPrice"] == 50.25
    assert await me.set_levels(first["id"], None, 5_051)
    second = await me.open(rules.LONG, 1_000)  # fills at 50.75, price 51.00 reaches 50.51
    assert second is not None and second["entryPrice"] == 50.75
    # the take-profit sold 10 lots from netLots 20: 50.00 + 0.05 × 15 = 50.75, not the tick's 51.00
    hit = await me.position(first["id"])
    assert (hit["closedBy"], hit["exitCents"], hit["pnlCents"]) == ("take_profit", "5075", "50000")
    assert await me.open_ids() == {second["id"]}
    closed = await me.close(second["id"])  # sells 10 lots from netLots 10: 50.25
    assert closed is not None and closed["exitPrice"] == 50.25
    assert await me.balance() == START  # +500.00 on the first, −500.00 on the second


async def test_a_stop_loss_pushed_through_by_an_own_long_fills_along_the_curve(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    me = await trader(services, pg_admin)
    short = await me.open(rules.SHORT, 1_000)  # fills at 49.75, price 49.50
    assert short is not None
    assert await me.set_levels(short["id"], 4_951, None)
    long = await me.open(rules.LONG, 1_000)  # fills at 49.75, price 50.00 reaches 49.51
    assert long is not None
    # the stop bought 10 lots from netLots 0: 50.25, not the tick's 50.00
    hit = await me.position(short["id"])
    assert (hit["closedBy"], hit["exitCents"], hit["pnlCents"]) == ("stop_loss", "5025", "-50000")
    assert await me.open_ids() == {long["id"]}
    closed = await me.close(long["id"])  # sells 10 lots from netLots 10: 50.25
    assert closed is not None and closed["exitPrice"] == 50.25
    assert await me.balance() == START


async def test_odd_sizes_pushed_through_own_levels_never_pay(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    """The same pushes with sizes whose fills are not whole cents: rounding never pays."""
    me = await trader(services, pg_admin)
    for size in (901, 333, 7):
        first = await me.open(rules.LONG, size)
        assert first is not None
        level = await me.price() + 1
        assert await me.set_levels(first["id"], None, level)
        pusher = await me.open(rules.LONG, 201)  # moves the price 0.1005 through the level
        assert pusher is not None
        assert (await me.position(first["id"])).get("closedBy") == "take_profit"
        for position_id in await me.open_ids():
            await me.close(position_id)
        assert await me.balance() <= START


async def test_full_time_pays_the_unwind_price_not_the_last_traders_impact(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    """Measured: a long of L lots opened just before the freeze was paid about kMod × L² / 2 ×
    100 points by a close-out at the snapshot's price. The unwind price is the average fill of
    unwinding the whole net demand: 50.00 + 0.05 × 19 / 2 = 50.475, 50.47 for the long."""
    me = await trader(services, pg_admin)
    opened = await me.open(rules.LONG, 1_900)  # 50.475 rounds up to 50.48
    assert opened is not None and opened["entryPrice"] == 50.48
    await full_time(services, pg_admin)
    assert await me.open_ids() == set()
    assert await me.balance() == START - 1_900  # a cent a share: (50.47 − 50.48) × 1,900


async def test_full_time_closes_both_sides_of_one_person_at_no_profit(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    instrument = await make_instrument(services, pg_admin, live_base_cents=LIVE)
    longs = Trader(services, make_user(pg_admin), instrument)
    shorts = Trader(services, make_user(pg_admin), instrument)
    assert await longs.open(rules.LONG, 1_500) is not None
    assert await shorts.open(rules.SHORT, 601) is not None
    assert await longs.open(rules.LONG, 433) is not None
    await full_time(services, pg_admin)
    assert await longs.balance() + await shorts.balance() <= 2 * START


async def test_a_washout_forced_by_ones_own_second_account_fills_along_the_curve(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    """One person, two accounts, kMod 2.00: a long of 5 lots (fills at 55.00), then a short of
    20 lots from the other account (fills at 40.00) takes the price to 20.00 and the long's
    margin level far below 50 %. Its washout sells 5 lots from netLots −15 along the curve:
    50.00 + 2.00 × (−15 − 2.5) = 15.00, not the breach tick's 20.00."""
    instrument = await make_instrument(
        services, pg_admin, live_base_cents=LIVE, k_mod=Decimal("2.00")
    )
    victim = Trader(services, make_user(pg_admin), instrument)
    pusher = Trader(services, make_user(pg_admin), instrument)
    long = await victim.open(rules.LONG, 500)
    assert long is not None and long["entryPrice"] == 55
    short = await pusher.open(rules.SHORT, 2_000)
    assert short is not None and short["entryPrice"] == 40
    await asyncio.sleep(CLOCK_STEP_S)
    await evaluator.evaluate_user(services, victim.caller.user_id)
    washed = await victim.position(long["id"])
    assert (washed["closedBy"], washed["exitCents"]) == ("washout", "1500")
    closed = await pusher.close(short["id"])  # buys 20 lots from netLots −20: 30.00
    assert closed is not None and closed["exitPrice"] == 30
    assert await victim.balance() + await pusher.balance() <= 2 * START
