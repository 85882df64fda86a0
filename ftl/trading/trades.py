"""Open, close and modify positions: validate -> one Lua call (all checks and writes) -> answer.

The Lua scripts (lua/position_*.lua) decide every rule atomically with the integers of
ftl/market/rules.py; this module turns requests into their arguments and refusals into typed errors.
Durability: each script writes its outbox entries in the same call (docs/decisions/0010).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from sqlalchemy import select

from ftl.accounts.sessions import FAMILY_CLAIM
from ftl.core import metrics
from ftl.core.errors import (
    Conflict,
    FtlError,
    InvalidInput,
    NotFound,
    Unauthorized,
    Unprocessable,
    invalid,
)
from ftl.market import rules
from ftl.store import keys
from ftl.store.auth.tokens import Claims
from ftl.store.db.models import CfdPosition, PositionStatus
from ftl.store.services import Services
from ftl.trading import wallets

MAX_PRICE = Decimal(1_000_000)  # points; far above any price the curve reaches
MAX_LOTS = Decimal(100)
MAX_SLIPPAGE_TOLERANCE = Decimal("0.05")  # a fraction of the client price
# The ranges and this pattern are judged at the edge (web/schemas.py declares them); the steps
# of a cent are judged here, exactly, on the Decimal the client wrote.
CLIENT_REQUEST_ID_PATTERN = "^[A-Za-z0-9_.:-]{1,64}$"

MESSAGES = {
    "unauthorized": "The session has ended.",
    "not_found": "No such thing here.",
    "instrument_inactive": "This player is not trading.",
    "instrument_frozen": "This player is frozen for the moment.",
    "too_many_positions": f"At most {rules.MAX_OPEN_POSITIONS} open positions.",
    "slippage_exceeded": "The price moved beyond your tolerance.",
    "insufficient_margin": "Not enough free margin.",
    "position_closed": "The position is already closed.",
    "idempotency_conflict": "This clientRequestId was used for a different request.",
}
ERROR_TYPES: dict[str, type[FtlError]] = {
    "unauthorized": Unauthorized,
    "not_found": NotFound,
    "idempotency_conflict": Unprocessable,
    "validation_error": InvalidInput,
}

# A level of a PATCH: keep it, clear it (None) or set it (cents).
Keep = Literal["keep"]
KEEP: Keep = "keep"


def exact(value: float) -> Decimal:
    """A JSON number as the Decimal the client wrote.

    NOTE: repr() of a parsed float is the shortest text that parses back: what the client sent."""
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def whole(value: float | Decimal, scale: int, field: str, unit: str) -> int:
    scaled = (value if isinstance(value, Decimal) else exact(value)) * scale
    if scaled != scaled.to_integral_value():
        raise invalid(field, f"must be in steps of {unit}")
    return int(scaled)


def cents(value: float, field: str) -> int:
    """A price or level (its range judged at the edge) in cents, to the cent."""
    return whole(value, 100, field, "0.01")


def fingerprint(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()


@dataclass(frozen=True)
class OpenOrder:
    """A validated open request, in the engine's integer units."""

    instrument_id: UUID
    direction: int
    lots_centis: int
    client_request_id: str
    client_price_cents: int
    tolerance_ppm: int
    stop_loss_cents: int | None
    take_profit_cents: int | None

    @classmethod
    def of(
        cls,
        *,
        instrument_id: UUID,
        direction: int,
        lot_size: float,
        client_request_id: str,
        client_price: float,
        slippage_tolerance: float | None,
        stop_loss: float | None,
        take_profit: float | None,
    ) -> OpenOrder:
        """An order from a body that web/schemas.py has typed and range-checked."""
        return cls(
            instrument_id=instrument_id,
            direction=direction,
            lots_centis=whole(lot_size, 100, "lotSize", "0.01"),
            client_request_id=client_request_id,
            client_price_cents=cents(client_price, "clientPrice"),
            # NOTE: a tolerance finer than a millionth rounds down (tighter), never refused.
            tolerance_ppm=rules.SLIPPAGE_TOLERANCE_DEFAULT_PPM
            if slippage_tolerance is None
            else int(exact(slippage_tolerance) * rules.PPM),
            stop_loss_cents=None if stop_loss is None else cents(stop_loss, "stopLoss"),
            take_profit_cents=None if take_profit is None else cents(take_profit, "takeProfit"),
        )

    def fingerprint(self) -> str:
        return fingerprint(
            "open",
            self.instrument_id,
            self.direction,
            self.lots_centis,
            self.client_price_cents,
            self.tolerance_ppm,
            self.stop_loss_cents,
            self.take_profit_cents,
        )


def _level_arg(level: int | Keep | None) -> str:
    return "clear" if level is None else str(level)


@dataclass(frozen=True)
class Levels:
    """A PATCH of stop-loss and take-profit: absent keeps, null clears, a number sets."""

    stop_loss: int | Keep | None
    take_profit: int | Keep | None


