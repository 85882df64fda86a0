"""The async engines (the primary, and a streaming replica for reads) and the URL forms that
Alembic and psql need."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ftl.core.config import Settings

CONNECT_TIMEOUT_S = 3
# PERF: a few pooled connections per web worker; uvicorn serves many requests per connection.
POOL_SIZE = 10
# NOTE: a replica that does not answer its lag check within this is treated as down; one request
# per DATABASE_READ_CHECK_MS waits for the check, the others meanwhile use the last verdict.
LAG_CHECK_TIMEOUT_S = 0.5

log = logging.getLogger(__name__)
T = TypeVar("T")

# How far the replica trails, in milliseconds: 0 when it has replayed everything it received
# (after a restart the receiver reports the start of its first segment, behind the replay),
# else the age of the last transaction it replayed (a replica whose replay is paused or slow ages
# while it waits). A replica not streaming from its primary has no known lag: it is not used.
# NOTE: pg_stat_wal_receiver's status needs pg_monitor (or superuser) for the read role.
REPLICA_LAG = text(
    """
    SELECT pg_is_in_recovery()
           AND EXISTS (SELECT FROM pg_stat_wal_receiver WHERE status = 'streaming') AS streaming,
           CASE WHEN pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0
                ELSE coalesce(extract(epoch FROM clock_timestamp()
                                      - pg_last_xact_replay_timestamp()) * 1000,
                              'Infinity')
           END::float8 AS lag_ms
    """
)


def sqlalchemy_url(database_url: str) -> str:
    """The URL with the psycopg 3 driver, whatever form the operator gave (postgres://, ...)."""
    url = make_url(database_url)
    if url.drivername in ("postgres", "postgresql", "postgresql+psycopg2"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def libpq_url(database_url: str) -> str:
    """The URL as libpq tools (psql, pg_isready) and psycopg.connect accept it."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def engine_for(database_url: str, *, pool_size: int = POOL_SIZE) -> AsyncEngine:
    return create_async_engine(
        sqlalchemy_url(database_url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
    )


def create_engine(settings: Settings, *, pool_size: int = POOL_SIZE) -> AsyncEngine:
    return engine_for(settings.database_url, pool_size=pool_size)


class ReadRoute:
    """Where a read-only query runs: the replica while it streams within the lag limit, else the
    primary (docs/decisions/0155). Without a replica every read runs on the primary.

    The verdict is at most `check_ms` old, so a replica read trails the primary by at most
    `max_lag_ms + check_ms`.
    """

    def __init__(
        self,
        primary: AsyncEngine,
        replica: AsyncEngine | None,
        *,
        max_lag_ms: int,
        check_ms: int,
    ) -> None:
        self.primary = primary
        self.replica = replica
        self.max_lag_ms = max_lag_ms
        self.check_ms = check_ms
        self.replica_usable = False
        self._next_check_s = 0.0
        self._checking = asyncio.Lock()

    @classmethod
    def create(cls, settings: Settings, primary: AsyncEngine) -> ReadRoute:
        replica = engine_for(settings.database_read_url) if settings.database_read_url else None
        return cls(
            primary,
            replica,
            max_lag_ms=settings.database_read_max_lag_ms,
            check_ms=settings.database_read_check_ms,
        )

    async def engine(self) -> AsyncEngine:
        """The engine for the next read-only query."""
        if self.replica is None:
            return self.primary
        # NOTE: no await between the test and the acquire, so one check runs at a time and the
        # reads that arrive meanwhile use the last verdict instead of queueing behind it.
        if time.monotonic() >= self._next_check_s and not self._checking.locked():
            async with self._checking:
                await self._check(self.replica)
        return self.replica if self.replica_usable else self.primary

    async def _check(self, replica: AsyncEngine) -> None:
        try:
            async with asyncio.timeout(LAG_CHECK_TIMEOUT_S), replica.connect() as conn:
                streaming, lag_ms = (await conn.execute(REPLICA_LAG)).one()
            reason = (
                None
                if streaming and lag_ms <= self.max_lag_ms
                else (f"lag {lag_ms:.0f} ms" if streaming else "not streaming")
            )
        except (OSError, TimeoutError, OperationalError, InterfaceError) as exc:
            reason = f"down ({type(exc).__name__})"
        self._set_usable(reason)
        self._next_check_s = time.monotonic() + self.check_ms / 1000

    def _set_usable(self, reason: str | None) -> None:
        usable = reason is None
        if usable != self.replica_usable:
            if usable:
                log.info("read replica in use")
            else:
                log.warning("read replica not used: %s; reads go to the primary", reason)
        self.replica_usable = usable

    async def read(
        self,
        work: Callable[[AsyncConnection], Awaitable[T]],
        *,
        caught_up: Callable[[AsyncConnection], Awaitable[bool]] | None = None,
    ) -> T:
        """`work` on a connection of the replica when it is usable and, if given, `caught_up`
        says it holds what this read must see; on the primary otherwise. A replica that fails
        mid-read (gone, or the query cancelled by a recovery conflict) is given up until its next
        check and the read runs again on the primary."""
        engine = await self.engine()
        if engine is not self.primary:
            try:
                async with engine.connect() as conn:
                    if caught_up is None or await caught_up(conn):
                        return await work(conn)
            except (OperationalError, InterfaceError) as exc:
                self._set_usable(f"failed a read ({type(exc).__name__})")
        async with self.primary.connect() as conn:
            return await work(conn)

    async def dispose(self) -> None:
        if self.replica is not None:
            await self.replica.dispose()
