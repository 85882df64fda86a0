"""The Sportmonks call budget (SPEC §5.2, docs/decisions/0103).

Sportmonks counts calls per entity per hour (in-play livescores count against `fixture`) and says
in every body how many are left (`rate_limit.remaining`) and when the count resets
(`resets_in_seconds`). Beyond it a call is a 429. The pollers share what the last answer said in
one Redis hash (`keys.SPORTMONKS_RATE_LIMIT`); the clock reads it to stretch the live interval, and
a 429 pauses every poller until the reset instead of counting as a breaker failure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from redis.asyncio import Redis

from ftl.core import metrics
from ftl.core.errors import Unavailable
from ftl.store import keys

HOUR_MS = 3_600_000
DEFAULT_WAIT_S = 60  # a 429 that says neither `resets_in_seconds` nor `Retry-After`
MAX_WAIT_S = 3_600  # Sportmonks' window is an hour: a longer wait is a corrupt answer


@dataclass(frozen=True)
class RateLimit:
    """`rate_limit` of a body: calls left and seconds until the count resets."""

    remaining: int
    resets_in_s: int


class RateLimited(Unavailable):
    """HTTP 429: no call until `wait_s` has passed. Not a breaker failure: the feed is fine."""

    def __init__(self, wait_s: int) -> None:
        super().__init__(
            "sportmonks_rate_limited",
            f"Sportmonks call budget spent; next call in {wait_s} s.",
            {"waitS": wait_s},
        )
        self.wait_s = wait_s


def live_period_ms(
    floor_ms: int, calls_per_hour: int, limit: RateLimit | None, paused_for_ms: int = 0
) -> int:
    """The live polling interval: at least `floor_ms` (2 s), stretched so a whole hour of live
    polling stays inside `calls_per_hour`, and so the calls Sportmonks says are left last until
    its count resets; after a 429, not before the pause ends."""
    period = max(floor_ms, math.ceil(HOUR_MS / max(1, calls_per_hour)))
    if limit is not None:
        resets_in_ms = limit.resets_in_s * 1000
        if limit.remaining <= 0:
            period = max(period, resets_in_ms)
        else:
            period = max(period, math.ceil(resets_in_ms / limit.remaining))
    return max(period, paused_for_ms)


async def record(redis: Redis, limit: RateLimit, now_ms: int) -> None:
    """Keep what the last answer said, for the clock; `remaining` is also a gauge."""
    metrics.SPORTMONKS_REMAINING.set(limit.remaining)
    await redis.hset(
        keys.SPORTMONKS_RATE_LIMIT,
        mapping={
            "remaining": str(limit.remaining),
            "resetsAtMs": str(now_ms + limit.resets_in_s * 1000),
        },
    )


async def pause(redis: Redis, wait_s: int, now_ms: int) -> None:
    """After a 429: no poller calls before the reset; the budget is spent until then."""
    metrics.SPORTMONKS_REMAINING.set(0)
    until = now_ms + wait_s * 1000
    await redis.hset(
        keys.SPORTMONKS_RATE_LIMIT,
        mapping={"remaining": "0", "resetsAtMs": str(until), "pausedUntilMs": str(until)},
    )


def read_limit(fields: dict[str, str], now_ms: int) -> tuple[RateLimit | None, int]:
    """(what the last answer said, as of now; how long the pause still runs, ms)."""
    paused_for_ms = max(0, int(fields.get("pausedUntilMs", "0")) - now_ms)
    if "remaining" not in fields or "resetsAtMs" not in fields:
        return None, paused_for_ms
    resets_in_ms = int(fields["resetsAtMs"]) - now_ms
    if resets_in_ms <= 0:
        return None, paused_for_ms  # NOTE: the count has reset since: the budget is whole again
    return RateLimit(int(fields["remaining"]), math.ceil(resets_in_ms / 1000)), paused_for_ms


async def paused_for_ms(redis: Redis, now_ms: int) -> int:
    fields: dict[str, str] = await redis.hgetall(keys.SPORTMONKS_RATE_LIMIT)  # type: ignore[assignment]
    return read_limit(fields, now_ms)[1]
