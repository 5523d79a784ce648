"""The `adapt-distill worker` process: an RQ worker that outlives Redis outages, and a reconciler
that keeps Redis (a queue) in line with the store (the truth).

- The job running in the work horse never talks to Redis for anything it needs (progress and
  cancel live in the store), so a Redis outage does not touch it.
- The worker's own heartbeats to Redis skip a beat while Redis is away, and when RQ's loop gives
  up on a lost connection, the worker starts again once Redis answers (backoff up to a minute).
- The reconciler, when the worker starts and every ADAPT_DISTILL_RECONCILE_S seconds (60), queues
  again the runs the store holds as queued that Redis does not have, and marks abandoned the
  running runs whose heartbeat stopped. Runs claim themselves in the store (`service.claim`), so a
  run queued twice still runs once.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import signal
import sys
import threading
import time

from redis import Redis
from redis.exceptions import RedisError
from rq import Worker, worker_registration
from rq.exceptions import StopRequested
from rq.worker_registration import REDIS_WORKER_KEYS

from core.errors import ConfigError
from worker.machine import gpu_memory, machine_memory
from worker.queueing.queues import SERIALIZER, ProjectJob, connect, get_queue

log = logging.getLogger(__name__)


DEVICES_FIELD = "adapt_distill_devices"


def local_devices() -> dict:
    """{"cuda": GPUs this process may use, "mps": Apple GPU, "memory": RAM bytes, "gpu_memory": bytes
    of each GPU (the memory check of worker.resources reads them)}, found without initialising CUDA (the
    worker forks its jobs; CUDA must first start in the job): the NVIDIA driver's GPU list, narrowed
    by CUDA_VISIBLE_DEVICES."""
    try:
        gpus = len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        gpus = 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [part for part in visible.split(",") if part.strip()]
        ids = ids[:next((i for i, part in enumerate(ids) if part.strip().startswith("-")), len(ids))]
        gpus = min(gpus, len(ids))
    return {"cuda": gpus, "mps": sys.platform == "darwin" and platform.machine() == "arm64",
            "memory": machine_memory()[0], "gpu_memory": gpu_memory()[:gpus] if gpus else []}


def advertised(connection: Redis, worker: Worker) -> dict:
    """The devices a worker advertises: {"cuda": GPUs, "mps": bool} (none when it says nothing)."""
    raw = connection.hget(worker.key, DEVICES_FIELD)
    return json.loads(raw) if raw else {"cuda": 0, "mps": False}


def worker_devices(connection: Redis, queue: str) -> dict[str, dict]:
    """{worker name: its devices} of the live workers serving `queue`."""
    return {w.name: advertised(connection, w)
            for w in Worker.all(connection=connection, queue=get_queue(queue, connection))}


def check_device_served(connection: Redis, queue: str, device: str, processes: int = 1) -> None:
    """Refuse a run whose --device (and, on GPUs, --gpus) no live worker on its queue has (when some
    serve it: with none, the run waits for one to start)."""
    device = (device or "auto").strip()
    if device in ("cpu", "auto"):  # auto: GPUs where the worker has them, else its CPU (several processes too)
        return
    workers = worker_devices(connection, queue)
    if not workers:
        return
    # several processes take the first GPUs the worker sees; one process takes the GPU it names
    needed = processes if processes > 1 else (int(device.split(":")[1]) + 1 if device.startswith("cuda:") else 1)
    kind = "mps" if device == "mps" else "cuda"
    able = [name for name, d in workers.items() if (d.get("mps") if kind == "mps" else d.get("cuda", 0) >= needed)]
    if not able:
        have = ", ".join(f"{d.get('cuda', 0)} GPU(s)" for d in workers.values())
        what = device if processes == 1 else f"{processes} GPUs ({device})"
        raise ConfigError(f"no worker serving the {queue} queue can run on {what} ({len(workers)} worker(s): {have}): "
                          f"start `adapt-distill worker --queues {queue}` on a machine with that device, or use "
                          f"--device auto")


def _env_seconds(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


class ProjectWorker(Worker):
    """RQ's forking worker running only ProjectJobs, whose heartbeats to Redis tolerate an outage:
    the horse (the training run) is left to work while Redis is away."""

    job_class = ProjectJob
    stopping = False  # a stop was asked for (SIGTERM, Ctrl-C): do not start again

    def request_stop(self, signum, frame):
        self.stopping = True
        super().request_stop(signum, frame)

    def handle_warm_shutdown_request(self):
        """Ask the running job to save a checkpoint and go back to the queue (see worker.jobs), rather
        than to run to its end while the machine is being stopped."""
        if self.horse_pid:
            self.log.info("stopping: the running job saves a checkpoint and goes back to the queue")
            try:
                os.kill(self.horse_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        else:
            super().handle_warm_shutdown_request()

    def heartbeat(self, timeout=None, pipeline=None):
        try:
            super().heartbeat(timeout, pipeline)
            if pipeline is None and not self.connection.sismember(REDIS_WORKER_KEYS, self.key):
                self.register_again()
        except RedisError as exc:
            self.log.warning("Redis is unreachable (%s); the running job goes on", exc)

    def register_birth(self):
        super().register_birth()
        self.advertise()

    def advertise(self, pipeline=None) -> None:
        """Write the devices this worker's runs can use into its entry in Redis (the dashboard and the
        CLI check a run's --device against them)."""
        (pipeline or self.connection).hset(self.key, DEVICES_FIELD, json.dumps(local_devices()))

    def register_again(self) -> None:
        """A fresh or flushed Redis forgot this worker: be listed (and counted) again."""
        with self.connection.pipeline() as pipeline:
            pipeline.hset(self.key, mapping=self.serialize())
            self.advertise(pipeline)
            worker_registration.register(self, pipeline)
            pipeline.expire(self.key, self.worker_ttl + 60)
            pipeline.execute()

    def maintain_heartbeats(self, job, execution):
        try:
            super().maintain_heartbeats(job, execution)
        except RedisError as exc:
            self.log.warning("Redis is unreachable (%s); job %s goes on", exc, job.id)


