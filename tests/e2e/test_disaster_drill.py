"""The disaster drill on small data (docs/operations.md, "Backups and the disaster drill"): a
base backup, trades after it that live only in the WAL archive, the machine lost (PostgreSQL
stopped without a checkpoint, Redis emptied), then scripts/restore.sh onto an empty data
directory: WAL replayed, promoted, `ftl migrate`, `ftl recover` into the empty Redis, and
`ftl audit` clean, with every flushed trade back, from the archive or from the WAL stream.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from uuid import UUID

import psycopg
import pytest
import redis

from ftl.core.config import Settings
from ftl.ops.flush import Flusher
from ftl.store.services import Services
from ftl.trading import trades
from tests.e2e.conftest import run_ftl
from tests.e2e.crash_stack import PrivatePostgres, required_pg_bindir, wait_until
from tests.e2e.pg_replica import (
    Restored,
    WalStream,
    archive_wal,
    base_backup,
    crash,
    open_flushed,
)
from tests.integration.trading_helpers import make_instrument, make_user

pytestmark = pytest.mark.e2e


@pytest.fixture
def primary() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres(required_pg_bindir())
    yield pg
    if (pg.data / "postmaster.pid").exists():  # the test failed before its crash
        crash(pg)
    shutil.rmtree(pg.dir, ignore_errors=True)


def archived_through_now(pg: PrivatePostgres) -> None:
    """Close the current WAL segment and wait until the archive holds it."""
    with psycopg.connect(pg.libpq(), autocommit=True) as conn:
        row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        assert row is not None

        def archived() -> bool:
            done = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
            return done is not None and done[0] is not None and done[0] >= row[0]

        wait_until(archived, "the last WAL segment in the archive")


@pytest.mark.parametrize("shipping", ["archive", "stream"])
async def test_backup_restore_recover(
    settings: Settings, primary: PrivatePostgres, redis_admin: redis.Redis, shipping: str
) -> None:
    """`archive`: the last segment is switched and archived before the loss. `stream`: nothing
    is switched; the trades after the base are only in the unfinished segment pg_receivewal was
    writing (what makes the loss seconds, decision 0156)."""
    backups = archive_wal(primary, timeout_s=60)
    stream = WalStream(primary, backups) if shipping == "stream" else None
    migrated = run_ftl("migrate", env={"DATABASE_URL": primary.url})
    assert migrated.returncode == 0, migrated.stderr
    redis_admin.flushdb()
    services = Services.create(replace(settings, database_url=primary.url))
    await services.scripts.load()
    try:
        with psycopg.connect(primary.libpq(), autocommit=True) as pg:
            instrument = await make_instrument(services, pg)
            trader = make_user(pg)
        before = await open_flushed(services, trader, instrument, "before-base")
        base_backup(primary, backups)
        after = await open_flushed(services, trader, instrument, "after-base")
        await trades.close_position(services, trades.Caller(trader, "j"), UUID(before), "c")
        await Flusher(services, "drill").flush()
    finally:
        await services.close()
    if stream is None:
        archived_through_now(primary)
        crash(primary)
    else:
        stream.wait_caught_up()
        crash(primary)
        stream.stop()
    redis_admin.flushdb()

    restored = Restored(primary.bindir, backups, settings.redis_url)
    try:
        assert restored.summary.get("auditExit") == 0, restored.log
        with psycopg.connect(restored.libpq()) as conn:
            rows = conn.execute("SELECT id::text, status::text FROM cfd_positions").fetchall()
        positions = {str(row[0]): str(row[1]) for row in rows}
        assert positions == {before: "closed", after: "open"}
        assert redis_admin.exists(f"position:{after}") == 1  # ftl recover rebuilt hot state
    finally:
        restored.destroy()
