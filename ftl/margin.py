"""The honest margin replay (SPEC §1.5) as a pure function: no Redis, no Postgres, no clock.

Given a user's balance, his open positions, the price of each held instrument at the watermark and
the ticks since it, `replay` walks the ticks in one fixed order and says where the margin level
crossed below 100 % (a warning, once per crossing) and where it reached 50 % or less (washouts, at
that tick's prices), and where the next replay starts. The same inputs always give the same
output, so evaluating late gives what evaluating on time would have (docs/decisions/0040).

Units: cents, centilots, margin level in hundredths of a percent (ftl/market.py).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from ftl.market import Account, pnl_cents
from ftl.ticks import Tick

WARNING_LEVEL_BASIS = 10_000  # below 100.00 %: a warning, once per crossing
WASHOUT_LEVEL_BASIS = 5_000  # at or below 50.00 %: close the largest loser, repeat


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
class Washout:
    """A position closed by a breach: at tick (instrument_id, seq) the level was `level_basis`
    with `equity_cents`; the position closes at `price_cents`, its instrument's price then."""

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


def tick_order(ticks_by_instrument: Mapping[UUID, Sequence[Tick]]) -> Iterator[Tick]:
    """Every tick of every instrument, merged by (at ms, instrument id, seq).

    NOTE: a k-way merge, so each instrument's own ticks keep their seq order even if a clock step
    ever gave a later tick an earlier `at`.
    """
    lists: Iterable[Iterable[Tick]] = (
        sorted(ticks, key=lambda t: t.seq) for ticks in ticks_by_instrument.values()
    )
    return heapq.merge(*lists, key=lambda t: (t.at_ms, str(t.instrument_id), t.seq))


def _account(balance: int, open_: Iterable[HeldPosition], prices: Mapping[UUID, int]) -> Account:
    positions = list(open_)
    return Account(
        balance=balance,
        used_margin=sum(p.margin_cents for p in positions),
        unrealized_pnl=sum(_unrealized(p, prices) for p in positions),
    )


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
) -> Replay:
    """Replay the ticks after `start` in `tick_order`.

    `start.seqs` holds a seq for every instrument of `positions`; a position with `open_seq` above
    it joins at its open tick. `prices_at_start` prices every instrument with a position already
    in play at the start. Ticks at or below `start` are ignored, so overlapping windows are safe.
    At each tick: the level below 100 % after being at or above it (or undefined) is a warning; at
    or below 50 % the position with the most negative unrealised PnL closes at its instrument's
    price of that moment (ties: the smaller position id), again while the level stays at or below
    50 % and positions remain.
    """
    seqs = dict(start.seqs)
    prices = dict(prices_at_start)
    waiting = sorted(positions, key=lambda p: (p.open_seq, str(p.id)))
    open_: dict[UUID, HeldPosition] = {}
    joined = [p for p in waiting if p.open_seq <= seqs[p.instrument_id]]
    for position in joined:
        open_[position.id] = position
    waiting = [p for p in waiting if p.id not in open_]
    below = start.below_warning
    balance = balance_cents
    washouts: list[Washout] = []
    warnings: list[Warning] = []

    for tick in tick_order(ticks_by_instrument):
        iid = tick.instrument_id
        if iid not in seqs or tick.seq <= seqs[iid]:
            continue
        seqs[iid] = tick.seq
        prices[iid] = tick.price_cents
        for position in [p for p in waiting if p.instrument_id == iid and p.open_seq <= tick.seq]:
            open_[position.id] = position
            waiting.remove(position)
        account = _account(balance, open_.values(), prices)
        level = account.margin_level_basis
        if level is not None and level < WARNING_LEVEL_BASIS and not below:
            warnings.append(
                Warning(iid, tick.seq, tick.at_ms, tick.price_cents, account.equity, level)
            )
        while level is not None and level <= WASHOUT_LEVEL_BASIS:
            loser = min(open_.values(), key=lambda p: (_unrealized(p, prices), str(p.id)))
            pnl = _unrealized(loser, prices)
            washouts.append(
                Washout(
                    position_id=loser.id,
                    position_instrument_id=loser.instrument_id,
                    instrument_id=iid,
                    seq=tick.seq,
                    at_ms=tick.at_ms,
                    price_cents=prices[loser.instrument_id],
                    pnl_cents=pnl,
                    equity_cents=account.equity,
                    level_basis=level,
                )
            )
            del open_[loser.id]
            balance += pnl
            account = _account(balance, open_.values(), prices)
            level = account.margin_level_basis
        below = level is not None and level < WARNING_LEVEL_BASIS

    held = {p.instrument_id for p in open_.values()} | {p.instrument_id for p in waiting}
    return Replay(
        washouts=tuple(washouts),
        warnings=tuple(warnings),
        watermark=Watermark({i: s for i, s in seqs.items() if i in held}, below),
        balance_cents=balance,
    )
