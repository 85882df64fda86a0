"""Crash tests (issue #8): under a steady trading load, SIGKILL in turn the web process, the
flusher mid-batch, the clock, the worker during a full-time close-out and during a margin sweep,
the ws process and Redis itself (then `ftl recover`); stop and start PostgreSQL under load.
After each: `ftl audit` is clean and every acknowledged trade is in Postgres exactly once, with
no position the clients were not answered for (a retry with the same clientRequestId is
replayed, never doubled).

The cases share one deployment and one load, in file order (module-scoped), to keep CI time sane.
NOTE: the waits block the test's thread on purpose; the load runs in its own thread and loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import msgpack
import psycopg
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from websockets.asyncio.client import connect

from ftl.store import keys
from tests.e2e.crash_stack import (
    Load,
    PrivatePostgres,
    PrivateRedis,
    Stack,
    deployed,
    required_pg_bindir,
    settle_and_audit_load,
    start_trading,
    wait_until,
)
from workers.fulltime import full_time
from workers.margin import backstop_sweep
from workers.queues import NAMESPACE

pytestmark = pytest.mark.e2e

SWEEP_ATTEMPTS = 5
KILL_PAUSE_MS = 5_000  # writes paused around a kill at most this long (unpaused right after)


@dataclass
class Deployment:
    stack: Stack
    load: Load
    fixture_id: UUID
    fixture_instruments: list[dict[str, Any]]
    tmp: Path

    def pg(self) -> psycopg.Connection:
        return psycopg.connect(self.stack.pg.libpq(), autocommit=True)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.stack.redis.url, decode_responses=True)

    def enqueue(self, message: Any) -> None:
        broker = RedisBroker(url=self.stack.redis.url, namespace=NAMESPACE)  # type: ignore[no-untyped-call]
        try:
            broker.enqueue(message)
        finally:
            broker.close()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    pg = PrivatePostgres(required_pg_bindir())
    store = PrivateRedis()
    stack: Stack | None = None
    load: Load | None = None
    try:
        stack = deployed(pg, store, web_concurrency=2)
        for name in ("web", "ws", "worker", "flusher", "clock"):
            stack.start(name)
        load, fixture_id, fixture_instruments = start_trading(stack)
        yield Deployment(
            stack, load, fixture_id, fixture_instruments, tmp_path_factory.mktemp("crash")
        )
    finally:
        if load is not None:
            load.stop()
        if stack is not None:
            stack.stop_all()
        store.destroy()
        pg.destroy()


def settle_and_audit(d: Deployment) -> None:
    settle_and_audit_load(d.stack, d.load, d.tmp)


def test_web_killed_under_load(deployment: Deployment) -> None:
    d = deployment
    unanswered = d.load.unanswered
    d.stack.kill("web")
    time.sleep(0.5)
    d.stack.start("web")
    d.load.wait_answers()
    assert d.load.unanswered > unanswered  # the clients did notice
    settle_and_audit(d)


def test_flusher_killed_mid_batch_under_load(deployment: Deployment) -> None:
    d = deployment
    with d.pg() as watcher, psycopg.connect(d.stack.pg.libpq()) as blocker:
        blocker.execute("LOCK TABLE price_ticks IN ACCESS EXCLUSIVE MODE")

        def stuck_mid_batch() -> bool:
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query ILIKE '%%price_ticks%%'"
            ).fetchone()
            return bool(row and row[0])

        wait_until(stuck_mid_batch, "the flusher to block inside its batch")
        with d.redis() as hot:
            assert int(hot.xpending(keys.OUTBOX, keys.OUTBOX_GROUP)["pending"]) > 0
        d.stack.kill("flusher")
        blocker.rollback()
    d.load.wait_answers()
    d.stack.start("flusher")
    d.load.wait_answers()
    settle_and_audit(d)


def test_clock_killed_under_load(deployment: Deployment) -> None:
    """Without the clock nothing sends flush runs: trades still succeed, the outbox waits."""
    d = deployment
    d.stack.kill("clock")
    d.load.wait_answers()
    d.stack.start("clock")
    settle_and_audit(d)


def test_worker_killed_during_full_time(deployment: Deployment) -> None:
    d = deployment
    with d.pg() as conn:
        conn.execute(
            "UPDATE fixtures SET status = 'finished', full_time_at = now() WHERE id = %s",
            (d.fixture_id,),
        )
    first = d.fixture_instruments[0]["id"]
    with d.redis() as hot:
        d.enqueue(full_time.message(str(d.fixture_id)))
        wait_until(lambda: hot.hget(keys.instrument(first), "frozen") == "1", "the freeze")
        # NOTE: writes paused, the close-out cannot close a position or finish meanwhile.
        hot.client_pause(KILL_PAUSE_MS, all=False)
        try:
            d.stack.kill("worker")  # frozen, inside the close-out
        finally:
            hot.client_unpause()
        with d.pg() as conn:
            row = conn.execute(
                "SELECT closed_out_at FROM fixtures WHERE id = %s", (d.fixture_id,)
            ).fetchone()
        assert row == (None,)  # it did not finish
        d.stack.start("worker")
        # NOTE: the dead run's lease would hold a rerun off for its TTL (operations.md).
        hot.delete(keys.lease(f"fulltime:{d.fixture_id}"))
        d.enqueue(full_time.message(str(d.fixture_id)))
        with d.pg() as conn:

            def closed_out() -> bool:
                row = conn.execute(
                    "SELECT closed_out_at IS NOT NULL FROM fixtures WHERE id = %s",
                    (d.fixture_id,),
                ).fetchone()
                return bool(row and row[0])

            wait_until(closed_out, "the close-out to finish", 60)
        wait_until(lambda: hot.hget(keys.instrument(first), "frozen") == "0", "the unfreeze")
    d.load.wait_answers()
    settle_and_audit(d)
    with d.pg() as conn:
        row = conn.execute(
            "SELECT count(*) FROM cfd_positions WHERE closed_by = 'auto_exit_ft'"
        ).fetchone()
    assert row is not None and row[0] > 0


def wait_for_event(events: Any, event: str, what: str, timeout_s: float = 60) -> None:
    """Until a keyspace notification `event` arrives on the subscribed `events`."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        message = events.get_message(timeout=left)
        if message is not None and message["data"] == event:
            return
    raise AssertionError(f"gave up waiting for {what}")


