"""The connection to Redis, the hot state (SPEC §2)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

from ftl.config import Settings

REDIS_TIMEOUT_S = 3.0
REQUIRED_EVICTION_POLICY = "noeviction"


def connect(settings: Settings, *, pool_size: int | None = None) -> Redis:
    """A pooled client; replies decoded as UTF-8 text.

    With `pool_size`, a caller beyond that many concurrent commands waits (up to REDIS_TIMEOUT_S)
    for a free connection instead of failing: for bursts such as thousands of WebSocket
    handshakes at once.
    """
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": REDIS_TIMEOUT_S,
        "socket_timeout": REDIS_TIMEOUT_S,
        "health_check_interval": 30,
    }
    if pool_size is None:
        return Redis.from_url(settings.redis_url, **options)
    pool = BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=pool_size, timeout=REDIS_TIMEOUT_S, **options
    )
    return Redis.from_pool(pool)


async def eviction_policy(redis: Redis) -> str:
    config = await redis.config_get("maxmemory-policy")
    return str(config.get("maxmemory-policy", ""))
