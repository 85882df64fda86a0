"""The one place the Dramatiq broker and its middleware are configured.

Middleware is listed explicitly (not Dramatiq's defaults) so that adding or dropping one is a
visible decision:
- AgeLimit: a message older than its actor's `max_age` is dropped, so a backlog never replays
  stale work (every actor sets `max_age`).
- TimeLimit: an actor running past its `time_limit` is interrupted (every actor sets one).
- ShutdownNotifications: long actors can stop cleanly when the worker stops.
- Callbacks, Pipelines: on_success/on_failure and pipelines, used by the full-time steps.
- Retries: failed messages are retried with backoff; actors are idempotent so a retry is safe.
- CurrentMessage: actors can read their own message id (idempotency keys, logs).
- AsyncIO: actors are `async def` and share the same async ftl services as the web process.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    AsyncIO,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from ftl.config import get_settings

NAMESPACE = "ftl-dramatiq"
DEFAULT_MAX_RETRIES = 5
DEFAULT_MIN_BACKOFF_MS = 500
DEFAULT_MAX_BACKOFF_MS = 30_000
DEFAULT_TIME_LIMIT_MS = 60_000


def build_broker(redis_url: str) -> RedisBroker:
    middleware = [
        AgeLimit(),
        TimeLimit(time_limit=DEFAULT_TIME_LIMIT_MS),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(
            max_retries=DEFAULT_MAX_RETRIES,
            min_backoff=DEFAULT_MIN_BACKOFF_MS,
            max_backoff=DEFAULT_MAX_BACKOFF_MS,
        ),
        CurrentMessage(),
        AsyncIO(),
    ]
    return RedisBroker(  # type: ignore[no-untyped-call]
        url=redis_url, namespace=NAMESPACE, middleware=middleware
    )


broker = build_broker(get_settings().redis_url)
dramatiq.set_broker(broker)
