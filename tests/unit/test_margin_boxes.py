"""Safe boxes (docs/decisions/0046): while the prices since a replay ended spend no more than its
box's slack, the user's replay raises nothing, whatever the prices do and in whatever order they
tick, so an after-tick pass may leave him out."""

from __future__ import annotations

from uuid import UUID

from hypothesis import event, given, settings
from hypothesis import strategies as st

from ftl.market.rules import LONG, SHORT
from ftl.trading.margin.replay import (
    HeldInstrument,
    PriceRange,
    SafeBox,
    Watermark,
    box_keeps_its_promise,
    replay,
    safe_box,
)
from tests.unit.test_margin_replay import ENTRY, I1, I2, I3, Path, position

END = Watermark({I1: 5, I2: 5, I3: 5})


def window(*prices: int) -> PriceRange:
    return PriceRange(min(prices), max(prices), 9, len(prices))


def test_a_box_at_or_above_100_percent_holds_the_equity_over_used_margin() -> None:
    a = position(I1)  # a long lot at 100.00, margin 1,000.00: one cent of price is 1.00 point
    box = safe_box(150_000, [a], Watermark({I1: 5}), {I1: ENTRY})
    assert box == SafeBox(False, 50_000, 0, {I1: HeldInstrument(5, ENTRY, 100)})
    assert box.holds({I1: window(9_500, 12_000)})  # 5.00 down spends the 500.00 of slack
    assert not box.holds({I1: window(9_499)})
    assert box.holds({})  # no tick since


def test_the_worst_case_adds_up_over_instruments_and_a_hedge_spends_nothing() -> None:
    held = [position(I1), position(I2, SHORT), position(I3), position(I3, SHORT)]
    box = safe_box(420_000, held, END, {I1: ENTRY, I2: ENTRY, I3: ENTRY})
    assert box is not None and box.slack == 20_000
    assert box.instruments[I3].net_lots_centis == 0
    assert box.holds({I1: window(9_900), I2: window(10_100), I3: window(1, 50_000)})
    assert not box.holds({I1: window(9_900), I2: window(10_101)})
    assert box.holds({I1: window(9_800, 10_000)})  # all the slack on one instrument
    assert box.strain({I1: window(9_850), I2: window(10_100)}) == 1.25


def test_below_100_percent_the_box_bounds_both_ways_and_needs_the_below_flag() -> None:
    a = position(I1)  # margin 1,000.00; equity 800.00: 80 %
    below = Watermark({I1: 5}, below_warning=True)
    box = safe_box(80_000, [a], below, {I1: ENTRY})
    assert box is not None and box.below
    assert box.holds({I1: window(9_701, 10_199)})  # 50.01 % .. 99.99 %
    assert not box.holds({I1: window(9_700)})  # 50.00 %: a washout
    assert not box.holds({I1: window(10_200)})  # 100.00 %: no longer below
    # not flagged below yet: the first tick under 100 % is a warning to raise
    assert safe_box(80_000, [a], Watermark({I1: 5}), {I1: ENTRY}) is None
    # at or under 50.005 % there is no room at all
    assert safe_box(50_000, [a], below, {I1: ENTRY}) is None


def test_no_box_for_a_position_that_joins_later_or_without_an_end_price() -> None:
    late = position(I1, open_seq=9)
    assert safe_box(500_000, [late], Watermark({I1: 5}), {I1: ENTRY}) is None
    assert safe_box(500_000, [position(I1)], Watermark({I1: 5}), {}) is None
    assert safe_box(500_000, [], Watermark({}), {}) is None


# A book of up to 5 positions on 3 instruments, its prices where the box is made, and a path of
# price moves after it: what both properties below draw.
BOOKS = {
    "portfolio": st.lists(
        st.tuples(
            st.sampled_from([I1, I2, I3]), st.sampled_from([LONG, SHORT]), st.integers(1, 300)
        ),
        min_size=1,
        max_size=5,
    ),
    "balance": st.integers(0, 800_000),
    "prices": st.tuples(*(st.integers(5_000, 15_000) for _ in range(3))),
    "below": st.booleans(),
    "moves": st.lists(
        st.tuples(st.sampled_from([I1, I2, I3]), st.integers(-3_000, 3_000)), max_size=12
    ),
}


