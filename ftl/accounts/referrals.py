"""Referral codes: 8 lowercase hex characters, unique per user, stable for life (SPEC §1.9);
named invites for tracking; the referral recorded at signup (the payout happens on the referred
user's first position, in the trading code)."""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from msgspec import Meta
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ftl.core.answers import Answer, Id, Points, Time
from ftl.core.errors import InvalidInput, NotFound
from ftl.core.money import json_number, to_cents
from ftl.core.text import human_text
from ftl.store.db.models import Referral, ReferralInvite, User

REFERRAL_CODE_BYTES = 4
REFERRAL_CODE = re.compile(r"[0-9a-f]{8}")
ReferralCode = Annotated[str, Meta(pattern=f"^{REFERRAL_CODE.pattern}$")]
INVITE_LABEL_MAX_CHARS = 80


class Invite(Answer):
    id: Id
    label: str
    created_at: Time
    signups: int


class Referrals(Answer):
    code: ReferralCode
    invites: list[Invite]
    referred_count: int
    paid_count: int
    bonus_total: Points


def new_referral_code() -> str:
    return secrets.token_hex(REFERRAL_CODE_BYTES)


def is_referral_code(raw: object) -> bool:
    return isinstance(raw, str) and REFERRAL_CODE.fullmatch(raw) is not None


async def code_exists(engine: AsyncEngine, code: str) -> bool:
    if not is_referral_code(code):
        return False
    async with engine.connect() as conn:
        found = await conn.execute(select(User.id).where(User.referral_code == code))
        return found.first() is not None


@dataclass(frozen=True)
class ReferralClaim:
    """Who referred a signup, checked before the signup transaction writes anything."""

    referrer_id: uuid.UUID
    invite_id: uuid.UUID | None


async def resolve_claim(
    conn: AsyncConnection, code: object, invite_id: object
) -> ReferralClaim | None:
    """The referrer of `referralCode` (and the invite, which must be one of his); None when no
    code is given. 400 `validation_error` naming the field when either is unknown."""
    if code is None:
        if invite_id is not None:
            raise InvalidInput(
                "validation_error", "inviteId needs a referralCode.", {"field": "inviteId"}
            )
        return None
    if not is_referral_code(code):
        raise InvalidInput(
            "validation_error",
            "referralCode is 8 lowercase hex characters.",
            {"field": "referralCode"},
        )
    referrer = (await conn.execute(select(User.id).where(User.referral_code == code))).first()
    if referrer is None:
        raise InvalidInput(
            "validation_error", "No one has this referral code.", {"field": "referralCode"}
        )
    if invite_id is None:
        return ReferralClaim(referrer.id, None)
    try:
        invite = uuid.UUID(str(invite_id)) if isinstance(invite_id, str) else None
    except ValueError:
        invite = None
    owned = (
        await conn.execute(
            select(ReferralInvite.id).where(
                ReferralInvite.id == invite, ReferralInvite.user_id == referrer.id
            )
        )
    ).first()
    if invite is None or owned is None:
        raise InvalidInput(
            "validation_error", "No such invite for this referral code.", {"field": "inviteId"}
        )
    return ReferralClaim(referrer.id, invite)


async def record(conn: AsyncConnection, referred_id: uuid.UUID, claim: ReferralClaim) -> None:
    """The `referrals` row of a signup, inside the signup's transaction (unpaid, bonus 0)."""
    await conn.execute(
        insert(Referral).values(
            referrer_id=claim.referrer_id, referred_id=referred_id, invite_id=claim.invite_id
        )
    )


def invite_label(raw: object) -> str:
    return human_text(raw, "label", INVITE_LABEL_MAX_CHARS)


def _invite(row: Any, signups: int) -> Invite:
    return Invite(
        id=str(row.id), label=row.label, created_at=row.created_at.isoformat(), signups=signups
    )


async def create_invite(engine: AsyncEngine, user_id: uuid.UUID, label: str) -> Invite:
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                insert(ReferralInvite)
                .values(user_id=user_id, label=label)
                .returning(ReferralInvite.id, ReferralInvite.label, ReferralInvite.created_at)
            )
        ).one()
    return _invite(row, 0)


async def summary(engine: AsyncEngine, user_id: uuid.UUID) -> Referrals:
    """GET /api/referrals: my code, my invites, how many signed up, were paid, and the bonus."""
    async with engine.connect() as conn:
        code = (
            await conn.execute(select(User.referral_code).where(User.id == user_id))
        ).scalar_one_or_none()
        if code is None:
            raise NotFound("not_found", "No such account.")
        signups = func.count(Referral.id)
        invites = await conn.execute(
            select(ReferralInvite.id, ReferralInvite.label, ReferralInvite.created_at, signups)
            .outerjoin(Referral, Referral.invite_id == ReferralInvite.id)
            .where(ReferralInvite.user_id == user_id)
            .group_by(ReferralInvite.id)
            .order_by(ReferralInvite.created_at, ReferralInvite.id)
        )
        totals = (
            await conn.execute(
                select(
                    func.count(Referral.id),
                    func.count(Referral.paid_at),
                    func.coalesce(func.sum(Referral.bonus), Decimal("0")),
                ).where(Referral.referrer_id == user_id)
            )
        ).one()
    return Referrals(
        code=code,
        invites=[_invite(row, row[3]) for row in invites],
        referred_count=totals[0],
        paid_count=totals[1],
        bonus_total=json_number(to_cents(Decimal(totals[2]))),
    )
