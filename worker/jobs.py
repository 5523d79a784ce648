"""RQ job functions: importable functions of a run id. They load the run from the store, call
core through the service layer, and report progress to the store and the job's meta."""

from __future__ import annotations

from rq import get_current_job

from db.session import get_engine, get_sessionmaker
from worker import service


def _prepare():
    # The work horse is a fork: never reuse the parent's pooled database connections.
    get_engine().dispose(close=False)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return get_sessionmaker(), get_current_job()


def analysis_job(run_id: int) -> int:
    sessions, job = _prepare()
    service.execute_analysis(sessions, run_id, service.Reporter(sessions, run_id, job))
    return run_id


def expansion_job(run_id: int) -> int:
    sessions, job = _prepare()
    service.execute_expansion(sessions, run_id, service.Reporter(sessions, run_id, job))
    return run_id


def training_job(run_id: int) -> int:
    """Adaptation or distillation. Torch (and CUDA) load here, in the work horse, never in the
    worker's parent process."""
    from db import store
    from worker import training

    sessions, job = _prepare()
    with sessions.begin() as session:
        run = store.get_run(session, run_id)
        run.worker = getattr(job, "worker_name", None)
        kind = run.kind
    training.EXECUTORS[kind](sessions, run_id, training.reporter_for(sessions, run_id, job))
    return run_id
