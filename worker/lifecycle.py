"""The life of a run in the process that does its work: claim it, report progress (and training
detail) to the store, beat a heartbeat, and record the outcome once; a run stopped by its worker
going away goes back to the queue."""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.configs import TrainConfig
from core.errors import Cancelled, ConfigError, Superseded, user_error
from core.train.eta import PHASES, Clock
from db import store
from db.models import Run, RunStatus
from worker import kinds
from worker.run_state import (
    LEASES,
    Heartbeat,
    check_lease,
    claim,
    close_run,
    free_reserve,
    holds_lease,
    next_attempt,
    record_outcome,
    reserve_space,
    run_dir,
)

log = logging.getLogger(__name__)

Echo = Callable[[str, float], None]


# Set in a job's process when its worker is asked to stop (SIGTERM: `docker-compose stop`, Ctrl-C on
# `up`): the run saves a checkpoint at its next progress report, goes back to the queue, and a
# worker continues it from there.
STOPPING = threading.Event()


class MetaWriter:
    """Copies a run's latest progress into its RQ job's meta from a thread of its own: the work never
    waits on Redis, even one that hangs (a write stuck there only holds this thread, and the newest
    progress replaces what was not written yet)."""

    def __init__(self, job, run_id: int):
        self.job, self.run_id = job, run_id
        self.latest: dict | None = None
        self.lock, self.wake, self.idle = threading.Lock(), threading.Event(), threading.Event()
        self.idle.set()
        self.redis_down = False
        threading.Thread(target=self.write, name=f"run-{run_id}-meta", daemon=True).start()

    def put(self, meta: dict) -> None:
        with self.lock:
            self.latest = meta
            self.idle.clear()
        self.wake.set()

    def drain(self, timeout: float) -> bool:
        """Wait (at most `timeout` seconds) for the last progress to reach Redis; False if it did not."""
        return self.idle.wait(timeout)

    def write(self) -> None:
        while self.wake.wait():
            self.wake.clear()
            with self.lock:
                meta, self.latest = self.latest, None
                if meta is None:
                    self.idle.set()
                    continue
            self.job.meta.update(meta)
            try:
                self.job.save_meta()
                self.redis_down = False
            except RedisError as exc:  # Redis is only the queue; the store has the progress
                if not self.redis_down:
                    log.warning("run %s: Redis is unreachable (%s); the run goes on", self.run_id, exc)
                self.redis_down = True
            self.wake.set()  # the next one, or the word that all is written


class Reporter:
    """Progress of one run, written to the store (and, from a thread, the RQ job's meta) when the
    stage changes or at most every `interval` seconds. Also answers the cancel check from the same
    read.

    A report never fails the run because Redis or the database is briefly away: the job's meta in
    Redis is a convenience and never waited for, and a store write that fails is tried again at the
    next report (the metrics wait for it) until the store has been unreachable for `patience` seconds."""

    def __init__(self, sessions: sessionmaker[Session], run_id: int, job=None, interval: float = 1.0,
                 echo: Echo | None = None, patience: float | None = None):
        self.sessions, self.run_id, self.job, self.interval, self.echo = sessions, run_id, job, interval, echo
        self.patience = float(os.environ.get("ADAPT_DISTILL_STORE_PATIENCE_S", "600")) if patience is None else patience
        self.stage: str | None = None
        self.last = 0.0
        self._cancel = False
        self.store_down_since: float | None = None
        self.meta_writer = MetaWriter(job, run_id) if job is not None else None

    def __call__(self, stage: str, fraction: float) -> None:
        if self.echo:
            self.echo(stage, fraction)
        now = time.monotonic()
        if stage == self.stage and now - self.last < self.interval and fraction < 1.0:
            return
        self.stage, self.last = stage, now
        try:
            with self.sessions.begin() as session:
                run = store.get(session, Run, self.run_id)
                check_lease(run)  # a stale attempt stops here, before any write (a checkpoint's included)
                store.set_progress(session, self.run_id, *self.shown(stage, fraction))
                self.record(session, run, stage, fraction)
                self._cancel = run.status == RunStatus.cancelled
                meta = self.meta(run, stage, fraction)
        except OperationalError as exc:  # the database is away: the next report tries again
            self.store_down_since = self.store_down_since or now
            if now - self.store_down_since > self.patience:
                raise
            log.warning("run %s: progress not recorded (%s); trying again at the next report", self.run_id,
                        type(exc).__name__)
            return
        self.store_down_since = None
        self.recorded()
        if self.meta_writer is not None:
            self.meta_writer.put(meta)

    def shown(self, stage: str, fraction: float) -> tuple[str, float]:
        """The stage and progress the store shows for a report (subclasses may reword them)."""
        return stage, fraction

    def record(self, session: Session, run: Run, stage: str, fraction: float) -> None:
        """Subclasses write more of the run's state here, in the same transaction."""

    def recorded(self) -> None:
        """Called once what `record` wrote is committed."""

    def meta(self, run: Run, stage: str, fraction: float) -> dict:
        return {"stage": stage, "progress": fraction}

    def cancelled(self) -> bool:
        return self._cancel or STOPPING.is_set()


