"""A student for a latency budget, on the Train and Experiment pages: queue a plan run on the worker
that would serve the student (worker.planning) and read what it measured."""

from __future__ import annotations

from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from app.data.common import queue_runs
from db import store
from db.models import Run
from worker import planning
from worker import kinds
from worker.kinds import GPU


QUEUES = tuple(sorted(kinds.QUEUES, key=lambda q: q != GPU))  # gpu first: where a student is served by default


def start_plan(sessions: sessionmaker[Session], connection: Redis, teacher: str, latency_ms: float,
               percentile: int, threads: int, seq_len: int, queue: str = GPU) -> int:
    """Queue a plan of the teacher's students for the budget on the workers of `queue`; its run id."""
    runs = queue_runs(sessions, connection, lambda: [planning.create_plan(
        sessions, teacher, latency_ms, queue, percentile=percentile, threads=threads, seq_len=seq_len)])
    return runs[0].id


def plan_state(sessions: sessionmaker[Session], run_id: int) -> dict:
    """{status, stage, progress, error, result (the plan once it has succeeded, else None), params}."""
    with sessions.begin() as session:
        run = store.get(session, Run, run_id)
        params = dict(run.params or {})
        return {"status": run.status.value, "stage": run.stage, "progress": float(run.progress or 0.0),
                "error": run.error, "result": params.pop("result", None), "params": params}
