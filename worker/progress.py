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
    rates = [(_naive(s.finished_at) - _naive(s.started_at)).total_seconds() / weight[s.id] for s in steps
             if s.status == RunStatus.succeeded and s.started_at and s.finished_at]
    measured = bool(rates)
    if not rates and current.started_at is not None:
        elapsed = (_naive(utcnow()) - _naive(current.started_at)).total_seconds()
        rates = [(elapsed + current.eta_seconds) / weight[current.id]]
    waiting = sum(weight[s.id] for s in steps if s.status == RunStatus.queued)
    eta = current.eta_seconds + waiting * sum(rates) / len(rates) if rates else None
    return progress, eta, bool(current.eta_guess) or (waiting > 0 and not measured)
