"""The referral payout (SPEC §1.9) when a referred user opens his first position.

`position_open.lua` puts the referral id in the outbox in the same call as the open; the flusher
calls `pay` for it. Exactly once: `referral_pay.lua` keeps a marker per referral in Redis, and
the `referrals` row is marked paid only after the credit, so a retry after any crash finds the
marker and only finishes the bookkeeping.
"""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import func, select, update

from ftl.core.money import from_cents
from ftl.store import keys
from ftl.store.db.models import Referral
from ftl.store.services import Services
from ftl.trading import wallets


async def pay(services: Services, referral_id: UUID) -> int:
    """Credit the referral's bonus once; the bonus in cents (0 when there is nothing to pay)."""
    async with services.engine.connect() as conn:
        row = (
            await conn.execute(
                select(Referral.referrer_id, Referral.paid_at).where(Referral.id == referral_id)
            )
        ).first()
    if row is None or row.paid_at is not None:
        return 0
    referrer: UUID = row.referrer_id
    call_keys = [keys.wallet(referrer), keys.referral_paid(referral_id)]
    args = [str(referrer), str(referral_id)]
    reply = await services.scripts.call("referral_pay", keys=call_keys, args=args)
    if reply[0] == 0:
        await wallets.load(services, referrer)
        reply = await services.scripts.call("referral_pay", keys=call_keys, args=args)
    bonus_cents = int(reply[1])
    async with services.engine.begin() as conn:
        await conn.execute(
            update(Referral)
            .where(Referral.id == referral_id, Referral.paid_at.is_(None))
            .values(paid_at=func.now(), bonus=from_cents(bonus_cents))
        )
    return bonus_cents