def test_worker_killed_during_a_margin_sweep(deployment: Deployment) -> None:
    d = deployment
    lease = keys.lease(keys.MARGIN_BACKSTOP_LEASE)
    with d.redis() as hot, hot.pubsub(ignore_subscribe_messages=True) as events:
        # NOTE: a short sweep can take and drop its lease between two reads (a loaded machine
        # runs the sweep while the test waits for the CPU); the lease's keyspace events say it
        # was taken all the same.
        hot.config_set("notify-keyspace-events", "K$g")
        events.subscribe(f"__keyspace@0__:{lease}")
        for _ in range(SWEEP_ATTEMPTS):
            d.enqueue(backstop_sweep.message())
            wait_for_event(events, "set", "the sweep to take its lease")
            # NOTE: writes paused, the sweep can neither commit nor release its lease: if it
            # still holds it now, the kill lands inside the sweep.
            hot.client_pause(KILL_PAUSE_MS, all=False)
            try:
                inside = bool(hot.exists(lease))
                if inside:
                    d.stack.kill("worker")
            finally:
                hot.client_unpause()
            if inside:
                break
        else:
            raise AssertionError("every sweep ended before the kill could land inside it")
        assert hot.exists(lease)  # left behind by the dead sweep, to expire
        d.stack.start("worker")
    d.load.wait_answers()
    settle_and_audit(d)


