"""The honest margin replay (SPEC §1.5) as a pure function: no Redis, no Postgres, no clock.

Given a user's balance, his open positions, the price of each held instrument at the watermark and
the ticks since it, `replay` walks the ticks in one fixed order and says where the margin level
crossed below 100 % (a warning, once per crossing) and where it reached 50 % or less (washouts,
each filling along its instrument's curve as that tick found it), and where the next replay
starts. The same inputs always give the same
output, so evaluating late gives what evaluating on time would have (docs/decisions/0040).

Units: cents, centilots, margin level in hundredths of a percent (ftl/market/rules.py).
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from ftl.market.rules import Account, fill_cents, pnl_cents, price_cents
from ftl.store.ticks import Tick

WARNING_LEVEL_BASIS = 10_000  # below 100.00 %: a warning, once per crossing
WASHOUT_LEVEL_BASIS = 5_000  # at or below 50.00 %: close the largest loser, repeat
# Levels are compared without dividing. margin_level_basis rounds 10_000 × equity / used half away
# from zero, so the level is at most L exactly when 20_000 × equity < (2L + 1) × used, and below L
# exactly when 20_000 × equity < (2L - 1) × used: equity counts in half basis points of the used
# margin, and each line sits half a basis point off its level.
EQUITY_HALF_BASIS = 2 * 10_000  # 20_000: 100.00 % in half basis points
WASHOUT_HALF_BASIS = 2 * WASHOUT_LEVEL_BASIS + 1  # 10_001: 20_000 × equity under 10_001 × used
WARNING_HALF_BASIS = 2 * WARNING_LEVEL_BASIS - 1  # 19_999: 20_000 × equity under 19_999 × used


@dataclass(frozen=True)
class HeldPosition:
    """An open position as the replay needs it. `open_seq` is the seq of the trade tick its open
    made on its instrument: the position takes part from that tick on."""

    id: UUID
    instrument_id: UUID
    direction: int
    lots_centis: int
    entry_cents: int
    margin_cents: int
    open_seq: int


@dataclass(frozen=True)
class Watermark:
    """Where the user's last replay stopped: the last seq judged per held instrument, and whether
    his level was below 100 % there (so a warning is raised once per crossing, not per tick)."""

    seqs: Mapping[UUID, int] = field(default_factory=dict)
    below_warning: bool = False


@dataclass(frozen=True)
class Curve:
    """An instrument's price curve as a tick left it: what a washout there fills along."""

    live_base_price_cents: int
    k_mod_micros: int
    net_lots_centis: int

    @classmethod
    def of(cls, tick: Tick, k_mod_micros: int) -> Curve:
        """The tick's curve; `k_mod_micros` stands in for a tick that does not carry its kMod."""
        k_mod = k_mod_micros if tick.k_mod_micros is None else tick.k_mod_micros
        return cls(tick.live_base_price_cents, k_mod, tick.net_lots_centis)

    @property
    def price_cents(self) -> int:
        return price_cents(self.live_base_price_cents, self.k_mod_micros, self.net_lots_centis)

    @classmethod
    def flat(cls, price: int) -> Curve:
        """A curve known only by its price (no impact term): fills at that price."""
        return cls(price, 0, 0)

    def close(self, position: HeldPosition) -> tuple[int, Curve]:
        """The fill of closing `position` along the curve (rounded against its trader) and the
        curve that close leaves, for the next close at the same tick (SPEC §1.4)."""
        fill = fill_cents(
            self.live_base_price_cents,
            self.k_mod_micros,
            self.net_lots_centis,
            position.lots_centis,
            -position.direction,
        )
        net = self.net_lots_centis - position.direction * position.lots_centis
        return fill, Curve(self.live_base_price_cents, self.k_mod_micros, net)


