"""Fixtures: what the Sportmonks livescores tell us about them, and the matches of the API
(`GET /api/matches`, `GET /api/matches/{id}`, SPEC §3.2) with their instruments."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from redis.asyncio import Redis
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from ftl import instruments
from ftl.db.models import Fixture, FixtureStatus, Instrument
from ftl.errors import InvalidInput, NotFound
from ftl.instruments import MICROS, InstrumentState
from ftl.market import price_cents
from ftl.money import from_cents
from ftl.sportmonks.payload import FeedFixture, MatchPhase


@dataclass
class LivescoreUpdate:
    """What one livescores answer changed: the poller prices `live` fixtures and enqueues the
    close-out of each `newly_full_time` one (each fixture appears there exactly once, ever)."""

    live: list[UUID] = field(default_factory=list)
    newly_full_time: list[UUID] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)  # Sportmonks ids we do not trade


async def apply_livescores(engine: AsyncEngine, fixtures: Iterable[FeedFixture]) -> LivescoreUpdate:
    """Write status, minute and score of every known fixture; say which are live and which just
    reached full time. Safe to run concurrently: the full-time mark is set once under row lock."""
    result = LivescoreUpdate()
    async with engine.begin() as conn:
        for feed in fixtures:
            phase = feed.phase
            where = Fixture.sportmonks_fixture_id == feed.fixture_id
            if phase is MatchPhase.FULL_TIME:
                newly = await conn.execute(
                    update(Fixture)
                    .where(where, Fixture.full_time_at.is_(None))
                    .values(full_time_at=func.now())
                    .returning(Fixture.id)
                )
                result.newly_full_time.extend(newly.scalars())
            values: dict[str, Any] = {
                "minute": feed.minute,
                "home_score": feed.home_goals,
                "away_score": feed.away_goals,
            }
            if phase is MatchPhase.LIVE:
                values["status"] = FixtureStatus.live
            elif phase is MatchPhase.FULL_TIME:
                values["status"] = FixtureStatus.finished
            else:
                values = {}  # NOTE: before kick-off (or postponed) there is nothing to write
            if values:
                found = await conn.execute(
                    update(Fixture).where(where).values(values).returning(Fixture.id)
                )
            else:
                found = await conn.execute(select(Fixture.id).where(where))
            ids = list(found.scalars())
            if not ids:
                result.unknown.append(feed.fixture_id)
            elif phase is MatchPhase.LIVE:
                result.live.extend(ids)
    return result


MATCH_STATUSES = tuple(status.value for status in FixtureStatus)


def parse_status(raw: str | None) -> FixtureStatus | None:
    if raw is None:
        return None
    if raw not in MATCH_STATUSES:
        raise InvalidInput(
            "validation_error",
            f"status must be one of {', '.join(MATCH_STATUSES)}.",
            {"field": "status"},
        )
    return FixtureStatus(raw)


async def list_matches(
    engine: AsyncEngine, redis: Redis, status: FixtureStatus | None = None
) -> list[dict[str, Any]]:
    """Every fixture by kick-off (optionally of one status), each with its instruments."""
    query = select(Fixture).order_by(Fixture.kickoff_at, Fixture.sportmonks_fixture_id)
    if status is not None:
        query = query.where(Fixture.status == status)
    async with AsyncSession(engine) as session:
        fixtures = (await session.scalars(query)).all()
    return await _with_instruments(engine, redis, fixtures)


async def get_match(engine: AsyncEngine, redis: Redis, fixture_id: UUID) -> dict[str, Any]:
    async with AsyncSession(engine) as session:
        fixture = await session.get(Fixture, fixture_id)
    if fixture is None:
        raise NotFound("not_found", "No such match.")
    return (await _with_instruments(engine, redis, [fixture]))[0]


async def _with_instruments(
    engine: AsyncEngine, redis: Redis, fixtures: Sequence[Fixture]
) -> list[dict[str, Any]]:
    teams = {team for f in fixtures for team in (f.home_team, f.away_team)}
    async with AsyncSession(engine) as session:
        rows = (
            await session.scalars(
                select(Instrument).where(Instrument.team.in_(teams)).order_by(Instrument.idx)
            )
        ).all()
    states = await instruments.read_many(redis, rows)
    by_team: dict[str, list[dict[str, Any]]] = {}
    for state in states:
        by_team.setdefault(state.team, []).append(instrument_json(state))
    return [
        {
            "id": str(f.id),
            "sportmonksFixtureId": f.sportmonks_fixture_id,
            "homeTeam": f.home_team,
            "awayTeam": f.away_team,
            "stage": f.stage,
            "kickoffAt": _iso(f.kickoff_at),
            "status": f.status.value,
            "minute": f.minute,
            "homeScore": f.home_score,
            "awayScore": f.away_score,
            "fullTimeAt": _iso(f.full_time_at) if f.full_time_at else None,
            "instruments": by_team.get(f.home_team, []) + by_team.get(f.away_team, []),
        }
        for f in fixtures
    ]


def _points(cents: int) -> float:
    # NOTE: JSON numbers at the edge; a 2-decimal value prints exactly (shortest repr).
    return float(from_cents(cents))


def instrument_json(state: InstrumentState) -> dict[str, Any]:
    """An instrument with every field of SPEC §1.2 and its current price."""
    price = price_cents(state.live_base_price_cents, state.k_mod_micros, state.net_lots_centis)
    return {
        "id": str(state.id),
        "idx": state.idx,
        "sportmonksPlayerId": state.sportmonks_player_id,
        "name": state.name,
        "team": state.team,
        "position": state.position,
        "formIndex": float(state.form_index),
        "basePrice": _points(state.base_price_cents),
        "liveBasePrice": _points(state.live_base_price_cents),
        "price": _points(price),
        "kMod": float(Decimal(state.k_mod_micros) / MICROS),
        "netLots": _points(state.net_lots_centis),
        "isActive": state.is_active,
        "frozen": state.frozen,
        "degraded": state.degraded,
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
