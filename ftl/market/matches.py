"""Fixtures: what the Sportmonks livescores tell us about them, and the matches of the API
(`GET /api/matches`, `GET /api/matches/{id}`, SPEC §3.2) with their instruments."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, cast
from uuid import UUID

from msgspec import Meta
from redis.asyncio import Redis
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from ftl.core.answers import Answer, Id, Idx, Points, Time
from ftl.core.errors import InvalidInput, NotFound
from ftl.core.money import from_cents
from ftl.market import instruments
from ftl.market.instruments import MICROS, InstrumentState
from ftl.market.rules import price_cents
from ftl.sportmonks.payload import FT_STATE_ID, FeedFixture, MatchPhase
from ftl.store.db.models import Fixture, FixtureStatus
from ftl.store.db.models import Instrument as InstrumentRow

BRIEF_FT_WAIT = timedelta(minutes=15)  # a level knockout's 5 FT unchanged this long is final

SportmonksId = int
PlayerPosition = Literal["GK", "DEF", "MID", "FWD"]
MatchStatus = Literal["scheduled", "live", "finished"]


class Instrument(Answer):
    """An instrument with every field of SPEC §1.2 and its current price."""

    id: Id
    idx: Idx
    sportmonks_player_id: SportmonksId
    name: str
    team: str
    position: PlayerPosition
    form_index: float
    base_price: Points
    live_base_price: Points
    price: Points
    k_mod: Annotated[float, Meta(description="Points per lot.")]
    net_lots: float
    is_active: bool
    frozen: bool
    degraded: bool


class Match(Answer):
    id: Id
    sportmonks_fixture_id: SportmonksId
    home_team: str
    away_team: str
    stage: str | None
    kickoff_at: Time
    status: MatchStatus
    minute: int | None
    home_score: int | None
    away_score: int | None
    knockout: bool
    full_time_at: Time | None
    instruments: list[Instrument]


@dataclass
class LivescoreUpdate:
    """What one livescores answer changed. `live`: fixtures in play (held ones included), polled
    at the live rate; `priced`: those whose players the poller prices (not held, not already
    closed out); `held`: suspended, delayed, interrupted, awaiting updates; `newly_full_time`:
    each fixture whose close-out to enqueue, once per reaching a final state."""

    live: list[UUID] = field(default_factory=list)
    priced: list[UUID] = field(default_factory=list)
    held: list[UUID] = field(default_factory=list)
    newly_full_time: list[UUID] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)  # Sportmonks ids we do not trade


def effective_phase(
    feed: FeedFixture, *, knockout: bool, kicked_off: bool, state_since: datetime, now: datetime
) -> MatchPhase:
    """The phase the game acts on (SPEC §5.2, docs/decisions/0100).

    The brief-FT rule: Sportmonks shows 5 FT briefly before BREAK when a match goes to extra
    time, so in a knockout with a level score 5 stays live until it has been unchanged for 15
    minutes; the close-out otherwise waits for 7 AET or 8 FT_PEN. A hold or an abandonment before
    the kick-off changes nothing.
    """
    phase = feed.phase
    if (
        phase is MatchPhase.FULL_TIME
        and feed.state_id == FT_STATE_ID
        and knockout
        and feed.level
        and now - state_since < BRIEF_FT_WAIT
    ):
        return MatchPhase.LIVE
    if phase in (MatchPhase.HOLD, MatchPhase.ABANDONED) and not kicked_off:
        return MatchPhase.OTHER
    return phase


async def apply_livescores(
    engine: AsyncEngine, fixtures: Iterable[FeedFixture], *, now: datetime | None = None
) -> LivescoreUpdate:
    """Write state, status, minute and score of every known fixture; say which are live, which
    to price and which just reached a final state. Safe to run concurrently: each fixture's row
    is locked while it is decided, so a final state enqueues one close-out."""
    now = now or datetime.now(UTC)
    result = LivescoreUpdate()
    async with engine.begin() as conn:
        for feed in fixtures:
            row = (
                await conn.execute(
                    select(
                        Fixture.id,
                        Fixture.knockout,
                        Fixture.status,
                        Fixture.feed_state_id,
                        Fixture.feed_state_since,
                        Fixture.full_time_at,
                        Fixture.closed_out_at,
                    )
                    .where(Fixture.sportmonks_fixture_id == feed.fixture_id)
                    .with_for_update()
                )
            ).first()
            if row is None:
                result.unknown.append(feed.fixture_id)
                continue
            knockout = row.knockout if feed.knockout is None else feed.knockout
            same_state = row.feed_state_id == feed.state_id and row.feed_state_since is not None
            since: datetime = row.feed_state_since if same_state else now
            phase = effective_phase(
                feed,
                knockout=knockout,
                kicked_off=row.status is not FixtureStatus.scheduled,
                state_since=since,
                now=now,
            )
            values: dict[str, Any] = {
                "knockout": knockout,
                "feed_state_id": feed.state_id,
                "feed_state_since": since,
            }
            if phase in (
                MatchPhase.LIVE,
                MatchPhase.HOLD,
                MatchPhase.FULL_TIME,
                MatchPhase.ABANDONED,
            ):
                values |= {
                    "minute": feed.minute,
                    "home_score": feed.home_goals,
                    "away_score": feed.away_goals,
                }
            if phase in (MatchPhase.LIVE, MatchPhase.HOLD):
                values["status"] = FixtureStatus.live
                result.live.append(row.id)
                if phase is MatchPhase.HOLD:
                    result.held.append(row.id)
                elif row.closed_out_at is None:
                    result.priced.append(row.id)
                if row.full_time_at is not None:
                    # NOTE: live again after a final state (docs/decisions/0104): its next final
                    # state enqueues a close-out again, which closes only what is still open.
                    values["full_time_at"] = None
            elif phase in (MatchPhase.FULL_TIME, MatchPhase.ABANDONED):
                values["status"] = FixtureStatus.finished
                if row.full_time_at is None:
                    # NOTE: the database clock, like `closed_out_at`: the close-out compares them.
                    values["full_time_at"] = func.now()
                    result.newly_full_time.append(row.id)
            await conn.execute(update(Fixture).where(Fixture.id == row.id).values(values))
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
) -> list[Match]:
    """Every fixture by kick-off (optionally of one status), each with its instruments."""
    query = select(Fixture).order_by(Fixture.kickoff_at, Fixture.sportmonks_fixture_id)
    if status is not None:
        query = query.where(Fixture.status == status)
    async with AsyncSession(engine) as session:
        fixtures = (await session.scalars(query)).all()
    return await _with_instruments(engine, redis, fixtures)


async def get_match(engine: AsyncEngine, redis: Redis, fixture_id: UUID) -> Match:
    async with AsyncSession(engine) as session:
        fixture = await session.get(Fixture, fixture_id)
    if fixture is None:
        raise NotFound("not_found", "No such match.")
    return (await _with_instruments(engine, redis, [fixture]))[0]


async def _with_instruments(
    engine: AsyncEngine, redis: Redis, fixtures: Sequence[Fixture]
) -> list[Match]:
    teams = {team for f in fixtures for team in (f.home_team, f.away_team)}
    async with AsyncSession(engine) as session:
        rows = (
            await session.scalars(
                select(InstrumentRow)
                .where(InstrumentRow.team.in_(teams))
                .order_by(InstrumentRow.idx)
            )
        ).all()
    states = await instruments.read_many(redis, rows)
    by_team: dict[str, list[Instrument]] = {}
    for state in states:
        by_team.setdefault(state.team, []).append(instrument_answer(state))
    return [
        Match(
            id=str(f.id),
            sportmonks_fixture_id=f.sportmonks_fixture_id,
            home_team=f.home_team,
            away_team=f.away_team,
            stage=f.stage,
            kickoff_at=_iso(f.kickoff_at),
            status=f.status.value,
            minute=f.minute,
            home_score=f.home_score,
            away_score=f.away_score,
            knockout=f.knockout,
            full_time_at=_iso(f.full_time_at) if f.full_time_at else None,
            instruments=by_team.get(f.home_team, []) + by_team.get(f.away_team, []),
        )
        for f in fixtures
    ]


def _points(cents: int) -> float:
    # NOTE: JSON numbers at the edge; a 2-decimal value prints exactly (shortest repr).
    return float(from_cents(cents))


def instrument_answer(state: InstrumentState) -> Instrument:
    price = price_cents(state.live_base_price_cents, state.k_mod_micros, state.net_lots_centis)
    return Instrument(
        id=str(state.id),
        idx=state.idx,
        sportmonks_player_id=state.sportmonks_player_id,
        name=state.name,
        team=state.team,
        position=cast(PlayerPosition, state.position),
        form_index=float(state.form_index),
        base_price=_points(state.base_price_cents),
        live_base_price=_points(state.live_base_price_cents),
        price=_points(price),
        k_mod=float(Decimal(state.k_mod_micros) / MICROS),
        net_lots=_points(state.net_lots_centis),
        is_active=state.is_active,
        frozen=state.frozen,
        degraded=state.degraded,
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
