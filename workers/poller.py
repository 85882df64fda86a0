"""The poller process (Procfile `poller`): the `sportmonks` queue.

The clock sends `poll_sportmonks` every 2 s while a fixture is live and every 60 s otherwise.
A poll message older than one live period is dropped (`max_age`), so a backlog after an outage
never replays stale livescores; the next fresh poll reads the current state anyway.
"""

from __future__ import annotations

import logging

import dramatiq

from ftl.core.errors import Unavailable
from ftl.market.poller import poll_once
from ftl.sportmonks.breaker import SharedBreaker
from ftl.sportmonks.client import SportmonksClient
from ftl.sportmonks.failures import SportmonksFailure
from workers import margin
from workers.broker import broker as _broker  # noqa: F401  (configures the broker first)
from workers.fulltime import full_time
from workers.runtime import services

log = logging.getLogger(__name__)

QUEUE = "sportmonks"
LIVE_POLL_PERIOD_MS = 2_000
IDLE_POLL_PERIOD_MS = 60_000
POLL_MAX_AGE_MS = LIVE_POLL_PERIOD_MS
POLL_TIME_LIMIT_MS = 15_000


@dramatiq.actor(
    queue_name=QUEUE, max_retries=0, max_age=POLL_MAX_AGE_MS, time_limit=POLL_TIME_LIMIT_MS
)
async def poll_sportmonks() -> None:
    # NOTE: no retries: the next poll (2 s later) is the retry, with fresher data.
    async with services() as svc:
        client = SportmonksClient.from_settings(svc.settings)
        try:
            outcome = await poll_once(
                svc, client, SharedBreaker(svc.redis, svc.engine, svc.scripts)
            )
        except (SportmonksFailure, Unavailable) as failure:
            # NOTE: the breaker counted it (or is open); prices stay at the last good base.
            log.warning("sportmonks poll failed: %s", failure)
            return
        finally:
            await client.aclose()
    if outcome.ticked_instruments:
        margin.evaluate_instruments.send([str(i) for i in outcome.ticked_instruments])
    for fixture_id in outcome.newly_full_time:
        full_time.send(str(fixture_id))
