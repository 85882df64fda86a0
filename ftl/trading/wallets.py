"""Wallet hot state: the `wallet:{userId}` hash and the user's open positions, loaded from
Postgres on a miss (the trade path) and by `ftl recover`.

Wallet hash fields (integers as text): balanceCents, realizedCents, bonusCents, usedMarginCents,
costCents (Σ entry × lots × direction of the open positions: unrealized PnL = Σ price × lots ×
direction − costCents), openCount, version (bumped by every change; orders the flusher's
writes), districtId, paidReferrals, referralId (an unpaid referral of this user, paid on his
next open), boardMember.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import Row, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ftl.core.errors import Unauthorized
from ftl.core.money import to_cents
from ftl.store import keys
from ftl.store.db.models import (
    CfdPosition,
    Direction,
    Instrument,
    PositionStatus,
    Referral,
    User,
    Wallet,
)
from ftl.store.services import Services

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ms(moment: datetime) -> int:
    # NOTE: integer arithmetic: int(timestamp() * 1000) can land one millisecond short.
    return (moment - EPOCH) // timedelta(milliseconds=1)


def position_fields(row: CfdPosition | Row[Any], idx: int) -> dict[str, str]:
    """An open position row as the fields of its `position:{id}` hash (lua/lib/engine.lua)."""
    fields = {
        "userId": str(row.user_id),
        "instrumentId": str(row.instrument_id),
        "idx": str(idx),
        "direction": "1" if row.direction is Direction.long else "-1",
        "lotsCentis": str(int(row.lot_size * 100)),
        "entryCents": str(to_cents(row.entry_price)),
        "marginCents": str(to_cents(row.margin)),
        "status": "open",
        "openedAtMs": str(epoch_ms(row.opened_at)),
        "openSeq": str(row.open_seq),
        "openRequestId": row.open_request_id,
    }
    if row.stop_loss is not None:
        fields["stopLossCents"] = str(to_cents(row.stop_loss))
    if row.take_profit is not None:
        fields["takeProfitCents"] = str(to_cents(row.take_profit))
    return fields


async def _wallet_fields(
    session: AsyncSession, user_id: UUID, open_count: int, used_margin: int
) -> dict[str, str]:
    found = (
        await session.execute(
            select(
                Wallet.balance,
                Wallet.realized_pnl,
                Wallet.bonus_total,
                Wallet.version,
                User.district_id,
            )
            .join(User, User.id == Wallet.user_id)
            .where(Wallet.user_id == user_id)
        )
    ).first()
    if found is None:
        raise Unauthorized("unauthorized", "No such user.")
    paid = (
        await session.execute(
            select(func.count())
            .select_from(Referral)
            .where(Referral.referrer_id == user_id, Referral.paid_at.is_not(None))
        )
    ).scalar_one()
    unpaid = (
        await session.execute(
            select(Referral.id).where(Referral.referred_id == user_id, Referral.paid_at.is_(None))
        )
    ).scalar_one_or_none()
    return wallet_fields(*found, paid, unpaid, open_count, used_margin)


def wallet_fields(
    balance: Decimal,
    realized: Decimal,
    bonus: Decimal,
    version: int,
    district_id: int,
    paid: int,
    unpaid: UUID | None,
    open_count: int,
    used_margin: int,
) -> dict[str, str]:
    """The `wallet:{userId}` hash of a wallet row (costCents: see wallet_load.lua)."""
    fields = {
        "balanceCents": str(to_cents(balance)),
        "realizedCents": str(to_cents(realized)),
        "bonusCents": str(to_cents(bonus)),
        "usedMarginCents": str(used_margin),
        "costCents": "0",  # NOTE: wallet_load.lua adds each open position's entry × lots × dir
        "openCount": str(open_count),
        "version": str(version),
        "districtId": str(district_id),
        "paidReferrals": str(paid),
    }
    if unpaid is not None:
        fields["referralId"] = str(unpaid)
    return fields


async def load(services: Services, user_id: UUID) -> bool:
    """Put the user's wallet and open positions into Redis unless the wallet is there already;
    True when loaded. Raises Unauthorized when the user does not exist."""
    async with AsyncSession(services.engine) as session:
        rows = (
            await session.execute(
                select(CfdPosition, Instrument.idx)
                .join(Instrument, Instrument.id == CfdPosition.instrument_id)
                .where(CfdPosition.user_id == user_id, CfdPosition.status == PositionStatus.open)
            )
        ).all()
        used_margin = sum(to_cents(row.margin) for row, _ in rows)
        wallet = await _wallet_fields(session, user_id, len(rows), used_margin)
    positions = [{"id": str(row.id), "fields": position_fields(row, idx)} for row, idx in rows]
    loaded = await services.scripts.call("wallet_load", *load_call(user_id, wallet, positions))
    return bool(loaded)


def load_call(
    user_id: UUID | str, wallet: dict[str, str], positions: list[dict[str, Any]]
) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of lua/wallet_load.lua; positions as [{"id", "fields"}]."""
    return (
        [
            keys.wallet(user_id),
            keys.open_positions(user_id),
            keys.exposure(user_id),
            keys.held(user_id),
        ],
        [str(user_id), json.dumps(wallet), json.dumps(positions)],
    )
