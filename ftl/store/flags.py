"""Feature flags: the `feature_flags` table is the truth, Redis holds a hot copy every process
reads, and each process keeps what it read for at most a second.

PERF: the coming-soon gate runs on every authenticated request, trades included; a one-second
per-process snapshot keeps it off the hot path's single Redis round trip. A flag change therefore
reaches every process within FLAG_CACHE_S.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from ftl.core.answers import Answer
from ftl.core.errors import InvalidInput
from ftl.store import keys
from ftl.store.db.models import FeatureFlag

COMING_SOON = "comingSoon"
# Opens, user closes and level changes answer 503 `maintenance` to non-admins; reads and system
# closes (stops, take-profits, washouts, full time) go on (SPEC §3.3).
MAINTENANCE_MODE = "maintenanceMode"
FLAG_CACHE_S = 1.0
FLAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


class Flag(Answer):
    name: str
    enabled: bool
    is_public: bool


def flag_name(raw: str) -> str:
    if not FLAG_NAME.fullmatch(raw):
        raise InvalidInput(
            "validation_error",
            "A flag name is a letter then up to 63 letters, digits or underscores.",
            {"field": "name"},
        )
    return raw


def _hot_copy(truth: Mapping[str, tuple[bool, bool]]) -> Mapping[Any, Any]:
    """The Redis hash of the flags: name -> "1" / "0"."""
    return {name: "1" if on else "0" for name, (on, _) in truth.items()}


class Flags:
    def __init__(
        self, redis: Redis, engine: AsyncEngine, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.redis = redis
        self.engine = engine
        self.clock = clock
        self._snapshot: dict[str, bool] = {}
        self._read_at = float("-inf")

    async def _from_postgres(self) -> dict[str, tuple[bool, bool]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(FeatureFlag.name, FeatureFlag.enabled, FeatureFlag.is_public)
            )
        return {name: (enabled, is_public) for name, enabled, is_public in rows}

    async def _hot(self) -> dict[str, bool]:
        raw: dict[str, str] = await self.redis.hgetall(keys.FEATURE_FLAGS)  # type: ignore[assignment]
        if not raw:
            # NOTE: Redis holds no persistence; after a loss the table refills the hot copy.
            truth = await self._from_postgres()
            if truth:
                await self.redis.hset(keys.FEATURE_FLAGS, mapping=_hot_copy(truth))
            return {name: on for name, (on, _) in truth.items()}
        return {name: value == "1" for name, value in raw.items()}

    async def enabled(self, name: str) -> bool:
        """The flag as this process saw it at most FLAG_CACHE_S ago; unknown flags are off."""
        now = self.clock()
        if now - self._read_at >= FLAG_CACHE_S:
            self._snapshot = await self._hot()
            self._read_at = now
        return self._snapshot.get(name, False)

    async def public(self) -> dict[str, bool]:
        """Every public flag by name (GET /api/flags), read from the table."""
        return {name: on for name, (on, public) in (await self._from_postgres()).items() if public}

    async def set(self, name: str, enabled: bool, is_public: bool | None = None) -> Flag:
        """Create or change a flag; the table first, then the hot copy."""
        values: dict[str, Any] = {"name": name, "enabled": enabled}
        if is_public is not None:
            values["is_public"] = is_public
        stmt = insert(FeatureFlag).values(values)
        changes = {column: stmt.excluded[column] for column in values if column != "name"}
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["name"], set_={**changes, "updated_at": func.now()}
                    ).returning(FeatureFlag.enabled, FeatureFlag.is_public)
                )
            ).one()
        await self.restore()
        return Flag(name=name, enabled=row.enabled, is_public=row.is_public)

    async def restore(self) -> int:
        """Write the hot copy of the whole table (a change, `ftl recover`); how many flags."""
        # NOTE: the whole table, not one field, so a hot copy lost with Redis comes back whole.
        truth = await self._from_postgres()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.FEATURE_FLAGS)
            if truth:
                pipe.hset(keys.FEATURE_FLAGS, mapping=_hot_copy(truth))
            await pipe.execute()
        self._read_at = float("-inf")
        return len(truth)