@dataclass(frozen=True)
class Washout:
    """A position closed by a breach: at tick (instrument_id, seq) the level was `level_basis`
    with `equity_cents`; the position closes at `price_cents`, the fill of walking its
    instrument's curve as it stood then (after any washout the replay made before it there)."""

    position_id: UUID
    position_instrument_id: UUID
    instrument_id: UUID
    seq: int
    at_ms: int
    price_cents: int
    pnl_cents: int
    equity_cents: int
    level_basis: int


@dataclass(frozen=True)
class Warning:
    """The level crossed below 100 % at tick (instrument_id, seq), priced `price_cents`."""

    instrument_id: UUID
    seq: int
    at_ms: int
    price_cents: int
    equity_cents: int
    level_basis: int


@dataclass(frozen=True)
class Replay:
    washouts: tuple[Washout, ...]
    warnings: tuple[Warning, ...]
    watermark: Watermark
    balance_cents: int


@dataclass(frozen=True)
class PriceRange:
    """The prices one instrument took in a window of ticks: lowest, highest, the last tick's seq
    and how many ticks (at least one)."""

    lowest_cents: int
    highest_cents: int
    last_seq: int
    ticks: int


class WindowRanges:
    """One instrument's ticks (by seq) that precede a cut millisecond, with the price range of
    every suffix, so the range of the window after any seq is one bisect.

    PERF: built once per instrument per evaluation pass and shared by all its holders, whose
    watermarks differ (replay_if_quiet).
    """

    def __init__(self, ticks: Sequence[Tick], cut_ms: int) -> None:
        self._seqs = [t.seq for t in ticks]
        self._suffix: list[PriceRange | None] = [None] * (len(ticks) + 1)
        after: PriceRange | None = None
        for at in range(len(ticks) - 1, -1, -1):
            tick = ticks[at]
            if tick.at_ms < cut_ms:
                price = tick.price_cents
                after = (
                    PriceRange(price, price, tick.seq, 1)
                    if after is None
                    else PriceRange(
                        min(price, after.lowest_cents),
                        max(price, after.highest_cents),
                        after.last_seq,
                        after.ticks + 1,
                    )
                )
            self._suffix[at] = after

    def after(self, seq: int) -> PriceRange | None:
        """The range of the ticks with a seq above `seq`; None when there are none."""
        return self._suffix[bisect_right(self._seqs, seq)]


def tick_order(ticks_by_instrument: Mapping[UUID, Sequence[Tick]]) -> Iterator[Tick]:
    """Every tick of every instrument, merged by (at ms, instrument id, seq).

    NOTE: a k-way merge, so each instrument's own ticks keep their seq order even if a clock step
    ever gave a later tick an earlier `at`.
    """
    lists: Iterable[Iterable[Tick]] = (
        sorted(ticks, key=lambda t: t.seq) for ticks in ticks_by_instrument.values()
    )
    names = {iid: str(iid) for iid in ticks_by_instrument}  # PERF: not once per tick
    return heapq.merge(*lists, key=lambda t: (t.at_ms, names[t.instrument_id], t.seq))


class _Book:
    """The open positions of a replay, with used margin and unrealised PnL per instrument kept
    up to date. PERF: a tick re-prices only its own instrument's positions; same integers as
    summing every position each time."""

    def __init__(self, prices: Mapping[UUID, int]) -> None:
        self.prices = prices
        self.open: dict[UUID, HeldPosition] = {}
        self.used_margin = 0
        self._by_instrument: dict[UUID, list[HeldPosition]] = {}
        self._pnl: dict[UUID, int] = {}

    def add(self, position: HeldPosition) -> None:
        self.open[position.id] = position
        self.used_margin += position.margin_cents
        self._by_instrument.setdefault(position.instrument_id, []).append(position)
        self.reprice(position.instrument_id)

    def remove(self, position: HeldPosition) -> None:
        del self.open[position.id]
        self.used_margin -= position.margin_cents
        self._by_instrument[position.instrument_id].remove(position)
        self.reprice(position.instrument_id)

    def reprice(self, instrument_id: UUID) -> None:
        held = self._by_instrument.get(instrument_id, ())
        self._pnl[instrument_id] = sum(_unrealized(p, self.prices) for p in held)

    def account(self, balance: int) -> Account:
        return Account(balance, self.used_margin, sum(self._pnl.values()))


