"""Run the Alembic migrations from code (`ftl migrate`, the release step, the tests)."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

from alembic import command

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "alembic"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)
