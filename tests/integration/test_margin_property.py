"""Property (SPEC §1.5, the promise to players): for random portfolios and price paths, replaying
all at once, in random chunks, from the after-tick evaluator, after a long time offline (the
recent tick log gone, only Postgres left), walking every tick (no quick check of quiet
windows, docs/decisions/0043), and by after-tick passes alone that leave out users inside their
safe boxes (docs/decisions/0046) give identical closes, prices, balances and `margin_events`, with
washouts that fill along the curve (docs/decisions/0090). Compared whenever the worlds' live ticks
are the same: a world evaluated as it went may wash out before later moves of an instrument the
user held, and the close ticks then give those moves other seqs and prices (another market)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from unittest import mock
from uuid import UUID

import psycopg
import redis
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from ftl.core.config import Settings
from ftl.core.errors import Conflict
from ftl.market import rules
from ftl.ops.flush import Flusher
from ftl.store import keys
from ftl.store.services import Services
from ftl.store.ticks import TickSource
from ftl.trading.margin import evaluator
from tests.conftest import TABLES
from tests.integration.margin_helpers import (
    CLOCK_STEP_S,
    balance,
    evaluate,
    margin_events,
    move,
    open_position,
    persist,
)
from tests.integration.trading_helpers import make_instrument, make_user

INSTRUMENTS = 3
MODES = ("at_once", "chunks", "after_tick", "offline", "walked", "boxed")


@dataclass(frozen=True)
class Scenario:
    balance_cents: int
    k_mod_micros: int  # every instrument's: at 1.00 a washout's own fill moves far along the curve
    portfolio: list[tuple[int, str, int]]  # (instrument, direction, lots in centilots)
    path: list[tuple[int, int]]  # (instrument, live base price cents)
    cuts: frozenset[int]  # evaluate after these steps (mode `chunks`)


scenarios = st.builds(
    Scenario,
    st.integers(300_000, 800_000),
    st.sampled_from([50_000, 1_000_000]),
    # NOTE: up to two positions on one instrument, so several washouts at one tick walk the
    # curve one after the other (each from the netLots the previous left).
    st.lists(
        st.tuples(
            st.integers(0, INSTRUMENTS - 1),
            st.sampled_from(["long", "short"]),
            st.integers(100, 300),
        ),
        min_size=1,
        max_size=2 * INSTRUMENTS,
    ).filter(lambda p: all(sum(1 for q in p if q[0] == i) <= 2 for i in range(INSTRUMENTS))),
    st.lists(
        st.tuples(st.integers(0, INSTRUMENTS - 1), st.integers(7_000, 13_000)),
        min_size=3,
        max_size=10,
    ),
    st.frozensets(st.integers(0, 9)),
)


async def play(settings_: Settings, pg: psycopg.Connection, scenario: Scenario, mode: str) -> Any:
    """One world: the scenario played and evaluated the mode's way; its outcome with ids
    replaced by their order of creation, so worlds compare."""
    services = Services.create(settings_)
    await services.scripts.load()
    try:
        # NOTE: the worlds compared are one world evaluated six ways, so they get the same ids
        # (in the order things are made) instead of fresh random ones each: ids decide ties,
        # among equal losses (the smaller position id washes out first, docs/decisions/0040) and
        # among ticks of one millisecond on several instruments (replay.tick_order).
        ids = random.Random(0)
        with mock.patch("uuid.uuid4", lambda: UUID(int=ids.getrandbits(128), version=4)):
            user = make_user(pg, balance=str(Decimal(scenario.balance_cents) / 100))
            instruments = [
                await make_instrument(
                    services,
                    pg,
                    live_base_cents=10_000,
                    k_mod=Decimal(scenario.k_mod_micros) / rules.PPM,
                )
                for _ in range(INSTRUMENTS)
            ]
            positions: list[UUID] = []
            for index, direction, lots in scenario.portfolio:
                # NOTE: not enough free margin is the same refusal in every world.
                with contextlib.suppress(Conflict):
                    positions.append(
                        await open_position(
                            services, user, instruments[index], direction, lots, 10_000
                        )
                    )
        for step, (index, price) in enumerate(scenario.path):
            # NOTE: one price move per millisecond at most, as a live feed makes them.
            await asyncio.sleep(CLOCK_STEP_S)
            await move(services, instruments[index], price)
            if mode == "after_tick":
                holders = await evaluator.holders_of(services, [instruments[index]])
                await evaluator.evaluate_pass(services, holders)
            elif mode == "boxed":
                users = await evaluator.holders_to_evaluate(services, [instruments[index]])
                await evaluator.evaluate_pass(services, users, targeted=True)
            elif mode == "chunks" and step in scenario.cuts:
                await evaluator.evaluate_user(services, user)
            elif mode == "walked":
                await evaluator.evaluate_user(services, user, quick=False)
        if mode == "offline":
            await Flusher(services, consumer="test").flush()
            for instrument in instruments:
                await services.redis.zremrangebyrank(keys.tick_log(instrument), 0, -2)
        # NOTE: washouts move prices, and the follow-up passes they ask for (docs/decisions/0044)
        # evaluate again until one closes nothing: every world ends where the workers would.
        if mode == "boxed":
            # NOTE: no full evaluation at the end: targeted passes, as after any tick.
            while True:
                await asyncio.sleep(CLOCK_STEP_S)
                users = await evaluator.holders_to_evaluate(services, instruments)
                if not (await evaluator.evaluate_pass(services, users, targeted=True)).closed:
                    break
        else:
            while (await evaluate(services, user, quick=mode != "walked")).closed:
                pass
        await persist(services)
        await persist(services)
        return outcome(pg, user, instruments, positions)
    finally:
        await services.close()


def outcome(
    pg: psycopg.Connection, user: UUID, instruments: list[UUID], positions: list[UUID]
) -> dict[str, Any]:
    def name(thing: UUID | None) -> str | None:
        if thing is None:
            return None
        if thing in instruments:
            return f"instrument {instruments.index(thing)}"
        return f"position {positions.index(thing)}"

    rows = pg.execute(
        "SELECT id, status::text, closed_by::text, exit_price, realized_pnl FROM cfd_positions"
        " WHERE user_id = %s",
        (user,),
    ).fetchall()
    live = pg.execute(
        "SELECT instrument_id, seq, price FROM price_ticks WHERE source = %s ORDER BY at, seq",
        (int(TickSource.LIVE),),
    ).fetchall()
    return {
        # NOTE: the live ticks as the market made them: a world whose washouts committed between
        # two moves has their trade ticks (other seqs) and their netLots (other prices) there.
        "market": [(name(iid), seq, price) for iid, seq, price in live],
        "positions": sorted((name(r[0]), *r[1:]) for r in rows),
        "balance": balance(pg, user),
        # NOTE: sorted by names, not ids: ids differ from world to world.
        "events": sorted(
            (kind, name(iid), seq, name(pid) or "", *rest)
            for kind, iid, seq, pid, *rest in margin_events(pg, user)
        ),
    }


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios)
@example(  # found by hypothesis: a washout on an instrument that moves later makes another market
    scenario=Scenario(
        345_185,
        50_000,
        [(1, "long", 116), (0, "long", 101), (2, "short", 286), (1, "long", 100), (2, "long", 109)],
        [(0, 7_320), (2, 7_396), (1, 9_121), (1, 9_304), (2, 7_660), (2, 7_905), (0, 9_274)],
        frozenset({8, 1, 6}),
    )
)
@example(  # found by hypothesis: equal losses washed out at one tick go in id order
    scenario=Scenario(
        300_000,
        1_000_000,
        [(0, "long", 100), (1, "long", 100), (2, "long", 100)],
        [(0, 7_000), (0, 7_000), (0, 7_000)],
        frozenset(),
    )
)
@example(  # found by hypothesis: a washout's own tick breaches again (the follow-up pass)
    scenario=Scenario(
        791_646,
        1_000_000,
        [
            (1, "short", 133),
            (2, "long", 273),
            (1, "short", 229),
            (0, "long", 249),
            (0, "short", 148),
            (2, "short", 191),
        ],
        [(2, 12_999), (0, 9_279), (2, 7_861)],
        frozenset({3}),
    )
)
def test_every_way_of_evaluating_gives_the_same_outcome(
    scenario: Scenario,
    settings: Settings,
    pg_admin: psycopg.Connection,
    redis_admin: redis.Redis,
) -> None:
    outcomes = []
    for mode in MODES:
        pg_admin.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        redis_admin.flushdb()
        outcomes.append(asyncio.run(play(settings, pg_admin, scenario, mode)))

    washouts = [e for e in outcomes[0]["events"] if e[0] == "washout"]
    event(f"washouts: {min(len(washouts), 2)}")
    ticks = [(w[1], w[2]) for w in washouts]
    if len(set(ticks)) < len(ticks):
        event("several washouts at one tick")
    event(f"positions opened: {len(outcomes[0]['positions'])}")
    judged = {k: v for k, v in outcomes[0].items() if k != "market"}
    for mode, other in zip(MODES[1:], outcomes[1:], strict=True):
        if other["market"] == outcomes[0]["market"]:
            assert other == outcomes[0]
        elif {k: v for k, v in other.items() if k != "market"} != judged:
            # NOTE: a world evaluated as it went washed out before later moves of an instrument
            # it held: its close ticks came first and moved that instrument's curve, so the
            # later ticks have other seqs and prices than in the world judged at once. The same
            # replay of another market: its outcome may differ.
            event(f"{mode}: washouts committed between moves made another market and outcome")
    realized = sum((p[4] for p in outcomes[0]["positions"] if p[4] is not None), Decimal(0))
    assert outcomes[0]["balance"] == Decimal(scenario.balance_cents) / 100 + realized
    for washout in washouts:
        assert washout[6] <= Decimal(50)
