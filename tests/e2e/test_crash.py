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
import itertools
import json
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
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
from tests.e2e.crash_stack import PrivatePostgres, PrivateRedis, Stack, pg_bindir, wait_until
from workers.broker import NAMESPACE
from workers.fulltime import full_time
from workers.margin import backstop_sweep

pytestmark = pytest.mark.e2e

TRADERS = 8
LOTS = 0.1
RETRY_PAUSE_S = 0.1  # between retries of an unanswered request
THINK_S = 0.05  # between one trader's requests
STEP_ANSWERS = 40  # answered requests the load makes between two steps of a case
SWEEP_ATTEMPTS = 5
KILL_PAUSE_MS = 5_000  # writes paused around a kill at most this long (unpaused right after)


@dataclass
class Trader:
    user_id: str
    headers: dict[str, str]
    open_ids: list[str] = field(default_factory=list)


class Load:
    """TRADERS clients opening and closing small positions over HTTP. A request without an
    answer (connection refused, 5xx) is retried with the same clientRequestId until it gets
    one; a 2xx is acknowledged and recorded."""

    def __init__(self, base_url: str, traders: list[Trader], instruments: list[dict[str, Any]]):
        self.base_url = base_url
        self.traders = traders
        self.instruments = instruments
        self.acknowledged: dict[str, dict[str, str]] = {}  # position id -> the audit's JSON line
        self.answers = 0
        self.unanswered = 0  # attempts that got no answer or a 5xx (retried)
        self.statuses: dict[int, int] = {}  # every answer by status, the retried 5xx included
        self.without_retry_after = 0  # 503s that did not say when to come back
        self.in_flight = 0
        self.running = threading.Event()
        self.stopping = False
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self.running.set()
        self._thread.start()

    def stop(self) -> None:
        self.stopping = True
        self.running.set()
        self._thread.join(timeout=60)

    def pause(self) -> None:
        """No new requests; those in flight are retried until answered."""
        self.running.clear()
        wait_until(lambda: self.in_flight == 0, "the load's requests in flight to be answered", 60)

    def resume(self) -> None:
        self.running.set()

    def wait_answers(self, count: int = STEP_ANSWERS) -> None:
        target = self.answers + count
        wait_until(lambda: self.answers >= target, f"{count} more answers", 60)

    def acknowledged_lines(self) -> str:
        with self._lock:
            return "\n".join(json.dumps(a) for a in self.acknowledged.values())

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as client:
            await asyncio.gather(*(self._trade(client, t) for t in self.traders))

    async def _trade(self, client: httpx.AsyncClient, trader: Trader) -> None:
        while not self.stopping:
            if not self.running.is_set():
                await asyncio.sleep(0.02)
                continue
            self.in_flight += 1
            try:
                if len(trader.open_ids) >= 2:
                    await self._close(client, trader)
                else:
                    await self._open(client, trader)
            finally:
                self.in_flight -= 1
            await asyncio.sleep(THINK_S)

    async def _answered(self, client: httpx.AsyncClient, method: str, url: str, **kw: Any) -> Any:
        while True:
            try:
                response = await client.request(method, url, **kw)
                status = response.status_code
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if status < 500:
                    self.answers += 1
                    return response
                if status == 503 and "Retry-After" not in response.headers:
                    self.without_retry_after += 1
            except httpx.TransportError:
                pass
            self.unanswered += 1
            await asyncio.sleep(RETRY_PAUSE_S)

    async def _open(self, client: httpx.AsyncClient, trader: Trader) -> None:
        instrument = random.choice(self.instruments)
        request_id = f"o-{next(self._ids)}"
        body = {
            "instrumentId": instrument["id"],
            "direction": random.choice(["long", "short"]),
            "lotSize": LOTS,
            "clientRequestId": request_id,
            "clientPrice": instrument["price"],
            "slippageTolerancePct": 0.05,
        }
        response = await self._answered(
            client, "POST", "/api/positions/open", json=body, headers=trader.headers
        )
        if response.status_code // 100 == 2:
            position = response.json()["position"]
            instrument["price"] = position["entryPrice"]
            trader.open_ids.append(position["id"])
            with self._lock:
                self.acknowledged[position["id"]] = {
                    "userId": trader.user_id,
                    "positionId": position["id"],
                    "openRequestId": request_id,
                }
        elif response.json()["error"]["code"] == "slippage_exceeded":
            quote = await self._answered(client, "GET", f"/api/instruments/{instrument['id']}")
            instrument["price"] = quote.json()["price"]

    async def _close(self, client: httpx.AsyncClient, trader: Trader) -> None:
        position_id = trader.open_ids[0]
        request_id = f"c-{next(self._ids)}"
        response = await self._answered(
            client,
            "DELETE",
            f"/api/positions/{position_id}",
            params={"clientRequestId": request_id},
            headers=trader.headers,
        )
        code = None if response.status_code // 100 == 2 else response.json()["error"]["code"]
        if code is None:
            with self._lock:
                self.acknowledged[position_id]["closeRequestId"] = request_id
        if code in (None, "position_closed"):  # closed by us, or by full time / a washout
            trader.open_ids.remove(position_id)


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
    bindir = pg_bindir()
    if bindir is None:
        pytest.skip("no initdb/pg_ctl (or postgres user): the crash tests own their PostgreSQL")
    pg = PrivatePostgres(bindir)
    store = PrivateRedis()
    env = {
        **os.environ,
        "DATABASE_URL": pg.url,
        "REDIS_URL": store.url,
        "SPORTMONKS_BASE_URL": "http://127.0.0.1:9/v3/football",  # NOTE: no feed: no poller
        "WEB_CONCURRENCY": "2",
    }
    stack = Stack(pg, store, env)
    env.update(WEB_PORT=str(stack.web_port), WS_PORT=str(stack.ws_port))
    load: Load | None = None
    try:
        for step in (("migrate",), ("seed",)):
            done = stack.ftl(*step)
            assert done.returncode == 0, done.stderr
        for name in ("web", "ws", "worker", "flusher", "clock"):
            stack.start(name)
        with psycopg.connect(pg.libpq(), autocommit=True) as conn:
            row = conn.execute("SELECT id FROM fixtures ORDER BY kickoff_at, id LIMIT 2").fetchall()
        fixture_id, other_fixture = row[0][0], row[1][0]
        batch = httpx.post(
            f"{stack.web_url}/api/auth/dev/batch",
            json={"count": TRADERS, "prefix": "crash-"},
            timeout=30,
        )
        assert batch.status_code == 200, batch.text
        traders = [
            Trader(u["user"]["id"], {"Authorization": f"Bearer {u['accessToken']}"})
            for u in batch.json()["users"]
        ]
        chosen = []
        for fixture in (fixture_id, other_fixture):
            listed = httpx.get(
                f"{stack.web_url}/api/instruments", params={"fixtureId": str(fixture)}, timeout=10
            ).json()["instruments"]
            chosen.append(
                [{"id": i["id"], "idx": i["idx"], "price": i["price"]} for i in listed[:2]]
            )
        load = Load(stack.web_url, traders, chosen[0] + chosen[1])
        load.start()
        load.wait_answers()
        yield Deployment(stack, load, fixture_id, chosen[0], tmp_path_factory.mktemp("crash"))
    finally:
        if load is not None:
            load.stop()
        stack.stop_all()
        store.destroy()
        pg.destroy()


