"""Property (SPEC §1.4, the promise the leaderboard rests on): with no live tick and no other
trader, no sequence of one user's actions ends with his balance above where it started, and two
accounts of one person trading against each other never make a positive summed PnL. Random
sequences run through the real Lua scripts on real Redis: opens and closes of random sizes both
ways, levels set at open and later (near the price, so his own trades trigger them), the margin
replay after every action (washouts), and at the end either his own closes or the full-time
close-out."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
import pytest
import redis
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from ftl.core.config import Settings
from ftl.market import rules
from ftl.store.services import Services
from ftl.trading.margin import evaluator
from tests.conftest import TABLES
from tests.integration.fills_helpers import Trader, full_time
from tests.integration.margin_helpers import CLOCK_STEP_S
from tests.integration.trading_helpers import make_instrument, make_user

START = 1_000_000  # every account starts with 10,000.00 points


@dataclass(frozen=True)
class Open:
    account: int
    direction: int
    lots: int
    stop_loss: int | None  # cents from the price after the open, on the losing side
    take_profit: int | None  # cents from the price after the open, on the winning side


@dataclass(frozen=True)
class Close:
    account: int
    position: int  # index into the account's positions so far


@dataclass(frozen=True)
class Levels:
    account: int
    position: int
    stop_loss: int | None  # cents from the current price
    take_profit: int | None


offsets = st.none() | st.integers(1, 5) | st.integers(1, 400)


def actions(accounts: int) -> st.SearchStrategy[list[Any]]:
    account = st.integers(0, accounts - 1)
    return st.lists(
        st.one_of(
            st.builds(
                Open,
                account,
                st.sampled_from([rules.LONG, rules.SHORT]),
                st.integers(1, 2_500) | st.integers(1, 150),
                offsets,
                offsets,
            ),
            # NOTE: a big open with no levels is what pushes another position into a washout.
            st.builds(
                Open,
                account,
                st.sampled_from([rules.LONG, rules.SHORT]),
                st.integers(300, 2_500),
                st.none(),
                st.none(),
            ),
            st.builds(Close, account, st.integers(0, 30)),
            st.builds(Levels, account, st.integers(0, 30), offsets, offsets),
        ),
        min_size=1,
        max_size=25,
    )


instruments_ = st.tuples(
    st.sampled_from([5_000, 12_345, 50_000]),  # live base price, cents
    st.sampled_from([50_000, 333_333, 1_000_000, 2_000_000]),  # kMod, micro-points per lot
)


def level(price: int, direction: int, offset: int | None, side: int) -> int | None:
    """`offset` cents from `price`, on the winning (side +1) or losing (−1) side of the trade."""
    return None if offset is None else max(1, price + side * direction * offset)


class Play:
    def __init__(self, services: Services, traders: list[Trader]) -> None:
        self.services = services
        self.traders = traders
        self.positions: list[list[dict[str, Any]]] = [[] for _ in traders]

    async def apply(self, action: Any) -> None:
        me = self.traders[action.account]
        if isinstance(action, Open):
            state = await me.curve()
            after = rules.level_price_after_open(
                state.live_base_price_cents,
                state.k_mod_micros,
                state.net_lots_centis,
                action.lots,
                action.direction,
            )
            opened = await me.open(
                action.direction,
                action.lots,
                level(after, action.direction, action.stop_loss, -1),
                level(after, action.direction, action.take_profit, +1),
            )
            event("opened" if opened else "open refused")
            if opened is not None:
                self.positions[action.account].append(opened)
            return
        mine = self.positions[action.account]
        if not mine:
            return
        position = mine[action.position % len(mine)]
        if isinstance(action, Close):
            await me.close(position["id"])
            return
        price = await me.price()
        direction = rules.LONG if position["direction"] == "long" else rules.SHORT
        await me.set_levels(
            position["id"],
            level(price, direction, action.stop_loss, -1),
            level(price, direction, action.take_profit, +1),
        )

    async def evaluate_margin(self) -> None:
        """The margin replay of every account, seeing every tick so far (washouts)."""
        await asyncio.sleep(CLOCK_STEP_S)
        for trader in self.traders:
            await evaluator.evaluate_user(self.services, trader.caller.user_id)

    async def record(self) -> None:
        for trader, positions in zip(self.traders, self.positions, strict=True):
            for fields in [await trader.position(p["id"]) for p in positions]:
                if fields.get("closedBy") in ("stop_loss", "take_profit", "washout"):
                    event(f"closed by {fields['closedBy']}")


async def run(
    settings_: Settings,
    pg: psycopg.Connection,
    accounts: int,
    setup: tuple[int, int],
    steps: list[Any],
    finish_at_full_time: bool,
) -> list[int]:
    """Every account's balance in cents once the sequence ran and every position was closed."""
    services = Services.create(settings_)
    try:
        live, k_mod = setup
        instrument = await make_instrument(
            services, pg, live_base_cents=live, k_mod=Decimal(k_mod) / rules.PPM
        )
        users: list[UUID] = [make_user(pg) for _ in range(accounts)]
        play = Play(services, [Trader(services, user, instrument) for user in users])
        for step in steps:
            await play.apply(step)
            await play.evaluate_margin()
        await play.record()
        if finish_at_full_time:
            await full_time(services, pg)
        else:
            for trader in play.traders:
                for position_id in sorted(await trader.open_ids()):
                    await trader.close(position_id)
        for trader in play.traders:
            assert await trader.open_ids() == set()
        return [await trader.balance() for trader in play.traders]
    finally:
        await services.close()


