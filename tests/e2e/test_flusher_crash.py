"""Kill the flusher with SIGKILL in the middle of a batch, start it again: every row arrives
once. The batch is held mid-way by a table lock the test takes on `price_ticks`.

NOTE: the test's waits block its event loop on purpose: nothing else runs in it meanwhile."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from ftl.core.config import Settings
from ftl.ops.audit import audit
from ftl.store import keys
from ftl.store.db.engine import libpq_url
from ftl.store.services import Services
from ftl.trading import trades
from tests.integration.trading_helpers import make_instrument, make_user
from web.body import decode
from web.schemas import OpenPositionBody
from workers.flush import flush

pytestmark = pytest.mark.e2e

DRAMATIQ = str(Path(sys.executable).with_name("dramatiq"))
WAIT_S = 30


def start_flusher() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [DRAMATIQ, "workers.flush", "--processes", "1", "--threads", "1", "--queues", "flush"],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # NOTE: its own process group, so SIGKILL reaches the worker too
    )


def kill(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.fixture
def flushers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            kill(process)


def wait_for(check: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():  # type: ignore[operator]
        flush.send()
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


async def trade(services: Services, pg: psycopg.Connection) -> tuple[UUID, int]:
    instrument = await make_instrument(services, pg)
    opens = 0
    for n in range(40):
        user = make_user(pg)
        body = {
            "instrumentId": str(instrument),
            "direction": "long" if n % 2 else "short",
            "lotSize": 0.5,
            "clientRequestId": "o",
            "clientPrice": 100,
            "slippageTolerancePct": 0.05,
        }
        opened = json.loads(
            await trades.open_position(
                services,
                trades.Caller(user, "j"),
                decode(json.dumps(body).encode(), OpenPositionBody).order(),
            )
        )
        opens += 1
        if n % 4 == 0:
            await trades.close_position(
                services, trades.Caller(user, "j"), UUID(opened["position"]["id"]), "c"
            )
    return instrument, opens


async def test_a_flusher_killed_mid_batch_loses_and_doubles_nothing(
    settings: Settings,
    services: Services,
    pg_admin: psycopg.Connection,
    flushers: list[subprocess.Popen[bytes]],
) -> None:
    instrument, opens = await trade(services, pg_admin)
    total_ticks = opens + 10  # 40 opens, 10 closes
    with psycopg.connect(libpq_url(settings.database_url)) as blocker:
        blocker.execute("LOCK TABLE price_ticks IN ACCESS EXCLUSIVE MODE")
        flushers.append(start_flusher())

        def stuck_mid_batch() -> bool:
            waiting = pg_admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query ILIKE '%%price_ticks%%'"
            ).fetchone()
            return bool(waiting and waiting[0] > 0)

        wait_for(stuck_mid_batch, "the flusher to block inside its batch")
        pending = await pending_entries(services)
        assert pending > 0  # taken from Redis, not yet committed
        kill(flushers[-1])
        blocker.rollback()
    assert pg_admin.execute("SELECT count(*) FROM price_ticks").fetchone() == (0,)

    flushers.append(start_flusher())

    def all_arrived() -> bool:
        row = pg_admin.execute("SELECT count(*) FROM price_ticks").fetchone()
        return bool(row and row[0] == total_ticks)

    wait_for(all_arrived, "every tick in Postgres")
    seqs = [r[0] for r in pg_admin.execute("SELECT seq FROM price_ticks ORDER BY seq").fetchall()]
    assert seqs == list(range(1, total_ticks + 1))
    positions = pg_admin.execute(
        "SELECT count(*), count(*) FILTER (WHERE status = 'closed') FROM cfd_positions"
    ).fetchone()
    assert positions == (opens, 10)
    ledger = pg_admin.execute(
        "SELECT count(DISTINCT entry_key), count(*) FROM wallet_ledger"
    ).fetchone()
    assert ledger == (10, 10)
    net = pg_admin.execute(
        "SELECT net_lots, seq FROM instruments WHERE id = %s", (instrument,)
    ).fetchone()
    assert net is not None and net[1] == total_ticks
    hot = await hot_net_lots(services, instrument)
    assert net[0] * 100 == hot
    report = await audit(services)
    assert report.violations == []


async def pending_entries(services: Services) -> int:
    summary = await services.redis.xpending(keys.OUTBOX, keys.OUTBOX_GROUP)
    return int(summary["pending"])


async def hot_net_lots(services: Services, instrument: UUID) -> int:
    return int(await services.redis.hget(keys.instrument(instrument), "netLotsCentis") or 0)