@settings(max_examples=400, deadline=None)
@given(**BOOKS)
def test_no_path_the_box_holds_raises_a_warning_or_a_washout(
    portfolio: list[tuple[UUID, int, int]],
    balance: int,
    prices: tuple[int, int, int],
    below: bool,
    moves: list[tuple[UUID, int]],
) -> None:
    positions = [position(i, d, lots, open_seq=1) for i, d, lots in portfolio]
    held = {p.instrument_id for p in positions}
    at_end = {i: p for i, p in zip((I1, I2, I3), prices, strict=True) if i in held}
    end = Watermark({i: 1 for i in held}, below)

    box = safe_box(balance, positions, end, at_end)

    if box is None:
        event("no box")
        return
    assert set(box.instruments) == held
    assert box_keeps_its_promise(balance, positions, box)
    path = Path()
    for instrument, step in moves:
        if instrument in held:
            path.tick(instrument, max(1, at_end[instrument] + step))
    windows = {
        i: window(*(t.price_cents for t in ticks)) for i, ticks in path.by_instrument().items()
    }
    outcome = replay(balance, positions, end, at_end, path.by_instrument())
    holds = box.holds(windows)
    event(f"box below 100 %: {below}, holds: {holds}")
    if holds:
        assert outcome.washouts == () and outcome.warnings == ()
        assert box.strain(windows) <= 1


def test_the_audit_check_finds_a_box_promising_more_than_the_wallet() -> None:
    a, b = position(I1), position(I2, SHORT)
    box = safe_box(220_000, [a, b], END, {I1: ENTRY, I2: ENTRY})
    assert box is not None and box_keeps_its_promise(220_000, [a, b], box)
    assert not box_keeps_its_promise(219_999, [a, b], box)  # a cent less balance
    assert not box_keeps_its_promise(220_000, [a], box)  # not the instruments held
    assert not box_keeps_its_promise(
        220_000, [a, b], SafeBox(False, box.slack + 1, 0, box.instruments)
    )
    lighter = {**box.instruments, I1: HeldInstrument(5, ENTRY, 50)}
    assert not box_keeps_its_promise(220_000, [a, b], SafeBox(False, box.slack, 0, lighter))


@settings(max_examples=400, deadline=None)
@given(**BOOKS, spots=st.lists(st.floats(0, 1), min_size=6, max_size=6))
def test_a_box_holds_while_every_price_stays_within_its_bounds(
    portfolio: list[tuple[UUID, int, int]],
    balance: int,
    prices: tuple[int, int, int],
    below: bool,
    moves: list[tuple[UUID, int]],
    spots: list[float],
) -> None:
    """Decision 0166: the bounds the index keeps share the box's slack (and headroom) out, so any
    prices within every instrument's bounds at once are prices the box holds through; with one
    instrument exposed they are exact (a cent past one, it does not hold)."""
    positions = [position(i, d, lots, open_seq=1) for i, d, lots in portfolio]
    held = {p.instrument_id for p in positions}
    at_end = {i: p for i, p in zip((I1, I2, I3), prices, strict=True) if i in held}
    box = safe_box(balance, positions, Watermark({i: 1 for i in held}, below), at_end)
    if box is None:
        event("no box")
        return
    bounds = box.bounds()
    assert bounds.keys() == box.instruments.keys()
    windows = {}
    for k, (iid, (floor, ceiling)) in enumerate(bounds.items()):
        price = box.instruments[iid].price_cents
        assert (floor is None or floor <= price) and (ceiling is None or price <= ceiling)
        low = price if floor is None else floor + round((price - floor) * spots[2 * k])
        high = price if ceiling is None else ceiling - round((ceiling - price) * spots[2 * k + 1])
        windows[iid] = PriceRange(min(low, price), max(high, price), 9, 2)
    assert box.holds(windows)
    exposed = [iid for iid, h in box.instruments.items() if h.net_lots_centis]
    event(f"box below 100 %: {below}, exposed: {len(exposed)}")
    if len(exposed) == 1:
        (iid,) = exposed
        floor, ceiling = bounds[iid]
        price = box.instruments[iid].price_cents
        if floor is not None:
            assert not box.holds({iid: PriceRange(floor - 1, price, 9, 2)})
        if ceiling is not None:
            assert not box.holds({iid: PriceRange(price, ceiling + 1, 9, 2)})


def test_a_hedged_instrument_has_no_bounds_and_a_long_none_above_100_percent() -> None:
    hedged = [position(I1), position(I1, SHORT), position(I2)]
    box = safe_box(500_000, hedged, END, {I1: ENTRY, I2: ENTRY})
    assert box is not None and not box.below
    floor, ceiling = box.bounds()[I2]
    assert box.bounds()[I1] == (None, None)
    assert ceiling is None and floor is not None and floor < ENTRY
