"""The dashboard's connections: one migrated database and one Redis client per process,
keyed by their URLs so that a process pointed at another store gets its own."""

from __future__ import annotations

import streamlit as st
from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from db import settings
from worker.queueing import queues


@st.cache_resource(show_spinner="Preparing the database…")
def _sessions_for(url: str) -> sessionmaker[Session]:
    from db.migrate import upgrade
    from db.session import get_sessionmaker

    upgrade(url)  # once per process and URL: the cache holds the result
    return get_sessionmaker(url)


def sessions() -> sessionmaker[Session]:
    """The sessionmaker of DATABASE_URL (default: SQLite in ADAPT_DISTILL_HOME), migrated."""
    return _sessions_for(settings.database_url())


@st.cache_resource
def _redis_for(url: str) -> Redis:
    return queues.connect(url)


def redis() -> Redis:
    """The Redis client of REDIS_URL. Raises ConfigError (with what to do) when it is not set."""
    url = queues.redis_url()
    return _redis_for(url) if url else queues.connect()  # connect() raises the ConfigError


def queue_health() -> dict:
    """Whether the queue is configured and reachable, the workers (`pool`: name, queues, devices) and
    how many serve each queue."""
    from redis.exceptions import RedisError
    from rq import Worker

    from worker.queueing.serve import advertised

    url = queues.redis_url()
    if not url:
        return {"configured": False, "reachable": False, "workers": {}}
    try:
        connection = redis()
        connection.ping()
        pool = [{"name": w.name, "queues": w.queue_names(), **advertised(connection, w)}
                for w in Worker.all(connection=connection, serializer=queues.SERIALIZER)]
    except RedisError as exc:
        return {"configured": True, "reachable": False, "workers": {}, "pool": [], "error": str(exc)}
    workers = {name: sum(name in w["queues"] for w in pool) for name in queues.QUEUES}
    return {"configured": True, "reachable": True, "workers": workers, "pool": pool}
