"""Leases: one process at a time runs a piece of work, and a dead holder's lease runs out soon.

A lease is a Redis key holding its holder's token with a short time to live, renewed in the
background while the work runs (lua/lease_hold.lua), and given back only by its holder
(lua/lease_release.lua). A SIGKILLed holder stops renewing, so the work can run again after at
most one time to live instead of after the longest the work could ever take.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from types import TracebackType

from ftl.store import keys
from ftl.store.scripts import Scripts


class Lease:
    """`async with Lease(...) as held:` held is False when another process holds it."""

    def __init__(self, scripts: Scripts, name: str, ttl_ms: int) -> None:
        self.scripts = scripts
        self.key = keys.lease(name)
        self.ttl_ms = ttl_ms
        self.token = uuid.uuid4().hex
        self._renewer: asyncio.Task[None] | None = None

    async def hold(self) -> bool:
        """Take the lease, or extend it when this holder has it."""
        return bool(await self.scripts.call("lease_hold", [self.key], [self.token, self.ttl_ms]))

    async def _renew(self) -> None:
        # NOTE: renewing at a third of the time to live leaves two chances before it runs out.
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            await self.hold()

    async def __aenter__(self) -> bool:
        if not await self.hold():
            return False
        self._renewer = asyncio.create_task(self._renew())
        return True

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._renewer is None:
            return
        self._renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._renewer
        self._renewer = None
        await self.scripts.call("lease_release", [self.key], [self.token])
