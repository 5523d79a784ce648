"""How far a run has got, as every view shows it (the dashboard and the CLI alike): a pipeline's
progress and ETA from its steps, and the stage only where it says more than the status."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Run, RunKind, RunStatus, utcnow

QUIET_STAGES = ("queued", "done", "stopped", "cancelled", "failed", "abandoned", "succeeded")
ACTIVE = (RunStatus.queued, RunStatus.running)


def stage_note(status: str, stage: str | None) -> str:
    """The stage when it says more than the status: '' for 'cancelled' beside cancelled, 'done'
    beside succeeded or a stale 'queued'; 'training' or 'step 2 of 2' as they are."""
    return "" if not stage or stage == status or stage in QUIET_STAGES else stage


def active_steps(session: Session, runs: list[Run]) -> dict[int, list[Run]]:
    """The steps of the queued or running pipelines and experiments among `runs`, by parent id, in
    one query."""
    active = [r.id for r in runs if r.kind in (RunKind.pipeline, RunKind.experiment) and r.status in ACTIVE]
    steps: dict[int, list[Run]] = {}
    if active:
        for step in session.scalars(select(Run).where(Run.parent_id.in_(active)).order_by(Run.id)):
            steps.setdefault(step.parent_id, []).append(step)
    return steps


def _naive(moment):
    return moment.replace(tzinfo=None) if moment is not None else None


def pipeline_progress(pipeline: Run, steps: list[Run]) -> tuple[float, float | None, bool]:
    """(progress, ETA seconds, first guess) of a pipeline: its steps' progress weighted by their
    estimated cost (the training FLOPs recorded at creation; equal weights when unknown). The ETA
    is the running step's plus the cost of the steps still queued at the seconds per FLOP measured
    so far (finished steps, else the running one); a first guess until a step has finished."""
    costs = (pipeline.params or {}).get("step_costs") or {}
    weight = {s.id: float(costs.get(str(s.id)) or 0.0) for s in steps}
    if not all(weight.values()):
        weight = dict.fromkeys(weight, 1.0)
    done = {s.id: 1.0 if s.status == RunStatus.succeeded else
            float(s.progress or 0.0) if s.status == RunStatus.running else 0.0 for s in steps}
    progress = sum(weight[i] * done[i] for i in weight) / (sum(weight.values()) or 1.0)
    current = next((s for s in steps if s.status == RunStatus.running), None)
    if current is None or current.eta_seconds is None:
        return progress, None, True
    rates = [wall_seconds(s) / weight[s.id] for s in steps
             if s.status == RunStatus.succeeded and s.started_at and s.finished_at]
    measured = bool(rates)
    if not rates and current.started_at is not None:
        elapsed = (_naive(utcnow()) - _naive(current.started_at)).total_seconds()
        rates = [(elapsed + current.eta_seconds) / weight[current.id]]
    waiting = sum(weight[s.id] for s in steps if s.status == RunStatus.queued)
    eta = current.eta_seconds + waiting * sum(rates) / len(rates) if rates else None
    return progress, eta, bool(current.eta_guess) or (waiting > 0 and not measured)


def wall_seconds(run: Run) -> float | None:
    """How long a finished run took; None before it has started and finished."""
    if run.started_at is None or run.finished_at is None:
        return None
    return (_naive(run.finished_at) - _naive(run.started_at)).total_seconds()


def experiment_progress(experiment: Run, steps: list[Run]) -> tuple[float, float | None, bool]:
    """(progress, ETA seconds, first guess) of an experiment: its runs weighed by how long each
    takes. A finished run counts its wall time, a running one its time so far plus its own ETA. A
    queued one with a cost (the FLOPs recorded at creation: training and fine-tuning) counts that
    cost at the seconds per FLOP the finished runs with a cost measured; otherwise the mean time of
    the finished runs of its kind; otherwise of any kind (a first guess, as is a rate not measured
    yet). The ETA adds the running and queued runs' time left, as one worker runs them one after
    another; None until a run has finished."""
    costs = (experiment.params or {}).get("step_costs") or {}
    by_kind: dict[str, list[float]] = {}
    spent_on_costs = counted_costs = 0.0
    for step in steps:
        if step.status == RunStatus.succeeded and (seconds := wall_seconds(step)) is not None:
            by_kind.setdefault(step.kind.value, []).append(seconds)
            if costs.get(str(step.id)):
                spent_on_costs, counted_costs = spent_on_costs + seconds, counted_costs + costs[str(step.id)]
    finished = [s for times in by_kind.values() for s in times]
    if not finished:  # nothing measured: count runs, and give no ETA rather than an invented one
        done = sum(1.0 if s.status == RunStatus.succeeded else float(s.progress or 0.0)
                   if s.status == RunStatus.running else 0.0 for s in steps)
        return done / (len(steps) or 1), None, True
    rate = spent_on_costs / counted_costs if counted_costs else None

    def expected(step: Run) -> tuple[float, bool]:  # (seconds, a guess)
        if costs.get(str(step.id)) and rate is not None:
            return costs[str(step.id)] * rate, False
        known = by_kind.get(step.kind.value)
        return (sum(known) / len(known), False) if known else (sum(finished) / len(finished), True)

    guess = False
    total = spent = left = 0.0
    now = _naive(utcnow())
    for step in steps:
        if step.status == RunStatus.succeeded:
            seconds = wall_seconds(step) or 0.0
            total, spent = total + seconds, spent + seconds
        elif step.status == RunStatus.running and step.started_at is not None:
            elapsed = (now - _naive(step.started_at)).total_seconds()
            if step.eta_seconds is not None:
                remaining, guessed = step.eta_seconds, bool(step.eta_guess)
            else:
                whole, guessed = expected(step)
                remaining, guessed = max(whole - elapsed, 0.0), True
            total, spent, left, guess = total + elapsed + remaining, spent + elapsed, left + remaining, guess or guessed
        elif step.status in ACTIVE:
            seconds, guessed = expected(step)
            total, left, guess = total + seconds, left + seconds, guess or guessed
    return (spent / total if total else 0.0), left, guess


def parent_progress(parent: Run, steps: list[Run]) -> tuple[float, float | None, bool]:
    """(progress, ETA seconds, first guess) of a pipeline or an experiment from its steps."""
    return (experiment_progress if parent.kind == RunKind.experiment else pipeline_progress)(parent, steps)
