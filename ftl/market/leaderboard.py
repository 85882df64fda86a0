"""The leaderboards (SPEC §1.6): overall and per district, kept in Redis sorted sets by the
close path of the Lua scripts. Member `<999999999999999 − arrival, 15 digits>:<userId>`, score
the realized PnL in cents: ZREVRANGE gives the higher score first and, among equal scores, the
earlier arrival first."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from msgspec import Meta
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ftl.core.answers import DISTRICT_COUNT, Answer, DistrictId, Id, Points
from ftl.core.errors import invalid
from ftl.core.money import from_cents, json_number
from ftl.core.text import is_small_whole_number
from ftl.store import keys
from ftl.store.db.models import LeaderboardSnapshot, User
from ftl.store.services import Services

MAX_LIMIT = 100
MAX_OFFSET = 10_000_000
DISTRICTS = range(1, DISTRICT_COUNT + 1)


class LeaderboardEntry(Answer):
    rank: Annotated[int, Meta(ge=1)]
    user_id: Id
    display_name: str | None
    district_id: DistrictId | None
    score: Points


class LeaderboardMe(Answer):
    rank: int | None
    score: Points


class Leaderboard(Answer):
    entries: list[LeaderboardEntry]
    me: LeaderboardMe | None


def _number(raw: str | None, field: str, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    if not is_small_whole_number(raw) or not low <= int(raw) <= high:
        raise invalid(field, f"must be {low} to {high}")
    return int(raw)


def board_key(scope: str | None, district_raw: str | None) -> str:
    if scope in (None, "overall"):
        # NOTE: a district with no district scope is a client's mistake, not the overall board.
        if district_raw is not None:
            raise invalid("districtId", "is taken only with scope=district")
        return keys.BOARD_OVERALL
    if scope != "district":
        raise invalid("scope", "must be overall or district")
    if district_raw is None:
        raise invalid("districtId", "is required for the district scope")
    return keys.board_district(_number(district_raw, "districtId", 0, 1, DISTRICT_COUNT))


def board_member(arrival: int, user_id: UUID | str) -> str:
    """The member lua/lib/engine.lua's board() writes: later arrivals sort lower at one score."""
    return f"{999_999_999_999_999 - arrival:015d}:{user_id}"


def user_of(member: str) -> str:
    return member.split(":", 1)[1]


async def leaderboard(
    services: Services,
    scope: str | None,
    district_raw: str | None,
    limit_raw: str | None,
    offset_raw: str | None,
    me: UUID | None,
) -> Leaderboard:
    board = board_key(scope, district_raw)
    limit = _number(limit_raw, "limit", 50, 1, MAX_LIMIT)
    offset = _number(offset_raw, "offset", 0, 0, MAX_OFFSET)
    redis = services.redis
    members: list[tuple[str, float]] = await redis.zrevrange(  # type: ignore[assignment]
        board, offset, offset + limit - 1, withscores=True
    )
    user_ids = [UUID(user_of(member)) for member, _ in members]

    async def names(conn: AsyncConnection) -> list[Any]:
        query = select(User.id, User.display_name, User.district_id).where(User.id.in_(user_ids))
        return list((await conn.execute(query)).all())

    rows = await services.reads.read(names)
    people = {row.id: row for row in rows}
    entries = [
        LeaderboardEntry(
            rank=offset + n + 1,
            user_id=str(user_id),
            display_name=people[user_id].display_name if user_id in people else None,
            district_id=people[user_id].district_id if user_id in people else None,
            score=json_number(int(score)),
        )
        for n, (user_id, (_, score)) in enumerate(zip(user_ids, members, strict=True))
    ]
    mine: LeaderboardMe | None = None
    if me is not None:
        member = await redis.hget(keys.wallet(me), "boardMember")
        rank: int | None = await redis.zrevrank(board, member) if member else None  # type: ignore[assignment]
        if member and rank is not None:
            score = await redis.zscore(board, member)
            mine = LeaderboardMe(rank=rank + 1, score=json_number(int(score or 0)))
    return Leaderboard(entries=entries, me=mine)


SNAPSHOT_TOP = 1_000  # ranks kept per board and snapshot (docs/decisions/0014)


async def snapshot(services: Services) -> int:
    """Copy the top of the overall board and of every district board into
    `leaderboard_snapshots`, all with one `taken_at`; the number of rows written."""
    redis = services.redis
    boards = [("overall", None, keys.BOARD_OVERALL)] + [
        ("district", d, keys.board_district(d)) for d in DISTRICTS
    ]
    async with redis.pipeline(transaction=False) as pipe:
        for _, _, key in boards:
            pipe.zrevrange(key, 0, SNAPSHOT_TOP - 1, withscores=True)
        tops: list[list[tuple[str, float]]] = await pipe.execute()
    rows = [
        {
            "scope": scope,
            "district_id": district,
            "rank": rank,
            "user_id": UUID(user_of(member)),
            "score": from_cents(int(score)),
        }
        for (scope, district, _), top in zip(boards, tops, strict=True)
        for rank, (member, score) in enumerate(top, start=1)
    ]
    if rows:
        async with services.engine.begin() as conn:
            await conn.execute(insert(LeaderboardSnapshot).values(taken_at=func.now()), rows)
    return len(rows)