def _unrealized(position: HeldPosition, prices: Mapping[UUID, int]) -> int:
    return pnl_cents(
        position.entry_cents,
        prices[position.instrument_id],
        position.lots_centis,
        position.direction,
    )


def replay(
    balance_cents: int,
    positions: Sequence[HeldPosition],
    start: Watermark,
    prices_at_start: Mapping[UUID, int],
    ticks_by_instrument: Mapping[UUID, Sequence[Tick]],
    curves_at_start: Mapping[UUID, Curve] | None = None,
) -> Replay:
    """Replay the ticks after `start` in `tick_order`.

    `start.seqs` holds a seq for every instrument of `positions`; a position with `open_seq` above
    it joins at its open tick. `prices_at_start` prices every instrument with a position already
    in play at the start. Ticks at or below `start` are ignored, so overlapping windows are safe.
    At each tick: the level below 100 % after being at or above it (or undefined) is a warning; at
    or below 50 % the position with the most negative unrealised PnL closes (ties: the smaller
    position id), again while the level stays at or below 50 % and positions remain. A washout
    fills by walking its instrument's curve: the one its last tick so far carried (or
    `curves_at_start`; without either, flat at its price), moved by the washouts before it.
    The stop-loss and take-profit closes a tick set off (ticks that hang on it) were made in the
    same Lua call, before any washout could be: a washout at that tick walks the curve they left.
    """
    seqs = dict(start.seqs)
    prices = dict(prices_at_start)
    curves = dict(curves_at_start or {})
    waiting = sorted(positions, key=lambda p: (p.open_seq, str(p.id)))
    book = _Book(prices)
    open_ = book.open
    for position in [p for p in waiting if p.open_seq <= seqs[p.instrument_id]]:
        book.add(position)
    waiting = [p for p in waiting if p.id not in open_]
    below = start.below_warning
    balance = balance_cents
    washouts: list[Washout] = []
    warnings: list[Warning] = []
    # The last tick hanging on each (instrument, seq) that set off closes.
    # PERF: one pass over the ticks, no sort (tick_order sorts them once).
    chain_ends: dict[tuple[UUID, int], Tick] = {}
    for ticks in ticks_by_instrument.values():
        for t in ticks:
            if t.hangs_on is not None:
                end = chain_ends.setdefault((t.instrument_id, t.hangs_on), t)
                if t.seq > end.seq:
                    chain_ends[(t.instrument_id, t.hangs_on)] = t
    chained: dict[UUID, int] = {}  # the origin seq whose chain's curve an instrument is on

    for tick in tick_order(ticks_by_instrument):
        iid = tick.instrument_id
        if iid not in seqs or tick.seq <= seqs[iid]:
            continue
        seqs[iid] = tick.seq
        prices[iid] = tick.price_cents
        known = curves.get(iid)
        if tick.hangs_on is None or chained.get(iid) != tick.hangs_on:
            # NOTE: a tick hanging on one already replayed keeps the curve its origin took
            # (the chain's end, moved by the washouts made there).
            end = chain_ends.get((iid, tick.seq), tick)
            curves[iid] = Curve.of(end, known.k_mod_micros if known else 0)
            chained[iid] = tick.seq
        book.reprice(iid)
        for position in [p for p in waiting if p.instrument_id == iid and p.open_seq <= tick.seq]:
            book.add(position)
            waiting.remove(position)
        account = book.account(balance)
        level = account.margin_level_basis
        if level is not None and level < WARNING_LEVEL_BASIS and not below:
            warnings.append(
                Warning(iid, tick.seq, tick.at_ms, tick.price_cents, account.equity, level)
            )
        while level is not None and level <= WASHOUT_LEVEL_BASIS:
            loser = min(open_.values(), key=lambda p: (_unrealized(p, prices), str(p.id)))
            held_on = loser.instrument_id
            curve = curves.get(held_on) or Curve.flat(prices[held_on])
            fill, curves[held_on] = curve.close(loser)
            pnl = pnl_cents(loser.entry_cents, fill, loser.lots_centis, loser.direction)
            washouts.append(
                Washout(
                    position_id=loser.id,
                    position_instrument_id=loser.instrument_id,
                    instrument_id=iid,
                    seq=tick.seq,
                    at_ms=tick.at_ms,
                    price_cents=fill,
                    pnl_cents=pnl,
                    equity_cents=account.equity,
                    level_basis=level,
                )
            )
            book.remove(loser)
            balance += pnl
            account = book.account(balance)
            level = account.margin_level_basis
        below = level is not None and level < WARNING_LEVEL_BASIS

    held = {p.instrument_id for p in open_.values()} | {p.instrument_id for p in waiting}
    return Replay(
        washouts=tuple(washouts),
        warnings=tuple(warnings),
        watermark=Watermark({i: s for i, s in seqs.items() if i in held}, below),
        balance_cents=balance,
    )


