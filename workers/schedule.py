"""The clock's schedule (workers/clock.py): every periodic message, its period and its actor, in
one table. Add a line per job.

Actors are named, not imported: this module is read by the actors too (their `max_age` follows
their period), so it must not import them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from ftl.core.config import Settings
from ftl.ops.flush import FLUSH_RUN_MS
from ftl.sportmonks import budget
from ftl.store import keys

# SPEC §5.2: every 2 s while a fixture is live, every 60 s while none is.
LIVE_POLL_PERIOD_MS = 2_000
IDLE_POLL_PERIOD_MS = 60_000
# NOTE: two flush messages per run, so runs follow each other without a gap (workers/flush.py).
FLUSH_PERIOD_MS = FLUSH_RUN_MS // 2
LEADERBOARD_SNAPSHOT_PERIOD_MS = 60_000
MARGIN_BACKSTOP_PERIOD_MS = 300_000


@dataclass(frozen=True)
class Job:
    name: str
    actor: str  # the Dramatiq actor the clock sends, by name
    period_ms: int  # the fixed period, or for a `varies` job its floor when nothing is on record
    varies: Callable[[redis.Redis, int], int] | None = None  # (client, calls an hour) -> ms


def sportmonks_poll_period_ms(
    client: redis.Redis, calls_per_hour: int = Settings.sportmonks_calls_per_hour
) -> int:
    """Every 2 s while the last poll saw a live fixture, every 60 s while it saw none (SPEC §5.2);
    the live interval stretched to the call budget and to what Sportmonks says is left, and no
    poll before a 429's pause ends (ftl/sportmonks/budget.py, decision 0103).

    NOTE: no answer on record (a fresh start, or no poll succeeded for LIVE_FIXTURES_TTL_S) polls
    at the live rate: the period is chosen right after sending, before that poll has answered,
    so a start during a match would otherwise wait a whole idle minute for its second poll.
    """
    live = client.get(keys.LIVE_FIXTURES)
    fields: dict[str, str] = client.hgetall(keys.SPORTMONKS_RATE_LIMIT)  # type: ignore[assignment]
    limit, paused_for = budget.read_limit(fields, int(time.time() * 1000))
    if live == "[]":
        return max(IDLE_POLL_PERIOD_MS, paused_for)
    return budget.live_period_ms(LIVE_POLL_PERIOD_MS, calls_per_hour, limit, paused_for)


SCHEDULE = (
    Job("sportmonks-poll", "poll_sportmonks", LIVE_POLL_PERIOD_MS, sportmonks_poll_period_ms),
    Job("flush", "flush", FLUSH_PERIOD_MS),
    Job("leaderboards", "snapshot_leaderboards", LEADERBOARD_SNAPSHOT_PERIOD_MS),
    Job("margin-backstop", "backstop_sweep", MARGIN_BACKSTOP_PERIOD_MS),
)


def describe(job: Job) -> str:
    """How the clock logs a job at start: its period in ms (and what makes it vary)."""
    if job.varies is None:
        return f"{job.name} every {job.period_ms} ms"
    return f"{job.name} every {job.period_ms} ms or more (by {job.varies.__name__})"
