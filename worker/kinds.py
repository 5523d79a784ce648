"""Every kind of run, in one table: what does its work, on which queue, for how long at most,
whether it writes a model, whether it resumes from a checkpoint, whether it reports steps like a
training run, and what it costs (for the progress of the pipelines and experiments that hold it).

Executors and costs are named as "module:function" and imported only when used, in the process
that does the work: a worker's parent process, the CLI and the dashboard never load torch, and this
table sits below the modules that do the work (they read it; it never imports them)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from db.models import RunKind

CPU, GPU = "cpu", "gpu"
QUEUES = (CPU, GPU)
HOUR, DAY = 3600, 86400


@dataclass(frozen=True)
class Kind:
    executor: str | None
    """"module:function(sessions, run_id, report)" that does the work; None: a parent (a pipeline or an
    experiment) whose steps are runs of their own and which has no job."""
    queue: str | None = None
    """The queue its job goes to unless the user names another."""
    timeout_s: int | None = None
    """The most its job may run before RQ stops it."""
    writes_model: bool = False
    """It leaves a model folder that the catalogue lists."""
    resumes: bool = False
    """A cancelled, failed or abandoned run can be queued again and continues from its checkpoint."""
    reports_steps: bool = False
    """It reports steps, metrics and an ETA (lifecycle.TrainingReporter) rather than stages only."""
    cost: str | None = None
    """"module:function(session, run) -> FLOPs or None", its weight in a parent's progress."""


# Fine-tuning and speed belong on the machine that trains (and serves): the gpu queue.
KINDS: dict[RunKind, Kind] = {
    RunKind.corpus_import: Kind("worker.corpora:execute_import", CPU, 12 * HOUR),  # reads many gigabytes once
    RunKind.analysis: Kind("worker.vocabulary:execute_analysis", CPU, 6 * HOUR),
    RunKind.expansion: Kind("worker.vocabulary:execute_expansion", CPU, HOUR, writes_model=True),
    RunKind.adaptation: Kind("worker.training:execute_training", GPU, 14 * DAY, writes_model=True, resumes=True,
                             reports_steps=True, cost="worker.training:training_cost"),
    RunKind.distillation: Kind("worker.training:execute_training", GPU, 14 * DAY, writes_model=True, resumes=True,
                               reports_steps=True, cost="worker.training:training_cost"),
    RunKind.evaluation: Kind("worker.evaluation:execute_evaluation", GPU, 7 * DAY, resumes=True, reports_steps=True,
                             cost="worker.evaluation:evaluation_cost"),
    RunKind.benchmark: Kind("worker.evaluation:execute_benchmark", GPU, 6 * HOUR, resumes=True),  # stages only
    RunKind.plan: Kind("worker.planning:execute_plan", GPU, HOUR),  # timed where the student would serve
    RunKind.pipeline: Kind(None),
    RunKind.experiment: Kind(None),
}

QUEUED = tuple(k for k, spec in KINDS.items() if spec.executor)  # kinds that have a job of their own
PARENTS = tuple(k for k, spec in KINDS.items() if not spec.executor)
MODEL_KINDS = tuple(k for k, spec in KINDS.items() if spec.writes_model)
RESUMABLE = tuple(k for k, spec in KINDS.items() if spec.resumes)
TRAINING = (RunKind.adaptation, RunKind.distillation)  # the kinds that train a model


def writes_model(run) -> bool:
    """Whether a run leaves a model the catalogue lists: its kind writes one, or it is an evaluation
    told to keep its fine-tuned model (`evaluate --keep`)."""
    return KINDS[run.kind].writes_model or (run.kind == RunKind.evaluation and bool((run.params or {}).get("keep")))


def kind(name: RunKind) -> Kind:
    return KINDS[name]


def resolve(dotted: str) -> Callable:
    module, _, function = dotted.partition(":")
    return getattr(importlib.import_module(module), function)


def executor(name: RunKind) -> Callable:
    """The function that does the work of a run of this kind (imported now)."""
    spec = KINDS[name]
    if spec.executor is None:
        from core.errors import ConfigError

        raise ConfigError(f"a {name.value} has no work of its own: its steps are runs of their own")
    return resolve(spec.executor)


def cost(session, run) -> float | None:
    """A run's weight in its parent's progress (FLOPs), None where its kind has none or it is unknown."""
    spec = KINDS[run.kind]
    return resolve(spec.cost)(session, run) if spec.cost else None