def enqueue_again(sessions: sessionmaker[Session], run_id: int) -> None:
    """Put a run the store holds as queued back on its queue when Redis answers; else the
    reconciler does, later."""
    try:
        from worker.queueing.queues import connect
        from worker.queueing.submit import enqueue

        enqueue(sessions, run_id, connect(), fail_run=False)
    except Exception as exc:
        log.warning("run %s is queued in the store; the reconciler will queue it (%s)", run_id, exc)


def requeue_interrupted(sessions: sessionmaker[Session], run_id: int) -> bool:
    """A run stopped because its worker is stopping (not cancelled by the user) goes back to the
    queued state under a new job id, and onto the queue when Redis answers (else the reconciler
    queues it): the next worker continues it from the checkpoint it has just saved."""
    with sessions.begin() as session:
        run = store.get(session, Run, run_id)
        if run.status != RunStatus.running:
            return False  # the user cancelled it meanwhile
        next_attempt(run)
        run.status, run.error = RunStatus.queued, None
        run.stage = "queued: its worker stopped; it continues from its checkpoint"
    enqueue_again(sessions, run_id)
    return True


def wait_for_dependencies(sessions: sessionmaker[Session], run_id: int, job=None) -> bool:
    """True when every run this one depends on has succeeded, as the store says (whatever the queue
    said). Else the run does not start: one that depends on a failed or cancelled run is cancelled
    with it; one whose dependency has not finished goes back to waiting, under a new job that RQ
    defers until the dependencies' jobs have finished (or the reconciler queues it). Inline (no job),
    it is an error to run it first."""
    with sessions.begin() as session:
        run = store.get(session, Run, run_id)
        if run.status != RunStatus.queued:
            return True  # claim() says what there is to do
        failed = [d for d in run.depends_on if d.status.finished and d.status != RunStatus.succeeded]
        unfinished = [d for d in run.depends_on if not d.status.finished]
        reason = f"run {failed[0].id} it needs {failed[0].status.value}" if failed else None
        if not failed and not unfinished:
            return True
        waits = ", ".join(f"run {d.id} ({d.status.value})" for d in unfinished)
        if reason is None and job is None:
            raise ConfigError(f"run {run_id} waits on {waits}: run that first")
        if reason is None:
            run.job_id = f"run-{run_id}-after-{uuid.uuid4().hex[:8]}"
            run.stage = f"queued: waits on {waits}"
    if reason is not None:  # it will never have what it needs: cancelled, with what waits on it
        close_run(sessions, run_id, RunStatus.cancelled, reason)
        return False
    log.warning("run %s was started before %s finished: it goes back to waiting", run_id, waits)
    enqueue_again(sessions, run_id)
    return False


RESUME_NOTE = "resume continues from the last checkpoint"


