"""The adapters one process holds open: Redis with its loaded scripts, and the Postgres engines
(the primary, and where read-only queries go)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from ftl.core.config import Settings
from ftl.store import hotstore
from ftl.store.auth.google import GoogleKeys
from ftl.store.auth.tokens import Tokens
from ftl.store.db.engine import ReadRoute, create_engine
from ftl.store.flags import Flags
from ftl.store.scripts import Scripts

# PERF: per process; a burst of concurrent requests beyond it waits (up to the Redis timeout) for
# a free connection instead of failing with "Too many connections".
REDIS_POOL_SIZE = 100


@dataclass
class Services:
    settings: Settings
    redis: Redis
    engine: AsyncEngine
    scripts: Scripts
    reads: ReadRoute

    @classmethod
    def create(cls, settings: Settings) -> Services:
        """Build the clients; nothing connects until first use."""
        redis = hotstore.connect(settings, pool_size=REDIS_POOL_SIZE)
        scripts = Scripts(
            redis,
            pipeline=hotstore.pipelined(settings),
            wait_replicas=settings.redis_wait_replicas,
            wait_timeout_ms=settings.redis_wait_timeout_ms,
        )
        engine = create_engine(settings)
        return cls(settings, redis, engine, scripts, ReadRoute.create(settings, engine))

    @cached_property
    def tokens(self) -> Tokens:
        """Built on first use: processes that never touch tokens need no key."""
        settings = self.settings
        return Tokens(
            settings.jwt_private_key_b64, issuer=settings.jwt_issuer, audience=settings.jwt_audience
        )

    @cached_property
    def google_keys(self) -> GoogleKeys:
        """Google's JWKS as this process last fetched it (ftl/store/auth/google.py)."""
        return GoogleKeys(self.settings.google_jwks_url)

    @cached_property
    def flags(self) -> Flags:
        """Feature flags with this process's one-second snapshot (ftl/store/flags.py)."""
        return Flags(self.redis, self.engine)

    async def close(self) -> None:
        if self.scripts.pipeline is not None:
            await self.scripts.pipeline.aclose()
        await self.redis.aclose()
        await self.engine.dispose()
        await self.reads.dispose()
