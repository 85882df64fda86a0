"""HTTP client of the Sportmonks football API v3 (endpoints: docs/decisions/0030).

Every way a call can go wrong ends as a SportmonksFailure of one kind (timeout, server error,
malformed), which is what the circuit breaker counts; a good answer is parsed strictly.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import httpx

from ftl import metrics
from ftl.config import Settings
from ftl.sportmonks.failures import FailureKind, SportmonksFailure
from ftl.sportmonks.payload import FeedFixture, ParsedFeed, parse_feed

TIMEOUT_S = 5.0  # PERF: a poll every 2 s must not pile up behind one slow answer
# The in-play poll: score, live minute, lineups with each player's statistics, and the events.
# The stage names the round: knockout from the round of 32 on (SPEC §5.2).
INPLAY_INCLUDE = "participants;scores;periods;stage;lineups.details;events"
SCHEDULE_INCLUDE = "participants;scores;periods;stage"
MAX_BODY_BYTES = 8 * 1024 * 1024  # a World Cup day of in-play fixtures is well under 1 MiB


class SportmonksClient:
    def __init__(
        self,
        base_url: str,
        api_token: str,
        *,
        timeout_s: float = TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        # APPSEC: the token travels in the Authorization header (Sportmonks accepts either), so it
        # never lands in a URL that httpx or a proxy logs.
        headers = {"Accept": "application/json"}
        if api_token:
            headers["Authorization"] = api_token
        self.http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            follow_redirects=False,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> SportmonksClient:
        return cls(settings.sportmonks_base_url, settings.sportmonks_api_token)

    async def inplay(self) -> list[FeedFixture]:
        """`GET /livescores/inplay`: fixtures in play (and just before / after), with players."""
        body = await self._get("livescores/inplay", INPLAY_INCLUDE)
        return _counted(parse_feed(body, with_players=True))

    async def fixtures_between(self, start: date, end: date) -> list[FeedFixture]:
        """`GET /fixtures/between/{start}/{end}`: the schedule with states and scores."""
        path = f"fixtures/between/{start.isoformat()}/{end.isoformat()}"
        return _counted(parse_feed(await self._get(path, SCHEDULE_INCLUDE), with_players=False))

    async def _get(self, path: str, include: str) -> Any:
        try:
            response = await self.http.get(path, params={"include": include})
        except httpx.TimeoutException:
            raise SportmonksFailure(FailureKind.TIMEOUT, f"{path}: timed out") from None
        except httpx.HTTPError as exc:
            raise SportmonksFailure(
                FailureKind.SERVER_ERROR, f"{path}: {type(exc).__name__}"
            ) from None
        if response.status_code >= 500 or response.status_code in (401, 403, 429):
            # NOTE: a revoked token or an exhausted plan is as unusable as a 5xx: count it.
            raise SportmonksFailure(
                FailureKind.SERVER_ERROR, f"{path}: HTTP {response.status_code}"
            )
        if response.status_code != 200 or len(response.content) > MAX_BODY_BYTES:
            raise SportmonksFailure(
                FailureKind.MALFORMED, f"{path}: HTTP {response.status_code} is not a feed answer"
            )
        try:
            return json.loads(response.content)
        except (ValueError, RecursionError):
            raise SportmonksFailure(FailureKind.MALFORMED, f"{path}: body is not JSON") from None

    async def aclose(self) -> None:
        await self.http.aclose()


def _counted(feed: ParsedFeed) -> list[FeedFixture]:
    """The fixtures; what was skipped goes to `ftl_sportmonks_skipped_total{reason}`."""
    for reason, count in feed.skipped.items():
        metrics.sportmonks_skipped(reason.value).inc(count)
    return feed.fixtures
