"""Engines and sessions. SQLite is made safe for several processes writing at once: WAL,
a busy timeout, and BEGIN IMMEDIATE so a write transaction takes the lock up front instead
of failing with "database is locked" when it upgrades from a read."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from db import settings

BUSY_TIMEOUT_MS = 60_000


def _sqlite_events(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str | None = None) -> Engine:
    url = url or settings.database_url()
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})
        _sqlite_events(engine)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


@lru_cache(maxsize=8)
def _cached_engine(url: str) -> Engine:
    return make_engine(url)


def get_engine(url: str | None = None) -> Engine:
    """One engine per URL per process."""
    return _cached_engine(url or settings.database_url())


def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    """Callers own the transaction: `with get_sessionmaker().begin() as session: ...`."""
    return sessionmaker(get_engine(url), expire_on_commit=False)
