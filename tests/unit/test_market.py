from __future__ import annotations

from decimal import Decimal

from ftl.market.rules import pre_match_base_price_cents


def test_pre_match_base_price_is_50_plus_18_per_form_point() -> None:
    assert pre_match_base_price_cents(Decimal("0")) == 5_000
    assert pre_match_base_price_cents(Decimal("14.5")) == 31_100
    assert pre_match_base_price_cents(Decimal("25")) == 50_000


def test_form_index_is_clamped_to_0_25() -> None:
    assert pre_match_base_price_cents(Decimal("-3")) == 5_000
    assert pre_match_base_price_cents(Decimal("40")) == 50_000


# The trading rules (SPEC §1.3–1.4) on integers: cents, centilots, kMod micros, ppm.

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ftl.market import rules  # noqa: E402


def test_division_rounds_half_away_from_zero() -> None:
    assert [rules.div_half_away(n, 10) for n in (4, 5, 15, -4, -5, -15)] == [0, 1, 2, 0, -1, -2]


def test_price_is_live_base_plus_kmod_times_net_lots_floored_at_one_point() -> None:
    assert rules.price_cents(10_000, 50_000, 150) == 10_008  # 100 + 0.05 × 1.5 = 100.075
    assert rules.price_cents(10_000, 50_000, -150) == 9_992  # 99.925 rounds away from zero
    assert rules.price_cents(150, 50_000, -10_000) == rules.PRICE_FLOOR_CENTS


def test_fills_walk_the_curve_to_half_the_trade() -> None:
    # net 0, 2 lots: a buy fills at 100 + 0.05 × 1, a sell at 100 − 0.05 × 1
    assert rules.fill_cents(10_000, 50_000, 0, 200, rules.LONG) == 10_005
    assert rules.fill_cents(10_000, 50_000, 0, 200, rules.SHORT) == 9_995
    assert rules.fill_cents(120, 50_000, 0, 10_000, rules.SHORT) == rules.PRICE_FLOOR_CENTS


def test_fills_round_against_the_trader() -> None:
    # net 0, 0.01 lot at kMod 0.05: the curve's average is 100.0025 on a buy, 99.9975 on a sell
    assert rules.fill_cents(10_000, 50_000, 0, 1, rules.LONG) == 10_001
    assert rules.fill_cents(10_000, 50_000, 0, 1, rules.SHORT) == 9_999
    # the same half cent that half-away-from-zero rounded in the trader's favour
    assert rules.fill_cents(10_000, 50_000, -100, 100, rules.LONG) == 9_998  # 99.975 up
    assert rules.fill_cents(10_000, 50_000, 100, 100, rules.SHORT) == 10_002  # 100.025 down


def test_the_floor_belongs_to_the_curve_not_to_the_average() -> None:
    # live 2.00, kMod 0.05: selling 40 lots from net 0 walks 2.00 -> 1.00 (at net -20) then
    # stays at the floor: (20 × 1.50 + 20 × 1.00) / 40 = 1.25, not max(1.00, 1.00) = 1.00
    assert rules.fill_cents(200, 50_000, 0, 4_000, rules.SHORT) == 125
    # wholly below the floor: 1.00
    assert rules.fill_cents(200, 50_000, -4_000, 1_000, rules.SHORT) == 100
    # kMod 0: the live base price, floored
    assert rules.fill_cents(50, 0, 0, 100, rules.LONG) == 100


def test_the_unwind_price_is_the_average_fill_of_unwinding_all_of_net_lots() -> None:
    # live 50.00, net 19 lots at kMod 0.05: 50 + 0.05 × 19 / 2 = 50.475
    assert rules.unwind_cents(5_000, 50_000, 1_900, rules.LONG) == 5_047
    assert rules.unwind_cents(5_000, 50_000, 1_900, rules.SHORT) == 5_048
    assert rules.unwind_cents(5_000, 50_000, 0, rules.LONG) == 5_000


