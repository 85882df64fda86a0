"""The async engine and the sync URL form that Alembic and psql need."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ftl.core.config import Settings

CONNECT_TIMEOUT_S = 3
# PERF: a few pooled connections per web worker; uvicorn serves many requests per connection.
POOL_SIZE = 10


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


def create_engine(settings: Settings, *, pool_size: int = POOL_SIZE) -> AsyncEngine:
    return create_async_engine(
        sqlalchemy_url(settings.database_url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
    )
