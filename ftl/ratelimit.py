"""Rate limits in Redis, so they hold across every web process (SPEC §3): fixed one-minute
windows per client IP, overall and per route, checked in one script call."""

from __future__ import annotations

import math
from collections.abc import Mapping

from ftl import keys
from ftl.errors import RateLimited
from ftl.scripts import Scripts

WINDOW_MS = 60_000
IP_LIMIT_PER_MIN = 200
OVERALL_SCOPE = "ip"


async def hit(scripts: Scripts, client: str, limits: Mapping[str, int]) -> None:
    """Count one request of `client` against each `scope -> requests per minute`; 429
    `rate_limited` with the seconds to wait when any is exceeded."""
    scopes = list(limits)
    allowed, retry_after_ms = await scripts.call(
        "rate_limit",
        keys=[keys.rate_limit(scope, client) for scope in scopes],
        args=[WINDOW_MS, *(limits[scope] for scope in scopes)],
    )
    if not allowed:
        raise RateLimited(max(1, math.ceil(int(retry_after_ms) / 1000)))
