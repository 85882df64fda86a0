"""The `email` queue: deliver one outbox row (ftl/accounts/email.py), retried with backoff on
failure."""

from __future__ import annotations

import uuid

import dramatiq

from ftl.accounts.email import deliver
from ftl.core.config import get_settings
from ftl.store.db.engine import create_engine
from workers.broker import DEFAULT_MAX_RETRIES

EMAIL_QUEUE = "email"
# NOTE: a message older than an hour is stale (codes live 5 minutes); its row stays `pending`.
EMAIL_MAX_AGE_MS = 3600 * 1000
EMAIL_TIME_LIMIT_MS = 30_000


@dramatiq.actor(
    queue_name=EMAIL_QUEUE,
    max_retries=DEFAULT_MAX_RETRIES,
    max_age=EMAIL_MAX_AGE_MS,
    time_limit=EMAIL_TIME_LIMIT_MS,
)
async def send_email(outbox_id: str) -> None:
    # PERF: a pool per message is fine at email rates and ties no connection to a stale loop.
    settings = get_settings()
    engine = create_engine(settings, pool_size=1)
    try:
        await deliver(engine, settings, uuid.UUID(outbox_id))
    finally:
        await engine.dispose()
