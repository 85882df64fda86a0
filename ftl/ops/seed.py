"""`ftl seed`: districts, the demo World Cup 2026 squads and fixtures, flags and an admin user.

Idempotent: rows are matched by their natural keys (district id, Sportmonks ids, admin email) and
never duplicated; an instrument keeps the `idx` it was first given, new ones get the next free
`idx`, so binary frames stay stable across reseeds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from ftl.accounts.referrals import new_referral_code
from ftl.core.money import from_cents
from ftl.market import instruments
from ftl.market.rules import pre_match_base_price_cents
from ftl.sportmonks.payload import is_knockout_stage
from ftl.store.db.models import District, FeatureFlag, Fixture, Instrument, User, UserRole, Wallet

DEMO_DATA = Path(__file__).resolve().parent / "data" / "worldcup2026.json"

DISTRICTS = (
    "Thiruvananthapuram",
    "Kollam",
    "Pathanamthitta",
    "Alappuzha",
    "Kottayam",
    "Idukki",
    "Ernakulam",
    "Thrissur",
    "Palakkad",
    "Malappuram",
    "Kozhikode",
    "Wayanad",
    "Kannur",
    "Kasaragod",
)
DEFAULT_FLAGS = {"comingSoon": False, "maintenanceMode": False}
ADMIN_DISTRICT_ID = 7  # Ernakulam


@dataclass(frozen=True)
class SeedReport:
    districts: int
    instruments: int
    new_instruments: int
    fixtures: int
    loaded_into_redis: int
    admin_email: str


def load_demo_data(path: Path = DEMO_DATA) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


async def _seed_districts(conn: AsyncConnection) -> None:
    rows = [{"id": i, "name": name} for i, name in enumerate(DISTRICTS, start=1)]
    stmt = insert(District).values(rows)
    await conn.execute(
        stmt.on_conflict_do_update(index_elements=["id"], set_={"name": stmt.excluded.name})
    )


async def _seed_instruments(conn: AsyncConnection, teams: list[dict[str, Any]]) -> int:
    known = set((await conn.execute(select(Instrument.sportmonks_player_id))).scalars())
    next_idx = (
        await conn.execute(select(func.coalesce(func.max(Instrument.idx), 0)))
    ).scalar_one() + 1
    new_rows = []
    for team in teams:
        for player in team["players"]:
            if player["sportmonksPlayerId"] in known:
                continue
            form_index = Decimal(str(player["formIndex"]))
            base = from_cents(pre_match_base_price_cents(form_index))
            new_rows.append(
                {
                    "idx": next_idx,
                    "sportmonks_player_id": player["sportmonksPlayerId"],
                    "name": player["name"],
                    "team": team["code"],
                    "position": player["position"],
                    "form_index": form_index,
                    "base_price": base,
                    "live_base_price": base,
                }
            )
            next_idx += 1
    if new_rows:
        await conn.execute(insert(Instrument).values(new_rows))
    return len(new_rows)


async def _seed_fixtures(conn: AsyncConnection, fixtures: list[dict[str, Any]]) -> None:
    rows = [
        {
            "sportmonks_fixture_id": f["sportmonksFixtureId"],
            "home_team": f["home"],
            "away_team": f["away"],
            "stage": f["stage"],
            "knockout": is_knockout_stage(f["stage"]),
            "kickoff_at": datetime.fromisoformat(f["kickoffAt"].replace("Z", "+00:00")),
        }
        for f in fixtures
    ]
    await conn.execute(insert(Fixture).values(rows).on_conflict_do_nothing())


async def _seed_flags(conn: AsyncConnection) -> None:
    rows = [{"name": name, "enabled": enabled} for name, enabled in DEFAULT_FLAGS.items()]
    await conn.execute(insert(FeatureFlag).values(rows).on_conflict_do_nothing())


async def _seed_admin(conn: AsyncConnection, email: str) -> None:
    found = await conn.execute(
        select(User.id).where(User.email == email, User.role == UserRole.admin)
    )
    if found.first() is not None:
        return
    user_id = (
        await conn.execute(
            insert(User)
            .values(
                email=email,
                first_name="Admin",
                display_name="Admin",
                district_id=ADMIN_DISTRICT_ID,
                role=UserRole.admin,
                referral_code=new_referral_code(),
            )
            .returning(User.id)
        )
    ).scalar_one()
    await conn.execute(insert(Wallet).values(user_id=user_id))


async def seed(engine: AsyncEngine, redis: Redis, *, admin_email: str) -> SeedReport:
    data = load_demo_data()
    async with engine.begin() as conn:
        await _seed_districts(conn)
        new_instruments = await _seed_instruments(conn, data["teams"])
        await _seed_fixtures(conn, data["fixtures"])
        await _seed_flags(conn)
        await _seed_admin(conn, admin_email)
        fixture_count = (await conn.execute(select(func.count()).select_from(Fixture))).scalar_one()
    async with AsyncSession(engine) as session:
        rows = (await session.scalars(select(Instrument).order_by(Instrument.idx))).all()
    states = [instruments.InstrumentState.from_row(row) for row in rows]
    loaded = await instruments.load_missing(redis, states)
    return SeedReport(
        districts=len(DISTRICTS),
        instruments=len(states),
        new_instruments=new_instruments,
        fixtures=fixture_count,
        loaded_into_redis=loaded,
        admin_email=admin_email,
    )
