"""Alembic migrations, applied programmatically on start. Serialized across processes: an
IMMEDIATE transaction on SQLite, an advisory lock on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from db.session import get_engine

_LOCK_ID = 727274


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return config


def upgrade(url: str | None = None) -> None:
    """Bring the database at `url` (default: DATABASE_URL or the SQLite file) to the newest schema."""
    engine = get_engine(url)
    config = alembic_config()
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK_ID})")
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
