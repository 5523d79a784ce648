"""The Runs page's reads and actions: every run with its progress and ETA, one run with its
lineage, metrics and log, and cancel, resume and run again."""

from __future__ import annotations

from pathlib import Path

from redis import Redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.data.common import ACTIVE, compact_count, duration, queue_runs, when
from core.formatting import table_value
from db import settings, store
from db.models import Corpus, Metric, Run, RunKind, RunStatus
from worker import kinds
from worker.naming import run_subject
from worker.progress import active_steps, parent_progress
from worker.specs import ModelSpec

# Kinds as the rows name them (RunKind values).
TRAINABLE = tuple(kind.value for kind in kinds.TRAINING)  # adaptation, distillation: curves, log, run again
RESUMABLE_KINDS = tuple(kind.value for kind in kinds.RESUMABLE)  # continue from their checkpoints
PARENTS = tuple(kind.value for kind in kinds.PARENTS)  # pipelines and experiments: their steps are runs


def run_row(run: Run, steps: list[Run] | None = None) -> dict:
    """One line of the runs list; an active pipeline's progress and ETA come from its `steps`."""
    running = run.status == RunStatus.running
    progress, eta, guess = float(run.progress or 0.0), run.eta_seconds if running else None, bool(run.eta_guess)
    if steps and run.status.value in ACTIVE:
        progress, eta, guess = parent_progress(run, steps)
    counts = kinds.kind(run.kind).reports_steps and run.step is not None and bool(run.total_steps)
    return {
        "id": run.id, "kind": run.kind.value, "status": run.status.value, "stage": run.stage,
        "subject": run_subject(run), "done": f"{run.step:,} / {run.total_steps:,}" if counts else "",
        "progress": min(max(progress, 0.0), 1.0), "step": run.step, "total_steps": run.total_steps,
        "eta_seconds": eta, "eta_guess": guess and eta is not None,
        "eta": (duration(eta) + (" (first guess)" if guess else "")) if eta is not None else "",
        "latest_loss": run.latest_loss, "parent_id": run.parent_id, "error": run.error,
        "created": when(run.created_at), "created_short": run.created_at.strftime("%b %d %H:%M")
        if run.created_at else "", "finished": when(run.finished_at),
    }


# The runs table at 1280 px: the wide layout leaves 820 px for it. Each column is as wide as its
# longest cell in the table's 13 px font (CHAR_PX a character, CELL_PAD around it); a run's label
# longer than its column is shortened with "…", never cut mid-character by the grid.
COLUMN_PX = {"id": 48, "run": 244, "status": 86, "progress": 96, "done": 140, "ETA": 90, "created": 106}
TABLE_PX, CHAR_PX, CELL_PAD = 820, 7.2, 16
KIND_NAMES = tuple(kind.value for kind in RunKind)
STATUS_NAMES = tuple(status.value for status in RunStatus)
MODEL_KINDS = tuple(kind.value for kind in kinds.MODEL_KINDS)


