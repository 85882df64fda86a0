"""Alembic environment: the same settings as the app (DATABASE_URL), sync psycopg 3 driver."""

from __future__ import annotations

from sqlalchemy import create_engine, pool

from alembic import context
from ftl.core.config import get_settings
from ftl.store.db.engine import sqlalchemy_url
from ftl.store.db.models import Base

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    # NOTE: callers (ftl migrate, the tests) may pass a URL explicitly through the Alembic config.
    explicit = config.attributes.get("database_url")
    return sqlalchemy_url(explicit or get_settings().database_url)


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Daily partitions of price_ticks are made at run time, not declared as models."""
    return not (type_ == "table" and reflected and (name or "").startswith("price_ticks_"))


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            include_object=include_object,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
