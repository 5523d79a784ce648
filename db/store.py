"""Reads and writes of the store. Each function takes a session and never opens or commits
one: the caller owns the transaction (`with Session.begin() as session:`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from core.errors import NotFound
from db.models import (
    Artifact,
    Corpus,
    CurvePointRow,
    Evaluation,
    Metric,
    Run,
    RunKind,
    RunStatus,
    Task,
    VocabAnalysis,
    run_dependencies,
    utcnow,
)

T = TypeVar("T")

# What a missing row is called, and what to do about it.
NOT_FOUND = {
    Corpus: "no corpus with id {id}: `adapt-distill corpus list` shows the ids",
    Task: "no task with id {id}: `adapt-distill task list` shows the ids",
    Run: "no run with id {id}",
    VocabAnalysis: "no vocabulary analysis with id {id}",
}
# Relations read with the row, so that a caller can use them after its session has ended.
LOADED = {VocabAnalysis: (VocabAnalysis.points, VocabAnalysis.run)}
LISTED = {VocabAnalysis: (VocabAnalysis.run,)}


def get(session: Session, model: type[T], row_id: int) -> T:
    """The row of `model` with this id, or NotFound saying what to do."""
    row = session.get(model, row_id, options=[selectinload(r) for r in LOADED.get(model, ())])
    if row is None:
        raise NotFound(NOT_FOUND[model].format(id=row_id))
    return row


def rows(session: Session, model: type[T], limit: int | None = None, **equal) -> Sequence[T]:
    """The rows of `model`, newest first, where each given column equals its value (None: any)."""
    query = select(model).options(*[selectinload(r) for r in LISTED.get(model, ())]).order_by(model.id.desc())
    for column, value in equal.items():
        if value is not None:
            query = query.where(getattr(model, column) == value)
    return session.scalars(query.limit(limit)).all()


# --- corpora -------------------------------------------------------------------------------

def corpus_by_sha(session: Session, sha256: str) -> Corpus | None:
    return session.scalar(select(Corpus).where(Corpus.sha256 == sha256))


# --- labelled tasks -----------------------------------------------------------------------------

def task_by_sha(session: Session, sha256: str) -> Task | None:
    return session.scalar(select(Task).where(Task.sha256 == sha256))


def evaluation_for_run(session: Session, run_id: int) -> Evaluation:
    evaluation = session.scalar(select(Evaluation).where(Evaluation.run_id == run_id))
    if evaluation is None:
        raise NotFound(f"run {run_id} is not an evaluation")
    return evaluation


# --- runs --------------------------------------------------------------------------------

def create_run(session: Session, kind: RunKind, params: dict, parent_id: int | None = None,
               depends_on: Sequence[Run] = ()) -> Run:
    run = Run(kind=kind, params=params, parent_id=parent_id, depends_on=list(depends_on),
              status=RunStatus.queued, stage="queued", progress=0.0)
    session.add(run)
    session.flush()
    return run


def start_run(session: Session, run: Run) -> None:
    run.status = RunStatus.running
    run.started_at = run.heartbeat_at = utcnow()
    run.error = None


RUNNING_MOST = 0.99
"""The most progress a run shows before it has succeeded: a run whose steps are done still measures
its model (perplexity, the card) and is not 100% until finish_run says so."""


def set_progress(session: Session, run_id: int, stage: str, progress: float) -> None:
    run = get(session, Run, run_id)
    run.stage, run.progress, run.heartbeat_at = stage, min(float(progress), RUNNING_MOST), utcnow()


def finish_run(session: Session, run: Run, status: RunStatus, error: str | None = None) -> None:
    run.status = status
    run.error = error
    run.finished_at = utcnow()
    if status == RunStatus.succeeded:
        run.progress, run.stage = 1.0, "done"
    else:
        run.stage = status.value


def dependents(session: Session, run_id: int) -> Sequence[Run]:
    """Runs that wait on run_id."""
    return session.scalars(
        select(Run).join(run_dependencies, run_dependencies.c.run_id == Run.id)
        .where(run_dependencies.c.depends_on_id == run_id)
    ).all()


def children(session: Session, run_id: int) -> Sequence[Run]:
    return session.scalars(select(Run).where(Run.parent_id == run_id).order_by(Run.id)).all()


def refresh_pipeline(session: Session, pipeline_id: int) -> None:
    """A pipeline's (or an experiment's) status follows its steps: failed or cancelled if one is,
    succeeded when all are."""
    pipeline = get(session, Run, pipeline_id)
    if pipeline.kind not in (RunKind.pipeline, RunKind.experiment):
        return
    steps = children(session, pipeline_id)
    statuses = {s.status for s in steps}
    for bad in (RunStatus.failed, RunStatus.abandoned, RunStatus.cancelled):
        if bad in statuses:
            if pipeline.status != bad:
                failed = next(s for s in steps if s.status == bad)
                finish_run(session, pipeline, bad, f"step run {failed.id} ({failed.kind.value}) {bad.value}")
            return
    if statuses == {RunStatus.succeeded}:
        finish_run(session, pipeline, RunStatus.succeeded)
        if pipeline.kind == RunKind.pipeline:
            pipeline.output_dir = steps[-1].output_dir
    elif RunStatus.running in statuses or RunStatus.succeeded in statuses:
        if pipeline.status != RunStatus.running:
            start_run(session, pipeline)
        done = sum(s.status == RunStatus.succeeded for s in steps)
        pipeline.stage = f"step {done + 1} of {len(steps)}" if pipeline.kind == RunKind.pipeline else \
            f"{done} of {len(steps)} runs done"
        pipeline.progress = done / len(steps)


def add_metric(session: Session, run_id: int, step: int, name: str, value: float) -> None:
    session.add(Metric(run_id=run_id, step=step, name=name, value=float(value)))


def add_artifact(session: Session, run_id: int, kind: str, path: str, size: int, sha256: str) -> Artifact:
    artifact = Artifact(run_id=run_id, kind=kind, path=path, bytes=size, sha256=sha256)
    session.add(artifact)
    return artifact


# --- vocabulary analyses --------------------------------------------------------------------

def analysis_for_run(session: Session, run_id: int) -> VocabAnalysis:
    analysis = session.scalar(select(VocabAnalysis).where(VocabAnalysis.run_id == run_id))
    if analysis is None:
        raise NotFound(f"run {run_id} is not a vocabulary analysis")
    return analysis


def lock_corpus(session: Session, corpus_id: int) -> Corpus:
    """The corpus, its row locked until the transaction ends (SELECT ... FOR UPDATE)."""
    corpus = session.scalar(select(Corpus).where(Corpus.id == corpus_id).with_for_update())
    if corpus is None:
        raise NotFound(NOT_FOUND[Corpus].format(id=corpus_id))
    return corpus


def find_reusable_analysis(session: Session, corpus_id: int, base_model: str, step: int, max_added: int,
                           min_frequency: int) -> VocabAnalysis | None:
    """A finished or still running analysis with the same inputs (the threshold only moves the pick)."""
    return session.scalar(
        select(VocabAnalysis)
        .options(selectinload(VocabAnalysis.run))
        .join(Run, VocabAnalysis.run_id == Run.id)
        .where(
            VocabAnalysis.corpus_id == corpus_id,
            VocabAnalysis.base_model == base_model,
            VocabAnalysis.step == step,
            VocabAnalysis.max_added == max_added,
            VocabAnalysis.min_frequency == min_frequency,
            Run.status.in_([RunStatus.succeeded, RunStatus.running, RunStatus.queued]),
        )
        .order_by(VocabAnalysis.id.desc())
        .limit(1)
    )


def save_points(session: Session, analysis: VocabAnalysis, points) -> None:
    session.add_all(CurvePointRow(analysis_id=analysis.id, **p.to_dict()) for p in points)


def insert_once(sessions: sessionmaker[Session], find: Callable[[Session], T | None], make: Callable[[], T]
                ) -> tuple[T, bool]:
    """(row, created): the row `find` returns, else `make()` inserted. Rows keyed by a content hash
    use it: another process inserting the same content just now is found instead of failing."""
    try:
        with sessions.begin() as session:
            existing = find(session)
            if existing is not None:
                return existing, False
            row = make()
            session.add(row)
            session.flush()
            return row, True
    except IntegrityError:  # the same content was added by another process just now
        with sessions.begin() as session:
            return find(session), False
