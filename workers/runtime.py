"""What an actor needs to run: the process's settings and adapters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ftl.core.config import get_settings
from ftl.store.services import Services

# The adapters of this process, for the event loop they were made on.
_shared: tuple[asyncio.AbstractEventLoop, Services] | None = None


@asynccontextmanager
async def services() -> AsyncIterator[Services]:
    """The adapters for one message: the process's own, made once per event loop.

    PERF: Dramatiq runs every async actor of a process on one event loop, so its pools and loaded
    scripts serve every message. Made per message (as before), each margin share paid for a new
    Redis pool and engine, new connections (redis-py reads its own package metadata from disk
    for each) and the Lua files read and hashed again: about a third of a margin worker's CPU
    under a steady trade stream (docs/decisions/0047). A new loop (a test's) gets new adapters.
    """
    global _shared
    loop = asyncio.get_running_loop()
    if _shared is None or _shared[0] is not loop:
        _shared = (loop, Services.create(get_settings()))
    yield _shared[1]


async def close_services() -> None:
    """Close the adapters of the running event loop, if it has any (a worker shutting down)."""
    global _shared
    if _shared is not None and _shared[0] is asyncio.get_running_loop():
        svc, _shared = _shared[1], None
        await svc.close()
