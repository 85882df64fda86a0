"""The Sportmonks circuit breaker (SPEC §5.2): a pure state machine, and its copy in Redis that
every poller process shares.

Closed: calls go through; 5 consecutive failures (timeout, 5xx, malformed) open it. Open: no call
for 30 s, then exactly one probe is let through. A good probe closes it; a bad one opens it again
for another 30 s. While it is open every instrument of a live fixture is flagged `degraded`
(Redis hash and Postgres), and prices stay at their last good base because nothing is polled.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, TypeVar
from uuid import UUID

from redis.asyncio import Redis
from redis.exceptions import WatchError
from sqlalchemy import Select, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ftl.core.errors import Unavailable
from ftl.sportmonks.failures import SportmonksFailure
from ftl.store import keys
from ftl.store.db.models import Fixture, FixtureStatus, Instrument
from ftl.store.scripts import Scripts

FAILURES_TO_OPEN = 5
OPEN_FOR_MS = 30_000
# NOTE: a probe whose poller died never reports; after this long another poller may probe.
PROBE_TIMEOUT_MS = 15_000

T = TypeVar("T")


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    PROBING = "probing"  # open, and one probe is out


class Admission(Enum):
    CALL = "call"
    PROBE = "probe"
    REJECT = "reject"


@dataclass(frozen=True)
class Breaker:
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0  # consecutive, while closed
    opened_at_ms: int = 0
    probe_started_ms: int = 0

    def admit(self, now_ms: int) -> tuple[Breaker, Admission]:
        if self.state is BreakerState.CLOSED:
            return self, Admission.CALL
        if self.state is BreakerState.OPEN and now_ms - self.opened_at_ms >= OPEN_FOR_MS:
            return replace(
                self, state=BreakerState.PROBING, probe_started_ms=now_ms
            ), Admission.PROBE
        if (
            self.state is BreakerState.PROBING
            and now_ms - self.probe_started_ms >= PROBE_TIMEOUT_MS
        ):
            return replace(self, probe_started_ms=now_ms), Admission.PROBE
        return self, Admission.REJECT

    def succeeded(self, admission: Admission) -> Breaker:
        # NOTE: only the probe closes an open breaker; a call let in before it opened is stale.
        if self.state is BreakerState.CLOSED or (
            admission is Admission.PROBE and self.state is BreakerState.PROBING
        ):
            return Breaker()
        return self

    def failed(self, admission: Admission, now_ms: int) -> Breaker:
        if self.state is BreakerState.CLOSED:
            failures = self.failures + 1
            if failures >= FAILURES_TO_OPEN:
                return Breaker(BreakerState.OPEN, failures, opened_at_ms=now_ms)
            return replace(self, failures=failures)
        if admission is Admission.PROBE and self.state is BreakerState.PROBING:
            return Breaker(BreakerState.OPEN, self.failures, opened_at_ms=now_ms)
        return self

    def to_hash(self) -> dict[str, str]:
        return {
            "state": self.state.value,
            "failures": str(self.failures),
            "openedAtMs": str(self.opened_at_ms),
            "probeStartedMs": str(self.probe_started_ms),
        }

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> Breaker:
        if not fields:
            return cls()
        return cls(
            BreakerState(fields["state"]),
            int(fields["failures"]),
            int(fields["openedAtMs"]),
            int(fields["probeStartedMs"]),
        )


class BreakerOpen(Unavailable):
    def __init__(self) -> None:
        super().__init__("sportmonks_breaker_open", "The Sportmonks feed is paused after failures.")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class SharedBreaker:
    """The breaker in Redis (`keys.SPORTMONKS_BREAKER`), changed under WATCH so concurrent
    pollers never lose a failure or let two probes through."""

    def __init__(
        self,
        redis: Redis,
        engine: AsyncEngine,
        scripts: Scripts,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.redis = redis
        self.engine = engine
        self.scripts = scripts
        self.clock_ms = clock_ms

    async def read(self) -> Breaker:
        fields: dict[str, str] = await self.redis.hgetall(keys.SPORTMONKS_BREAKER)  # type: ignore[assignment]
        return Breaker.from_hash(fields)

    async def call(self, fetch: Callable[[], Awaitable[T]]) -> T:
        """Run `fetch` if the breaker lets it; count its SportmonksFailure; BreakerOpen if not."""
        admission = await self._change(lambda b: b.admit(self.clock_ms()))
        if admission is Admission.REJECT:
            raise BreakerOpen()
        try:
            result = await fetch()
        except SportmonksFailure:
            await self._change(lambda b: (b.failed(admission, self.clock_ms()), admission))
            raise
        await self._change(lambda b: (b.succeeded(admission), admission))
        return result

    async def _change(self, step: Callable[[Breaker], tuple[Breaker, Admission]]) -> Admission:
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(keys.SPORTMONKS_BREAKER)
                    fields: dict[str, str] = await pipe.hgetall(keys.SPORTMONKS_BREAKER)  # type: ignore[assignment]
                    before = Breaker.from_hash(fields)
                    after, admission = step(before)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hset(keys.SPORTMONKS_BREAKER, mapping=after.to_hash())  # type: ignore[arg-type]
                    await pipe.execute()
                    break
                except WatchError:
                    continue
        if after.state is BreakerState.OPEN and before.state is not BreakerState.OPEN:
            await set_live_degraded(self.redis, self.engine, self.scripts, degraded=True)
        elif after.state is BreakerState.CLOSED and before.state is not BreakerState.CLOSED:
            await set_live_degraded(self.redis, self.engine, self.scripts, degraded=False)
        return admission


async def set_live_degraded(
    redis: Redis, engine: AsyncEngine, scripts: Scripts, *, degraded: bool
) -> int:
    """Flag every instrument of a live fixture (or clear every flagged one) in Postgres and in
    its Redis hash; returns how many Postgres rows changed."""
    live = select(Fixture.home_team, Fixture.away_team).where(Fixture.status == FixtureStatus.live)
    return await _set_degraded(engine, scripts, live if degraded else None, degraded)


async def set_fixtures_degraded(
    engine: AsyncEngine, scripts: Scripts, fixture_ids: list[UUID], *, degraded: bool
) -> int:
    """Flag (or clear) the instruments of these fixtures: a match on hold (suspended, delayed,
    interrupted, awaiting updates) keeps its prices and says so (SPEC §5.2)."""
    if not fixture_ids:
        return 0
    teams = select(Fixture.home_team, Fixture.away_team).where(Fixture.id.in_(fixture_ids))
    return await _set_degraded(engine, scripts, teams, degraded)


async def _set_degraded(
    engine: AsyncEngine, scripts: Scripts, teams_of: Select[str, str] | None, degraded: bool
) -> int:
    """Set the flag on the instruments of the teams `teams_of` selects (None: every instrument
    that has it the other way), in Postgres and in their Redis hashes."""
    statement: Any = (
        update(Instrument)
        .values(degraded=degraded)
        .where(Instrument.degraded.is_(not degraded))
        .returning(Instrument.id)
    )
    if teams_of is not None:
        teams = teams_of.subquery()
        statement = statement.where(
            or_(
                Instrument.team.in_(select(teams.c.home_team)),
                Instrument.team.in_(select(teams.c.away_team)),
            ),
        )
    async with engine.begin() as conn:
        ids = list((await conn.execute(statement)).scalars())
    if ids:
        await scripts.call("set_degraded", [keys.instrument(i) for i in ids], [str(int(degraded))])
    return len(ids)
