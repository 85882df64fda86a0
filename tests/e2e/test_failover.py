"""Chaos (issue #21): Redis under Sentinel loses its primary to SIGKILL while traders trade over
HTTP. The sentinels promote the replica; every client follows without a restart; trades that
come meanwhile are refused with 503 and Retry-After, never a 500; once the killed node is back
as the new primary's replica, trading resumes; and every acknowledged trade is in `ftl audit`
and in Postgres (each was on the replica before it was answered: REDIS_WAIT_REPLICAS=1).

Prints one JSON line (and records it as the test's properties): the failover time (kill to
the sentinels naming the new primary), when the restarted node had synced as the new primary's
replica, when trades were acknowledged again, and the trades refused meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.exceptions import RedisError

from ftl.core.config import Settings
from ftl.store import hotstore
from tests.e2e.crash_stack import (
    MASTER_NAME,
    REPLICATED,
    Load,
    PrivatePostgres,
    SentinelRedis,
    Stack,
    deployed,
    required_pg_bindir,
    settle_and_audit_load,
    start_trading,
    wait_until,
)

pytestmark = pytest.mark.e2e

FAILOVER_WAIT_S = 30
ACKNOWLEDGED_AFTER = 10  # trades acknowledged after the failover before the audit


@pytest.fixture
def sentinel_stack() -> Iterator[tuple[Stack, SentinelRedis]]:
    pg = PrivatePostgres(required_pg_bindir())
    hot: SentinelRedis | None = None
    stack: Stack | None = None
    try:
        hot = SentinelRedis()
        # NOTE: the processes find Redis by the sentinels (hot.env), not by the node given
        stack = deployed(pg, hot.nodes[0], web_concurrency=2, **hot.env)
        # NOTE: the clock sends the flush runs (Dramatiq broker), the flusher moves trades to
        # Postgres: both must follow the failover for the audit to find every trade.
        for name in ("web", "flusher", "clock"):
            stack.start(name)
        yield stack, hot
    finally:
        if stack is not None:
            stack.stop_all()
        if hot is not None:
            hot.destroy()
        pg.destroy()


def test_primary_killed_under_load_fails_over_and_loses_no_acknowledged_trade(
    sentinel_stack: tuple[Stack, SentinelRedis],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    stack, hot = sentinel_stack
    load, _, _ = start_trading(stack)
    try:
        primary = hot.primary()
        assert primary is not None
        killed = hot.node_at(primary)
        refused_before = load.refused

        killed.kill()
        killed_at = time.monotonic()
        wait_until(
            lambda: hot.primary() not in (None, primary),
            "the sentinels to promote the replica",
            FAILOVER_WAIT_S,
        )
        failover_s = time.monotonic() - killed_at
        promoted = hot.primary()
        assert promoted is not None

        # The operator's (or supervisor's) part: the dead node comes back as a replica; until
        # then the lone new primary refuses writes (min-replicas-to-write).
        killed.options = [*REPLICATED, "--replicaof", *hot.node_at(promoted).address]
        killed.start()
        wait_until(
            lambda: hot.replicas_of(hot.node_at(promoted)) == 1,
            "the restarted node to sync",
            FAILOVER_WAIT_S,
        )
        replica_back_s = time.monotonic() - killed_at
        acknowledged = _acknowledged(load)
        wait_until(
            lambda: _acknowledged(load) > acknowledged,
            "a trade acknowledged by the new primary",
            FAILOVER_WAIT_S,
        )
        resumed_s = time.monotonic() - killed_at
        wait_until(
            lambda: _acknowledged(load) >= acknowledged + ACKNOWLEDGED_AFTER,
            "trading to go on",
            FAILOVER_WAIT_S,
        )

        report = {
            "failover_s": round(failover_s, 2),
            "replica_back_s": round(replica_back_s, 2),
            "trades_acknowledged_again_s": round(resumed_s, 2),
            "refused_503_retry_after": load.refused - refused_before,
            "statuses": load.statuses,
        }
        print(json.dumps(report))
        for name, value in report.items():
            record_property(name, value)

        assert 500 not in load.statuses
        failures = sum(count for status, count in load.statuses.items() if status >= 500)
        assert failures == load.refused  # every one a 503 with Retry-After
        assert load.refused > refused_before  # the clients did notice
        settle_and_audit_load(stack, load, tmp_path)
    finally:
        load.stop()


def _acknowledged(load: Load) -> int:
    return len(load.acknowledged)


@pytest.fixture
def sentinel_redis() -> Iterator[SentinelRedis]:
    hot = SentinelRedis()
    try:
        yield hot
    finally:
        hot.destroy()


async def eventually(attempt: Callable[[], Awaitable[Any]], what: str) -> Any:
    """The first answer of `attempt` that is not a Redis error (the client reconnecting)."""
    deadline = time.monotonic() + FAILOVER_WAIT_S
    while True:
        try:
            return await attempt()
        except RedisError:
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting for {what}") from None
        await asyncio.sleep(0.05)


async def test_every_kind_of_client_follows_a_failover_without_a_restart(
    sentinel_redis: SentinelRedis, settings: Settings
) -> None:
    """A coordinated failover (SENTINEL FAILOVER) demotes a primary that stays up: clients
    still connected to it must notice (READONLY or a closed connection) and move on."""
    hot = sentinel_redis
    on_sentinels = dataclasses.replace(
        settings,
        redis_url="redis://127.0.0.1:9/0",
        redis_sentinels=tuple(
            (host, int(port))
            for host, port in (
                address.split(":") for address in hot.env["REDIS_SENTINELS"].split(",")
            )
        ),
        redis_master_name=MASTER_NAME,
    )
    pooled = hotstore.connect(on_sentinels, pool_size=4)
    pipelined = hotstore.pipelined(on_sentinels)
    blocking = hotstore.connect_blocking(on_sentinels)
    assert pipelined is not None
    pubsub = pooled.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe("failover")
        assert await pipelined.execute("SET", "pipelined", "before") == "OK"
        assert await pooled.set("pooled", "before")
        assert blocking.set("blocking", "before")
        before = hot.primary()

        with hot.sentinel() as sentinel:
            sentinel.sentinel_failover(MASTER_NAME)
        wait_until(lambda: hot.primary() not in (None, before), "the failover", FAILOVER_WAIT_S)
        after = hot.primary()
        assert after is not None

        await eventually(lambda: pipelined.execute("SET", "pipelined", "after"), "pipelined")
        await eventually(lambda: pooled.set("pooled", "after"), "pooled")
        await eventually(lambda: asyncio.to_thread(blocking.set, "blocking", "after"), "blocking")

        async def published() -> dict[str, Any]:
            with redis.Redis(port=after[1], decode_responses=True) as primary:
                primary.publish("failover", "after")
            message = await pubsub.get_message(timeout=0.2)
            if message is None:
                raise RedisError("not yet")
            return dict(message)

        assert (await eventually(published, "pub/sub on the new primary"))["data"] == "after"
        with redis.Redis(port=after[1], decode_responses=True) as primary:
            assert primary.mget("pipelined", "pooled", "blocking") == ["after"] * 3
    finally:
        await pubsub.aclose()
        await pipelined.aclose()
        await pooled.aclose()
        blocking.close()
