"""Putting recorded runs on their queues (after their rows are committed, so a worker never sees a
job whose run does not exist yet), cancelling them, resuming them, and finding the runs the store
says are queued but Redis has lost."""

from __future__ import annotations

import time

from redis import Redis
from redis.exceptions import RedisError
from rq.job import Job
from sqlalchemy.orm import Session, sessionmaker

from core.errors import ConfigError
from db import store
from db.models import Run, RunKind, RunStatus
from worker.kinds import KINDS, PARENTS, QUEUED
from worker.queueing.queues import RUN_JOB, SERIALIZER, get_queue


def enqueue(sessions: sessionmaker[Session], run_id: int, connection: Redis, queue: str | None = None,
            fail_run: bool = True):
    """Put a recorded run's job on its queue; None when it must wait in the store (see below). When
    Redis cannot be reached the run is failed with a clear message (a user is submitting it), or,
    without fail_run (the reconciler), left queued for the next attempt."""
    with sessions.begin() as session:
        run = store.get(session, Run, run_id)
        kind, job_id = run.kind, run.job_id or f"run-{run_id}"
        run.queue = queue or run.queue or KINDS[kind].queue
        run.job_id = job_id
        name = run.queue
        waits_on = [d.job_id for d in run.depends_on if not d.status.finished and d.job_id]
    try:
        if any(not Job.exists(job_id, connection=connection) for job_id in waits_on):
            # What it waits on is unfinished but its job is gone from Redis (flushed while it ran): the
            # run stays queued in the store, and the reconciler queues it once that has finished.
            return None
        return get_queue(name, connection).enqueue_call(
            RUN_JOB, args=(run_id,), timeout=KINDS[kind].timeout_s, job_id=job_id,
            result_ttl=7 * 86400, failure_ttl=30 * 86400, description=f"{kind.value} run {run_id}",
            depends_on=waits_on or None,
        )
    except RedisError as exc:
        if not fail_run:
            raise
        message = f"could not queue run {run_id} ({type(exc).__name__}): is Redis running at REDIS_URL?"
        with sessions.begin() as session:
            store.finish_run(session, store.get(session, Run, run_id), RunStatus.failed, message)
        raise ConfigError(message) from None


def job_is_lost(connection: Redis, run: Run) -> bool:
    """A queued run whose job is no longer in Redis (flushed or restarted) will never run."""
    return run.status == RunStatus.queued and not (run.job_id and Job.exists(run.job_id, connection=connection))


def submit_runs(sessions: sessionmaker[Session], connection: Redis, runs: list[Run], queue: str | None = None) -> None:
    """Queue runs in order; each waits (RQ depends_on) for the runs it depends on. Pipelines and
    experiments are parents with no job of their own."""
    for run in runs:
        if run.kind not in PARENTS:
            enqueue(sessions, run.id, connection, queue)


def cancel(sessions: sessionmaker[Session], connection: Redis, run_id: int, grace: float = 30.0) -> None:
    """Cancel a run (and a pipeline's steps). A queued job is dropped; a running one notices within a
    second, saves a checkpoint and stops; one that does not within `grace` seconds is stopped by RQ
    (grace 0: do not wait)."""
    from rq.command import send_stop_job_command

    from worker.run_state import request_cancel

    request_cancel(sessions, run_id)
    with sessions.begin() as session:
        runs = [store.get(session, Run, run_id)] + list(store.children(session, run_id))
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
    query = select(Run).where(Run.status == RunStatus.queued, Run.kind.in_(QUEUED)).order_by(Run.id)
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
    from worker.run_state import prepare_resume

    if lost_runs(sessions, connection, older_than=0, run_id=run_id):
        enqueue(sessions, run_id, connection)
        with sessions.begin() as session:
            return store.get(session, Run, run_id)
    with sessions.begin() as session:
        if store.get(session, Run, run_id).kind == RunKind.corpus_import:
            raise ConfigError(f"run {run_id} imports a corpus and keeps nothing half done: import the file again "
                              f"(Corpora page) instead")
    runs = prepare_resume(sessions, run_id)
    for run in runs:  # in dependency order: each waits on the ones before it
        enqueue(sessions, run.id, connection)
    return runs[0]