def reconcile(sessions, connection: Redis) -> tuple[list[int], list[int]]:
    """(queued again, marked abandoned). One reconciler at a time across workers (a lock in Redis
    that expires), so two workers never queue the same lost run together."""
    from worker.queueing.submit import requeue_lost
    from worker.run_state import find_dead_runs

    lock = connection.lock("adapt-distill:reconcile", timeout=120, blocking=False)
    if not lock.acquire():
        return [], []
    try:
        lost = requeue_lost(sessions, connection, older_than=_env_seconds("ADAPT_DISTILL_LOST_AFTER_S", 60))
        dead = find_dead_runs(sessions, stale_after=_env_seconds("ADAPT_DISTILL_DEAD_AFTER_S", 60))
        return lost, dead
    finally:
        try:
            lock.release()
        except RedisError:  # expired, or Redis went away: it frees itself
            pass


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def reconcile_and_report(sessions, connection: Redis) -> None:
    lost, dead = reconcile(sessions, connection)
    if lost:
        _say(f"queued again {len(lost)} run(s) the store holds as queued but Redis had lost: "
             f"{', '.join(map(str, lost))}")
    if dead:
        _say(f"marked {len(dead)} run(s) abandoned, their worker stopped answering: {', '.join(map(str, dead))}")


class Reconciler(threading.Thread):
    """Reconciles every `every` seconds until stopped; a failure (Redis or the database away) is
    logged and tried again next time."""

    def __init__(self, sessions, url: str | None, every: float):
        super().__init__(name="reconciler", daemon=True)
        self.sessions, self.url, self.every = sessions, url, every
        self.stopped = threading.Event()

    def run(self) -> None:
        connection = None
        while not self.stopped.wait(self.every):
            try:
                connection = connection or connect(self.url)
                reconcile_and_report(self.sessions, connection)
            except Exception as exc:
                log.warning("reconciling the store with Redis failed (%s); trying again in %.0fs", exc, self.every)


def _stop(signum, frame):
    raise StopRequested()


def serve(sessions, queue_names: list[str], burst: bool = False, url: str | None = None) -> None:
    """Run the worker until it is asked to stop (SIGTERM, Ctrl-C) or, with burst, the queues are
    empty; start it again after Redis comes back."""
    delay, max_delay = 1.0, 60.0
    reconciler = None
    try:
        while True:
            worker = None
            try:
                connection = connect(url)
                connection.ping()
                reconcile_and_report(sessions, connection)
                if reconciler is None and not burst:
                    reconciler = Reconciler(sessions, url, _env_seconds("ADAPT_DISTILL_RECONCILE_S", 60))
                    reconciler.start()
                queues = [get_queue(name, connection) for name in queue_names]
                worker = ProjectWorker(queues, connection=connection, serializer=SERIALIZER, job_class=ProjectJob)
                delay = 1.0
                worker.work(burst=burst, logging_level="INFO", with_scheduler=False)
            except RedisError as exc:
                _say(f"Redis is unreachable ({type(exc).__name__}: {exc}); trying again in {delay:.0f}s")
            if burst or (worker is not None and (worker.stopping or worker._stop_requested)):
                return
            if worker is not None:
                _say(f"the worker lost Redis; starting again in {delay:.0f}s")
            for signum in (signal.SIGTERM, signal.SIGINT):  # RQ's handlers belong to the worker that stopped
                signal.signal(signum, _stop)
            time.sleep(delay)
            delay = min(delay * 2, max_delay)
    except (StopRequested, KeyboardInterrupt):
        return
    finally:
        if reconciler is not None:
            reconciler.stopped.set()
