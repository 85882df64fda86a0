"""A plain-Python model of the trading engine, built only from ftl/market/rules.py: what every Lua
script must do, in the same order (opens, closes, price updates, SL/TP cascades)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ftl.market import rules

MAX_SYSTEM_CLOSES = 200  # the per-call cascade bound of lua/lib/engine.lua


@dataclass
class ModelInstrument:
    live: int
    k_mod: int
    net: int = 0
    seq: int = 0

    @property
    def price(self) -> int:
        return rules.price_cents(self.live, self.k_mod, self.net)


@dataclass
class ModelPosition:
    id: str
    user: str
    instrument: str
    direction: int
    lots: int
    entry: int
    margin: int
    stop_loss: int | None
    take_profit: int | None
    opened_at_ms: int = 0
    status: str = "open"
    exit: int | None = None
    pnl: int | None = None
    closed_by: str | None = None


@dataclass
class ModelWallet:
    balance: int = 1_000_000
    realized: int = 0
    used: int = 0
    open_count: int = 0


class Refused(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class Engine:
    instruments: dict[str, ModelInstrument] = field(default_factory=dict)
    wallets: dict[str, ModelWallet] = field(default_factory=dict)
    positions: dict[str, ModelPosition] = field(default_factory=dict)

    def account(self, user: str) -> rules.Account:
        wallet = self.wallets[user]
        unrealized = sum(
            rules.pnl_cents(p.entry, self.instruments[p.instrument].price, p.lots, p.direction)
            for p in self.positions.values()
            if p.user == user and p.status == "open"
        )
        return rules.Account(wallet.balance, wallet.used, unrealized)

    def check_open(
        self,
        user: str,
        instrument: str,
        direction: int,
        lots: int,
        client: int,
        tolerance: int,
        stop_loss: int | None,
        take_profit: int | None,
    ) -> int:
        """The fill of an acceptable open; Refused otherwise (in the scripts' order of checks)."""
        inst = self.instruments[instrument]
        if self.wallets[user].open_count >= rules.MAX_OPEN_POSITIONS:
            raise Refused("too_many_positions")
        fill = rules.fill_cents(inst.live, inst.k_mod, inst.net, lots, direction)
        if rules.slippage_exceeded(direction, fill, client, tolerance):
            raise Refused("slippage_exceeded")
        after = rules.level_price_after_open(inst.live, inst.k_mod, inst.net, lots, direction)
        if rules.invalid_level(direction, after, stop_loss, take_profit):
            raise Refused("validation_error")
        if rules.margin_cents(fill, lots) > self.account(user).free_margin:
            raise Refused("insufficient_margin")
        return fill

    def open(
        self,
        position_id: str,
        user: str,
        instrument: str,
        direction: int,
        lots: int,
        client: int,
        tolerance: int,
        stop_loss: int | None,
        take_profit: int | None,
        opened_at_ms: int = 0,
    ) -> None:
        fill = self.check_open(
            user, instrument, direction, lots, client, tolerance, stop_loss, take_profit
        )
        margin = rules.margin_cents(fill, lots)
        self.positions[position_id] = ModelPosition(
            position_id,
            user,
            instrument,
            direction,
            lots,
            fill,
            margin,
            stop_loss,
            take_profit,
            opened_at_ms,
        )
        wallet = self.wallets[user]
        wallet.used += margin
        wallet.open_count += 1
        inst = self.instruments[instrument]
        inst.net += direction * lots
        self.settle(instrument, self.tick(instrument))

    def close(self, user: str, position_id: str) -> None:
        position = self.positions.get(position_id)
        if position is None or position.user != user:
            raise Refused("not_found")
        if position.status != "open":
            raise Refused("position_closed")
        inst = self.instruments[position.instrument]
        exit_ = rules.fill_cents(
            inst.live, inst.k_mod, inst.net, position.lots, -position.direction
        )
        self.settle(position.instrument, self._close(position, exit_, "user"))

    def modify(
        self, user: str, position_id: str, stop_loss: int | None, take_profit: int | None
    ) -> None:
        position = self.positions.get(position_id)
        if position is None or position.user != user:
            raise Refused("not_found")
        if position.status != "open":
            raise Refused("position_closed")
        price = self.instruments[position.instrument].price
        if rules.invalid_level(position.direction, price, stop_loss, take_profit):
            raise Refused("validation_error")
        position.stop_loss, position.take_profit = stop_loss, take_profit

    def update_price(self, instrument: str, live: int) -> None:
        self.instruments[instrument].live = live
        self.settle(instrument, self.tick(instrument))

    def update_k_mod(self, instrument: str, k_mod: int) -> int:
        """An admin's kMod change: a tick of the new curve, which settles the levels it reaches.
        The price of that tick (the levels it closes tick again after it)."""
        self.instruments[instrument].k_mod = k_mod
        price = self.tick(instrument)
        self.settle(instrument, price)
        return price

    def tick(self, instrument: str) -> int:
        inst = self.instruments[instrument]
        inst.seq += 1
        return inst.price

    def _close(self, position: ModelPosition, exit_: int, reason: str) -> int:
        pnl = rules.pnl_cents(position.entry, exit_, position.lots, position.direction)
        position.status, position.exit, position.pnl, position.closed_by = (
            "closed",
            exit_,
            pnl,
            reason,
        )
        wallet = self.wallets[position.user]
        wallet.balance += pnl
        wallet.realized += pnl
        wallet.used -= position.margin
        wallet.open_count -= 1
        self.instruments[position.instrument].net -= position.direction * position.lots
        return self.tick(position.instrument)

    def unwind(self, instrument: str) -> None:
        """The full-time close-out of one instrument: every open position at the unwind price of
        the snapshot, rounded against its trader; no level triggers."""
        inst = self.instruments[instrument]
        live, k_mod, net = inst.live, inst.k_mod, inst.net
        for position in sorted(self.positions.values(), key=lambda p: p.id):
            if position.instrument == instrument and position.status == "open":
                exit_ = rules.unwind_cents(live, k_mod, net, position.direction)
                self._close(position, exit_, "auto_exit_ft")

    def settle(self, instrument: str, price: int) -> None:
        """Close what each tick reaches, breadth first; one tick's hits in (openedAt, id) order,
        each filling along the curve from the netLots the previous close left."""
        queue, closes = deque([price]), 0
        while queue:
            tick_price = queue.popleft()
            hits = sorted(
                (
                    p
                    for p in self.positions.values()
                    if p.instrument == instrument
                    and p.status == "open"
                    and rules.stop_reached(p.direction, p.stop_loss, p.take_profit, tick_price)
                ),
                key=lambda p: (p.opened_at_ms, p.id),
            )
            inst = self.instruments[instrument]
            for position in hits:
                if closes >= MAX_SYSTEM_CLOSES:
                    return
                reason = rules.stop_reached(
                    position.direction, position.stop_loss, position.take_profit, tick_price
                )
                assert reason is not None
                exit_ = rules.fill_cents(
                    inst.live, inst.k_mod, inst.net, position.lots, -position.direction
                )
                queue.append(self._close(position, exit_, reason))
                closes += 1
