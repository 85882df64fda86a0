"""Safe boxes against real Redis (docs/decisions/0046): an after-tick pass leaves out a user whose
box still holds every tick, and evaluates him as soon as the ticks of the instruments he holds
may have spent its slack or his wallet changes, likeliest breaches first; a pass moves its cut on
between chunks."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from uuid import UUID

import psycopg
import pytest

from ftl.store import keys
from ftl.store.services import Services
from ftl.trading.margin import evaluator, safe_boxes, tick_logs
from ftl.trading.margin.replay import HeldInstrument, PriceRange, SafeBox
from tests.integration.margin_helpers import (
    CLOCK_STEP_S,
    move,
    open_position,
    position,
)
from tests.integration.trading_helpers import make_instrument, make_user

FLAT = Decimal(0)  # kMod 0: prices are exactly the live base prices


async def targeted_pass(services: Services, users: list[UUID]) -> evaluator.Pass:
    """An after-tick pass that sees every tick made so far."""
    await asyncio.sleep(CLOCK_STEP_S)
    return await evaluator.evaluate_pass(services, users, targeted=True)


async def test_inside_his_box_a_user_is_left_out_and_outside_it_washed_out_at_the_breach(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    # 1,500.00 points and a long lot at 100.00 (margin 1,000.00): 500.00 of slack, 5.00 of price
    user = make_user(pg_admin, balance="1500.00")
    instrument = await make_instrument(services, pg_admin, live_base_cents=10_000, k_mod=FLAT)
    pid = await open_position(services, user, instrument, "long", 100, 10_000)

    first = await targeted_pass(services, [user])  # no box yet: evaluated, and a box made

    assert first.evaluated == 1
    assert await safe_boxes.boxes(services, [user]) == [
        SafeBox(False, 50_000, 0, {instrument: HeldInstrument(1, 10_000, 100)})
    ]
    await move(services, instrument, 9_600)
    await move(services, instrument, 10_400)
    assert (await targeted_pass(services, [user])).evaluated == 0
    breach = await move(services, instrument, 9_000)  # 50 %
    await move(services, instrument, 11_000)  # recovered before the pass

    outcome = await targeted_pass(services, [user])

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
    await targeted_pass(services, [user])
    assert (await targeted_pass(services, [user])).evaluated == 0

    await open_position(services, user, other, "short", 100, 10_000)

    assert await safe_boxes.boxes(services, [user]) == [None]
    assert (await targeted_pass(services, [user])).evaluated == 1
    (box,) = await safe_boxes.boxes(services, [user])
    assert box is not None and set(box.instruments) == {one, other}


async def test_the_ticks_of_every_instrument_held_count_and_strained_users_go_first(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    # 2,500.00 points, a long lot on each of two instruments: 500.00 of slack
    user = make_user(pg_admin, balance="2500.00")
    calm = make_user(pg_admin, balance="2500.00")
    one = await make_instrument(services, pg_admin, live_base_cents=10_000, k_mod=FLAT)
    other = await make_instrument(services, pg_admin, live_base_cents=10_000, k_mod=FLAT)
    for holder in (user, calm):
        await open_position(services, holder, one, "long", 100, 10_000)
        await open_position(services, holder, other, "long", 100, 10_000)
    await targeted_pass(services, [user, calm])
    await move(services, other, 9_700)  # 300.00 of the slack spent
    await move(services, one, 10_100)  # 100.00 back: still inside the box
    assert (await targeted_pass(services, [user, calm])).evaluated == 0

    # 700.00 spent, 100.00 back on `one`: the level under 100 %, outside the box (moved on to
    # the last pass's ticks, decision 0163, or not); `other`'s own pass has not run yet
    await move(services, other, 9_300)
    await asyncio.sleep(CLOCK_STEP_S)
    logs = await tick_logs.TickLogs.begin(services)

    # NOTE: the pass after `one`'s tick weighs the ticks of `other` too.
    assert await safe_boxes.outside_boxes(services, logs, [calm, user]) == [calm, user]
    await services.redis.delete(keys.margin_box(calm))  # no box: first of all
    assert await safe_boxes.outside_boxes(services, logs, [user, calm]) == [calm, user]


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


async def test_a_box_a_pass_held_is_moved_on_and_still_lapses_from_where_it_was_made(
    services: Services, pg_admin: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decision 0163: a gain on one instrument since the last pass is equity the next pass counts
    exactly (the stored box counts only the worst of each window); its age still counts from
    the stored box."""
    # 2,500.00 points, a long lot on each of two instruments: 500.00 of slack
    user = make_user(pg_admin, balance="2500.00")
    one = await make_instrument(services, pg_admin, live_base_cents=10_000, k_mod=FLAT)
    other = await make_instrument(services, pg_admin, live_base_cents=10_000, k_mod=FLAT)
    await open_position(services, user, one, "long", 100, 10_000)
    await open_position(services, user, other, "long", 100, 10_000)
    assert (await targeted_pass(services, [user])).evaluated == 1  # the box is made
    stored = await safe_boxes.boxes(services, [user])
    await move(services, one, 10_300)  # 300.00 gained
    assert (await targeted_pass(services, [user])).evaluated == 0  # moved on: 800.00 of slack

    await move(services, other, 9_300)  # 700.00 lost: the stored box alone would not hold

    assert (await targeted_pass(services, [user])).evaluated == 0  # equity − used: 100.00
    assert await safe_boxes.boxes(services, [user]) == stored  # Redis keeps the stored box
    monkeypatch.setattr(safe_boxes, "BOX_MAX_TICKS", 1)
    await move(services, other, 9_350)  # 2 ticks of `other` since the stored box: over 1
    assert (await targeted_pass(services, [user])).evaluated == 1  # lapsed: replayed