def replay_if_quiet(
    balance_cents: int,
    positions: Sequence[HeldPosition],
    start: Watermark,
    prices_at_start: Mapping[UUID, int],
    ranges: Mapping[UUID, PriceRange],
) -> Replay | None:
    """What `replay` would return, without walking the ticks, when no tick of the window can
    raise a warning or a washout; None when one might (then run `replay`).

    `ranges` holds, for each instrument of `start.seqs` with ticks after its start seq, the range
    of those ticks (the same ticks `replay` would judge). At any tick the open positions are those
    in play at the start plus some that joined, each priced inside its instrument's range (or at
    its start price), so with each position at the worse (better) end of its prices:
    `equity − usedMargin ≥ balance + Σ in play (worst PnL − margin) + Σ joining min(0, …)` and
    `≤ balance + Σ in play (best PnL − margin) + Σ joining max(0, …)`. Two windows are settled:
    - always at or above 100 % (lower bound ≥ 0): nothing happens, and after the first tick the
      level is not below 100 % any more;
    - already below 100 %, never back to 100 % (upper bound, with the rounding of the level, says
      below 99.995 %) and never at 50 % (the lower bound scaled the same way says ≥ 50.005 %):
      nothing happens and the level stays below 100 %.
    """
    floor = ceiling = 0  # equity − used margin, at worst and at best, without the balance
    breach_floor = 0  # 20,000 × equity − 10,001 × used margin at worst: ≥ 0 keeps the level > 50 %
    total_margin = 0
    any_in_play = False
    for position in positions:
        iid = position.instrument_id
        if iid not in start.seqs or position.margin_cents <= 0:
            return None
        in_play = position.open_seq <= start.seqs[iid]
        if in_play and iid not in prices_at_start:
            return None
        seen = [prices_at_start[iid]] if in_play else []
        if iid in ranges:
            seen += [ranges[iid].lowest_cents, ranges[iid].highest_cents]
        total_margin += position.margin_cents
        if not seen:
            continue  # NOTE: joins at no tick of this window
        pnls = [
            pnl_cents(position.entry_cents, price, position.lots_centis, position.direction)
            for price in seen
        ]
        margin = position.margin_cents
        worst, best = min(pnls) - margin, max(pnls) - margin
        at_breach = EQUITY_HALF_BASIS * min(pnls) - WASHOUT_HALF_BASIS * margin
        if in_play:
            any_in_play = True
            floor, ceiling, breach_floor = floor + worst, ceiling + best, breach_floor + at_breach
        else:
            floor, ceiling = floor + min(0, worst), ceiling + max(0, best)
            breach_floor += min(0, at_breach)
    if balance_cents + floor >= 0:
        below = False
    elif (
        start.below_warning
        and any_in_play
        and EQUITY_HALF_BASIS * (balance_cents + ceiling)
        + (EQUITY_HALF_BASIS - WARNING_HALF_BASIS) * total_margin
        < 0
        and EQUITY_HALF_BASIS * balance_cents + breach_floor >= 0
    ):
        below = True
    else:
        return None
    seqs = dict(start.seqs)
    judged = False
    for iid, window in ranges.items():
        if iid in seqs:
            seqs[iid] = window.last_seq
            judged = True
    held = {p.instrument_id for p in positions}
    return Replay(
        washouts=(),
        warnings=(),
        watermark=Watermark(
            {i: s for i, s in seqs.items() if i in held},
            below if judged else start.below_warning,
        ),
        balance_cents=balance_cents,
    )