def settle_and_audit(d: Deployment) -> None:
    """Stop new requests, let every retry get its answer, then `ftl audit` with the
    acknowledged trades; and Postgres holds exactly the positions the clients were answered
    for (none doubled by a retry, none the clients never heard of)."""
    d.load.pause()
    try:
        acknowledged = d.tmp / "acknowledged.jsonl"
        acknowledged.write_text(d.load.acknowledged_lines())
        audited = d.stack.ftl("audit", "--wait-flush", "30", "--acknowledged", str(acknowledged))
        assert audited.returncode == 0, audited.stdout + audited.stderr
        with d.pg() as conn:
            stored = {
                (str(r[0]), str(r[1]), r[2])
                for r in conn.execute(
                    "SELECT p.id, p.user_id, p.open_request_id FROM cfd_positions p"
                    " JOIN users u ON u.id = p.user_id WHERE u.display_name LIKE 'crash-%%'"
                )
            }
        answered = {
            (a["positionId"], a["userId"], a["openRequestId"]) for a in d.load.acknowledged.values()
        }
        assert stored == answered
    finally:
        d.load.resume()


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


def test_worker_killed_during_a_margin_sweep(deployment: Deployment) -> None:
    d = deployment
    lease = keys.lease(keys.MARGIN_BACKSTOP_LEASE)
    with d.redis() as hot:
        for _ in range(SWEEP_ATTEMPTS):
            d.enqueue(backstop_sweep.message())
            wait_until(lambda: bool(hot.exists(lease)), "the sweep to take its lease", poll_s=0)
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