def execute(sessions: sessionmaker[Session], run_id: int, body: Callable[[Run], None],
             again: str = RESUME_NOTE) -> None:
    """Claim the run, do the work under a heartbeat (whatever its kind: a long step with no progress
    report, a tokenizer's training or a slow forward, never looks like a dead worker), and record the
    outcome once. `again` says how a cancelled run carries on."""
    if not claim(sessions, run_id):
        return
    try:
        attempt(sessions, run_id, body, again)
    finally:
        LEASES.pop(run_id, None)  # this process's attempt is over: it holds the run no more


def attempt(sessions: sessionmaker[Session], run_id: int, body: Callable[[Run], None], again: str) -> None:
    """The work of a claimed run and its one outcome (see `execute`)."""
    reserve_space(run_id)
    with sessions.begin() as session:
        run = store.get(session, Run, run_id)
    try:
        with Heartbeat(sessions, run_id):
            body(run)
    except Superseded as exc:  # another attempt owns the run now: nothing of this one is written
        log.warning("%s", exc)
        return
    except Cancelled:
        if STOPPING.is_set() and requeue_interrupted(sessions, run_id):
            free_reserve(run_id)
            return
        record_outcome(sessions, run_id, RunStatus.cancelled, f"cancelled by the user; {again}")
        return
    except KeyboardInterrupt:  # Ctrl-C on an inline run: the loop has saved what it had done
        record_outcome(sessions, run_id, RunStatus.cancelled, f"interrupted (Ctrl-C); {again}")
        raise
    except BaseException as exc:
        known = user_error(exc)
        message = str(known) if known is not None else f"{type(exc).__name__}: {exc}"
        if known is None:
            log.error("run %s failed:\n%s", run_id, traceback.format_exc())
        record_outcome(sessions, run_id, RunStatus.failed, message or type(exc).__name__)
        raise
    record_outcome(sessions, run_id, RunStatus.succeeded)


RESUMED = "resumed"  # a metric at the step a resumed attempt went on from; its value, the attempt


class TrainingReporter(Reporter):
    """Progress plus training detail: step of total, ETA (core.train.eta: steps, evaluations and
    checkpoints timed as they happen), latest loss, the metric history and a log. Before the first
    step (loading, tokenizing) the bar stays at the step the run starts from, a resumed run's
    checkpoint, and the stage says how far the setup is."""

    def __init__(self, sessions, run_id, total_steps: int, job=None, interval: float = 1.0, echo=None,
                 start_step: int = 0, eval_every: int | None = None, checkpoint_every: int | None = None,
                 attempt: int = 1, epochs: bool = False):
        super().__init__(sessions, run_id, job, interval, echo)
        self.epochs = epochs  # an evaluation's metrics come per epoch; its steps are optimizer steps
        self.total = total_steps
        self.pending: list[tuple[int, str, float]] = []
        self.written = 0
        self.reached = start_step
        self.latest: dict[str, float] = {"step": start_step}
        self.clock = Clock(total_steps, eval_every, checkpoint_every or 10**12)
        self.attempt = attempt
        self.log_path = run_dir(run_id) / "run.log"

    def __call__(self, stage: str, fraction: float) -> None:
        if stage in PHASES:
            self.reached = int(round(fraction * self.total))
        self.clock.observe(stage, self.reached, time.monotonic())
        super().__call__(stage, fraction)

    def shown(self, stage: str, fraction: float) -> tuple[str, float]:
        if stage in PHASES:
            return stage, fraction
        setup = f"{stage} ({fraction:.0%})" if 0 < fraction < 1 else stage
        return setup, self.reached / self.total if self.total else 0.0

    def metrics(self, step: int, values: dict[str, float]) -> None:
        if "total_steps" in values:  # the loop starts: how many steps it runs, not a metric
            values = dict(values)
            self.total = self.clock.total = int(values.pop("total_steps"))
            if step > 0:  # from a checkpoint: where the curve goes on is marked
                values[RESUMED] = float(self.attempt)
            if not values:
                return
        self.pending += [(step, k, float(v)) for k, v in values.items()]
        self.latest.update(values, step=step)
        with open(self.log_path, "a", encoding="utf-8") as handle:
            at = f"step {self.reached}/{self.total} epoch {step}" if self.epochs else f"step {step}/{self.total}"
            handle.write(f"{at} " + " ".join(f"{k}={v:.5g}" for k, v in values.items()) + "\n")

    def record(self, session: Session, run: Run, stage: str, fraction: float) -> None:
        step = self.reached if stage in PHASES else int(self.latest["step"])
        if stage in PHASES:
            run.eta_seconds, run.eta_guess = self.clock.remaining(step)
        run.step, run.total_steps = step, self.total
        if "loss" in self.latest:
            run.latest_loss = self.latest["loss"]
        for step_, name, value in self.pending:
            store.add_metric(session, self.run_id, step_, name, value)
        self.written = len(self.pending)

    def recorded(self) -> None:
        del self.pending[:self.written]  # kept until committed: a failed write is retried with them
        self.written = 0

    def meta(self, run: Run, stage: str, fraction: float) -> dict:
        return {"stage": stage, "progress": fraction, "step": run.step, "total_steps": self.total,
                "eta_seconds": run.eta_seconds, "latest_loss": run.latest_loss}

    def settle(self) -> None:
        """Best effort, when the run stops on an error: write the step it reached and the metrics not
        yet written, so that the failed run shows where it got to (a failure here is only logged)."""
        try:
            with self.sessions.begin() as session:
                run = store.get(session, Run, self.run_id)
                if not holds_lease(run):
                    return
                self.record(session, run, "stopped", 0.0)
            self.recorded()
        except Exception as exc:
            log.warning("run %s: could not record where it stopped: %s", self.run_id, exc)

    def flush(self) -> None:
        if self.pending:
            with self.sessions.begin() as session:
                run = store.get(session, Run, self.run_id)
                check_lease(run)
                self.record(session, run, self.stage or "training", 1.0)
            self.recorded()


