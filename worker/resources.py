"""The memory a machine has, and whether a run fits in it: checked when the run is created (against
the largest worker that serves its queue, or this machine when none is live) and again when its
job starts (against what its device has free). The estimates are core.memory's."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from core import memory
from core.configs import TrainConfig
from core.errors import ConfigError
from core.memory import Estimate
from db import store
from db.models import Run, RunKind
from worker.kinds import KINDS
from worker.machine import gpu_memory, machine_memory
from worker.run_params import adapt_config, distill_config, memory_estimate, student_shape
from worker.specs import check_trainable

log = logging.getLogger(__name__)


def _wants_gpu(device: str, gpus: int) -> bool:
    return device.startswith("cuda") or (device == "auto" and gpus > 0)


def worker_capacity(devices: dict, device: str) -> int | None:
    """The bytes a worker advertising `devices` gives a run on `device`: a GPU's memory for a CUDA
    run, its RAM otherwise; None when it does not say."""
    if device == "mps":
        return None
    if _wants_gpu(device, devices.get("cuda", 0)):
        sizes = devices.get("gpu_memory") or []
        return min(sizes) if sizes else None
    return devices.get("memory")


def capacity(device: str, queue: str) -> tuple[int | None, str, bool]:
    """(bytes, who has them, whether that is a machine's RAM, shared by its processes) that a run on
    `device` may at most have: the largest advertised by the live workers serving `queue`, else
    this machine's (None when it cannot be known, e.g. a GPU that no live worker describes)."""
    from redis.exceptions import RedisError

    from worker.queueing.queues import connect, redis_url
    from worker.queueing.serve import worker_devices

    workers = {}
    if redis_url():
        try:
            workers = worker_devices(connect(), queue)
        except (RedisError, ConfigError, OSError) as exc:
            log.info("no worker list for the memory check (%s): checking against this machine", exc)
    if workers:
        sizes = [worker_capacity(d, device) for d in workers.values()]
        if any(size is None for size in sizes):
            return None, "", False
        ram = not any(_wants_gpu(device, d.get("cuda", 0)) for d in workers.values())
        return max(sizes), f"the largest worker serving the {queue} queue has", ram
    if device.startswith("cuda") or device == "mps":
        return None, "", False  # no live worker to ask: the job checks its GPU when it starts
    gpus = gpu_memory()
    if device == "auto" and gpus:
        return max(gpus), "this machine's GPU has", False
    return machine_memory()[0], "this machine has", True


def check_fits(estimate: Estimate | None, device: str, queue: str, processes: int = 1,
               subject: str = "this run") -> None:
    """Refuse, when the run is created, a run that no machine serving it could hold."""
    if estimate is None:
        return
    size, where, ram = capacity(device, queue)
    if size is None:
        return
    # processes on a CPU share one machine's memory; on GPUs each has a GPU of its own
    problem = estimate.problem(size // processes if ram else size, where + (
        f" for each of {processes} processes" if ram and processes > 1 else ""), processes, subject)
    if problem:
        raise ConfigError(problem)


def check_fits_now(estimate: Estimate | None, device, processes: int = 1) -> None:
    """Refuse, when the job starts, a run its device has not the free memory for (a torch device)."""
    if estimate is None:
        return
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        size, where = free, f"GPU {device} has free"
    elif device.type == "cpu":
        available = machine_memory()[1]
        size, where = available // processes, "this worker's machine has free" + (
            f" for each of {processes} processes" if processes > 1 else "")
    else:
        return
    problem = estimate.problem(size, where, processes)
    if problem:
        raise ConfigError(problem)


def check_memory(estimate, config: TrainConfig, kind: RunKind, subject: str = "this run") -> None:
    """Refuse a training run that no machine serving its queue could hold."""
    check_fits(estimate, config.device, KINDS[kind].queue, config.processes, subject)


def check_pipeline_memory(session: Session, strategy: str, teacher: str, student: dict, adapt_params: dict) -> None:
    """Each step of a pipeline checked against the memory of the machines that would run it, before
    its first run is recorded (the models the steps make do not exist yet; their shapes do)."""
    teacher_shape = check_trainable(session, teacher, "teacher")
    if teacher_shape is None:
        return
    adapt = adapt_config(adapt_params)
    distill = distill_config(student)
    student_shape_ = student_shape(session, student, teacher_shape)
    adapted = [teacher_shape] + ([student_shape_] if strategy == "adapt-and-distill" and student_shape_ else [])
    if strategy == "distill-then-adapt":
        adapted = [student_shape_] if student_shape_ else []
    for shape in adapted:
        check_memory(memory.adaptation(shape, adapt), adapt.train, RunKind.adaptation, "the pipeline's adaptation")
    if student_shape_:
        check_memory(memory.distillation(teacher_shape, student_shape_, distill), distill.train, RunKind.distillation,
                     "the pipeline's distillation")


def check_memory_now(sessions: sessionmaker[Session], run_id: int, processes: int) -> None:
    """Refuse to start a training run its device has not the free memory for, before anything is
    loaded."""
    with sessions.begin() as session:
        run = store.get(session, Run, run_id)
        estimate = memory_estimate(session, run.kind, dict(run.params))
        config = (adapt_config if run.kind == RunKind.adaptation else distill_config)(dict(run.params)).train
    check_fits_here(estimate, config.device, processes)


def check_fits_here(estimate: Estimate | None, device_name: str, processes: int = 1) -> None:
    """check_fits_now on the torch device a device name resolves to in this process."""
    from core.devices import resolve_device

    device = resolve_device(device_name)
    check_fits_now(estimate, device, processes if device.type == "cpu" else 1)
