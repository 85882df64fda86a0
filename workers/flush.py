"""The flusher process (Procfile `flusher`): Dramatiq actors on the `flush` queue, the work
that copies hot state into Postgres.

`flush` is sent by the clock twice per FLUSH_RUN_MS; each message drains the Redis outbox into
Postgres (ftl/ops/flush.py) every FLUSH_INTERVAL_MS for FLUSH_RUN_MS, so runs follow each other
without a gap. Messages older than two runs are dropped quietly (about every other message, by
design): a newer one does the same work, so a backlog of messages never becomes a backlog of
work, and a flusher that dies mid-run is replaced by the next message.
A batch with trade ticks asks the `margin` queue for a pass over their instruments' holders
(`workers.margin.follow_up_trades`, one pending per instrument, a second late; docs/decisions/0045,
0047).
`snapshot_leaderboards` is sent every 60 s (and may be sent at full time).
"""

from __future__ import annotations

import logging
import time

import dramatiq
from dramatiq.middleware import CurrentMessage

from ftl.core.config import get_settings
from ftl.market import leaderboard
from ftl.ops.flush import FLUSH_RUN_MS, Flusher
from ftl.store.services import Services
from workers import broker as _broker  # noqa: F401  (configures the broker before the actors)
from workers import margin

QUEUE = "flush"
# NOTE: a message prefetched while a run goes on must still be fresh when that run ends.
MAX_AGE_MS = 2 * FLUSH_RUN_MS
SEND_EVERY_MS = FLUSH_RUN_MS // 2
TIME_LIMIT_MS = 30_000

_flusher: Flusher | None = None
log = logging.getLogger(__name__)


def build(services: Services, consumer: str | None = None) -> Flusher:
    """A flusher whose batches with trade ticks ask for a margin pass over their holders."""
    return Flusher(services, consumer, after_ticks=margin.follow_up_trades)


def flusher() -> Flusher:
    """The process's flusher, built on first use (one consumer name per process)."""
    global _flusher
    if _flusher is None:
        _flusher = build(Services.create(get_settings()))
    return _flusher


def stale(message: dramatiq.Message[object] | None) -> bool:
    """A flush message that waited longer than two runs: a newer one does the same work."""
    return message is not None and time.time() * 1000 - message.message_timestamp > MAX_AGE_MS


# NOTE: no `max_age`: Dramatiq's AgeLimit fails a stale message into the dead-letter queue with a
# warning, and stale flush messages are expected (two sent per run), not failures.
@dramatiq.actor(queue_name=QUEUE, time_limit=TIME_LIMIT_MS, max_retries=0)
async def flush() -> None:
    # NOTE: no retries: a failed flush leaves its entries pending and the next message takes
    # them again.
    if stale(CurrentMessage.get_current_message()):
        log.debug("flush: a newer message does this run")
        return
    await flusher().run_for()


@dramatiq.actor(
    queue_name=QUEUE, max_age=leaderboard.SNAPSHOT_INTERVAL_MS, time_limit=TIME_LIMIT_MS
)
async def snapshot_leaderboards() -> None:
    await leaderboard.snapshot(flusher().services)
