"""One trade's Lua time (SPEC §8: mean < 0.1 ms with 20 open positions), measured sequentially.

One synthetic user holds 19 open positions on 19 instruments; the driver then opens a 20th and
closes it, one call after the other, through ftl/trading/trades.py (the web's own code path), in
blocks of 100 trades. Redis times each call itself (INFO commandstats: FCALL, as the trade scripts
run as Redis Functions, and EVALSHA) and reports its own CPU (INFO cpu); with one sequential client
and the best block taken, the figure hardly depends on what else the machine runs, unlike the
figures of bench/trade.py.

Prints one JSON object: microseconds per call (Redis's clock) and Redis CPU microseconds per
call (which include reading the command and writing the reply), each as the mean and as the
best block; the median open and close apart; the client round trip mean (load-dependent).

    python -m bench.lua_trade [--trades 5000]

Like bench/trade.py it starts a private Redis (INFO commandstats is server-wide) and seeds a
fresh database `<DATABASE_URL's name>_bench` on the same server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from contextlib import ExitStack
from typing import Any
from uuid import UUID

from bench.trade import HOLDINGS, fresh_database, make_traders, start_redis
from ftl.core.config import Settings
from ftl.ops.seed import seed
from ftl.store import keys
from ftl.store.auth.tokens import TokenType, generate_private_key_b64
from ftl.store.db.migrate import upgrade
from ftl.store.services import Services
from ftl.trading import trades as trading
from ftl.trading.trades import Caller, OpenOrder

CLIENT_PRICE_CENTS = 100_000  # 1,000.00: far above the seeded prices, so a long never slips
TOLERANCE_PPM = 50_000
BLOCK_TRADES = 100  # trades between two readings of Redis's statistics


def order(instrument_id: str) -> OpenOrder:
    return OpenOrder(
        instrument_id=UUID(instrument_id),
        direction=1,
        lots_centis=1,
        client_request_id=uuid.uuid4().hex,
        client_price_cents=CLIENT_PRICE_CENTS,
        tolerance_ppm=TOLERANCE_PPM,
        stop_loss_cents=None,
        take_profit_cents=None,
    )


async def redis_cpu_us(services: Services) -> float:
    """CPU time Redis's main thread has used so far, in microseconds."""
    cpu = await services.redis.info("cpu")
    return (float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])) * 1e6


async def lua_usec(services: Services) -> float:
    """Microseconds Redis spent in Lua calls (wall time, its own clock) since the last reset."""
    stats = await services.redis.info("commandstats")
    return sum(float(stats.get(f"cmdstat_{c}", {}).get("usec", 0)) for c in ("evalsha", "fcall"))


async def bench(settings: Settings, trades: int) -> dict[str, Any]:
    services = Services.create(settings)
    try:
        await seed(services.engine, services.redis, admin_email=settings.admin_email)
        members: set[str] = await services.redis.smembers(keys.INSTRUMENT_IDS)  # type: ignore[assignment]
        instrument_ids = sorted(members)[: HOLDINGS + 1]
        (user,) = await make_traders(services, 1)
        caller = Caller.from_claims(services.tokens.issue(TokenType.ACCESS, user)[1])
        for iid in instrument_ids[:HOLDINGS]:
            await trading.open_position(services, caller, order(iid))
        traded = instrument_ids[HOLDINGS]

        async def open_one() -> UUID:
            body = await trading.open_position(services, caller, order(traded))
            return UUID(json.loads(body)["position"]["id"])

        async def close_one(position_id: UUID) -> None:
            await trading.close_position(services, caller, position_id, uuid.uuid4().hex)

        # PERF: Redis's CPU, unlike its clock, is not stretched while the scheduler runs others;
        # the best block of BLOCK_TRADES is the figure a quiet machine gives.
        usec: list[float] = []
        cpu_us: list[float] = []
        started = time.perf_counter()
        for _ in range(max(1, trades // BLOCK_TRADES)):
            cpu_before = await redis_cpu_us(services)
            await services.redis.config_resetstat()
            for _ in range(BLOCK_TRADES):
                await close_one(await open_one())
            usec.append(await lua_usec(services) / (2 * BLOCK_TRADES))
            cpu_us.append((await redis_cpu_us(services) - cpu_before) / (2 * BLOCK_TRADES))
        round_trip_us = (time.perf_counter() - started) * 1e6 / (2 * BLOCK_TRADES * len(usec))
        # Again, reading the statistics after every call: opens and closes apart (wall time).
        open_usec: list[float] = []
        close_usec: list[float] = []
        for _ in range(BLOCK_TRADES):
            await services.redis.config_resetstat()
            position_id = await open_one()
            open_usec.append(await lua_usec(services))
            await services.redis.config_resetstat()
            await close_one(position_id)
            close_usec.append(await lua_usec(services))
    finally:
        await services.close()
    return {
        "bench": "lua_trade",
        "open_positions_per_user": HOLDINGS + 1,
        "trades": BLOCK_TRADES * len(usec),
        "usec_per_call": round(statistics.fmean(usec), 1),
        "usec_per_call_best_block": round(min(usec), 1),
        "redis_cpu_usec_per_call": round(statistics.fmean(cpu_us), 1),
        "redis_cpu_usec_per_call_best_block": round(min(cpu_us), 1),
        "open_usec_median": round(statistics.median(open_usec), 1),
        "close_usec_median": round(statistics.median(close_usec), 1),
        "client_round_trip_mean_us": round(round_trip_us, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=5000, help="opens, each then closed")
    args = parser.parse_args()
    env = dict(os.environ)
    env.setdefault("JWT_PRIVATE_KEY_B64", generate_private_key_b64())
    env["DATABASE_URL"] = fresh_database(env.get("DATABASE_URL", Settings().database_url))
    with ExitStack() as stack:
        env["REDIS_URL"] = start_redis(stack)
        settings = Settings.from_env(env)
        upgrade(settings.database_url)
        result = asyncio.run(bench(settings, args.trades))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
