"""HTTP client of the Sportmonks football API v3 (endpoints: docs/decisions/0030).

Every way a call can go wrong ends as a SportmonksFailure of one kind (timeout, server error,
malformed), which is what the circuit breaker counts; a good answer is parsed strictly.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import httpx

from ftl.core import metrics
from ftl.core.config import Settings
from ftl.sportmonks.budget import DEFAULT_WAIT_S, MAX_WAIT_S, RateLimit, RateLimited
from ftl.sportmonks.failures import FailureKind, SportmonksFailure
from ftl.sportmonks.payload import FeedFixture, ParsedFeed, parse_feed

TIMEOUT_S = 5.0  # PERF: a poll every 2 s must not pile up behind one slow answer
# The in-play poll: score, live minute, lineups with each player's statistics, and the events.
# The stage names the round: knockout from the round of 32 on (SPEC §5.2).
INPLAY_INCLUDE = "participants;scores;periods;stage;lineups.details;events"
SCHEDULE_INCLUDE = "participants;scores;periods;stage"
MAX_BODY_BYTES = 8 * 1024 * 1024  # a World Cup day of in-play fixtures is well under 1 MiB
PER_PAGE = 50  # Sportmonks' largest page of a fixture list
MAX_PAGES = 100  # 5,000 fixtures: the whole World Cup is 104; more pages is a runaway answer


class SportmonksClient:
    def __init__(
        self,
        base_url: str,
        api_token: str,
        *,
        timeout_s: float = TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
        per_page: int = PER_PAGE,
    ) -> None:
        self.per_page = per_page
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
        self.rate_limit: RateLimit | None = None  # what the last answer said of the budget

    @classmethod
    def from_settings(cls, settings: Settings) -> SportmonksClient:
        return cls(settings.sportmonks_base_url, settings.sportmonks_api_token)

    async def inplay(self) -> list[FeedFixture]:
        """`GET /livescores/inplay`: fixtures in play (and just before / after), with players.
        Not paginated (Sportmonks)."""
        body = await self._get("livescores/inplay", {"include": INPLAY_INCLUDE})
        return _counted(parse_feed(body, with_players=True))

    async def fixtures_between(self, start: date, end: date) -> list[FeedFixture]:
        """`GET /fixtures/between/{start}/{end}`: the schedule with states and scores, every
        page read until `pagination.has_more` is false."""
        path = f"fixtures/between/{start.isoformat()}/{end.isoformat()}"
        fixtures: list[FeedFixture] = []
        for page in range(1, MAX_PAGES + 1):
            params = {
                "include": SCHEDULE_INCLUDE,
                "per_page": str(self.per_page),
                "page": str(page),
            }
            body = await self._get(path, params)
            fixtures.extend(_counted(parse_feed(body, with_players=False)))
            if not _has_more(body):
                break
        return fixtures

    async def _get(self, path: str, params: dict[str, str]) -> Any:
        try:
            response = await self.http.get(path, params=params)
        except httpx.TimeoutException:
            raise SportmonksFailure(FailureKind.TIMEOUT, f"{path}: timed out") from None
        except httpx.HTTPError as exc:
            raise SportmonksFailure(
                FailureKind.SERVER_ERROR, f"{path}: {type(exc).__name__}"
            ) from None
        if response.status_code == 429:
            # NOTE: the budget is spent, the feed is fine: not a breaker failure (decision 0103).
            raise RateLimited(wait_to_s(response))
        if response.status_code >= 500 or response.status_code in (401, 403):
            # NOTE: a revoked token or a plan without this endpoint is as unusable as a 5xx.
            raise SportmonksFailure(
                FailureKind.SERVER_ERROR, f"{path}: HTTP {response.status_code}"
            )
        if response.status_code != 200 or len(response.content) > MAX_BODY_BYTES:
            raise SportmonksFailure(
                FailureKind.MALFORMED, f"{path}: HTTP {response.status_code} is not a feed answer"
            )
        try:
            body = json.loads(response.content)
        except (ValueError, RecursionError):
            raise SportmonksFailure(FailureKind.MALFORMED, f"{path}: body is not JSON") from None
        self.rate_limit = _rate_limit(body) or self.rate_limit
        return body

    async def aclose(self) -> None:
        await self.http.aclose()


def _counted(feed: ParsedFeed) -> list[FeedFixture]:
    """The fixtures; what was skipped goes to `ftl_sportmonks_skipped_total{reason}`."""
    for reason, count in feed.skipped.items():
        metrics.sportmonks_skipped(reason.value).inc(count)
    return feed.fixtures


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _rate_limit(body: Any) -> RateLimit | None:
    """`rate_limit` of a body, or None when it has none we can read (it never fails a poll)."""
    raw = body.get("rate_limit") if isinstance(body, dict) else None
    if not isinstance(raw, dict):
        return None
    remaining, resets_in = _whole(raw.get("remaining")), _whole(raw.get("resets_in_seconds"))
    if remaining is None or resets_in is None or remaining < 0 or not 0 <= resets_in <= MAX_WAIT_S:
        return None
    return RateLimit(remaining, resets_in)


def wait_to_s(response: httpx.Response) -> int:
    """How long a 429 says to wait: the body's `resets_in_seconds`, else `Retry-After` (seconds),
    else a minute."""
    try:
        limit = _rate_limit(json.loads(response.content))
    except (ValueError, RecursionError):
        limit = None
    if limit is not None:
        return max(1, limit.resets_in_s)
    retry_after = response.headers.get("Retry-After", "").strip()
    if retry_after.isdigit():
        return min(max(1, int(retry_after)), MAX_WAIT_S)
    return DEFAULT_WAIT_S


def _has_more(body: Any) -> bool:
    pagination = body.get("pagination") if isinstance(body, dict) else None
    return isinstance(pagination, dict) and pagination.get("has_more") is True