def fits(column: str) -> int:
    """How many characters a cell of the column shows whole."""
    return int((COLUMN_PX[column] - CELL_PAD) // CHAR_PX)


def run_label(row: dict) -> str:
    """A run as one phrase: 'evaluation of run:12', 'adapt-then-distill student L3-H192',
    'pipeline adapt-then-distill' (a model's kind is in its name)."""
    if row["kind"] in MODEL_KINDS and row["subject"]:
        return row["subject"]
    kind = "import" if row["kind"] == RunKind.corpus_import.value else row["kind"]
    return f"{kind} {row['subject']}".strip()


def _clip(text: str, most: int) -> str:
    return text if len(text) <= most else text[:most - 1].rstrip() + "…"


def _done(row: dict) -> str:
    """'150 / 1,500'; as '149,999/150,000' or '9.9M / 10.0M' when the column is too narrow for it."""
    if not row["done"]:
        return ""
    for text in (row["done"], row["done"].replace(" / ", "/")):
        if len(text) <= fits("done"):
            return text
    return f"{compact_count(row['step'])} / {compact_count(row['total_steps'])}"


def table_rows(rows: list[dict]) -> list[dict]:
    """The Runs table's cells: every one fits its column (COLUMN_PX) at 1280 px."""
    return [{"id": r["id"], "run": _clip(run_label(r), fits("run")), "status": r["status"],
             "progress": 100 * r["progress"], "done": _done(r),
             "ETA": ("~" if r["eta_guess"] else "") + duration(r["eta_seconds"]) if r["eta_seconds"] is not None
             else "", "created": r["created_short"]} for r in rows]


def benchmark_rows(result: dict) -> list[dict]:
    """A benchmark's models as a table: the Models page's columns, numbers kept numbers (the page
    formats them: sizes in MB, speed-ups as '4.6x')."""
    return [{"model": Path(m["model"]).name if Path(str(m["model"])).is_absolute() else m["model"],
             "parameters": table_value("parameters", m.get("params")), "size": table_value("size", m.get("size_bytes")),
             "p50 ms": m.get("latency_ms_p50"),
             "p95 ms": m.get("latency_ms_p95"), "seq/s": m.get("throughput_per_s"),
             "speed-up": m.get("speedup_vs_first"), "noisy": "⚠" if m.get("noisy") else ""}
            for m in result.get("models") or []]


def any_run(sessions: sessionmaker[Session]) -> bool:
    with sessions.begin() as session:
        return session.scalar(select(Run.id).limit(1)) is not None


def _rows(session: Session, runs: list[Run]) -> list[dict]:
    steps = active_steps(session, runs)
    return [run_row(r, steps.get(r.id)) for r in runs]


def _newest_active(session: Session) -> int | None:
    """The newest queued or running run's id; None when nothing is."""
    return session.scalar(select(Run.id).where(Run.status.in_([RunStatus.queued, RunStatus.running]))
                          .order_by(Run.id.desc()).limit(1))


def any_active(sessions: sessionmaker[Session]) -> bool:
    """Whether a run is queued or running (the Runs page refreshes itself while one is)."""
    with sessions.begin() as session:
        return _newest_active(session) is not None


def runs_page(sessions: sessionmaker[Session], limit: int, run_id: int | None, kinds_shown: list[str] | None = None,
              statuses: list[str] | None = None, page: int = 0) -> dict:
    """The Runs page in one read, after marking the running runs whose worker stopped answering as
    abandoned: {"runs": one page of the list, newest first, of the kinds and statuses asked for (None:
    all); "total": how many runs those are; "active": whether any run is queued or running, on this
    page or not (the page refreshes itself while one is); "view": everything shown about run run_id (when None, the
    run at work: `opening_run`; None when there is none)}. The chosen run's row in the list and its
    view are made from the same row object, so the header, the table and the progress bar agree."""
    from worker.run_state import find_dead_runs

    find_dead_runs(sessions)
    with sessions.begin() as session:
        query = select(Run)
        if kinds_shown:
            query = query.where(Run.kind.in_([RunKind(k) for k in kinds_shown]))
        if statuses:
            query = query.where(Run.status.in_([RunStatus(s) for s in statuses]))
        total = session.scalar(select(func.count()).select_from(query.subquery()))
        runs = list(session.scalars(query.order_by(Run.id.desc()).offset(max(0, page) * limit).limit(limit)))
        rows = _rows(session, runs)
        if run_id is None and runs:
            run_id = opening_run(session, runs)
        run = session.get(Run, run_id) if run_id is not None else None  # the listed object when listed
        row = next((r for r in rows if r["id"] == run_id), None)
        return {"runs": rows, "total": total, "active": _newest_active(session) is not None,  # not only this page
                "view": _view(session, run, row) if run is not None else None}


def opening_run(session: Session, listed: list[Run]) -> int:
    """The run the page opens on: the newest that is doing work (running, with a job of its own),
    else the newest queued or running, listed on this page or not, else the newest listed."""
    working = session.scalars(select(Run).where(Run.status == RunStatus.running, Run.kind.in_(kinds.QUEUED))
                              .order_by(Run.id.desc()).limit(1)).first()
    if working is not None:
        return working.id
    active = _newest_active(session)  # listed on this page or not
    return active if active is not None else listed[0].id


def _ref(run: Run) -> dict:
    return {"id": run.id, "kind": run.kind.value, "status": run.status.value, "subject": run_subject(run)}


def _inputs(session: Session, params: dict) -> list[dict]:
    """The models a run reads, as {role, spec, run (a _ref for run:ID, else None)}."""
    inputs = []
    for role in ("model", "teacher", "init", "student_init"):
        spec = params.get(role)
        if not spec or spec in ("random", "teacher"):
            continue
        ref = None
        run_id = ModelSpec.parse(str(spec)).run_id
        if run_id is not None:
            found = session.get(Run, run_id)
            ref = _ref(found) if found is not None else None
        inputs.append({"role": "student init" if role == "student_init" else role, "spec": spec, "run": ref})
    return inputs


def _view(session: Session, run: Run, row: dict | None = None) -> dict:
    params = dict(run.params or {})
    corpus = session.get(Corpus, params["corpus_id"]) if params.get("corpus_id") is not None else None
    parent = session.get(Run, run.parent_id) if run.parent_id else None
    children = list(store.children(session, run.id))
    return {
        **(row or run_row(run, children)),
        "params": {k: v for k, v in params.items() if k not in ("result", "lease")},
        "result": params.get("result") or {},
        "output_dir": run.output_dir, "started": when(run.started_at), "worker": run.worker,
        "queue": run.queue, "job_id": run.job_id, "attempt": int(params.get("attempt", 1)),
        "corpus": {"id": corpus.id, "name": corpus.name, "words": corpus.words} if corpus else None,
        "parent": _ref(parent) if parent else None,
        "depends_on": [_ref(r) for r in run.depends_on],
        "dependents": [_ref(r) for r in store.dependents(session, run.id)],
        "children": [run_row(r) for r in children],
        "inputs": _inputs(session, params),
        "artifacts": [{"kind": a.kind, "path": a.path, "bytes": a.bytes} for a in run.artifacts],
    }


def evaluation_metric(sessions: sessionmaker[Session], run_id: int) -> str | None:
    """The metric an evaluation run selects by; None when its task (and so its record) was deleted."""
    from db.models import Evaluation

    with sessions.begin() as session:
        return session.scalar(select(Evaluation.metric).where(Evaluation.run_id == run_id))


def metric_history(sessions: sessionmaker[Session], run_id: int) -> dict[str, dict[str, list]]:
    """{metric name: {"step": [...], "value": [...]}} by step. A resumed run logs the steps after
    its checkpoint again: the value written last wins."""
    with sessions.begin() as session:
        rows = session.execute(select(Metric.name, Metric.step, Metric.value).where(Metric.run_id == run_id)
                               .order_by(Metric.id)).all()
    by_name: dict[str, dict[int, float]] = {}
    for name, step, value in rows:
        by_name.setdefault(name, {})[step] = value
    return {name: {"step": sorted(values), "value": [values[s] for s in sorted(values)]}
            for name, values in by_name.items()}


def log_tail(run_id: int, lines: int = 40) -> list[str]:
    """The last lines of a run's log (runs/<id>/run.log); [] when it has none."""
    path = settings.runs_dir() / str(run_id) / "run.log"
    if not path.is_file():
        return []
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - 200 * lines))  # log lines are short
        text = handle.read().decode("utf-8", errors="replace")
    return text.splitlines()[-lines:]


