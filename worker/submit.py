"""Submitting work: create the run rows, commit, then enqueue (so a worker never sees a job
whose run does not exist yet)."""

from __future__ import annotations

import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError
from rq.job import Job
from sqlalchemy.orm import Session, sessionmaker

from core.configs import VocabConfig
from db import store
from core.errors import ConfigError
from db.models import Run, RunKind, RunStatus, VocabAnalysis
from worker import jobs, service
from worker.queues import JOB_TIMEOUT_S, QUEUE_FOR, SERIALIZER, get_queue

JOB_FUNCTIONS = {RunKind.analysis: jobs.analysis_job, RunKind.expansion: jobs.expansion_job,
                 RunKind.adaptation: jobs.training_job, RunKind.distillation: jobs.training_job,
                 RunKind.evaluation: jobs.training_job, RunKind.benchmark: jobs.training_job,
                 RunKind.corpus_import: jobs.import_job}


def enqueue(sessions: sessionmaker[Session], run_id: int, connection: Redis, queue: str | None = None,
            fail_run: bool = True):
    """Put a recorded run's job on its queue; None when it must wait in the store (see below). When
    Redis cannot be reached the run is failed with a clear message (a user is submitting it), or,
    without fail_run (the reconciler), left queued for the next attempt."""
    with sessions.begin() as session:
        run = store.get_run(session, run_id)
        kind, job_id = run.kind, run.job_id or f"run-{run_id}"
        run.queue = queue or run.queue or QUEUE_FOR[kind]
        run.job_id = job_id
        name = run.queue
        waits_on = [d.job_id for d in run.depends_on if not d.status.finished and d.job_id]
    try:
        if any(not Job.exists(job_id, connection=connection) for job_id in waits_on):
            # What it waits on is unfinished but its job is gone from Redis (flushed while it ran): the
            # run stays queued in the store, and the reconciler queues it once that has finished.
            return None
        return get_queue(name, connection).enqueue_call(
            JOB_FUNCTIONS[kind], args=(run_id,), timeout=JOB_TIMEOUT_S[kind], job_id=job_id,
            result_ttl=7 * 86400, failure_ttl=30 * 86400, description=f"{kind.value} run {run_id}",
            depends_on=waits_on or None,
        )
    except RedisError as exc:
        if not fail_run:
            raise
        message = f"could not queue run {run_id} ({type(exc).__name__}): is Redis running at REDIS_URL?"
        with sessions.begin() as session:
            store.finish_run(session, store.get_run(session, run_id), RunStatus.failed, message)
        raise ConfigError(message) from None


def job_is_lost(connection: Redis, run: Run) -> bool:
    """A queued run whose job is no longer in Redis (flushed or restarted) will never run."""
    return run.status == RunStatus.queued and not (run.job_id and Job.exists(run.job_id, connection=connection))


def submit_analysis(sessions: sessionmaker[Session], connection: Redis, corpus_id: int, base: str,
                    config: VocabConfig) -> tuple[VocabAnalysis, bool]:
    """(analysis, reused). An identical analysis that is done or under way is reused, not queued again."""
    analysis, reused = service.create_analysis(sessions, corpus_id, base, config)
    if reused and job_is_lost(connection, analysis.run):
        with sessions.begin() as session:
            store.finish_run(session, store.get_run(session, analysis.run_id), RunStatus.failed,
                             "its queued job was lost (Redis was flushed or restarted); queued again")
        analysis, reused = service.create_analysis(sessions, corpus_id, base, config)
    if not reused:
        enqueue(sessions, analysis.run_id, connection)
    return analysis, reused


def submit_expansion(sessions: sessionmaker[Session], connection: Redis, analysis_id: int, vocab_size: int,
                     out: str | Path | None = None) -> int:
    run = service.create_expansion(sessions, analysis_id, vocab_size, out)
    enqueue(sessions, run.id, connection)
    return run.id


def submit_import(sessions: sessionmaker[Session], connection: Redis, file: str, name: str | None = None,
                  format: str | None = None, text_field: str = "text") -> tuple[int, bool]:
    """(run id, reused): queue the import of a file of the import folder on the cpu queue; an
    identical import already queued or running is reused (queued again when Redis lost its job)."""
    run, reused = service.create_import(sessions, file, name, format, text_field)
    if not reused or job_is_lost(connection, run):
        enqueue(sessions, run.id, connection)
    return run.id, reused


