"""A trader acting through the real trade scripts, and the full-time close-out of his instrument,
for the tests of fair fills (SPEC §1.4: nobody profits from his own price impact)."""

from __future__ import annotations

import json
import uuid
from typing import Any
from uuid import UUID

import psycopg

from ftl.core.errors import FtlError
from ftl.market import instruments, rules
from ftl.store import keys
from ftl.store.services import Services
from ftl.trading import trades
from ftl.trading.fulltime import close_out


class Trader:
    """One account trading one instrument: every call goes through ftl.trading.trades and its
    Lua."""

    def __init__(self, services: Services, user: UUID, instrument: UUID) -> None:
        self.services = services
        self.caller = trades.Caller(user, "jti")
        self.instrument = instrument

    async def curve(self) -> instruments.InstrumentState:
        state = await instruments.read(self.services.redis, self.instrument)
        assert state is not None
        return state

    async def price(self) -> int:
        s = await self.curve()
        return rules.price_cents(s.live_base_price_cents, s.k_mod_micros, s.net_lots_centis)

    async def open(
        self,
        direction: int,
        lots_centis: int,
        stop_loss: int | None = None,
        take_profit: int | None = None,
    ) -> dict[str, Any] | None:
        """Open at whatever the curve gives (the client price is the fill itself); the position,
        or None when the engine refused it."""
        s = await self.curve()
        fill = rules.fill_cents(
            s.live_base_price_cents, s.k_mod_micros, s.net_lots_centis, lots_centis, direction
        )
        order = trades.OpenOrder(
            self.instrument,
            direction,
            lots_centis,
            uuid.uuid4().hex,
            fill,
            0,
            stop_loss,
            take_profit,
        )
        try:
            body = json.loads(await trades.open_position(self.services, self.caller, order))
        except FtlError:
            return None
        position: dict[str, Any] = body["position"]
        return position

    async def close(self, position_id: str) -> dict[str, Any] | None:
        """Close at market; the closed position, or None when it was not open any more."""
        try:
            body = json.loads(
                await trades.close_position(
                    self.services, self.caller, UUID(position_id), uuid.uuid4().hex
                )
            )
        except FtlError:
            return None
        position: dict[str, Any] = body["position"]
        return position

    async def set_levels(
        self, position_id: str, stop_loss: int | None, take_profit: int | None
    ) -> bool:
        """Set both levels; whether the engine took them."""
        try:
            await trades.modify_position(
                self.services,
                self.caller,
                UUID(position_id),
                trades.Levels(stop_loss, take_profit),
            )
        except FtlError:
            return False
        return True

    async def position(self, position_id: str) -> dict[str, str]:
        """The position's hot-state hash (closedBy, exitCents, pnlCents, ...)."""
        fields: dict[str, str] = await self.services.redis.hgetall(  # type: ignore[assignment]
            keys.position(position_id)
        )
        return fields

    async def open_ids(self) -> set[str]:
        found: set[str] = await self.services.redis.smembers(  # type: ignore[assignment]
            keys.open_positions(self.caller.user_id)
        )
        return found

    async def balance(self) -> int:
        """The wallet's balance in cents (hot state; the starting balance before any trade)."""
        cents = await self.services.redis.hget(keys.wallet(self.caller.user_id), "balanceCents")
        return 1_000_000 if cents is None else int(cents)


async def full_time(services: Services, pg: psycopg.Connection) -> None:
    """The full-time close-out (SPEC §1.7) of a fixture of the test instruments' team (BRA)."""
    fixture_id = uuid.uuid4()
    pg.execute(
        "INSERT INTO fixtures (id, sportmonks_fixture_id, home_team, away_team, kickoff_at,"
        " status, full_time_at) VALUES (%s, %s, 'BRA', 'ARG', now(), 'finished', now())",
        (fixture_id, uuid.uuid4().int % 2**62),
    )
    await close_out(services, fixture_id)