@given(
    st.integers(100, 60_000),
    st.integers(0, 2_000_000),
    st.integers(-1_000_000, 1_000_000),
    st.integers(rules.LOTS_MIN_CENTIS, rules.LOTS_MAX_CENTIS),
    st.sampled_from([rules.LONG, rules.SHORT]),
)
def test_an_open_then_a_close_of_the_same_size_makes_zero_or_a_cent_level_loss(
    live: int, k_mod: int, net: int, lots: int, direction: int
) -> None:
    entry = rules.fill_cents(live, k_mod, net, lots, direction)
    exit_ = rules.fill_cents(live, k_mod, net + direction * lots, lots, -direction)
    walk = (live, k_mod, net, net + direction * lots)
    whole_cent = rules.curve_average_cents(*walk, True) == rules.curve_average_cents(*walk, False)
    pnl = rules.pnl_cents(entry, exit_, lots, direction)
    assert pnl == (0 if whole_cent else -lots)  # a cent a share when the fill is not whole


@given(
    st.integers(100, 60_000),
    st.integers(0, 2_000_000),
    st.lists(st.integers(-10_000, 10_000).filter(bool), min_size=1, max_size=12),
)
def test_no_walk_of_net_lots_away_and_back_pays_the_trader(
    live: int, k_mod: int, trades: list[int]
) -> None:
    """Trades (signed centilots) from netLots 0, then one trade back to 0: the cash they paid
    and received sums to at most zero, wherever the curve meets the floor."""
    net = cash = 0
    for lots in [*trades, -sum(trades)]:
        if lots == 0:
            continue
        side = rules.LONG if lots > 0 else rules.SHORT
        cash -= lots * rules.fill_cents(live, k_mod, net, abs(lots), side)
        net += lots
    assert cash <= 0


def test_margin_is_a_tenth_of_the_exposure_to_the_cent() -> None:
    assert rules.margin_cents(10_005, 200) == 200_100  # 100.05 × 2 × 100 / 10
    assert rules.margin_cents(10_005, 1) == 1_001  # 1000.5 cents rounds up


def test_slippage_tolerance_bounds_are_inclusive() -> None:
    # client 100.00 with 1 %: a long fills up to 101.00, a short down to 99.00
    assert not rules.slippage_exceeded(rules.LONG, 10_100, 10_000, 10_000)
    assert rules.slippage_exceeded(rules.LONG, 10_101, 10_000, 10_000)
    assert not rules.slippage_exceeded(rules.SHORT, 9_900, 10_000, 10_000)
    assert rules.slippage_exceeded(rules.SHORT, 9_899, 10_000, 10_000)


def test_levels_sit_on_the_right_side_and_trigger_at_or_beyond() -> None:
    assert rules.invalid_level(rules.LONG, 10_000, 9_000, 11_000) is None
    assert rules.invalid_level(rules.LONG, 10_000, 10_000, None) == "stopLoss"
    assert rules.invalid_level(rules.SHORT, 10_000, 9_000, None) == "stopLoss"
    assert rules.invalid_level(rules.SHORT, 10_000, None, 10_500) == "takeProfit"
    assert rules.stop_reached(rules.LONG, 9_000, 11_000, 9_000) == rules.STOP_LOSS
    assert rules.stop_reached(rules.LONG, 9_000, 11_000, 9_001) is None
    assert rules.stop_reached(rules.SHORT, 11_000, 9_000, 8_000) == rules.TAKE_PROFIT


def test_margin_level_is_a_percentage_to_two_places_and_none_without_positions() -> None:
    account = rules.Account(balance=1_000_000, used_margin=200_100, unrealized_pnl=1_000)
    assert (account.equity, account.free_margin) == (1_001_000, 800_900)
    assert account.margin_level_basis == 50_025  # 500.25 %
    assert rules.Account(1_000_000, 0, 0).margin_level_basis is None