def submit_runs(sessions: sessionmaker[Session], connection: Redis, runs: list[Run], queue: str | None = None) -> None:
    """Queue runs in order; each waits (RQ depends_on) for the runs it depends on. Pipelines and
    experiments are parents with no job of their own."""
    for run in runs:
        if run.kind not in (RunKind.pipeline, RunKind.experiment):
            enqueue(sessions, run.id, connection, queue)


def cancel(sessions: sessionmaker[Session], connection: Redis, run_id: int, grace: float = 30.0) -> None:
    """Cancel a run (and a pipeline's steps). A queued job is dropped; a running one notices within a
    second, saves a checkpoint and stops; one that does not within `grace` seconds is stopped by RQ
    (grace 0: do not wait)."""
    from rq.command import send_stop_job_command

    from worker.training import request_cancel

    request_cancel(sessions, run_id)
    with sessions.begin() as session:
        runs = [store.get_run(session, run_id)] + list(store.children(session, run_id))
        jobs = [(r.id, r.job_id) for r in runs if r.job_id and r.kind != RunKind.pipeline]
    for _, job_id in jobs:
        if not Job.exists(job_id, connection=connection):
            continue
        job = Job.fetch(job_id, connection=connection, serializer=SERIALIZER)
        if job.get_status() in ("queued", "deferred", "scheduled"):
            job.cancel()
    if grace <= 0:  # the running job stops itself at its next progress report
        return
    deadline = time.monotonic() + grace
    for _, job_id in jobs:
        if not Job.exists(job_id, connection=connection):
            continue
        job = Job.fetch(job_id, connection=connection, serializer=SERIALIZER)
        while job.get_status(refresh=True) == "started" and time.monotonic() < deadline:
            time.sleep(0.2)
        if job.get_status(refresh=True) == "started":
            send_stop_job_command(connection, job_id, serializer=SERIALIZER)


def _lost(job_id: str | None, created, cutoff, connection: Redis) -> bool:
    if created is not None and created.tzinfo is None:
        created = created.replace(tzinfo=cutoff.tzinfo)
    return (created is None or created < cutoff) and not (job_id and Job.exists(job_id, connection=connection))


def lost_runs(sessions: sessionmaker[Session], connection: Redis, older_than: float = 60.0,
              run_id: int | None = None) -> list[int]:
    """Runs the store says are queued (for more than `older_than` seconds, so that one being
    submitted right now is left alone) but whose job Redis does not have: after a FLUSHALL, a
    fresh Redis or a lost enqueue. Oldest first; only `run_id` when given."""
    from datetime import timedelta

    from sqlalchemy import select

    from db.models import utcnow

    cutoff = utcnow() - timedelta(seconds=older_than)
    query = select(Run).where(Run.status == RunStatus.queued, Run.kind.in_(list(JOB_FUNCTIONS))).order_by(Run.id)
    if run_id is not None:
        query = query.where(Run.id == run_id)
    with sessions.begin() as session:
        queued = [(r.id, r.job_id, r.created_at) for r in session.scalars(query)]
    return [i for i, job_id, created in queued if _lost(job_id, created, cutoff, connection)]


def requeue_lost(sessions: sessionmaker[Session], connection: Redis, older_than: float = 60.0) -> list[int]:
    """Queue again every run that is queued in the store but lost from Redis (the store is the
    truth; Redis is only the queue). A worker does this when it starts. Returns their ids."""
    # oldest first: a run waits on the jobs of the runs it depends on
    return [run_id for run_id in lost_runs(sessions, connection, older_than)
            if enqueue(sessions, run_id, connection, fail_run=False) is not None]


def resume(sessions: sessionmaker[Session], connection: Redis, run_id: int) -> Run:
    """Queue a cancelled, failed or abandoned training run again; it continues from its last
    checkpoint. A run stuck in the queued state with no job in Redis is queued again as it is."""
    from worker.training import prepare_resume

    if lost_runs(sessions, connection, older_than=0, run_id=run_id):
        enqueue(sessions, run_id, connection)
        with sessions.begin() as session:
            return store.get_run(session, run_id)
    with sessions.begin() as session:
        if store.get_run(session, run_id).kind == RunKind.corpus_import:
            raise ConfigError(f"run {run_id} imports a corpus and keeps nothing half done: import the file again "
                              f"(Corpora page) instead")
    runs = prepare_resume(sessions, run_id)
    for run in runs:  # in dependency order: each waits on the ones before it
        enqueue(sessions, run.id, connection)
    return runs[0]
