"""What every worker process holds, set up once at its start: the Dramatiq broker, and the
adapters (settings, Redis with its scripts, the Postgres engine) every actor reaches the same way,
`async with services() as svc` (docs/decisions/0140).

A process that runs actors or the clock calls `start()` first: `python -m workers` hands
`workers.runtime:start` to Dramatiq's CLI as its broker argument, which calls it in each worker
process before it imports an actor module; the clock calls it in `main()`. Actor modules ask for
the broker with `broker()`, so none configures it as a side effect of being imported; a process
that only sends messages (web, the CLI) sets it up on its first import of an actor module.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

from ftl.core.config import get_settings
from ftl.store.services import Services
from workers.broker import build_broker

_broker: RedisBroker | None = None
# The adapters of this process, for the event loop they were made on.
_shared: tuple[asyncio.AbstractEventLoop, Services] | None = None


def start() -> RedisBroker:
    """Set up this process's broker from the settings (once; later calls return it)."""
    global _broker
    if _broker is None:
        settings = get_settings()
        extra: list[Middleware] = []
        if settings.prometheus_multiproc_dir:
            # NOTE: imported only here: Dramatiq's Prometheus module reads its settings from the
            # environment at import, which `python -m workers` prepares.
            from workers.metrics import WorkerMetrics

            extra.append(WorkerMetrics())
        _broker = build_broker(settings, [*extra, SharedServices()])
        dramatiq.set_broker(_broker)
    return _broker


def broker() -> RedisBroker:
    """The broker actors declare themselves on (set up by `start()`)."""
    return start()


@asynccontextmanager
async def services() -> AsyncIterator[Services]:
    """The adapters for one message: the process's own, made once per event loop.

    PERF: Dramatiq runs every async actor of a process on one event loop, so its pools and loaded
    scripts serve every message. Made per message (as before), each margin share paid for a new
    Redis pool and engine, new connections (redis-py reads its own package metadata from disk
    for each) and the Lua files read and hashed again: about a third of a margin worker's CPU
    under a steady trade stream (docs/decisions/0047). A new loop (a test's) gets new adapters.
    """
    yield _services()


def _services() -> Services:
    global _shared
    loop = asyncio.get_running_loop()
    if _shared is None or _shared[0] is not loop:
        _shared = (loop, Services.create(get_settings()))
    return _shared[1]


async def open_services() -> None:
    """Make the adapters of the running event loop now (a worker booting), not on first use."""
    _services()


async def close_services() -> None:
    """Close the adapters of the running event loop, if it has any (a worker shutting down)."""
    global _shared
    if _shared is not None and _shared[0] is asyncio.get_running_loop():
        svc, _shared = _shared[1], None
        await svc.close()


async def enqueue(
    actor: dramatiq.Actor[Any, Any], *args: Any, delay: int | None = None, **kwargs: Any
) -> None:
    """Send `actor` a message from async code without blocking the event loop: `.send()` talks
    to Redis synchronously (and runs the enqueue middleware), so it runs in a thread."""
    await asyncio.to_thread(actor.send_with_options, args=args, kwargs=kwargs, delay=delay)


class SharedServices(Middleware):
    """Makes the adapters the actors of a worker share on the actors' event loop when the worker
    boots, and closes them there before Dramatiq's AsyncIO middleware stops that loop."""

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        loop_thread = get_event_loop_thread()
        if loop_thread is not None:
            loop_thread.run_coroutine(open_services())

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        loop_thread = get_event_loop_thread()
        if loop_thread is not None:
            loop_thread.run_coroutine(close_services())
