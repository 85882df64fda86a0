"""What waiting for a replica (REDIS_WAIT_REPLICAS=1, Redis WAIT; decision 0151) adds to a trade.

A private primary and its replica on this machine; trades go through ftl/trading/trades.py
(the web's own code path, the pipelined connection included) with WAIT off, then on, against
the same primary and replica, so the difference is the WAIT alone (replication runs in both).

- sequential: one caller opens a position and closes it, again and again: the latency of one
  open with nothing else in flight (median, p99);
- concurrent: CALLERS callers at once (each its own user), as a loaded web process sees it:
  open latency (median, p99) and trades a second. Concurrent trades share one WAIT (group
  commit, ftl/store/hotstore.py), so the cost per trade falls with load.

Prints one JSON object.

    python -m bench.replication [--trades 2000] [--callers 50]

Like bench/trade.py it seeds a fresh database `<DATABASE_URL's name>_bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import statistics
import time
import uuid
from contextlib import ExitStack
from tempfile import TemporaryDirectory
from typing import Any
from uuid import UUID

import redis

from bench.lua_trade import order
from bench.trade import fresh_database, make_traders, start_redis
from ftl.core.config import Settings
from ftl.ops.seed import seed
from ftl.store import keys
from ftl.store.auth.tokens import TokenType, generate_private_key_b64
from ftl.store.db.migrate import upgrade
from ftl.store.services import Services
from ftl.trading import trades
from ftl.trading.trades import Caller

SYNC_WAIT_S = 30


def replicas(client: redis.Redis) -> int:
    """The replicas that count for min-replicas-to-write (synced, acknowledging)."""
    try:
        return int(client.info("replication").get("min_slaves_good_slaves", 0))
    except redis.ConnectionError:  # not listening yet
        return 0


def wait_for_replica(primary_url: str) -> None:
    client = redis.Redis.from_url(primary_url, decode_responses=True)
    deadline = time.monotonic() + SYNC_WAIT_S
    while replicas(client) < 1:
        if time.monotonic() > deadline:
            raise SystemExit("the replica did not connect")
        time.sleep(0.05)
    client.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def summary(open_us: list[float]) -> dict[str, float]:
    return {
        "open_us_median": round(statistics.median(open_us), 1),
        "open_us_p99": round(percentile(open_us, 0.99), 1),
    }


async def trade_loop(
    services: Services, caller: Caller, instrument_id: str, rounds: int, open_us: list[float]
) -> None:
    for _ in range(rounds):
        started = time.perf_counter()
        body = await trades.open_position(services, caller, order(instrument_id))
        open_us.append((time.perf_counter() - started) * 1e6)
        position_id = UUID(json.loads(body)["position"]["id"])
        await trades.close_position(services, caller, position_id, uuid.uuid4().hex)


async def measure(
    settings: Settings, callers: list[Caller], instrument_id: str, rounds: int
) -> dict[str, Any]:
    services = Services.create(settings)
    try:
        # NOTE: warm-up, not measured: each wallet's first trade loads it from Postgres.
        await asyncio.gather(*(trade_loop(services, c, instrument_id, 1, []) for c in callers))
        sequential: list[float] = []
        await trade_loop(services, callers[0], instrument_id, rounds, sequential)
        concurrent: list[float] = []
        started = time.perf_counter()
        await asyncio.gather(
            *(
                trade_loop(services, caller, instrument_id, rounds // len(callers), concurrent)
                for caller in callers
            )
        )
        elapsed = time.perf_counter() - started
    finally:
        await services.close()
    return {
        "sequential": summary(sequential),
        "concurrent": {
            **summary(concurrent),
            # NOTE: an open and a close each: two trades per round.
            "trades_per_s": round(2 * len(concurrent) / elapsed),
        },
    }


async def bench(settings: Settings, rounds: int, callers: int) -> dict[str, Any]:
    services = Services.create(settings)
    try:
        await seed(services.engine, services.redis, admin_email=settings.admin_email)
        members: set[str] = await services.redis.smembers(keys.INSTRUMENT_IDS)  # type: ignore[assignment]
        instrument_id = sorted(members)[0]
        users = await make_traders(services, callers)
        issued = [services.tokens.issue(TokenType.ACCESS, user)[1] for user in users]
        traders = [Caller.from_claims(claims) for claims in issued]
    finally:
        await services.close()
    without = await measure(settings, traders, instrument_id, rounds)
    waiting = dataclasses.replace(settings, redis_wait_replicas=1)
    with_wait = await measure(waiting, traders, instrument_id, rounds)
    return {
        "bench": "replication",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "trades_per_mode": rounds,
        "callers": callers,
        "wait_timeout_ms": settings.redis_wait_timeout_ms,
        "without_wait": without,
        "with_wait_1_replica": with_wait,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=2000, help="opens (each closed) per mode")
    parser.add_argument("--callers", type=int, default=50, help="concurrent callers")
    args = parser.parse_args()
    env = dict(os.environ)
    env.setdefault("JWT_PRIVATE_KEY_B64", generate_private_key_b64())
    env["DATABASE_URL"] = fresh_database(env.get("DATABASE_URL", Settings().database_url))
    env.pop("REDIS_SENTINELS", None)
    with ExitStack() as stack:
        # NOTE: each in its own directory: a replica writes the RDB it syncs from.
        primary_dir, replica_dir = (stack.enter_context(TemporaryDirectory()) for _ in "pr")
        primary = start_redis(stack, "--min-replicas-to-write", "1", "--dir", primary_dir)
        host_port = primary.split("//", 1)[1].split("/", 1)[0].split(":")
        start_redis(stack, "--replicaof", *host_port, "--dir", replica_dir)
        env["REDIS_URL"] = primary
        wait_for_replica(primary)
        settings = Settings.from_env(env)
        upgrade(settings.database_url)
        result = asyncio.run(bench(settings, args.trades, args.callers))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