@dataclass(frozen=True)
class Caller:
    """Who trades, and what says his session still lives (checked inside the Lua call)."""

    user_id: UUID
    jti: str
    family: str | None = None

    @classmethod
    def from_claims(cls, claims: Claims) -> Caller:
        family = claims.extra.get(FAMILY_CLAIM)
        return cls(claims.user_id, claims.jti, family if isinstance(family, str) else None)

    @property
    def revoked_key(self) -> str:
        return keys.revoked_jti(self.jti)

    @property
    def family_key(self) -> str:
        return keys.refresh_family(self.family) if self.family else self.revoked_key

    @property
    def check_family(self) -> str:
        return "1" if self.family else "0"


def refusal(code: str, details_json: str) -> FtlError:
    details: dict[str, Any] = json.loads(details_json)
    message = MESSAGES.get(code, code)
    if code == "validation_error":
        message = f"{details.get('field')} is on the wrong side of the price."
    return ERROR_TYPES.get(code, Conflict)(code, message, details)


async def refuse(
    services: Services, caller: Caller, position_id: UUID | None, reply: list[Any], action: str
) -> FtlError:
    """The typed error of a refusal (counted by `action` and code). A position missing from hot
    state may be one the flusher already moved to Postgres once closed: that is
    `position_closed`, not `not_found`."""
    error = await _refusal(services, caller, position_id, reply)
    metrics.trade_outcome(action, error.code).inc()
    return error


async def _refusal(
    services: Services, caller: Caller, position_id: UUID | None, reply: list[Any]
) -> FtlError:
    if reply[1] == "not_found" and position_id is not None:
        async with services.engine.connect() as conn:
            status = (
                await conn.execute(
                    select(CfdPosition.status).where(
                        CfdPosition.id == position_id, CfdPosition.user_id == caller.user_id
                    )
                )
            ).scalar_one_or_none()
        if status is PositionStatus.closed:
            return refusal("position_closed", json.dumps({"positionId": str(position_id)}))
    return refusal(reply[1], reply[2])


async def answer(
    services: Services, caller: Caller, position_id: UUID | None, reply: list[Any], action: str
) -> str:
    """The response JSON of a trade script's reply; raises its refusal."""
    status = reply[0]
    if status == 0:
        raise await refuse(services, caller, position_id, reply, action)
    metrics.trade_outcome(action, "replayed" if status == 2 else "ok").inc()
    return with_replayed(reply[1], status == 2)


def with_replayed(body: str, replayed: bool) -> str:
    """A trade's `{position, wallet}` JSON text with its `replayed` flag."""
    return f'{body[:-1]},"replayed":{"true" if replayed else "false"}}}'


async def _call_with_wallet(
    services: Services, user_id: UUID, name: str, keys_: list[str], args: list[str | int]
) -> list[Any]:
    reply: list[Any] = await services.scripts.call(name, keys=keys_, args=args)
    if reply[0] == 0 and reply[1] == "wallet_missing":
        # NOTE: first trade since Redis last saw this user: load from Postgres, run again.
        await wallets.load(services, user_id)
        reply = await services.scripts.call(name, keys=keys_, args=args)
    return reply


async def open_position(services: Services, caller: Caller, order: OpenOrder) -> str:
    """Open a position; the `{position, wallet, replayed}` JSON text."""
    user_id = caller.user_id
    reply = await _call_with_wallet(
        services,
        user_id,
        "position_open",
        [
            keys.wallet(user_id),
            keys.open_positions(user_id),
            keys.idempotency(user_id, order.client_request_id),
            caller.revoked_key,
            keys.instrument(order.instrument_id),
            caller.family_key,
        ],
        [
            str(user_id),
            str(order.instrument_id),
            order.direction,
            order.lots_centis,
            order.client_price_cents,
            order.tolerance_ppm,
            "" if order.stop_loss_cents is None else order.stop_loss_cents,
            "" if order.take_profit_cents is None else order.take_profit_cents,
            order.client_request_id,
            order.fingerprint(),
            str(uuid.uuid4()),
            caller.check_family,
        ],
    )
    return await answer(services, caller, None, reply, "open")


async def close_position(
    services: Services, caller: Caller, position_id: UUID, client_request_id: str
) -> str:
    """Close one of the user's positions at market; the `{position, wallet, replayed}` JSON."""
    user_id = caller.user_id
    reply = await _call_with_wallet(
        services,
        user_id,
        "position_close",
        [
            keys.wallet(user_id),
            keys.idempotency(user_id, client_request_id),
            caller.revoked_key,
            keys.position(position_id),
            caller.family_key,
        ],
        [
            str(user_id),
            str(position_id),
            client_request_id,
            fingerprint("close", position_id),
            caller.check_family,
        ],
    )
    return await answer(services, caller, position_id, reply, "close")


async def modify_position(
    services: Services, caller: Caller, position_id: UUID, levels: Levels
) -> str:
    """Set, keep or clear the levels of an open position; the position JSON."""
    reply = await services.scripts.call(
        "position_modify",
        keys=[keys.position(position_id), caller.revoked_key, caller.family_key],
        args=[
            str(caller.user_id),
            str(position_id),
            _level_arg(levels.stop_loss),
            _level_arg(levels.take_profit),
            caller.check_family,
        ],
    )
    if reply[0] == 0:
        raise await refuse(services, caller, position_id, reply, "modify")
    metrics.trade_outcome("modify", "ok").inc()
    body: str = reply[1]
    return body
