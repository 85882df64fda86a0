"""A PostgreSQL primary restarted (`pg_ctl restart -m fast`) under trading load, with a read
replica configured: nothing acknowledged is lost, no request answers 500 (503 with Retry-After
while the primary is away), and the processes recover on their own, with no restart of theirs.

NOTE: the waits block the test's thread on purpose; the load runs in its own thread and loop.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.e2e.crash_stack import (
    Load,
    PrivatePostgres,
    PrivateRedis,
    Stack,
    Trader,
    deployed,
    required_pg_bindir,
    wait_until,
)
from tests.e2e.pg_replica import Replica, restart

pytestmark = pytest.mark.e2e

TRADERS = 6
ROUNDS_BEFORE = 30  # answered requests before the restart
ROUNDS_AFTER = 60  # answered requests after /ready is back


class ListingLoad(Load):
    """The crash tests' load, each trader also listing his positions and fills after each open:
    the reads that go to the replica."""

    async def _open(self, client: httpx.AsyncClient, trader: Trader) -> None:
        await super()._open(client, trader)
        await self._answered(client, "GET", "/api/positions", headers=trader.headers)
        await self._answered(client, "GET", "/api/trades", headers=trader.headers)


@pytest.fixture
def stack() -> Iterator[Stack]:
    """web, flusher and clock on a private primary, with a pg_basebackup replica for reads."""
    pg = PrivatePostgres(required_pg_bindir())
    store = PrivateRedis()
    replica: Replica | None = None
    running: Stack | None = None
    try:
        running = deployed(pg, store, web_concurrency=1)
        replica = Replica(pg)
        running.env["DATABASE_READ_URL"] = replica.url
        for name in ("web", "flusher", "clock"):
            running.start(name)
        yield running
    finally:
        if running is not None:
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
    chosen = [{"id": i["id"], "idx": i["idx"], "price": i["price"]} for i in listed[:4]]
    load = ListingLoad(stack.web_url, traders, chosen)
    load.start()
    try:
        load.wait_answers(ROUNDS_BEFORE)
        restart(stack.pg)
        wait_until(lambda: ready(stack), "/ready after the restart", 60)
        load.wait_answers(ROUNDS_AFTER)
    finally:
        load.stop()

    assert {status for status in load.statuses if status >= 500} <= {503}, load.statuses
    assert load.refused == load.statuses.get(503, 0)  # every 503 said when to come back
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
