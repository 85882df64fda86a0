"""Round trip of one EVALSHA (ping.lua) from Python: the floor under every trade's Redis call.

Prints one JSON object: calls, mean/p50/p99 client round trip in microseconds, and the
server-side time per call from INFO commandstats. Needs REDIS_URL (make services-up).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable

from ftl.core.config import get_settings
from ftl.store.services import Services

CALLS = 20_000


async def round_trips_us(call: Callable[[], Awaitable[object]], calls: int) -> list[float]:
    """`calls` sequential awaits of `call()`, each timed by the client in microseconds; sorted."""
    samples_us = []
    for _ in range(calls):
        start = time.perf_counter()
        await call()
        samples_us.append((time.perf_counter() - start) * 1e6)
    samples_us.sort()
    return samples_us


async def ping(services: Services) -> None:
    await services.scripts.call("ping")


async def main() -> None:
    services = Services.create(get_settings())
    await services.scripts.load()
    await services.redis.config_resetstat()
    samples_us = await round_trips_us(lambda: ping(services), CALLS)
    stats = await services.redis.info("commandstats")
    evalsha = stats.get("cmdstat_evalsha", {})
    await services.close()
    print(
        json.dumps(
            {
                "bench": "lua_ping",
                "calls": CALLS,
                "client_mean_us": round(statistics.fmean(samples_us), 1),
                "client_p50_us": round(samples_us[len(samples_us) // 2], 1),
                "client_p99_us": round(samples_us[int(len(samples_us) * 0.99)], 1),
                "server_usec_per_call": evalsha.get("usec_per_call"),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