def reporter_for(sessions, run_id: int, job=None, echo=None) -> TrainingReporter:
    """The reporter of a training (or evaluation) run: its steps, evaluation and checkpoint
    intervals for the ETA, and the step a resume starts from (its checkpoint's)."""
    with sessions.begin() as session:
        run = store.get(session, Run, run_id)
        params, out = dict(run.params), run.output_dir
        trains = run.kind in kinds.TRAINING
    total = int(params.get("steps") or TrainConfig().steps)  # epochs and evaluations say theirs when they start
    if not trains:  # an evaluation: the steps of every seed's fine-tuning, its metrics per epoch
        return TrainingReporter(sessions, run_id, total, job=job, echo=echo, epochs=True)
    from core.train.checkpoints import checkpoint_step, latest_checkpoint

    config = TrainConfig()
    checkpoint = latest_checkpoint(Path(out)) if out else None
    return TrainingReporter(sessions, run_id, total, job=job, echo=echo, attempt=int(params.get("attempt", 1)),
                            start_step=checkpoint_step(checkpoint) if checkpoint else 0,
                            eval_every=int(params.get("eval_every") or config.eval_every),
                            checkpoint_every=int(params.get("checkpoint_every") or config.checkpoint_every))


def execute_run(sessions: sessionmaker[Session], run_id: int, job=None, echo=None) -> None:
    """Do the work of one recorded run in this process, whatever its kind: its executor (worker.kinds)
    with the reporter its kind reports through. Torch (and CUDA) load here, never in the worker's
    parent process. RQ's job (worker.queueing.jobs.run_job) and the CLI's inline runs come here."""
    if not wait_for_dependencies(sessions, run_id, job):
        return
    with sessions.begin() as session:
        run = store.get(session, Run, run_id)
        if job is not None:
            run.worker = getattr(job, "worker_name", None)
        kind = run.kind
    work = kinds.executor(kind)
    report = reporter_for(sessions, run_id, job, echo) if kinds.kind(kind).reports_steps else \
        Reporter(sessions, run_id, job, echo=echo)
    try:
        work(sessions, run_id, report)
    finally:
        if report.meta_writer is not None:  # the job's last progress, unless Redis does not answer
            report.meta_writer.drain(5.0)
