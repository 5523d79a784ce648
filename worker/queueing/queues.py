"""The Redis connection and the queues (their names and per-kind timeouts are worker.kinds'). A
connection is always passed in."""

from __future__ import annotations

import os

from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from core.errors import ConfigError
from worker.kinds import QUEUES

# Job arguments are run ids; JSON keeps anything pickled out of Redis.
SERIALIZER = JSONSerializer


# The only functions a worker runs. Anyone who can write to Redis can put a job on a queue; RQ
# would import and call whatever it names (os.system included). ProjectJob refuses the rest. The
# worker.jobs names are those of runs queued before run_job: they call it.
RUN_JOB = "worker.queueing.jobs.run_job"  # by name: the work horse imports it, never the process that queues
JOB_FUNCTIONS = frozenset({RUN_JOB, "worker.jobs.analysis_job", "worker.jobs.expansion_job", "worker.jobs.training_job",
                           "worker.jobs.import_job"})


class ForeignJob(Exception):
    """A job on our queues that names a function (or callback) that is not one of ours."""


class ProjectJob(Job):
    """An RQ job that runs only adapt-distill's job functions, with no callbacks: a job in Redis that
    names anything else fails without it being imported or called."""

    @property
    def func(self):
        if self.instance is not None or self.func_name not in JOB_FUNCTIONS:
            raise ForeignJob(f"job {self.id} names '{self.func_name}', which is not an adapt-distill job: refused")
        for kind in ("success", "failure", "stopped"):
            name = getattr(self, f"_{kind}_callback_name", None)
            if name:
                raise ForeignJob(f"job {self.id} names a {kind} callback '{name}': adapt-distill jobs have none, "
                                 f"refused")
        return super().func

    # Never import a callback, whatever the job says.
    success_callback = property(lambda self: None)
    failure_callback = property(lambda self: None)
    stopped_callback = property(lambda self: None)


def redis_url() -> str | None:
    return os.environ.get("REDIS_URL") or None


def redis_timeout() -> float:
    """Seconds any call to Redis may take before it fails (ADAPT_DISTILL_REDIS_TIMEOUT_S, default 5): a
    Redis that hangs (stopped, not refusing connections) is an error, never a wait without end. A
    worker raises it for its own blocking dequeue (RQ does), and nothing else waits on Redis."""
    try:
        value = float(os.environ.get("ADAPT_DISTILL_REDIS_TIMEOUT_S", "5"))
    except ValueError:
        raise ConfigError("ADAPT_DISTILL_REDIS_TIMEOUT_S must be a number of seconds, e.g. 5") from None
    if not value > 0:
        raise ConfigError(f"ADAPT_DISTILL_REDIS_TIMEOUT_S must be more than 0 seconds, got {value:g}")
    return value


def connect(url: str | None = None) -> Redis:
    url = url or redis_url()
    if not url:
        raise ConfigError("REDIS_URL is not set: start everything with `adapt-distill up`, or set REDIS_URL")
    timeout = redis_timeout()
    return Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def unreachable(exc: Exception) -> ConfigError:
    """A Redis failure as one line that says what to do."""
    what = "did not answer in time" if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__ else \
        "could not be reached"
    return ConfigError(f"Redis at REDIS_URL {what} ({type(exc).__name__}): is it running and answering? "
                       f"(`redis-cli ping`; the wait is ADAPT_DISTILL_REDIS_TIMEOUT_S, {redis_timeout():g} s)")


def check_queue(name: str) -> str:
    if name not in QUEUES:
        raise ConfigError(f"unknown queue '{name}': use {' or '.join(QUEUES)}")
    return name


def get_queue(name: str, connection: Redis) -> Queue:
    return Queue(check_queue(name), connection=connection, serializer=SERIALIZER, job_class=ProjectJob)
