"""Redis connection, queue names and per-kind job timeouts. A connection is always passed in."""

from __future__ import annotations

import os

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from db.models import RunKind

CPU, GPU = "cpu", "gpu"
QUEUES = (CPU, GPU)
# Job arguments are run ids; JSON keeps anything pickled out of Redis.
SERIALIZER = JSONSerializer
JOB_TIMEOUT_S = {RunKind.analysis: 6 * 3600, RunKind.expansion: 3600, RunKind.adaptation: 14 * 86400,
                 RunKind.distillation: 14 * 86400, RunKind.evaluation: 7 * 86400, RunKind.benchmark: 6 * 3600}
# Fine-tuning and speed belong on the machine that trains (and serves): the gpu queue.
QUEUE_FOR = {RunKind.analysis: CPU, RunKind.expansion: CPU, RunKind.adaptation: GPU, RunKind.distillation: GPU,
             RunKind.evaluation: GPU, RunKind.benchmark: GPU}


def redis_url() -> str | None:
    return os.environ.get("REDIS_URL") or None


def connect(url: str | None = None) -> Redis:
    url = url or redis_url()
    if not url:
        from core.errors import ConfigError

        raise ConfigError("REDIS_URL is not set: start everything with `adapt-distill up`, or set REDIS_URL")
    return Redis.from_url(url)


def get_queue(name: str, connection: Redis) -> Queue:
    if name not in QUEUES:
        from core.errors import ConfigError

        raise ConfigError(f"unknown queue '{name}': use {' or '.join(QUEUES)}")
    return Queue(name, connection=connection, serializer=SERIALIZER)
