"""A run's state in the store: recorded, claimed, finished (with the runs that wait on it),
cancelled, found dead (its heartbeat stopped), put back for a resume, and its attempts. No queue
here: the RQ side (worker.queueing) and the life cycle (worker.lifecycle) build on it."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.errors import ConfigError, Superseded, is_disk_full
from db import settings, store
from db.models import Run, RunKind, RunStatus, utcnow
from worker.kinds import PARENTS, RESUMABLE

log = logging.getLogger(__name__)

def close_run(sessions: sessionmaker[Session], run_id: int, status: RunStatus, error: str | None = None) -> None:
    """Record the outcome; runs waiting on a run that did not succeed are cancelled, and a
    pipeline's status follows its steps."""
    with sessions.begin() as session:
        run = store.get(session, Run, run_id)
        if not holds_lease(run):
            log.warning("run %s: another attempt holds it; this one records no outcome (%s)", run_id, status.value)
            return
        store.finish_run(session, run, status, error)
        if status != RunStatus.succeeded:
            for waiting in store.dependents(session, run_id):
                if waiting.status == RunStatus.queued:
                    store.finish_run(session, waiting, RunStatus.cancelled, f"run {run_id} it needs {status.value}")
        if run.parent_id is not None:
            store.refresh_pipeline(session, run.parent_id)


RESERVE = ".outcome-reserve"  # in a run's folder while it works: space kept to record how it ended
RESERVE_BYTES = 1 << 20


def reserve_space(run_id: int) -> None:
    """Keep a little disk space for the run's outcome: a file, freed when the outcome cannot be written
    because the disk is full (the database is often on the same disk as the run's folder)."""
    path = run_dir(run_id) / RESERVE
    try:
        with open(path, "wb") as handle:
            handle.write(b"\0" * RESERVE_BYTES)
    except OSError as exc:  # a disk that is full already: what was written goes, and the run goes on
        path.unlink(missing_ok=True)
        log.debug("run %s: no space kept for its outcome (%s)", run_id, exc)


def free_reserve(run_id: int) -> bool:
    """Give the kept space back; True when there was some."""
    path = settings.runs_dir() / str(run_id) / RESERVE
    existed = path.is_file()
    path.unlink(missing_ok=True)
    return existed


def record_outcome(sessions: sessionmaker[Session], run_id: int, status: RunStatus, error: str | None = None,
                   attempts: int = 6, wait: float = 0.5) -> None:
    """`close_run`, tried again a few times: the outcome of hours of work is not lost because the
    database is briefly unreachable or its disk full at that moment (the space kept for it is given
    back first, and the failed write that made the run fail has freed its own)."""
    for attempt in range(attempts):
        try:
            close_run(sessions, run_id, status, error)
            free_reserve(run_id)
            return
        except OperationalError as exc:  # connection lost, database or disk full
            if is_disk_full(exc) and free_reserve(run_id):
                log.debug("recording run %s: the disk is full; its kept space is freed to write it", run_id)
                continue
            if attempt == attempts - 1:
                raise
            log.warning("recording run %s as %s failed (%s); trying again", run_id, status.value, exc)
            time.sleep(wait * 2 ** attempt)


# The lease of each run this process works on: a token written into the run's params when the
# attempt claims it. Another attempt's claim (a resume after the run was taken for abandoned)
# replaces it, and every write of this attempt checks it first (`holds_lease`): a stale attempt
# stops itself (core.errors.Superseded) instead of writing over the live one.
LEASES: dict[int, str] = {}


def holds_lease(run: Run) -> bool:
    """Whether this process's attempt still owns the run (True where this process took no lease)."""
    mine = LEASES.get(run.id)
    return mine is None or (run.params or {}).get("lease") == mine


def check_lease(run: Run) -> None:
    if not holds_lease(run):
        raise Superseded(f"run {run.id} was taken over by another attempt: this one stops and writes nothing more")


def claim(sessions: sessionmaker[Session], run_id: int) -> bool:
    """Mark a queued run running, atomically, and give this attempt the run's lease: when the same
    run was queued twice (a reconciler and a resume at once), only the first job to claim it does
    the work. False: nothing to do."""
    from sqlalchemy import update

    with sessions.begin() as session:
        started = session.execute(
            update(Run).where(Run.id == run_id, Run.status == RunStatus.queued)
            .values(status=RunStatus.running, started_at=utcnow(), heartbeat_at=utcnow(), error=None)
        ).rowcount
        run = store.get(session, Run, run_id)
        if not started:
            log.warning("run %s is %s, not queued: this job has nothing to do", run_id, run.status.value)
            return False
        lease = uuid.uuid4().hex
        run.params = {**run.params, "lease": lease}
        if run.parent_id is not None:
            store.refresh_pipeline(session, run.parent_id)
    LEASES[run_id] = lease
    return True


def next_attempt(run: Run) -> int:
    """Count one more attempt of a run going back to the queue: params["attempt"] is the number
    the header, the settings and the job id (run-ID-aN) all show; 1, unrecorded, for the first."""
    attempt = int(run.params.get("attempt", 1)) + 1
    run.params = {**run.params, "attempt": attempt}
    run.job_id = f"run-{run.id}-a{attempt}"
    return attempt


