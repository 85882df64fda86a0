"""The honest replay (SPEC §1.5) as a pure function: a worked case per rule, and the property that
evaluating in any number of pieces gives what one evaluation of the whole path gives."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from uuid import UUID

from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from ftl.market.rules import LONG, SHORT, margin_cents, margin_level_basis
from ftl.store.ticks import Tick, TickSource
from ftl.trading.margin.replay import (
    EQUITY_HALF_BASIS,
    WARNING_HALF_BASIS,
    WARNING_LEVEL_BASIS,
    WASHOUT_HALF_BASIS,
    WASHOUT_LEVEL_BASIS,
    HeldPosition,
    PriceRange,
    Replay,
    Watermark,
    WindowRanges,
    replay,
    replay_if_quiet,
    tick_order,
)

I1, I2, I3 = (UUID(int=n) for n in (1, 2, 3))
LOT = 100  # centilots
ENTRY = 10_000  # 100.00


def position(
    instrument: UUID, direction: int = LONG, lots: int = LOT, open_seq: int = 1
) -> HeldPosition:
    return HeldPosition(
        id=uuid.uuid4(),
        instrument_id=instrument,
        direction=direction,
        lots_centis=lots,
        entry_cents=ENTRY,
        margin_cents=margin_cents(ENTRY, lots),
        open_seq=open_seq,
    )


class Path:
    """Ticks in the order they happen, one millisecond apart, seq counted per instrument."""

    def __init__(self, start_seq: int = 1) -> None:
        self.ticks: list[Tick] = []
        self.seqs: dict[UUID, int] = {}
        self.start_seq = start_seq

    def tick(self, instrument: UUID, price: int, at_ms: int | None = None) -> Tick:
        seq = self.seqs.get(instrument, self.start_seq) + 1
        self.seqs[instrument] = seq
        at = 1_000 + len(self.ticks) if at_ms is None else at_ms
        made = Tick(instrument, 1, seq, price, price, 0, TickSource.LIVE, at)
        self.ticks.append(made)
        return made

    def by_instrument(self, ticks: Sequence[Tick] | None = None) -> dict[UUID, list[Tick]]:
        grouped: dict[UUID, list[Tick]] = {}
        for t in self.ticks if ticks is None else ticks:
            grouped.setdefault(t.instrument_id, []).append(t)
        return grouped


def run(balance: int, positions: Sequence[HeldPosition], path: Path) -> Replay:
    held = {p.instrument_id for p in positions}
    start = Watermark({i: path.start_seq for i in held})
    return replay(balance, positions, start, {i: ENTRY for i in held}, path.by_instrument())


def test_the_largest_loser_goes_first_at_the_breach_tick() -> None:
    a, b = position(I1), position(I2)
    path = Path()
    path.tick(I1, 9_900)  # A −100.00, B 0: level 107.5 %
    path.tick(I2, 9_750)  # B −250.00
    warned = path.tick(I1, 8_800)  # A −1,200.00: equity 1,050.00 / 2,000.00 = 52.5 %
    breach = path.tick(I1, 8_700)  # A −1,300.00: 47.5 %
    out = run(250_000, [a, b], path)

    assert [(w.position_id, w.seq, w.price_cents, w.pnl_cents) for w in out.washouts] == [
        (a.id, breach.seq, 8_700, -130_000)
    ]
    assert out.washouts[0].level_basis == margin_level_basis(250_000 - 130_000 - 25_000, 200_000)
    assert [(w.instrument_id, w.seq) for w in out.warnings] == [(I1, warned.seq)]
    assert out.balance_cents == 250_000 - 130_000
    # B survives at 95 %: still below 100 %, and I1 is no longer held.
    assert out.watermark == Watermark({I2: path.seqs[I2]}, below_warning=True)


def test_several_washouts_at_one_tick_until_the_level_is_above_50() -> None:
    a, b, c = position(I1), position(I2), position(I3, direction=SHORT)
    path = Path()
    path.tick(I2, 9_500)  # B −500.00
    path.tick(I3, 9_000)  # C +1,000.00: level 150 %
    breach = path.tick(I1, 6_500)  # A −3,500.00: 33.3 %
    out = run(400_000, [a, b, c], path)

    # A out: 1,000.00 / 2,000.00 = 50 % is still a breach, so B (the larger loser of B, C) goes
    # too; then 1,000.00 / 1,000.00 = 100 %: C stays and the level is no longer below 100 %.
    assert [(w.position_id, w.seq, w.price_cents) for w in out.washouts] == [
        (a.id, breach.seq, 6_500),
        (b.id, breach.seq, 9_500),
    ]
    assert [w.level_basis for w in out.washouts] == [3_333, 5_000]
    assert out.balance_cents == 400_000 - 350_000 - 50_000
    assert out.watermark.below_warning is False
    assert len(out.warnings) == 1 and out.warnings[0].seq == breach.seq


def test_a_recovered_price_after_the_breach_still_washes_out_at_the_breach_price() -> None:
    a = position(I1)
    path = Path()
    path.tick(I1, 9_500)  # 100 %: not below 100, no warning
    breach = path.tick(I1, 9_000)  # exactly 50 %: a breach
    path.tick(I1, 11_000)  # recovered, but the replay reaches this tick too late to matter
    out = run(150_000, [a], path)

    assert [(w.seq, w.price_cents, w.pnl_cents) for w in out.washouts] == [
        (breach.seq, 9_000, -100_000)
    ]
    assert out.balance_cents == 50_000
    assert out.watermark == Watermark({}, below_warning=False)


def test_no_positions_means_no_level_and_nothing_happens() -> None:
    path = Path()
    path.tick(I1, 100)
    out = replay(0, [], Watermark(), {}, path.by_instrument())
    assert out == Replay((), (), Watermark(), 0)


def test_a_warning_is_raised_once_per_crossing() -> None:
    a = position(I1)
    path = Path()
    first = path.tick(I1, 9_800)  # equity 700.00 / margin 1,000.00 = 70 %: a crossing
    path.tick(I1, 9_700)  # still below: no second warning
    path.tick(I1, 10_100)  # back above 100 %
    second = path.tick(I1, 9_900)  # below again: a new crossing
    out = run(100_000 - 10_000, [a], path)

    assert [w.seq for w in out.warnings] == [first.seq, second.seq]
    assert out.washouts == ()
    assert out.watermark.below_warning is True


def test_a_position_takes_part_from_its_open_tick_only() -> None:
    early = position(I1)
    late = position(I2, open_seq=3)
    path = Path()
    path.tick(I2, 5_000)  # seq 2 of I2, before `late` existed: would wipe it out
    path.tick(I2, 10_000)  # seq 3: its open
    out = run(150_000, [early, late], path)
    assert out.washouts == ()
    assert out.watermark.seqs == {I1: 1, I2: 3}


def test_ticks_merge_by_time_then_instrument_then_seq() -> None:
    path = Path()
    path.tick(I2, 1, at_ms=5)
    path.tick(I1, 1, at_ms=5)
    path.tick(I1, 1, at_ms=7)
    path.tick(I2, 1, at_ms=6)
    order = [(t.at_ms, t.instrument_id, t.seq) for t in tick_order(path.by_instrument())]
    assert order == [(5, I1, 2), (5, I2, 2), (6, I2, 3), (7, I1, 3)]


def _in_pieces(
    balance: int, positions: Sequence[HeldPosition], path: Path, cuts: Sequence[int]
) -> tuple[Replay, list[Replay]]:
    """Replay with a cut at each given millisecond, as the service does: each piece starts from
    the previous watermark, with the balance and positions it left and the prices at it."""
    held = {p.instrument_id for p in positions}
    mark = Watermark({i: path.start_seq for i in held})
    prices: Mapping[UUID, int] = {i: ENTRY for i in held}
    pieces = []
    remaining = list(positions)
    for cut in [*sorted(cuts), 10**9]:
        ticks = [t for t in path.ticks if t.at_ms < cut]
        piece = replay(balance, remaining, mark, prices, path.by_instrument(ticks))
        pieces.append(piece)
        closed = {w.position_id for w in piece.washouts}
        remaining = [p for p in remaining if p.id not in closed]
        balance, mark = piece.balance_cents, piece.watermark
        seen = {(t.instrument_id, t.seq): t.price_cents for t in path.ticks}
        prices = {i: seen.get((i, s), ENTRY) for i, s in mark.seqs.items()}
    return pieces[-1], pieces


portfolios = st.lists(
    st.tuples(st.sampled_from([I1, I2, I3]), st.sampled_from([LONG, SHORT]), st.integers(1, 300)),
    min_size=0,
    max_size=5,
)
paths = st.lists(
    st.tuples(st.sampled_from([I1, I2, I3]), st.integers(5_000, 15_000), st.integers(0, 2)),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(
    portfolio=portfolios,
    moves=paths,
    balance=st.integers(0, 400_000),
    cuts=st.lists(st.integers(1_000, 1_100), max_size=6),
)
def test_any_cut_into_pieces_gives_the_same_outcome(
    portfolio: list[tuple[UUID, int, int]],
    moves: list[tuple[UUID, int, int]],
    balance: int,
    cuts: list[int],
) -> None:
    positions = [position(i, d, lots) for i, d, lots in portfolio]
    path = Path()
    at = 1_000
    for instrument, price, gap_ms in moves:
        at += gap_ms  # NOTE: several ticks in one millisecond are the hard case for cuts
        path.tick(instrument, price, at_ms=at)
    whole = run(balance, positions, path)
    last, pieces = _in_pieces(balance, positions, path, cuts)

    assert [w for p in pieces for w in p.washouts] == list(whole.washouts)
    assert [w for p in pieces for w in p.warnings] == list(whole.warnings)
    assert last.balance_cents == whole.balance_cents
    assert last.watermark == whole.watermark
    assert whole.balance_cents == balance + sum(w.pnl_cents for w in whole.washouts)


def _ranges(path: Path, start: Watermark, cut_ms: int) -> dict[UUID, PriceRange]:
    found = {}
    for instrument, ticks in path.by_instrument().items():
        window = WindowRanges(ticks, cut_ms).after(start.seqs.get(instrument, 0))
        if window is not None:
            found[instrument] = window
    return found


def test_a_quiet_window_skips_the_walk_and_still_clears_the_below_flag() -> None:
    a, b = position(I1), position(I2, direction=SHORT)
    path = Path()
    path.tick(I1, 9_000)  # A −1,000.00
    path.tick(I2, 10_500)  # B −500.00: at worst 1,500.00 of 2,000.00 margin lost
    path.tick(I1, 10_200)
    start = Watermark({I1: 1, I2: 1}, below_warning=True)
    prices = {I1: ENTRY, I2: ENTRY}
    ranges = _ranges(path, start, 10**9)

    quiet = replay_if_quiet(350_000, [a, b], start, prices, ranges)

    assert quiet is not None
    assert quiet == replay(350_000, [a, b], start, prices, path.by_instrument())
    assert quiet.watermark == Watermark({I1: 3, I2: 2}, below_warning=False)
    # 1.00 less and the worst case would be below 100 %: the full replay has to judge it.
    assert replay_if_quiet(349_999, [a, b], start, prices, ranges) is None


def test_a_window_cut_before_its_breach_is_quiet_and_the_whole_window_is_not() -> None:
    a = position(I1)
    path = Path()
    path.tick(I1, 10_100)
    path.tick(I1, 9_000)  # 50 %: a breach, at 1,001 ms
    start = Watermark({I1: 1})

    assert replay_if_quiet(150_000, [a], start, {I1: ENTRY}, _ranges(path, start, 1_001)) == (
        Replay((), (), Watermark({I1: 2}), 150_000)
    )
    assert replay_if_quiet(150_000, [a], start, {I1: ENTRY}, _ranges(path, start, 1_002)) is None


def test_a_position_joining_later_lends_no_profit_to_the_ticks_before_it() -> None:
    a = position(I1)
    late = position(I2, open_seq=3)
    path = Path()
    path.tick(I1, 9_000)  # A alone at 50 %: a breach
    path.tick(I2, 15_000)  # seq 3: `late` joins, +5,000.00 at every price of the window
    start = Watermark({I1: 1, I2: 2})

    full = replay(150_000, [a, late], start, {I1: ENTRY}, path.by_instrument())

    assert [w.position_id for w in full.washouts] == [a.id]
    assert (
        replay_if_quiet(150_000, [a, late], start, {I1: ENTRY}, _ranges(path, start, 10**9)) is None
    )


def test_a_window_spent_between_50_and_100_percent_is_quiet_too() -> None:
    a = position(I1)  # margin 1,000.00; 1,501.00 points: equity = 1,501.00 + (price − 100.00)
    path = Path()
    path.tick(I1, 9_000)  # 50.1 %
    path.tick(I1, 9_450)  # 95.1 %
    start = Watermark({I1: 1}, below_warning=True)  # at 93.00: 80.1 %
    ranges = _ranges(path, start, 10**9)

    quiet = replay_if_quiet(150_100, [a], start, {I1: 9_300}, ranges)

    assert quiet == replay(150_100, [a], start, {I1: 9_300}, path.by_instrument())
    assert quiet is not None and quiet.watermark == Watermark({I1: 3}, below_warning=True)
    # Not yet below at the start: the first tick is a crossing, a warning to record.
    assert replay_if_quiet(150_100, [a], Watermark({I1: 1}), {I1: 9_300}, ranges) is None
    # 1.00 less and 90.00 is a breach.
    assert replay_if_quiet(150_000, [a], start, {I1: 9_300}, ranges) is None
    # 53.99 more: at 94.50 the equity is 999.99 of 1,000.00, a level that rounds to 100.00 %.
    assert not replay(
        154_999, [a], start, {I1: 9_300}, path.by_instrument()
    ).watermark.below_warning
    assert replay_if_quiet(154_999, [a], start, {I1: 9_300}, ranges) is None
    path.tick(I1, 9_499)  # exactly 100 %: no longer below
    assert replay_if_quiet(150_100, [a], start, {I1: 9_300}, _ranges(path, start, 10**9)) is None


@settings(max_examples=400, deadline=None)
@given(
    portfolio=st.lists(
        st.tuples(
            st.sampled_from([I1, I2, I3]),
            st.sampled_from([LONG, SHORT]),
            st.integers(1, 300),
            st.integers(1, 6),
        ),
        max_size=5,
    ),
    moves=paths,
    balance=st.integers(0, 800_000),
    start_seqs=st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5)),
    below=st.booleans(),
    cut=st.integers(1_000, 1_090),
)
def test_the_quick_check_agrees_with_the_full_replay_whenever_it_answers(
    portfolio: list[tuple[UUID, int, int, int]],
    moves: list[tuple[UUID, int, int]],
    balance: int,
    start_seqs: tuple[int, int, int],
    below: bool,
    cut: int,
) -> None:
    positions = [position(i, d, lots, open_seq) for i, d, lots, open_seq in portfolio]
    path = Path()
    at = 1_000
    for instrument, price, gap_ms in moves:
        at += gap_ms
        path.tick(instrument, price, at_ms=at)
    held = {p.instrument_id for p in positions}
    start = Watermark(
        {i: s for i, s in zip((I1, I2, I3), start_seqs, strict=True) if i in held}, below
    )
    in_play = {p.instrument_id for p in positions if p.open_seq <= start.seqs[p.instrument_id]}
    prices = {i: ENTRY - 300 + 150 * start.seqs[i] for i in in_play}
    before_cut = path.by_instrument([t for t in path.ticks if t.at_ms < cut])

    quiet = replay_if_quiet(balance, positions, start, prices, _ranges(path, start, cut))
    full = replay(balance, positions, start, prices, before_cut)

    event(
        "full replay needed"
        if quiet is None
        else f"quick check answered, below 100 % after: {quiet.watermark.below_warning}"
    )
    if quiet is not None:
        assert quiet == full
    if full.warnings or full.washouts:
        assert quiet is None


@given(st.integers(-(10**12), 10**12), st.integers(1, 10**12))
@example(10_001, 20_000)  # 50.005 %: rounds to 50.01 %, no washout
@example(10_000, 20_000)  # 50.00 %: a washout
@example(19_999, 20_000)  # 99.995 %: rounds to 100.00 %, no warning
@example(19_998, 20_000)  # 99.99 %: a warning
def test_the_half_basis_lines_are_the_rounded_levels(equity: int, used: int) -> None:
    """The replay compares levels without dividing; the lines agree with margin_level_basis."""
    level = margin_level_basis(equity, used)
    assert level is not None
    washout_line = EQUITY_HALF_BASIS * equity < WASHOUT_HALF_BASIS * used
    warning_line = EQUITY_HALF_BASIS * equity < WARNING_HALF_BASIS * used
    assert washout_line == (level <= WASHOUT_LEVEL_BASIS)
    assert warning_line == (level < WARNING_LEVEL_BASIS)