@dataclass(frozen=True)
class HeldInstrument:
    """One instrument of a safe box: the seq and price where the box was made, and the user's
    net exposure there (Σ lots × direction, centilots: a cent of price is that many cents of
    equity)."""

    seq: int
    price_cents: int
    net_lots_centis: int

    def swing(self, window: PriceRange | None) -> tuple[int, int]:
        """The most equity the window's prices took away from and added to the user's equity at
        the box's price, in cents (each ≥ 0)."""
        if window is None:
            return 0, 0
        down = self.net_lots_centis * (window.lowest_cents - self.price_cents)
        up = self.net_lots_centis * (window.highest_cents - self.price_cents)
        return max(0, -min(down, up)), max(0, down, up)


@dataclass(frozen=True)
class SafeBox:
    """Where a replay ended, what no tick after it can change (docs/decisions/0046): while the
    equity the prices since `instruments[i].seq` can take away stays within `slack` (and, below
    100 %, the equity they can add within `headroom`), the replay raises no warning and no
    washout. Equity is linear in each price, so the worst case of a window is each instrument at
    the worse end of its range, as in `replay_if_quiet`.

    Two kinds, like the quick check's:
    - `below` False: `slack` = equity − used margin ≥ 0 (level ≥ 100 %, nothing happens);
    - `below` True (already below 100 %): `slack` = 20,000 × equity − 10,001 × used margin and
      `headroom` = 19,999 × used margin − 1 − 20,000 × equity, both ≥ 0: the level stays in
      [50.005 %, 99.995 %), never 50.00 % nor 100.00 % once rounded.
    """

    below: bool
    slack: int
    headroom: int
    instruments: Mapping[UUID, HeldInstrument]

    def _spent(self, windows: Mapping[UUID, PriceRange | None]) -> tuple[int, int]:
        """The slack and headroom the windows (those after each instrument's seq; a missing
        one: no tick) spent at worst, in the units of `slack` and `headroom`."""
        lost = gained = 0
        for iid, held in self.instruments.items():
            down, up = held.swing(windows.get(iid))
            lost, gained = lost + down, gained + up
        return (EQUITY_HALF_BASIS * lost, EQUITY_HALF_BASIS * gained) if self.below else (lost, 0)

    def holds(self, windows: Mapping[UUID, PriceRange | None]) -> bool:
        """Whether no tick of the windows can have raised a warning or a washout."""
        lost, gained = self._spent(windows)
        return lost <= self.slack and gained <= self.headroom

    def strain(self, windows: Mapping[UUID, PriceRange | None]) -> float:
        """The share of its slack (or headroom) the windows spent at worst, to put the users
        likeliest to breach first (over 1: the box no longer holds; only `holds` decides)."""
        lost, gained = self._spent(windows)
        return max(_share(lost, self.slack), _share(gained, self.headroom))

    def bounds(self) -> dict[UUID, tuple[int | None, int | None]]:
        """Per instrument, the lowest and highest price (None: no bound) within which the box
        holds however the others move within theirs (docs/decisions/0166): its slack (and, below
        100 %, its headroom) shared out by each instrument's exposure at the box's price.
        Stricter than `holds`, which adds up the swings that happened: a price past a bound asks
        for that check, not for a washout. A hedged instrument (no net lots) has none."""
        weights = {
            iid: abs(h.net_lots_centis) * max(h.price_cents, 1)
            for iid, h in self.instruments.items()
            if h.net_lots_centis
        }
        total = sum(weights.values())
        lost = self.slack // EQUITY_HALF_BASIS if self.below else self.slack
        gained = self.headroom // EQUITY_HALF_BASIS if self.below else None
        found: dict[UUID, tuple[int | None, int | None]] = {}
        for iid, held in self.instruments.items():
            net, price = held.net_lots_centis, held.price_cents
            if not net:
                found[iid] = (None, None)
                continue
            # NOTE: floor divisions only: each share, and each room, rounds toward the box.
            fall = lost * weights[iid] // total // abs(net)
            rise = None if gained is None else gained * weights[iid] // total // abs(net)
            if net > 0:
                found[iid] = (price - fall, None if rise is None else price + rise)
            else:
                found[iid] = (None if rise is None else price - rise, price + fall)
        return found


