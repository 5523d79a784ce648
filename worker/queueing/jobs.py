"""The one job function a worker runs: `run_job(run_id)`. It loads the run from the store and
hands it to the life cycle, which looks its kind up in worker.kinds; the CLI runs the same
`execute_run` in its own process for inline runs."""

from __future__ import annotations

import os
import signal

from rq import get_current_job

from db.session import get_engine, get_sessionmaker
from worker import lifecycle
from worker.queueing.embedded import die_with_parent


def run_job(run_id: int) -> int:
    """Do the work of a recorded run, whatever its kind, in the work horse RQ forked for it."""
    # The work horse is a fork: never reuse the parent's pooled database connections.
    get_engine().dispose(close=False)
    # Its worker forwards a stop request (SIGTERM) here: the run checkpoints and goes back to the queue.
    signal.signal(signal.SIGTERM, lambda signum, frame: lifecycle.STOPPING.set())
    # A worker killed outright (SIGKILL, OOM) sends nothing: the kernel then sends the same SIGTERM, so
    # the horse never trains on without its worker.
    worker = os.getppid()
    die_with_parent()
    if os.getppid() != worker:  # it died before that took effect
        lifecycle.STOPPING.set()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    lifecycle.execute_run(get_sessionmaker(), run_id, get_current_job())
    return run_id