def cancel_run(sessions: sessionmaker[Session], connection: Redis | None, run_id: int, grace: float = 0.0) -> None:
    """Cancel a queued or running run (and a pipeline's steps). Without Redis the run is only
    marked: a running job still sees that within a second, saves a checkpoint and stops."""
    if connection is None:
        from worker.run_state import request_cancel

        request_cancel(sessions, run_id)
        return
    from worker.queueing.submit import cancel

    cancel(sessions, connection, run_id, grace=grace)


def resume_run(sessions: sessionmaker[Session], connection: Redis, run_id: int) -> None:
    """Queue a cancelled, failed or abandoned adaptation or distillation again, from its last checkpoint."""
    from worker.queueing.submit import resume

    connection.ping()
    resume(sessions, connection, run_id)


def _check_finished_inputs(sessions: sessionmaker[Session], run_id: int, params: dict) -> None:
    from core.errors import ConfigError

    with sessions.begin() as session:
        for item in _inputs(session, params):
            ref = item["run"]
            if ref is not None and ref["status"] != RunStatus.succeeded.value:
                raise ConfigError(f"run {run_id} reads the model of run {ref['id']}, which is {ref['status']}: "
                                  f"run that one (or its pipeline) again instead")


def run_again(sessions: sessionmaker[Session], connection: Redis, run_id: int) -> list[dict]:
    """Create and queue new runs with the settings of an adaptation, a distillation or a pipeline;
    [{run_id, kind}] with a pipeline first."""
    from core.errors import ConfigError
    from worker import run_state, training

    kind, params = run_state.copy_params(sessions, run_id)

    def create() -> list[Run]:
        if kind == RunKind.pipeline:
            with sessions.begin() as session:
                steps = [(s.kind, s.id) for s in store.children(session, run_id)]
            adapt = next((run_state.copy_params(sessions, i)[1] for k, i in steps if k == RunKind.adaptation), {})
            distill = next((run_state.copy_params(sessions, i)[1] for k, i in steps if k == RunKind.distillation), {})
            return training.create_pipeline(sessions, params["strategy"], params["corpus_id"], params["teacher"],
                                            adapt, distill, params.get("student_init"))
        if kind not in kinds.TRAINING:
            raise ConfigError(f"run {run_id} is a {kind.value}: only adaptation, distillation and pipeline runs "
                              f"can run again here")
        _check_finished_inputs(sessions, run_id, params)
        if kind == RunKind.adaptation:
            return [training.create_adaptation(sessions, params["corpus_id"], params["model"], params)]
        return [training.create_distillation(sessions, params["corpus_id"], params["teacher"], params)]

    return [{"run_id": r.id, "kind": r.kind.value} for r in queue_runs(sessions, connection, create)]
