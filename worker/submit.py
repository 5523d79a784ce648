"""Submitting work: create the run rows, commit, then enqueue (so a worker never sees a job
whose run does not exist yet)."""

from __future__ import annotations

from pathlib import Path

from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from core.vocab import VocabConfig
from db import store
from db.models import RunKind, VocabAnalysis
from worker import jobs, service
from worker.queues import JOB_TIMEOUT_S, QUEUE_FOR, get_queue

JOB_FUNCTIONS = {RunKind.analysis: jobs.analysis_job, RunKind.expansion: jobs.expansion_job}


def enqueue(sessions: sessionmaker[Session], run_id: int, connection: Redis, queue: str | None = None):
    with sessions.begin() as session:
        run = store.get_run(session, run_id)
        kind, job_id = run.kind, run.job_id or f"run-{run_id}"
        run.queue = queue or QUEUE_FOR[kind]
        run.job_id = job_id
        name = run.queue
    return get_queue(name, connection).enqueue_call(
        JOB_FUNCTIONS[kind], args=(run_id,), timeout=JOB_TIMEOUT_S[kind], job_id=job_id,
        result_ttl=7 * 86400, failure_ttl=30 * 86400, description=f"{kind.value} run {run_id}",
    )


def submit_analysis(sessions: sessionmaker[Session], connection: Redis, corpus_id: int, base: str,
                    config: VocabConfig) -> tuple[VocabAnalysis, bool]:
    """(analysis, reused). An identical analysis that is done or under way is reused, not queued again."""
    analysis, reused = service.create_analysis(sessions, corpus_id, base, config)
    if not reused:
        enqueue(sessions, analysis.run_id, connection)
    return analysis, reused


def submit_expansion(sessions: sessionmaker[Session], connection: Redis, analysis_id: int, vocab_size: int,
                     out: str | Path | None = None) -> int:
    run = service.create_expansion(sessions, analysis_id, vocab_size, out)
    enqueue(sessions, run.id, connection)
    return run.id
