"""A PostgreSQL primary restarted (`pg_ctl restart -m fast`) under trading load, with a read
replica configured: nothing acknowledged is lost, no request answers 500 (503 with Retry-After
while the primary is away), and the processes recover on their own, with no restart of theirs.

NOTE: the waits block the test's thread on purpose; the load runs in its own thread and loop.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.e2e.crash_stack import PrivatePostgres, PrivateRedis, Stack, pg_bindir, wait_until
from tests.e2e.pg_replica import Replica, restart

pytestmark = pytest.mark.e2e

TRADERS = 6
ROUNDS_BEFORE = 30  # answered requests before the restart
ROUNDS_AFTER = 60  # answered requests after /ready is back
RETRY_PAUSE_S = 0.1  # between retries of an unanswered request


@dataclass
class Trader:
    user_id: str
    headers: dict[str, str]
    open_ids: list[str] = field(default_factory=list)


class Load:
    """Traders opening, closing and listing over HTTP. An unanswered request (connection error,
    503) is retried with the same clientRequestId; every status is counted, each 503's
    Retry-After noted, and a trade answered 2xx is acknowledged."""

    def __init__(self, base_url: str, traders: list[Trader], instruments: list[dict[str, Any]]):
        self.base_url = base_url
        self.traders = traders
        self.instruments = instruments
        self.acknowledged: dict[str, dict[str, str]] = {}  # position id -> the audit's JSON line
        self.statuses: dict[int, int] = {}
        self.answers = 0
        self.without_retry_after = 0  # 503s that did not say when to come back
        self.stopping = False
        self._ids = itertools.count(1)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after each trader's request in flight has its answer."""
        self.stopping = True
        self._thread.join(timeout=60)
        assert not self._thread.is_alive()

    def wait_answers(self, count: int) -> None:
        target = self.answers + count
        wait_until(lambda: self.answers >= target, f"{count} more answers", 60)

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as client:
            await asyncio.gather(*(self._trade(client, t) for t in self.traders))

    async def _trade(self, client: httpx.AsyncClient, trader: Trader) -> None:
        while not self.stopping:
            if len(trader.open_ids) >= 2:
                await self._close(client, trader)
            else:
                await self._open(client, trader)
            await self._answered(client, "GET", "/api/positions", headers=trader.headers)
            await self._answered(client, "GET", "/api/trades", headers=trader.headers)

    async def _answered(self, client: httpx.AsyncClient, method: str, url: str, **kw: Any) -> Any:
        while True:
            try:
                response = await client.request(method, url, **kw)
            except httpx.TransportError:
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            status = response.status_code
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status != 503:
                self.answers += 1
                return response
            if "Retry-After" not in response.headers:
                self.without_retry_after += 1
            await asyncio.sleep(RETRY_PAUSE_S)

    async def _open(self, client: httpx.AsyncClient, trader: Trader) -> None:
        instrument = random.choice(self.instruments)
        request_id = f"o-{next(self._ids)}"
        body = {
            "instrumentId": instrument["id"],
            "direction": random.choice(["long", "short"]),
            "lotSize": 0.1,
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
            self.acknowledged[position["id"]] = {
                "userId": trader.user_id,
                "positionId": position["id"],
                "openRequestId": request_id,
            }
        elif response.status_code == 409:  # slippage: quote again
            quote = await self._answered(client, "GET", f"/api/instruments/{instrument['id']}")
            instrument["price"] = quote.json()["price"]

    async def _close(self, client: httpx.AsyncClient, trader: Trader) -> None:
        position_id = trader.open_ids.pop(0)
        request_id = f"c-{next(self._ids)}"
        response = await self._answered(
            client,
            "DELETE",
            f"/api/positions/{position_id}",
            params={"clientRequestId": request_id},
            headers=trader.headers,
        )
        if response.status_code // 100 == 2:
            self.acknowledged[position_id]["closeRequestId"] = request_id


@pytest.fixture
def stack() -> Iterator[Stack]:
    """web, flusher and clock on a private primary, with a pg_basebackup replica for reads."""
    bindir = pg_bindir()
    if bindir is None:
        pytest.skip("no initdb/pg_ctl (or postgres user): this test owns its clusters")
    pg = PrivatePostgres(bindir)
    store = PrivateRedis()
    replica: Replica | None = None
    env = {
        **os.environ,
        "DATABASE_URL": pg.url,
        "REDIS_URL": store.url,
        "SPORTMONKS_BASE_URL": "http://127.0.0.1:9/v3/football",  # NOTE: no feed: no poller
        "WEB_CONCURRENCY": "1",
    }
    running = Stack(pg, store, env)
    env.update(WEB_PORT=str(running.web_port), WS_PORT=str(running.ws_port))
    try:
        for step in (("migrate",), ("seed",)):
            done = running.ftl(*step)
            assert done.returncode == 0, done.stderr
        replica = Replica(pg)
        env["DATABASE_READ_URL"] = replica.url
        for name in ("web", "flusher", "clock"):
            running.start(name)
        yield running
    finally:
        running.stop_all()
        if replica is not None:
            replica.destroy()
        store.destroy()
        pg.destroy()


def ready(stack: Stack) -> bool:
    return httpx.get(f"{stack.web_url}/ready", timeout=10).status_code == 200


def test_a_primary_restart_under_load_loses_nothing(stack: Stack, tmp_path: Path) -> None:
    batch = httpx.post(
        f"{stack.web_url}/api/auth/dev/batch", json={"count": TRADERS, "prefix": "pg-"}, timeout=30
    )
    assert batch.status_code == 200, batch.text
    traders = [
        Trader(u["user"]["id"], {"Authorization": f"Bearer {u['accessToken']}"})
        for u in batch.json()["users"]
    ]
    listed = httpx.get(f"{stack.web_url}/api/instruments", timeout=10).json()["instruments"]
    load = Load(stack.web_url, traders, [{"id": i["id"], "price": i["price"]} for i in listed[:4]])
    load.start()
    try:
        load.wait_answers(ROUNDS_BEFORE)
        restart(stack.pg)
        wait_until(lambda: ready(stack), "/ready after the restart", 60)
        load.wait_answers(ROUNDS_AFTER)
    finally:
        load.stop()

    assert {status for status in load.statuses if status >= 500} <= {503}, load.statuses
    assert load.without_retry_after == 0
    acknowledged = tmp_path / "acknowledged.jsonl"
    acknowledged.write_text("\n".join(json.dumps(a) for a in load.acknowledged.values()))
    audited = stack.ftl("audit", "--wait-flush", "30", "--acknowledged", str(acknowledged))
    assert audited.returncode == 0, audited.stdout + audited.stderr
    with psycopg.connect(stack.pg.libpq()) as conn:
        stored = {
            str(row[0])
            for row in conn.execute(
                "SELECT p.id FROM cfd_positions p JOIN users u ON u.id = p.user_id"
                " WHERE u.display_name LIKE 'pg-%%'"
            )
        }
    assert stored == set(load.acknowledged)
    assert len(stored) > 0