def test_ws_killed_and_clients_reconnect(deployment: Deployment) -> None:
    d = deployment
    trader = d.load.traders[0]
    watched = d.load.instruments[-1]

    async def a_price_of_the_watched_instrument() -> bool:
        async with httpx.AsyncClient(base_url=d.stack.web_url, timeout=10) as http:
            token = (await http.post("/api/ws/token", headers=trader.headers)).json()["token"]
        url = f"ws://127.0.0.1:{d.stack.ws_port}/ws/prices?token={token}"
        async with connect(url) as ws:
            await ws.send(json.dumps({"action": "subscribe", "idx": watched["idx"]}))
            async with asyncio.timeout(30):
                while True:
                    frame = await ws.recv()
                    if isinstance(frame, bytes):
                        # NOTE: one price map, or an array of them when ticks were coalesced
                        decoded = msgpack.unpackb(frame)
                        prices = decoded if isinstance(decoded, list) else [decoded]
                        if any(p["i"] == watched["idx"] for p in prices):
                            return True

    assert asyncio.run(a_price_of_the_watched_instrument())
    d.stack.kill("ws")
    d.stack.start("ws")
    assert asyncio.run(a_price_of_the_watched_instrument())
    settle_and_audit(d)


def test_postgres_stopped_under_load_answers_503_then_recovers(deployment: Deployment) -> None:
    d = deployment
    trader = d.load.traders[0]
    d.stack.pg.stop()
    try:
        ready = httpx.get(f"{d.stack.web_url}/ready", timeout=10)
        assert ready.status_code == 503
        assert "postgres" in ready.json()["error"]["details"]["failing"]
        listed = httpx.get(f"{d.stack.web_url}/api/positions", headers=trader.headers, timeout=10)
        assert listed.status_code == 503
        assert listed.json()["error"]["code"] == "unavailable"
    finally:
        d.stack.pg.start()
    wait_until(
        lambda: httpx.get(f"{d.stack.web_url}/ready", timeout=10).status_code == 200,
        "/ready after PostgreSQL came back",
    )
    d.load.wait_answers()
    settle_and_audit(d)


def test_redis_with_aof_killed_under_load_comes_back_whole(deployment: Deployment) -> None:
    """With an append-only file (the production setting, decision 0010) a SIGKILLed Redis
    reloads what it acknowledged: the load runs through the kill, nothing to recover."""
    d = deployment
    d.stack.redis.switch_on_aof()
    d.load.wait_answers()
    unanswered = d.load.unanswered
    d.stack.redis.kill()
    time.sleep(0.5)
    d.stack.redis.start(appendonly=True)
    d.load.wait_answers()
    assert d.load.unanswered > unanswered  # the clients did notice
    settle_and_audit(d)


def test_redis_killed_then_recovered(deployment: Deployment) -> None:
    """Redis runs without persistence (SPEC §2): what the flusher had not written when Redis
    died is lost with it (decision 0010). So the load pauses until the outbox is drained, then
    Redis is killed, restarted empty and rebuilt by `ftl recover` (decision 0070)."""
    d = deployment
    d.load.pause()
    try:
        with d.redis() as hot:
            wait_until(lambda: hot.xlen(keys.OUTBOX) == 0, "the flusher to drain the outbox")
        d.stack.redis.kill()  # and its AOF is not reloaded: Redis comes back empty
        trader = d.load.traders[0]
        refused = httpx.get(f"{d.stack.web_url}/api/portfolio", headers=trader.headers, timeout=10)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "unavailable"
        d.stack.redis.start()
        ready = httpx.get(f"{d.stack.web_url}/ready", timeout=10)
        assert ready.status_code == 503
        assert "hotState" in ready.json()["error"]["details"]["failing"]
        recovered = d.stack.ftl("recover")
        assert recovered.returncode == 0, recovered.stderr
        wait_until(
            lambda: httpx.get(f"{d.stack.web_url}/ready", timeout=10).status_code == 200,
            "/ready after ftl recover",
        )
    finally:
        d.load.resume()
    d.load.wait_answers()
    settle_and_audit(d)
