"""The one place the Dramatiq broker and its middleware are configured.

Middleware is listed explicitly (not Dramatiq's defaults) so that adding or dropping one is a
visible decision:
- ValidateArguments (workers/arguments.py): `.send()` with arguments the actor cannot take
  raises in the caller instead of failing into the dead-letter queue.
- AgeLimit: a message older than its actor's `max_age` is dropped, so a backlog never replays
  stale work (every actor sets `max_age`, but `flush`, which skips its stale messages itself
  instead of failing them into the dead-letter queue: workers/flush.py).
- TimeLimit: an actor running past its `time_limit` is interrupted (every actor sets one).
- ShutdownNotifications: long actors can stop cleanly when the worker stops.
- Callbacks, Pipelines: on_success/on_failure and pipelines, used by the full-time steps.
- Retries: failed messages are retried with backoff; actors are idempotent so a retry is safe.
- CurrentMessage: actors can read their own message id (idempotency keys, logs).
- AsyncIO: actors are `async def` and share the same async ftl services as the web process.
- RequestIds: a message sent while a request id is in play (a web request, or a message that
  carried one) carries it in its options, and its processing logs under it (ftl/core/logs.py).
- WorkerMetrics (workers/metrics.py): Dramatiq's Prometheus middleware, only in processes started
  by `python -m workers`, which sets up the metrics directory and port (docs/decisions/0060).
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    AsyncIO,
    Callbacks,
    CurrentMessage,
    Middleware,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from ftl.core import logs
from ftl.core.config import Settings, get_settings
from ftl.store import hotstore
from workers import runtime
from workers.arguments import ValidateArguments

NAMESPACE = "ftl-dramatiq"
DEFAULT_MAX_RETRIES = 5
DEFAULT_MIN_BACKOFF_MS = 500
DEFAULT_MAX_BACKOFF_MS = 30_000
DEFAULT_TIME_LIMIT_MS = 60_000
# NOTE: a SIGKILLed worker's unacknowledged messages go back to their queue when maintenance
# finds its heartbeat older than this; Dramatiq's defaults (60 s, and maintenance on 1 in 1,000
# broker commands) left a killed full time or sweep waiting for minutes.
HEARTBEAT_TIMEOUT_MS = 15_000
MAINTENANCE_CHANCE_PER_MILLION = 10_000


REQUEST_ID_OPTION = "request_id"


class RequestIds(Middleware):
    """Carries the request id from the sender into the processing of the message."""

    def before_enqueue(
        self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int
    ) -> None:
        request_id = logs.request_id.get()
        if request_id is not None:
            message.options[REQUEST_ID_OPTION] = request_id

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        # NOTE: the AsyncIO middleware schedules the actor from this thread, so its coroutine
        # starts with a copy of this context.
        logs.request_id.set(logs.valid_request_id(message.options.get(REQUEST_ID_OPTION)))

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        logs.request_id.set(None)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        logs.request_id.set(None)


class SharedServices(Middleware):
    """Closes the adapters the actors of this worker shared (workers.runtime) on the actors'
    event loop, before Dramatiq's AsyncIO middleware stops that loop."""

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        loop_thread = get_event_loop_thread()
        if loop_thread is not None:
            loop_thread.run_coroutine(runtime.close_services())


def build_broker(settings: Settings, *, metrics: bool = False) -> RedisBroker:
    middleware: list[Middleware] = [
        ValidateArguments(),
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
        SharedServices(),
        RequestIds(),
    ]
    if metrics:
        # NOTE: imported only here: Dramatiq's module reads its settings from the environment
        # at import, which `python -m workers` prepares.
        from workers.metrics import WorkerMetrics

        middleware.append(WorkerMetrics())
    return RedisBroker(  # type: ignore[no-untyped-call]
        # NOTE: bytes, no read timeout: as Dramatiq builds its own client from a URL.
        client=hotstore.connect_blocking(settings, decode_responses=False, socket_timeout=None),
        namespace=NAMESPACE,
        middleware=middleware,
        heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
        maintenance_chance=MAINTENANCE_CHANCE_PER_MILLION,
    )


_settings = get_settings()
broker = build_broker(_settings, metrics=bool(_settings.prometheus_multiproc_dir))
dramatiq.set_broker(broker)
