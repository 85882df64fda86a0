"""Accounts: users with their wallet, looked up, registered, or made up for demos and load tests.

Only Postgres is written here; the wallet reaches Redis hot state on the user's first trade.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ftl.accounts.referrals import ReferralCode, new_referral_code
from ftl.core.answers import DISTRICT_COUNT, Answer, DistrictId, Id
from ftl.core.text import human_text
from ftl.store.db.models import District as Districts
from ftl.store.db.models import User as Users
from ftl.store.db.models import UserRole, Wallet

STARTING_BALANCE = Decimal("10000.00")
DISPLAY_NAME_MAX_CHARS = 50
SYNTHETIC_SUBJECT_PREFIX = "synthetic:"  # NOTE: decision 0005, synthetic users' identity key
DEV_BATCH_MAX = 1_000
DEV_BATCH_PREFIX_MAX_CHARS = 40
# NOTE: 4 random bytes collide rarely (1 in ~4 million per pair at 1,000 users); retry those rows.
INSERT_ROUNDS = 5


class User(Answer):
    id: Id
    email: str | None
    first_name: str
    last_name: str | None
    display_name: str
    district_id: DistrictId
    role: Literal["user", "admin"]
    referral_code: ReferralCode
    is_synthetic: bool


class District(Answer):
    id: DistrictId
    name: str


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

    def answer(self) -> User:
        return User(
            id=str(self.id),
            email=self.email,
            first_name=self.first_name,
            last_name=self.last_name,
            display_name=self.display_name,
            district_id=self.district_id,
            role=self.role.value,
            referral_code=self.referral_code,
            is_synthetic=self.is_synthetic,
        )


ACCOUNT_COLUMNS = (
    Users.id,
    Users.email,
    Users.first_name,
    Users.last_name,
    Users.display_name,
    Users.district_id,
    Users.role,
    Users.referral_code,
    Users.is_synthetic,
)


def _account(row: Sequence[Any]) -> Account:
    return Account(*row[: len(ACCOUNT_COLUMNS)])


async def get_account(engine: AsyncEngine, user_id: uuid.UUID) -> Account | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(*ACCOUNT_COLUMNS).where(Users.id == user_id))).first()
    return None if row is None else _account(row)


async def find_google_account(engine: AsyncEngine, subject: str, email: str) -> Account | None:
    """The account of a Google identity. A seeded account with the same verified email and no
    Google subject yet (the admin `ftl seed` creates) is linked to it on first sign-in."""
    async with engine.begin() as conn:
        row = (
            await conn.execute(select(*ACCOUNT_COLUMNS).where(Users.google_sub == subject))
        ).first()
        if row is not None:
            return _account(row)
        linked = (
            await conn.execute(
                update(Users)
                .where(
                    Users.email == email,
                    Users.google_sub.is_(None),
                    Users.is_synthetic.is_(False),
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
                insert(Users)
                .values([_synthetic_row(name) for name in missing])
                .on_conflict_do_nothing()
                .returning(Users.id)
            )
            await insert_wallet(conn, list(created.scalars()))
            rows = await conn.execute(
                select(*ACCOUNT_COLUMNS, Users.google_sub).where(Users.google_sub.in_(subjects))
            )
            found = {row.google_sub: _account(row) for row in rows}
    return [found[sub] for sub in (f"{SYNTHETIC_SUBJECT_PREFIX}{name}" for name in names)]


async def districts(engine: AsyncEngine) -> list[District]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(Districts.id, Districts.name).order_by(Districts.id))
    return [District(id=row.id, name=row.name) for row in rows]