def run_dir(run_id: int) -> Path:
    path = settings.runs_dir() / str(run_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- creating runs ----------------------------------------------------------------------------

def new_run(session, kind: RunKind, params: dict, parent_id=None, depends_on=()) -> Run:
    run = store.create_run(session, kind, params, parent_id=parent_id, depends_on=depends_on)
    run.job_id = f"run-{run.id}"
    run.output_dir = params.get("output_dir") or str(run_dir(run.id) / "model")
    run.total_steps = params.get("steps")
    return run


# --- cancel, resume, dead workers ---------------------------------------------------------------

def request_cancel(sessions: sessionmaker[Session], run_id: int) -> RunStatus:
    """Mark a run (and a pipeline's unfinished steps) cancelled; a running job sees it within a
    second, saves a checkpoint and stops. Returns the status the run had."""
    with sessions.begin() as session:
        run = store.get(session, Run, run_id)
        previous = run.status
        if previous.finished:
            raise ConfigError(f"run {run_id} is already {previous.value}")
        ids = [r.id for r in store.children(session, run_id) if not r.status.finished] + [run_id]
    for rid in ids:
        close_run(sessions, rid, RunStatus.cancelled, "cancelled by the user")
    return previous


def find_dead_runs(sessions: sessionmaker[Session], stale_after: float = 60.0) -> list[int]:
    """Mark running runs whose heartbeat is older than stale_after seconds as abandoned (their
    pipeline and the steps waiting on them follow)."""
    cutoff = utcnow() - timedelta(seconds=stale_after)
    dead = []
    with sessions.begin() as session:
        # pipelines and experiments have no worker of their own: their status follows their steps
        for run in session.scalars(select(Run).where(Run.status == RunStatus.running,
                                                     Run.kind.not_in(PARENTS))):
            beat = run.heartbeat_at or run.started_at
            if beat is not None and beat.tzinfo is None:
                beat = beat.replace(tzinfo=cutoff.tzinfo)
            if beat is not None and beat < cutoff:
                dead.append((run.id, beat))
    for run_id, beat in dead:
        close_run(sessions, run_id, RunStatus.abandoned,
                f"its worker stopped answering (last heartbeat {beat:%Y-%m-%d %H:%M:%S} UTC); "
                f"resume continues from the last checkpoint")
    return [run_id for run_id, _ in dead]


def prepare_resume(sessions: sessionmaker[Session], run_id: int) -> list[Run]:
    """Put a cancelled, failed or abandoned training run back in the queued state, with the steps
    that were cancelled because of it; their pipeline runs again. Returns the runs to queue."""
    with sessions.begin() as session:
        run = store.get(session, Run, run_id)
        if run.kind not in RESUMABLE:
            raise ConfigError(f"run {run_id} is a {run.kind.value}; only adaptation and distillation runs resume")
        if run.status not in (RunStatus.cancelled, RunStatus.failed, RunStatus.abandoned):
            raise ConfigError(f"run {run_id} is {run.status.value}: only cancelled, failed or abandoned runs resume")
        revived, frontier = [run], [run]
        while frontier:
            for waiting in store.dependents(session, frontier.pop().id):
                if waiting.status == RunStatus.cancelled and waiting not in revived:
                    revived.append(waiting)
                    frontier.append(waiting)
        for r in revived:
            next_attempt(r)
            r.status, r.stage, r.error, r.finished_at = RunStatus.queued, "queued", None, None
        if run.parent_id is not None:
            parent = store.get(session, Run, run.parent_id)
            if parent.kind == RunKind.pipeline:
                parent.status, parent.error, parent.finished_at = RunStatus.running, None, None
                parent.stage = "resumed"
        return revived


def copy_params(sessions: sessionmaker[Session], run_id: int) -> tuple[RunKind, dict]:
    """The settings of a run, for 'run again with the same settings'."""
    with sessions.begin() as session:
        run = store.get(session, Run, run_id)
        params = {k: v for k, v in run.params.items() if k not in ("result", "attempt", "output_dir", "lease")}
        return run.kind, params


class Heartbeat:
    """Writes heartbeat_at every few seconds from a thread, so a dead worker is noticed even
    while one training step takes long."""

    def __init__(self, sessions, run_id: int, every: float | None = None):
        every = every if every is not None else float(os.environ.get("ADAPT_DISTILL_HEARTBEAT_S", "5"))
        self.sessions, self.run_id, self.every = sessions, run_id, every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while not self.stop.wait(self.every):
            try:
                with self.sessions.begin() as session:
                    run = store.get(session, Run, self.run_id)
                    if not holds_lease(run):
                        return  # another attempt owns the run: its beat is its own
                    run.heartbeat_at = utcnow()
            except Exception as exc:  # a missed beat is not fatal; the next one may pass
                log.warning("heartbeat of run %s failed: %s", self.run_id, exc)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)
