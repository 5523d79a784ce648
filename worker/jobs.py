"""RQ job functions: importable functions of a run id. They load the run from the store, call
core through the service layer, and report progress to the store and the job's meta. The CLI runs
the same `execute_run` in its own process for inline runs."""

from __future__ import annotations

import signal

from rq import get_current_job

from core.errors import ConfigError
from db import store
from db.models import RunKind
from db.session import get_engine, get_sessionmaker
from worker import service


def _prepare():
    # The work horse is a fork: never reuse the parent's pooled database connections.
    get_engine().dispose(close=False)
    # Its worker forwards a stop request (SIGTERM) here: the run checkpoints and goes back to the queue.
    signal.signal(signal.SIGTERM, lambda signum, frame: service.STOPPING.set())
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return get_sessionmaker(), get_current_job()


def execute_run(sessions, run_id: int, job=None, echo=None) -> None:
    """Do the work of one recorded run in this process, whatever its kind. Torch (and CUDA) load
    here, never in the worker's parent process."""
    from worker import training

    with sessions.begin() as session:
        run = store.get_run(session, run_id)
        if job is not None:
            run.worker = getattr(job, "worker_name", None)
        kind = run.kind
    if kind == RunKind.analysis:
        service.execute_analysis(sessions, run_id, service.Reporter(sessions, run_id, job, echo=echo))
    elif kind == RunKind.expansion:
        service.execute_expansion(sessions, run_id, service.Reporter(sessions, run_id, job, echo=echo))
    elif kind == RunKind.corpus_import:
        service.execute_import(sessions, run_id, service.Reporter(sessions, run_id, job, echo=echo))
    elif kind in training.EXECUTORS:
        training.EXECUTORS[kind](sessions, run_id, training.reporter_for(sessions, run_id, job, echo))
    else:
        raise ConfigError(f"run {run_id} is a {kind.value}: its steps are runs of their own")


def analysis_job(run_id: int) -> int:
    sessions, job = _prepare()
    execute_run(sessions, run_id, job)
    return run_id


def expansion_job(run_id: int) -> int:
    sessions, job = _prepare()
    execute_run(sessions, run_id, job)
    return run_id


def import_job(run_id: int) -> int:
    """A corpus file of the import folder read into a corpus."""
    sessions, job = _prepare()
    execute_run(sessions, run_id, job)
    return run_id


def training_job(run_id: int) -> int:
    """Adaptation, distillation, evaluation or benchmark."""
    sessions, job = _prepare()
    execute_run(sessions, run_id, job)
    return run_id
