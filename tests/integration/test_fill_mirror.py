"""lua/lib/engine.lua computes every fill exactly as ftl/market/rules.py does, to the cent, across
the whole range a trade can reach: both sides, both roundings, curves that cross the 1.00 floor
inside the trade (where the Lua needs its exact square division) and the largest kMod an
instrument may have."""

from __future__ import annotations

import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from ftl.market import rules
from ftl.store.scripts import LUA_DIR

K_MOD_MAX_MICROS = 2_000_000  # ftl.market.instruments.K_MOD_MAX: 2.00 points per lot
# NOTE: the Lua's exact square division holds while kMod × |netLots| < 2^44 micro-cents: at the
# largest kMod, 87,960 lots of net demand (the whole market at ±2,000 points of impact).
NET_MAX_CENTIS = 2**44 // K_MOD_MAX_MICROS - 1

ENGINE = (LUA_DIR / "lib" / "engine.lua").read_text(encoding="utf-8")
FILL = (
    ENGINE
    + """
local inst = {live = tonumber(ARGV[1]), kmod = tonumber(ARGV[2]), net = tonumber(ARGV[3])}
return {E.fill(inst, tonumber(ARGV[4]), 1), E.fill(inst, tonumber(ARGV[4]), -1),
  E.curve_average(inst, 0, inst.net, false), E.curve_average(inst, 0, inst.net, true)}
"""
)


def lua_fills(client: redis.Redis, live: int, k_mod: int, net: int, lots: int) -> list[int]:
    reply: list[int] = client.eval(FILL, 0, live, k_mod, net, lots)
    return reply


def python_fills(live: int, k_mod: int, net: int, lots: int) -> list[int]:
    return [
        rules.fill_cents(live, k_mod, net, lots, rules.LONG),
        rules.fill_cents(live, k_mod, net, lots, rules.SHORT),
        rules.unwind_cents(live, k_mod, net, rules.LONG),
        rules.unwind_cents(live, k_mod, net, rules.SHORT),
    ]


@settings(max_examples=400, deadline=None)
@given(
    st.integers(1, 60_000),
    st.integers(0, K_MOD_MAX_MICROS) | st.sampled_from([0, 1, 50_000, K_MOD_MAX_MICROS]),
    st.integers(-NET_MAX_CENTIS, NET_MAX_CENTIS) | st.integers(-20_000, 2_000),
    st.integers(rules.LOTS_MIN_CENTIS, rules.LOTS_MAX_CENTIS),
)
def test_lua_fills_equal_the_market_rules(
    redis_admin: redis.Redis, live: int, k_mod: int, net: int, lots: int
) -> None:
    assert lua_fills(redis_admin, live, k_mod, net, lots) == python_fills(live, k_mod, net, lots)


def test_the_floor_crossing_cases_agree_at_their_extremes(redis_admin: redis.Redis) -> None:
    cases = [
        (200, 50_000, 0, 4_000),  # 40 lots from 2.00 down through the floor
        (100, 1, -1, 1),  # the smallest slope, right at the floor
        (60_000, K_MOD_MAX_MICROS, -NET_MAX_CENTIS + rules.LOTS_MAX_CENTIS, 10_000),
        (100, 50_000, -NET_MAX_CENTIS, rules.LOTS_MAX_CENTIS),
        (101, K_MOD_MAX_MICROS, -1, rules.LOTS_MAX_CENTIS),  # the largest triangle
        (59_999, K_MOD_MAX_MICROS, -3_000, 9_999),
    ]
    for live, k_mod, net, lots in cases:
        for start in (net, -net):
            expected = python_fills(live, k_mod, start, lots)
            assert lua_fills(redis_admin, live, k_mod, start, lots) == expected


SQUARE_DIV = ENGINE + "\nreturn {E.square_div(tonumber(ARGV[1]), tonumber(ARGV[2]))}"


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 2**44 - 2).flatmap(lambda b: st.tuples(st.integers(1, b), st.just(b + 1))))
def test_the_exact_square_division_is_exact_up_to_2_pow_44(
    redis_admin: redis.Redis, pair: tuple[int, int]
) -> None:
    """floor(a² / b) and whether it leaves a remainder, where a² itself passes 2^53."""
    a, b = pair
    quotient, remainder = divmod(a * a, b)
    reply: list[int | None] = redis_admin.eval(SQUARE_DIV, 0, a, b)
    # NOTE: Lua's true is 1 in a reply, false is nil
    assert reply == [quotient, 1 if remainder else None]
