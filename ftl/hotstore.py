"""The connection to Redis, the hot state (SPEC §2)."""

from __future__ import annotations

from redis.asyncio import Redis

from ftl.config import Settings

REDIS_TIMEOUT_S = 3.0
REQUIRED_EVICTION_POLICY = "noeviction"


def connect(settings: Settings) -> Redis:
    """A pooled client; replies decoded as UTF-8 text."""
    return Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        socket_timeout=REDIS_TIMEOUT_S,
        health_check_interval=30,
    )


async def eviction_policy(redis: Redis) -> str:
    config = await redis.config_get("maxmemory-policy")
    return str(config.get("maxmemory-policy", ""))
