"""Leases: one holder at a time, renewed while its work runs, given back only by its holder."""

from __future__ import annotations

import asyncio

from ftl.store import keys
from ftl.store.leases import Lease
from ftl.store.services import Services

TTL_MS = 300


async def test_one_holder_at_a_time_and_the_lease_is_free_after_the_work(
    services: Services,
) -> None:
    first = Lease(services.scripts, "job", TTL_MS)
    second = Lease(services.scripts, "job", TTL_MS)
    async with first as held:
        assert held
        async with second as also_held:
            assert not also_held
    assert not await services.redis.exists(keys.lease("job"))
    async with second as held:
        assert held


async def test_a_lease_outlives_its_time_to_live_while_the_work_runs(services: Services) -> None:
    lease = Lease(services.scripts, "job", TTL_MS)
    async with lease as held:
        assert held
        await asyncio.sleep(3 * TTL_MS / 1000)
        assert await services.redis.get(lease.key) == lease.token


async def test_a_holder_whose_lease_ran_out_never_removes_the_next_holders(
    services: Services,
) -> None:
    lease = Lease(services.scripts, "job", 60_000)
    async with lease as held:
        assert held
        await services.redis.set(lease.key, "next-holder")  # ours ran out, another took it
        assert not await lease.hold()
    assert await services.redis.get(lease.key) == "next-holder"
