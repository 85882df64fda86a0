"""Test harness: a dedicated test database and Redis database, the schema built once per session
from the Alembic migrations, and clean state for every integration test.

The environment is pointed at the test stores before any product module reads its settings.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from ftl.store.auth.tokens import generate_private_key_b64
from ftl.store.db.engine import libpq_url

DEFAULT_DATABASE_URL = "postgresql+psycopg://ftl@127.0.0.1:5432/ftl"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
TEST_REDIS_DB = 13  # NOTE: never the database a developer's `make run` uses (0)


def _test_database_url() -> str:
    explicit = os.environ.get("TEST_DATABASE_URL")
    if explicit:
        return explicit
    url = make_url(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    return url.set(database=f"{url.database}_test").render_as_string(hide_password=False)


def _test_redis_url() -> str:
    explicit = os.environ.get("TEST_REDIS_URL")
    if explicit:
        return explicit
    base = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL).rsplit("/", 1)[0]
    return f"{base}/{TEST_REDIS_DB}"


ADMIN_DATABASE_URL = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
os.environ.setdefault("JWT_PRIVATE_KEY_B64", generate_private_key_b64())
os.environ.update(
    ENV="development",  # NOTE: unset would be production (SPEC §3: secure by default)
    DATABASE_URL=_test_database_url(),
    REDIS_URL=_test_redis_url(),
    DISABLE_RATE_LIMIT="1",
)

from ftl.core.config import Settings, get_settings  # noqa: E402  (after the environment is set)
from ftl.store.db.migrate import upgrade  # noqa: E402
from ftl.store.db.models import Base  # noqa: E402
from ftl.store.services import Services  # noqa: E402


def recreate_database(name: str) -> None:
    """Drop and create a database on the server of DATABASE_URL."""
    with psycopg.connect(libpq_url(ADMIN_DATABASE_URL), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def database_url_named(name: str) -> str:
    return make_url(get_settings().database_url).set(database=name).render_as_string(False)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def schema(settings: Settings) -> str:
    """The test database, built once per session by the migrations (not by create_all)."""
    name = make_url(settings.database_url).database
    assert name is not None
    recreate_database(name)
    upgrade(settings.database_url)
    return settings.database_url


@pytest.fixture(scope="session")
def pg_admin(schema: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(libpq_url(schema), autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def redis_admin(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    yield client
    client.close()


TABLES = ", ".join(table.name for table in Base.metadata.sorted_tables)


@pytest.fixture
def clean(pg_admin: psycopg.Connection, redis_admin: redis.Redis) -> None:
    """Empty every table and the test Redis database before the test."""
    pg_admin.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    redis_admin.flushdb()


@pytest.fixture
async def services(settings: Settings, clean: None) -> AsyncIterator[Services]:
    services = Services.create(settings)
    await services.scripts.load()
    yield services
    await services.close()


@pytest.fixture
def districts(pg_admin: psycopg.Connection, clean: None) -> None:
    """The 14 districts (users reference them), as `ftl seed` writes them."""
    from ftl.ops.seed import DISTRICTS

    with pg_admin.cursor() as cur:
        cur.executemany(
            "INSERT INTO districts (id, name) VALUES (%s, %s)",
            list(enumerate(DISTRICTS, start=1)),
        )