def check(
    settings_: Settings,
    pg: psycopg.Connection,
    redis_client: redis.Redis,
    accounts: int,
    setup: tuple[int, int],
    steps: list[Any],
    finish_at_full_time: bool,
) -> None:
    pg.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    redis_client.flushdb()
    balances = asyncio.run(run(settings_, pg, accounts, setup, steps, finish_at_full_time))
    event("ends below the start" if sum(balances) < accounts * START else "ends at the start")
    assert sum(balances) <= accounts * START, balances


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(setup=instruments_, steps=actions(2), finish_at_full_time=st.booleans())
@example(  # found by hypothesis: a hedge (no net lots) is still closed at full time
    setup=(5_000, 50_000),
    steps=[Open(0, rules.LONG, 1, None, None), Open(0, rules.SHORT, 1, None, None)],
    finish_at_full_time=True,
)
@example(  # one account's short pushes the other's long into a washout (test_fair_fills.py)
    setup=(5_000, 2_000_000),
    steps=[Open(0, rules.LONG, 500, None, None), Open(1, rules.SHORT, 2_000, None, None)],
    finish_at_full_time=False,
)
@example(  # the same, then both sides of the rest meet at the full-time unwind price
    setup=(5_000, 2_000_000),
    steps=[
        Open(0, rules.LONG, 500, None, None),
        Open(0, rules.LONG, 100, None, 3),
        Open(1, rules.SHORT, 2_000, None, None),
        Open(1, rules.LONG, 700, 2, None),
    ],
    finish_at_full_time=True,
)
@pytest.mark.parametrize(
    "accounts", [1, 2], ids=["one user ends at most at his start", "two accounts of one person"]
)
def test_nobody_profits_from_his_own_price_impact(
    settings: Settings,
    pg_admin: psycopg.Connection,
    redis_admin: redis.Redis,
    accounts: int,
    setup: tuple[int, int],
    steps: list[Any],
    finish_at_full_time: bool,
) -> None:
    """With one account, every action is his (account indexes are taken modulo the accounts);
    with two, their summed PnL is never positive."""
    steps = [replace(step, account=step.account % accounts) for step in steps]
    check(settings, pg_admin, redis_admin, accounts, setup, steps, finish_at_full_time)
