"""The Overview page's read: how many of each thing exist, and the most recent runs."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.data.common import ACTIVE, run_dict
from db import store
from db.models import Corpus, Run, Task


def overview(sessions: sessionmaker[Session], recent: int = 10) -> dict:
    """Counts of what exists and the most recent runs."""
    with sessions.begin() as session:
        corpora = session.scalar(select(func.count()).select_from(Corpus)) or 0
        tasks = session.scalar(select(func.count()).select_from(Task)) or 0
        by_kind_status = session.execute(
            select(Run.kind, Run.status, func.count()).group_by(Run.kind, Run.status)).all()
        runs = [run_dict(r) for r in store.rows(session, Run, limit=recent)]
    counts: dict[str, dict[str, int]] = {}
    for kind, status, n in by_kind_status:
        counts.setdefault(kind.value, {})[status.value] = n
    active = sum(n for kinds in counts.values() for status, n in kinds.items() if status in ACTIVE)
    return {"corpora": corpora, "tasks": tasks, "runs": counts, "active": active, "recent": runs}
