"""The read replica (docs/decisions/0155): read-only queries go to a real streaming replica made
with pg_basebackup, a replica that lags beyond DATABASE_READ_MAX_LAG_MS or is down sends them
back to the primary, and a user's own lists never miss the user's own flushed trade.

Each test proves where a read ran by a row the replica does not hold yet: replay is paused with
pg_wal_replay_pause() while the primary commits it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from uuid import UUID

import psycopg
import pytest
import redis

from ftl.core.config import Settings
from ftl.market.quotes import price_history
from ftl.store.db.engine import ReadRoute
from ftl.store.services import Services
from ftl.trading.positions import list_positions
from tests.e2e.conftest import START_TIMEOUT_S, run_ftl
from tests.e2e.crash_stack import PrivatePostgres, required_pg_bindir, wait_until
from tests.e2e.pg_replica import Replica, open_flushed
from tests.integration.trading_helpers import make_instrument, make_user

pytestmark = pytest.mark.e2e

LAG_LIMIT_MS = 60_000  # far above what the tests take: only a paused replay exceeds it


@pytest.fixture(scope="module")
def primary() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres(required_pg_bindir())
    try:
        migrated = run_ftl("migrate", env={"DATABASE_URL": pg.url})
        assert migrated.returncode == 0, migrated.stderr
        yield pg
    finally:
        pg.destroy()


@pytest.fixture(scope="module")
def replica(primary: PrivatePostgres) -> Iterator[Replica]:
    made = Replica(primary)
    yield made
    made.destroy()


@pytest.fixture
async def services(
    settings: Settings, primary: PrivatePostgres, replica: Replica, redis_admin: redis.Redis
) -> AsyncIterator[Services]:
    """Services on the private primary with the replica for reads, checked on every read."""
    redis_admin.flushdb()
    routed = Services.create(
        replace(
            settings,
            database_url=primary.url,
            database_read_url=replica.url,
            database_read_max_lag_ms=LAG_LIMIT_MS,
            database_read_check_ms=1,
        )
    )
    await routed.scripts.load()
    yield routed
    await routed.close()


async def until_on(services: Services, *, replica: bool) -> None:
    """Wait until the route sends reads to the replica (or to the primary)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while (await services.reads.engine() is services.reads.replica) != replica:
        assert time.monotonic() < deadline, (
            f"reads never went to the {'replica' if replica else 'primary'}"
        )
        await asyncio.sleep(0.01)


def replayed(replica: Replica, instrument: UUID, ticks: int) -> bool:
    with psycopg.connect(replica.libpq()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM price_ticks WHERE instrument_id = %s", (instrument,)
        ).fetchone()
    return row == (ticks,)


async def test_reads_go_to_the_replica_until_it_lags_and_own_trades_never_vanish(
    services: Services, primary: PrivatePostgres, replica: Replica
) -> None:
    with psycopg.connect(primary.libpq(), autocommit=True) as pg:
        instrument = await make_instrument(services, pg)
        trader, watcher = make_user(pg), make_user(pg)
    await open_flushed(services, trader, instrument, "first")
    wait_until(lambda: replayed(replica, instrument, 1), "the first trade on the replica")
    await until_on(services, replica=True)

    replica.sql("SELECT pg_wal_replay_pause()")
    try:
        await open_flushed(services, trader, instrument, "second")  # on the primary only
        history = await price_history(services, instrument, None, None)
        assert [tick.seq for tick in history] == [1]  # read on the replica
        mine = await list_positions(services, trader, None, 50, None)
        assert len(mine.positions) == 2  # the trader's own list: the primary
        theirs = await list_positions(services, watcher, None, 50, None)
        assert theirs.positions == []

        services.reads.max_lag_ms = 1  # the paused replica now trails beyond the limit
        await until_on(services, replica=False)
        history = await price_history(services, instrument, None, None)
        assert [tick.seq for tick in history] == [1, 2]
    finally:
        replica.sql("SELECT pg_wal_replay_resume()")
    await until_on(services, replica=True)  # caught up: no lag at all
    history = await price_history(services, instrument, None, None)
    assert [tick.seq for tick in history] == [1, 2]


async def test_a_replica_that_stops_sends_reads_to_the_primary(
    services: Services, primary: PrivatePostgres, replica: Replica
) -> None:
    with psycopg.connect(primary.libpq(), autocommit=True) as pg:
        instrument = await make_instrument(services, pg)
        trader = make_user(pg)
    await open_flushed(services, trader, instrument, "before")
    wait_until(lambda: replayed(replica, instrument, 1), "the trade on the replica")
    services.reads.check_ms = 3_600_000  # the next check is far: the read meets the dead replica
    await until_on(services, replica=True)
    replica.stop()
    try:
        history = await price_history(services, instrument, None, None)
        assert [tick.seq for tick in history] == [1]
        assert not services.reads.replica_usable
        checked = ReadRoute(
            services.engine, services.reads.replica, max_lag_ms=LAG_LIMIT_MS, check_ms=1
        )
        assert await checked.engine() is services.engine  # its lag check finds it down
    finally:
        replica.start()
    services.reads = checked
    await until_on(services, replica=True)
