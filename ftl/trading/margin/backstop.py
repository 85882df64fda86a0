"""The backstop sweep (SPEC §5.4): every user with open positions, evaluated under a lease every
BACKSTOP_PERIOD_S, so no trigger that went missing leaves a breach unjudged."""

from __future__ import annotations

from uuid import UUID

from ftl.store import keys
from ftl.store.leases import Lease
from ftl.store.services import Services
from ftl.trading.margin.evaluator import evaluate_pass

BACKSTOP_PERIOD_S = 300  # the clock sends the backstop sweep every 5 minutes
BACKSTOP_LEASE_TTL_MS = 30_000  # SPEC §5.4; renewed while the sweep runs (ftl/store/leases.py)
BACKSTOP_CHUNK_USERS = 500  # users per pass of the sweep (well under a second per pass)


async def users_with_open_positions(services: Services) -> list[UUID]:
    """Every user holding an open position now (his `positions:{id}` set exists while non-empty).

    NOTE: scanned from the position sets, not the holders index, so the backstop also catches
    users the index would miss.
    """
    prefix = keys.open_positions("")
    found = [
        UUID(name[len(prefix) :]) async for name in services.redis.scan_iter(f"{prefix}*", 1000)
    ]
    return sorted(set(found), key=str)


async def backstop_sweep(services: Services) -> int | None:
    """Evaluate every user with open positions under `lease:margin-backstop`; the number of users
    swept, or None when another sweep holds the lease. The lease is renewed while sweeping, and
    a sweep killed midway leaves it to expire (a rerun closes nothing twice: see evaluate_user)."""
    async with Lease(services.scripts, keys.MARGIN_BACKSTOP_LEASE, BACKSTOP_LEASE_TTL_MS) as held:
        if not held:
            return None
        users = await users_with_open_positions(services)
        # PERF: a pass per chunk shares its snapshots and parsed ticks (evaluate_pass).
        for at in range(0, len(users), BACKSTOP_CHUNK_USERS):
            await evaluate_pass(services, users[at : at + BACKSTOP_CHUNK_USERS])
        return len(users)
