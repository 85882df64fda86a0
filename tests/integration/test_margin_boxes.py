"""Safe boxes and their index against real Redis (docs/decisions/0046, 0166): an after-tick pass
leaves out a user whose box's bounds held every tick judged, and evaluates him as soon as a tick
of an instrument he holds crosses them (first), his wallet changes or his box lapses; a box made
before ticks the index judged without it is not stored; a pass moves its cut on between
chunks."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from uuid import UUID

import psycopg
import pytest

from ftl.store import keys
from ftl.store.services import Services
from ftl.trading.margin import evaluator, safe_boxes, snapshots, tick_logs
from ftl.trading.margin.replay import HeldInstrument, PriceRange, SafeBox
from tests.integration.margin_helpers import (
    CLOCK_STEP_S,
    move,
    open_position,
    position,
)
from tests.integration.trading_helpers import make_instrument, make_user

FLAT = Decimal(0)  # kMod 0: prices are exactly the live base prices


async def targeted_pass(services: Services, instruments: list[UUID]) -> evaluator.Pass:
    """An after-tick pass over the instruments that sees every tick made so far."""
    await asyncio.sleep(CLOCK_STEP_S)
    users = await evaluator.holders_to_evaluate(services, instruments)
    return await evaluator.evaluate_pass(services, users, targeted=True)


async def test_inside_his_box_a_user_is_left_out_and_outside_it_washed_out_at_the_breach(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    # 1,500.00 points and a long lot at 100.00 (margin 1,000.00): 500.00 of slack, 5.00 of price
    user = make_user(pg_admin, balance="1500.00")
    instrument = await make_instrument(services, pg_admin, live_base_cents=10_000, k_mod=FLAT)
    pid = await open_position(services, user, instrument, "long", 100, 10_000)

    first = await targeted_pass(services, [instrument])  # no box yet: evaluated, and one made

    assert first.evaluated == 1
    assert await safe_boxes.boxes(services, [user]) == [
        SafeBox(False, 50_000, 0, {instrument: HeldInstrument(1, 10_000, 100)})
    ]
    assert await services.redis.zscore(keys.margin_floor(instrument), str(user)) == 9_500
    await move(services, instrument, 9_600)
    await move(services, instrument, 10_400)
    assert (await targeted_pass(services, [instrument])).evaluated == 0
    breach = await move(services, instrument, 9_000)  # 50 %
    await move(services, instrument, 11_000)  # recovered before the pass

    outcome = await targeted_pass(services, [instrument])

    assert (outcome.evaluated, outcome.closed) == (1, 1)
    closed = await position(services, pid)
    assert (closed["closedBy"], closed["exitCents"]) == ("washout", "9000")
    assert await safe_boxes.boxes(services, [user]) == [None]  # the wallet changed
    events: list[tuple[str, dict[str, str]]] = await services.redis.xrange(keys.MARGIN_OUTBOX)  # type: ignore[assignment]
    assert f'"seq":{breach}' in events[-1][1]["event"]


async def test_a_trade_of_his_own_voids_his_box(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    user = make_user(pg_admin, balance="3000.00")
    one = await make_instrument(services, pg_admin, live_base_cents=10_000, k_mod=FLAT)
    other = await make_instrument(services, pg_admin, live_base_cents=10_000, k_mod=FLAT)
    await open_position(services, user, one, "long", 100, 10_000)
    await targeted_pass(services, [one])
    assert (await targeted_pass(services, [one])).evaluated == 0

    await open_position(services, user, other, "short", 100, 10_000)

    assert await safe_boxes.boxes(services, [user]) == [None]
    assert (await targeted_pass(services, [one])).evaluated == 1  # any pass takes him
    (box,) = await safe_boxes.boxes(services, [user])
    assert box is not None and set(box.instruments) == {one, other}


async def test_a_tick_past_his_bounds_puts_a_holder_first_and_the_others_stay_out(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    # 2,500.00 points, a long lot on each of two instruments at 100.00: 500.00 of slack, shared
    # 250.00 a instrument (a floor of 97.50); `calm` has 3,000.00 of slack (a floor of 85.00)
    user = make_user(pg_admin, balance="2500.00")
    calm = make_user(pg_admin, balance="5000.00")
    one = await make_instrument(services, pg_admin, live_base_cents=10_000, k_mod=FLAT)
    other = await make_instrument(services, pg_admin, live_base_cents=10_000, k_mod=FLAT)
    for holder in (user, calm):
        await open_position(services, holder, one, "long", 100, 10_000)
        await open_position(services, holder, other, "long", 100, 10_000)
    await targeted_pass(services, [one, other])
    assert await services.redis.zscore(keys.margin_floor(other), str(user)) == 9_750
    await move(services, other, 9_800)  # 200.00 of the slack spent
    await move(services, one, 10_100)  # 100.00 back
    assert (await targeted_pass(services, [one, other])).evaluated == 0
    fresh = make_user(pg_admin, balance="5000.00")
    await open_position(services, fresh, one, "long", 100, 10_000)  # no box yet

    await move(services, other, 9_700)  # past his floor on `other`, not past calm's
    await asyncio.sleep(CLOCK_STEP_S)

    assert await evaluator.holders_to_evaluate(services, [other]) == [user, fresh]
    # NOTE: each tick is judged once: the next pass finds only those still without a box.
    assert await evaluator.holders_to_evaluate(services, [other]) == sorted([user, fresh], key=str)
    outcome = await evaluator.evaluate_pass(services, [user, fresh], targeted=True)
    assert (outcome.evaluated, outcome.closed) == (2, 0)  # 300.00 − 100.00: the box was strict
    # his new box is made where prices are now: 300.00 of slack, shared by exposure (97.00
    # against 101.00): 146.96 on `other`, 1.46 of its price
    assert await services.redis.zscore(keys.margin_floor(other), str(user)) == 9_700 - 146
    assert await evaluator.holders_to_evaluate(services, [one, other]) == []


async def test_a_box_made_before_ticks_the_index_judged_without_it_is_not_stored(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    user = make_user(pg_admin, balance="1500.00")
    instrument = await make_instrument(services, pg_admin, live_base_cents=10_000, k_mod=FLAT)
    await open_position(services, user, instrument, "long", 100, 10_000)
    await asyncio.sleep(CLOCK_STEP_S)
    (state,) = await snapshots.snapshots(services, [user])
    assert state is not None
    evaluation = await evaluator.evaluate_user(services, user, state=state)
    assert evaluation.box is not None
    await move(services, instrument, 9_000)  # past the box's floor (95.00) ...
    await asyncio.sleep(CLOCK_STEP_S)
    assert await evaluator.holders_to_evaluate(services, [instrument]) == [user]  # ... judged

    saved = await safe_boxes.save_boxes(services, [(user, state.fingerprint, evaluation.box)])

    assert saved == 0  # his box would leave out the tick at 90.00
    assert await services.redis.sismember(keys.MARGIN_UNBOXED, str(user))
    assert (await targeted_pass(services, [instrument])).closed == 1


async def test_a_new_index_takes_every_holder_once(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    """After `ftl recover` (or an upgrade to the index) no box is indexed: every holder is
    evaluated once, then only those the ticks strain."""
    users = [make_user(pg_admin, balance="5000.00") for _ in range(3)]
    instrument = await make_instrument(services, pg_admin, live_base_cents=10_000, k_mod=FLAT)
    for user in users:
        await open_position(services, user, instrument, "long", 100, 10_000)
    assert (await targeted_pass(services, [instrument])).evaluated == 3
    await services.redis.delete(keys.MARGIN_INDEXED, keys.MARGIN_UNBOXED)
    for prefix in keys.MARGIN_INDEX_PREFIXES:
        async for name in services.redis.scan_iter(f"{prefix}*"):
            await services.redis.delete(name)

    assert (await targeted_pass(services, [instrument])).evaluated == 3
    assert (await targeted_pass(services, [instrument])).evaluated == 0


async def test_a_pass_moves_its_cut_on_to_see_the_ticks_made_since(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    user = make_user(pg_admin, balance="1500.00")
    instrument = await make_instrument(services, pg_admin, live_base_cents=10_000, k_mod=FLAT)
    await open_position(services, user, instrument, "long", 100, 10_000)
    await asyncio.sleep(CLOCK_STEP_S)
    logs = await tick_logs.TickLogs.begin(services)
    await logs.fetch({instrument: 1})
    assert logs.range_after(instrument, 0) == PriceRange(10_000, 10_000, 1, 1)
    made = await move(services, instrument, 9_000)  # e.g. a washout's trade tick, mid-pass

    await asyncio.sleep(CLOCK_STEP_S)
    await logs.advance()

    assert [t.seq for t in logs.after(instrument, 1, logs.cut_ms)] == [made]
    assert logs.range_after(instrument, 0) == PriceRange(9_000, 10_000, made, 2)


async def test_a_box_lapses_after_box_max_ticks_on_one_instrument(
    services: Services, pg_admin: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A box that held for BOX_MAX_TICKS ticks of an instrument lapses, so the replay moves the
    user's watermark and his window stays inside the tick log."""
    user = make_user(pg_admin, balance="5000.00")
    one = await make_instrument(services, pg_admin, live_base_cents=10_000, k_mod=FLAT)
    other = await make_instrument(services, pg_admin, live_base_cents=10_000, k_mod=FLAT)
    await open_position(services, user, one, "long", 100, 10_000)
    await open_position(services, user, other, "long", 100, 10_000)
    assert (await targeted_pass(services, [one, other])).evaluated == 1  # the box is made
    monkeypatch.setattr(safe_boxes, "BOX_MAX_TICKS", 1)
    await move(services, other, 10_050)
    assert (await targeted_pass(services, [other])).evaluated == 0  # 1 tick since the box
    await move(services, other, 10_000)

    assert (await targeted_pass(services, [other])).evaluated == 1  # 2: lapsed, replayed