def _share(spent: int, available: int) -> float:
    if available > 0:
        return spent / available
    return float("inf") if spent > 0 else 0.0


def safe_box(
    balance_cents: int,
    positions: Sequence[HeldPosition],
    end: Watermark,
    prices_at_end: Mapping[UUID, int],
) -> SafeBox | None:
    """The safe box of a replay that ended at `end` (its seqs and `below`) with these positions
    and balance, every instrument priced at `prices_at_end`; None when neither kind holds there
    or some position has not joined by `end` (a later join changes the book)."""
    if not positions:
        return None
    for p in positions:
        iid = p.instrument_id
        if iid not in end.seqs or iid not in prices_at_end or p.open_seq > end.seqs[iid]:
            return None
        if p.margin_cents <= 0:
            return None
    net, used, equity = _book(balance_cents, positions, prices_at_end)
    held = {
        iid: HeldInstrument(end.seqs[iid], prices_at_end[iid], lots) for iid, lots in net.items()
    }
    if equity >= used:
        return SafeBox(False, equity - used, 0, held)
    slack = EQUITY_HALF_BASIS * equity - WASHOUT_HALF_BASIS * used
    headroom = WARNING_HALF_BASIS * used - 1 - EQUITY_HALF_BASIS * equity
    if end.below_warning and slack >= 0 and headroom >= 0:
        return SafeBox(True, slack, headroom, held)
    return None


def _book(
    balance_cents: int, positions: Sequence[HeldPosition], prices: Mapping[UUID, int]
) -> tuple[dict[UUID, int], int, int]:
    """Net exposure per instrument (Σ lots × direction), used margin and equity at `prices`."""
    net: dict[UUID, int] = {}
    used = pnl = 0
    for p in positions:
        iid = p.instrument_id
        net[iid] = net.get(iid, 0) + p.direction * p.lots_centis
        used += p.margin_cents
        pnl += pnl_cents(p.entry_cents, prices[iid], p.lots_centis, p.direction)
    return net, used, balance_cents + pnl


def box_keeps_its_promise(
    balance_cents: int, positions: Sequence[HeldPosition], box: SafeBox
) -> bool:
    """Whether a safe box still promises no more than the balance and positions allow: it holds
    exactly their instruments with their net exposure, and its slack (and headroom) are at most
    what they give at the box's prices. What `ftl audit` checks (ftl/ops/audit.py)."""
    if not positions or {p.instrument_id for p in positions} != box.instruments.keys():
        return False
    prices = {iid: held.price_cents for iid, held in box.instruments.items()}
    net, used, equity = _book(balance_cents, positions, prices)
    if net != {i: h.net_lots_centis for i, h in box.instruments.items()}:
        return False
    if not box.below:
        return 0 <= box.slack <= equity - used
    return (
        0 <= box.slack <= EQUITY_HALF_BASIS * equity - WASHOUT_HALF_BASIS * used
        and 0 <= box.headroom <= WARNING_HALF_BASIS * used - 1 - EQUITY_HALF_BASIS * equity
    )
