"""The full-time close-out actor (queue `default`), sent by the poller when a fixture reaches
full time (SPEC §1.7)."""

from __future__ import annotations

import logging
from uuid import UUID

import dramatiq

from ftl.core.errors import Conflict
from ftl.trading.fulltime import close_out
from workers import flush
from workers.broker import broker as _broker  # noqa: F401  (configures the broker first)
from workers.runtime import services

log = logging.getLogger(__name__)

QUEUE = "default"
MAX_AGE_MS = 24 * 3600 * 1000  # a close-out is never stale: late is better than never
TIME_LIMIT_MS = 10 * 60 * 1000


@dramatiq.actor(queue_name=QUEUE, max_age=MAX_AGE_MS, time_limit=TIME_LIMIT_MS, max_retries=20)
async def full_time(fixture_id: str) -> None:
    # NOTE: `close_out_running` propagates so Dramatiq retries after the other run finished;
    # the retry then finds the close-out done and only confirms the unfreeze.
    async with services() as svc:
        try:
            report = await close_out(svc, UUID(fixture_id))
        except Conflict as refused:
            if refused.code == "close_out_running":
                raise
            log.warning("full time of %s refused: %s", fixture_id, refused.code)
            return
    log.info("full time of %s: %s", fixture_id, report)
    flush.snapshot_leaderboards.send()
