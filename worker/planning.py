"""A plan run: the largest student that meets a latency budget, measured on the worker that runs it
(core.judge.plan), for a teacher the product knows (bundled, run:ID, a folder). `adapt-distill plan`
runs it inline or on a worker (--queue); the Train and Experiment pages queue it."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from core.errors import ConfigError, ModelError
from core.judge.plan import check_budget, plan_student
from db import store
from db.models import Run, RunKind
from worker.kinds import QUEUES
from worker.lifecycle import Reporter, execute
from worker.specs import ModelSpec, check_sequence_length

PLAN_DEFAULTS = {"percentile": 95, "device": "cpu", "threads": 1, "seq_len": 128}
MOST_THREADS = 1024


def plan_params(teacher: str, latency_ms: float, **options) -> dict:
    """A plan's settings with their defaults, checked (one line for each mistake)."""
    params = {**PLAN_DEFAULTS, **{k: v for k, v in options.items() if v is not None},
              "teacher": teacher, "latency_ms": float(latency_ms)}
    check_budget(params["latency_ms"], int(params["percentile"]))
    if not 1 <= int(params["threads"]) <= MOST_THREADS:
        raise ConfigError(f"--threads must be from 1 to {MOST_THREADS:,}, got {params['threads']}")
    if int(params["seq_len"]) < 1:
        raise ConfigError(f"--seq-len must be at least 1, got {params['seq_len']}")
    return params


def create_plan(sessions: sessionmaker[Session], teacher: str, latency_ms: float, queue: str | None = None,
                **options) -> Run:
    """A queued plan run (nothing is recorded when a setting cannot work), for the workers of `queue`
    (those that would serve the student; by default its kind's, gpu)."""
    if queue is not None and queue not in QUEUES:
        raise ConfigError(f"the queue must be one of {', '.join(QUEUES)}, got '{queue}': name the queue whose "
                          f"workers would serve the student")
    params = plan_params(teacher, latency_ms, **options)
    with sessions.begin() as session:
        spec = ModelSpec.parse(teacher)
        params["teacher"] = spec.check(session)
        shape = spec.shape(session)
        if shape is None:
            raise ModelError(f"{teacher} is not a BERT model the planner can shape students from: pass a BERT "
                             f"teacher")
        check_sequence_length(int(params["seq_len"]), shape, f"teacher {teacher}")
        run = store.create_run(session, RunKind.plan, params)
        run.job_id = f"run-{run.id}"
        run.queue = queue
        return run


def execute_plan(sessions: sessionmaker[Session], run_id: int, report: Reporter) -> None:
    def body(run: Run) -> None:
        with sessions.begin() as session:
            params = dict(store.get(session, Run, run_id).params)
            spec = ModelSpec.parse(params["teacher"])
            path, shape = spec.path(session), spec.shape(session)
        plan = plan_student(shape, path, params["latency_ms"], int(params["percentile"]), params["device"],
                            int(params["threads"]), int(params["seq_len"]), progress=report)
        with sessions.begin() as session:
            run = store.get(session, Run, run_id)
            run.params = {**run.params, "result": plan_dict(plan)}

    execute(sessions, run_id, body)


def plan_dict(plan: dict) -> dict:
    """A plan as JSON: each measured shape as a dict."""
    return {**plan, "pick": plan["pick"].to_dict() if plan["pick"] else None,
            "around": [m.to_dict() for m in plan["around"]], "teacher": plan["teacher"].to_dict(),
            "candidates": [m.to_dict() for m in plan["candidates"]]}


def plan_result(sessions: sessionmaker[Session], run_id: int) -> dict | None:
    """A finished plan's result (plan_dict), None before it has one."""
    with sessions.begin() as session:
        return (store.get(session, Run, run_id).params or {}).get("result")
