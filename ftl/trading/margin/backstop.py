"""The backstop sweep (SPEC §5.4): every user with open positions, evaluated under a lease every
5 minutes (the clock's schedule), so no trigger that went missing leaves a breach unjudged."""

from __future__ import annotations

from ftl.store import keys
from ftl.store.leases import Lease
from ftl.store.services import Services
from ftl.trading.margin.evaluator import evaluate_pass
from ftl.trading.margin.snapshots import users_with_open_positions

BACKSTOP_LEASE_TTL_MS = 30_000  # SPEC §5.4; renewed while the sweep runs (ftl/store/leases.py)
BACKSTOP_CHUNK_USERS = 500  # users per pass of the sweep (well under a second per pass)


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
