"""Accounts: users with their wallet, looked up, registered, or made up for demos and load tests.

Only Postgres is written here; the wallet reaches Redis hot state on the user's first trade.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ftl.accounts.referrals import new_referral_code
from ftl.core.text import human_text
from ftl.store.db.models import District, User, UserRole, Wallet

STARTING_BALANCE = Decimal("10000.00")
DISTRICT_COUNT = 14
DISPLAY_NAME_MAX_CHARS = 50
SYNTHETIC_SUBJECT_PREFIX = "synthetic:"  # NOTE: decision 0005, synthetic users' identity key
DEV_BATCH_MAX = 1_000
DEV_BATCH_PREFIX_MAX_CHARS = 40
# NOTE: 4 random bytes collide rarely (1 in ~4 million per pair at 1,000 users); retry those rows.
INSERT_ROUNDS = 5


@dataclass(frozen=True)
class Account:
    id: uuid.UUID
    email: str | None
    first_name: str
    last_name: str | None
    display_name: str
    district_id: int
    role: UserRole
    referral_code: str
    is_synthetic: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "email": self.email,
            "firstName": self.first_name,
            "lastName": self.last_name,
            "displayName": self.display_name,
            "districtId": self.district_id,
            "role": self.role.value,
            "referralCode": self.referral_code,
            "isSynthetic": self.is_synthetic,
        }


ACCOUNT_COLUMNS = (
    User.id,
    User.email,
    User.first_name,
    User.last_name,
    User.display_name,
    User.district_id,
    User.role,
    User.referral_code,
    User.is_synthetic,
)


def _account(row: Sequence[Any]) -> Account:
    return Account(*row[: len(ACCOUNT_COLUMNS)])


async def get_account(engine: AsyncEngine, user_id: uuid.UUID) -> Account | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(*ACCOUNT_COLUMNS).where(User.id == user_id))).first()
    return None if row is None else _account(row)


async def find_google_account(engine: AsyncEngine, subject: str, email: str) -> Account | None:
    """The account of a Google identity. A seeded account with the same verified email and no
    Google subject yet (the admin `ftl seed` creates) is linked to it on first sign-in."""
    async with engine.begin() as conn:
        row = (
            await conn.execute(select(*ACCOUNT_COLUMNS).where(User.google_sub == subject))
        ).first()
        if row is not None:
            return _account(row)
        linked = (
            await conn.execute(
                update(User)
                .where(
                    User.email == email,
                    User.google_sub.is_(None),
                    User.is_synthetic.is_(False),
                )
                .values(google_sub=subject)
                .returning(*ACCOUNT_COLUMNS)
            )
        ).first()
    return None if linked is None else _account(linked)


async def insert_wallet(conn: AsyncConnection, user_ids: Sequence[uuid.UUID]) -> None:
    """The starting wallets of new users (10,000.00 points each)."""
    if user_ids:
        rows = [{"user_id": user_id, "balance": STARTING_BALANCE} for user_id in user_ids]
        await conn.execute(insert(Wallet).values(rows).on_conflict_do_nothing())


def display_name_of(raw: object) -> str:
    """A synthetic user's display name: human text of 1 to 50 characters (ftl/core/text.py)."""
    return human_text(raw, "displayName", DISPLAY_NAME_MAX_CHARS)


def _synthetic_row(name: str) -> dict[str, Any]:
    return {
        "google_sub": f"{SYNTHETIC_SUBJECT_PREFIX}{name}",
        "first_name": name,
        "display_name": name,
        # NOTE: a stable district per name spreads bots over all 14 district boards.
        "district_id": 1 + zlib.crc32(name.encode("utf-8")) % DISTRICT_COUNT,
        "referral_code": new_referral_code(),
        "is_synthetic": True,
    }


async def synthetic_accounts(engine: AsyncEngine, names: Sequence[str]) -> list[Account]:
    """Create or find the synthetic users of these display names (one per name, in order).

    PERF: one multi-row INSERT per round (ON CONFLICT DO NOTHING skips names that exist and the
    rare referral-code collision, retried next round) and one SELECT; 1,000 users in one call.
    """
    wanted = list(dict.fromkeys(names))
    subjects = [f"{SYNTHETIC_SUBJECT_PREFIX}{name}" for name in wanted]
    found: dict[str, Account] = {}
    async with engine.begin() as conn:
        for _ in range(INSERT_ROUNDS):
            missing = [name for name, sub in zip(wanted, subjects, strict=True) if sub not in found]
            if not missing:
                break
            created = await conn.execute(
                insert(User)
                .values([_synthetic_row(name) for name in missing])
                .on_conflict_do_nothing()
                .returning(User.id)
            )
            await insert_wallet(conn, list(created.scalars()))
            rows = await conn.execute(
                select(*ACCOUNT_COLUMNS, User.google_sub).where(User.google_sub.in_(subjects))
            )
            found = {row.google_sub: _account(row) for row in rows}
    return [found[sub] for sub in (f"{SYNTHETIC_SUBJECT_PREFIX}{name}" for name in names)]


async def districts(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(District.id, District.name).order_by(District.id))
    return [{"id": row.id, "name": row.name} for row in rows]
