"""The limits of SPEC §7 that protect one `ws` process from its own clients.

- Commands: a token bucket per connection (`commands_per_s`, `command_burst`); a refused command
  gets `rate_limited`. Refusals draw on a second, slow bucket, the connection's patience: a
  client that keeps sending while refused empties it and is closed with 1008, one that slows
  down earns it back (docs/decisions/0121).
- Connections per user: one entry per open connection in Redis (`ws_connections:{userId}`), so
  the cap holds across replicas. Each entry is a lease its replica renews while the connection
  is open; a crashed replica's entries lapse instead of leaking (docs/decisions/0122). The hub
  removes a closed connection's entry with its presence writes (hub.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ftl.store import keys
from ftl.store.scripts import Scripts

log = logging.getLogger(__name__)

RENEWALS_PER_LEASE = 3  # a lease survives two missed renewals (a Redis blip)
RENEW_BATCH = 1_000  # connections per script call: Redis stays responsive between batches


@dataclass(slots=True)
class TokenBucket:
    """`rate_per_s` tokens a second up to `burst`; O(1) and allocation-free per check."""

    rate_per_s: float
    burst: float
    tokens: float
    at: float  # the monotonic time `tokens` was last brought up to date

    @classmethod
    def full(cls, rate_per_s: float, burst: float, now: float) -> TokenBucket:
        return cls(rate_per_s, burst, burst, now)

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate_per_s)
        self.at = now

    def take(self, now: float) -> bool:
        """Take one token if there is a whole one."""
        self._refill(now)
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def owe(self, cost: float, now: float) -> None:
        """Take `cost` tokens after the fact (a replay's size is known only once read): the
        bucket may go into debt, at most one burst deep, and refuses until it is paid."""
        self._refill(now)
        self.tokens = max(-self.burst, self.tokens - cost)

    def wait_s(self) -> float:
        """Seconds until the next whole token, as of the last check."""
        return max(0.0, (1 - self.tokens) / self.rate_per_s)


class Admission(enum.Enum):
    ADMITTED = 1
    TOKEN_SPENT = 0
    USER_FULL = -1


class UserConnections:
    """Every replica's open connections per user, kept in Redis with leases."""

    def __init__(self, redis: Redis, cap: int, lease_s: float) -> None:
        self.redis = redis
        self.scripts = Scripts(redis)
        self.cap = cap
        self.lease_ms = max(1, round(lease_s * 1000))

    async def admit(
        self, user_id: str, connection_id: str, token_jti: str, token_exp: int
    ) -> Admission:
        """Record the connection and spend its ws token, unless the token was spent or the user
        holds `cap` live connections already (one round trip)."""
        outcome = await self.scripts.call(
            "ws_admit",
            [keys.ws_connections(user_id), keys.spent_ws_token(token_jti)],
            [connection_id, self.cap, self.lease_ms, token_exp],
        )
        return Admission(int(outcome))

    async def renew(self, connections: Iterable[tuple[str, str]]) -> None:
        """Renew the leases of (user id, connection id) pairs, in batches."""
        batch: list[tuple[str, str]] = []
        for pair in connections:
            batch.append(pair)
            if len(batch) == RENEW_BATCH:
                await self._renew(batch)
                batch = []
        if batch:
            await self._renew(batch)

    async def _renew(self, batch: list[tuple[str, str]]) -> None:
        await self.scripts.call(
            "ws_connections_renew",
            [keys.ws_connections(user_id) for user_id, _ in batch],
            [self.lease_ms, *(connection_id for _, connection_id in batch)],
        )

    @contextlib.asynccontextmanager
    async def renewing(self, open_now: Callable[[], list[tuple[str, str]]]) -> AsyncIterator[None]:
        """Renew the leases of `open_now()`'s connections every third of a lease while inside."""

        async def loop() -> None:
            period_s = self.lease_ms / 1000 / RENEWALS_PER_LEASE
            while True:
                await asyncio.sleep(period_s)
                try:
                    await self.renew(open_now())
                except RedisError as exc:
                    log.warning("connection leases not renewed: %s", exc)

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
