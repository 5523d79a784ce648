"""Load: a store as a busy team leaves it (1,000 runs of every kind and status, 100,000 metric rows),
then every dashboard page through Streamlit's AppTest, on SQLite and on PostgreSQL. Each page must
render without an exception in under 2 s. A real Redis; nothing is mocked.

The first runs of the module pay for imports (Streamlit, Plotly, tokenizers) and for the one-time
work of a process (migrations, the connection pool); each page is therefore rendered once untimed
before it is timed, and the page data caches (st.cache_data) are cleared before the timed run so
that its reads of the store are counted.

Then two real workers serve 50 queued runs from one Redis and one store, SQLite and PostgreSQL:
every run succeeds, once, and both workers take a share."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import build_tiny_bert, stop_process, write_corpus, write_task_csv
from rq.job import Job
from sqlalchemy import event, func, insert, select
from streamlit.testing.v1 import AppTest

from core.configs import VocabConfig
from db import store
from db.models import (
    Artifact,
    CurvePointRow,
    Evaluation,
    Measurement,
    Metric,
    ModelRecord,
    Run,
    RunKind,
    RunStatus,
    VocabAnalysis,
    utcnow,
)

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "app" / "main.py"
PAGES = sorted(p.name for p in (ROOT / "app" / "views").glob("*.py") if p.name != "__init__.py")
BUDGET_S = 2.0
RUNS = 1_000
METRICS = 100_000
HEAVY_METRICS = 10_000  # one long adaptation: loss and lr at 5,000 steps
TINY_STUDENT = {"layers": 1, "hidden": 16, "heads": 2, "intermediate": 32}
SMALL = {"seq_len": 32, "batch_size": 8, "steps": 2000, "eval_every": 200}
# How the statuses of the runs are spread (the rest succeeded).
STATUS_CYCLE = ([RunStatus.succeeded] * 10 + [RunStatus.failed] * 3 + [RunStatus.cancelled] * 2
                + [RunStatus.queued] * 2 + [RunStatus.running] * 2 + [RunStatus.abandoned])


def _set_status(run: Run, status: RunStatus, now, rng: random.Random, tiny: Path) -> None:
    run.status = status
    run.started_at = None if status == RunStatus.queued else run.created_at + timedelta(seconds=5)
    if status == RunStatus.running:
        run.heartbeat_at = now  # alive (find_dead_runs would mark a stale one abandoned)
        run.stage, run.progress = "training", rng.random()
        if run.total_steps:
            run.step = int(run.progress * run.total_steps)
            run.eta_seconds, run.latest_loss = rng.uniform(10, 9000), rng.uniform(1, 8)
    elif status.finished:
        run.finished_at = run.started_at + timedelta(minutes=rng.randint(1, 300))
        run.heartbeat_at = run.finished_at
        run.stage = "done" if status == RunStatus.succeeded else status.value
        run.progress = 1.0 if status == RunStatus.succeeded else rng.random()
        if status == RunStatus.failed:
            run.error = f"RuntimeError: CUDA out of memory (run {run.id}, generated)"
        elif status in (RunStatus.cancelled, RunStatus.abandoned):
            run.error = "cancelled by the user; resume continues from the last checkpoint"
    if status == RunStatus.succeeded and run.kind in (RunKind.expansion, RunKind.adaptation, RunKind.distillation):
        run.output_dir = str(tiny)  # every model run wrote a (real, tiny) model


def fill_store(sessions, root: Path, runs: int = RUNS, metrics: int = METRICS) -> dict:
    """Corpora, a task, a real finished analysis, experiments and pipelines created as the product
    creates them, then analyses (with their curves), expansions, adaptations, distillations,
    evaluations (with scores) and benchmarks (with speed measurements) inserted in bulk up to
    `runs` runs; statuses spread over every state; `metrics` metric rows. Returns ids the test uses."""
    from worker import corpora as corpora_
    from worker import evaluation, lifecycle, training, vocabulary
    from worker.catalogue import list_models
    from worker.experiments import create_experiment

    rng = random.Random(0)
    root.mkdir(parents=True, exist_ok=True)
    tiny = build_tiny_bert(root / "tiny", words=["the", "of", "and", "in", "with", "was", "ka", "##lo"])
    corpora = [corpora_.add_corpus(sessions, write_corpus(root / f"corpus{i}.txt", documents=300, seed=i),
                                  f"corpus {i}")[0].id for i in range(4)]
    newest_corpus = corpora[-1]
    task, _ = evaluation.add_task(sessions, write_task_csv(root / "task.csv", n=160), "classification")

    # One analysis really run: every generated analysis shows its curve and its incremental vocabulary.
    real, _ = vocabulary.create_analysis(sessions, newest_corpus, str(tiny), VocabConfig(step=20, max_added=60))
    vocabulary.execute_analysis(sessions, real.run_id, lifecycle.Reporter(sessions, real.run_id))
    with sessions.begin() as session:
        real = store.get(session, VocabAnalysis, real.id)
        points = [{c: getattr(p, c) for c in ("vocab_size", "added_tokens", "log_occurrence", "relative_gain",
                                              "tokens_per_word", "split_word_share", "embedding_params")}
                  for p in real.points]
        template = {c: getattr(real, c) for c in ("base_model", "base_vocab_size", "hidden_size",
                                                  "picked_vocab_size", "threshold_reached", "tokens_path",
                                                  "documents", "word_types", "notes")}

    # Experiments and pipelines as the product records them.
    small = {"steps": 4, "seq_len": 32, "batch_size": 4, "eval_every": 4}
    for i in range(3):
        create_experiment(sessions, corpora[i % 2], task.id, str(tiny), adapt=small, distill=small,
                          finetune={"seeds": 3, "epochs": 2, "max_length": 32},
                          bench={"latency_repeats": 30, "throughput_repeats": 2, "warmup": 1, "batch_size": 4},
                          vocab={"step": 20, "max_added": 40 + 20 * i}, name=f"experiment {i}")
    for i in range(40):
        strategy = ("adapt-then-distill", "distill-then-adapt")[i % 2]
        training.create_pipeline(sessions, strategy, corpora[i % len(corpora)], str(tiny), {**SMALL},
                                 {**SMALL, **TINY_STUDENT})
    with sessions.begin() as session:
        adapt_params = dict(session.scalars(select(Run.params).where(Run.kind == RunKind.adaptation)).first())
        distill_params = dict(session.scalars(select(Run.params).where(Run.kind == RunKind.distillation)).first())
        created = session.scalar(select(Run.id).order_by(Run.id.desc()).limit(1))

    # The rest in bulk, in the proportions a team would have: many analyses and training runs.
    now = utcnow()
    kinds = ([RunKind.analysis] * 5 + [RunKind.expansion] * 3 + [RunKind.adaptation] * 3
             + [RunKind.distillation] * 3 + [RunKind.evaluation] * 2 + [RunKind.benchmark] + [RunKind.corpus_import])
    with sessions.begin() as session:
        analyses: list[tuple[int, int]] = [(real.id, real.run_id)]
        model_runs: list[int] = []
        for n in range(runs - created):
            kind = kinds[n % len(kinds)] if n >= 20 else RunKind.analysis
            kind = RunKind.plan if n % 97 == 50 else kind  # a few plans for a latency budget
            corpus_id = newest_corpus if rng.random() < 0.5 else rng.choice(corpora)
            created_at = now - timedelta(minutes=10 * (runs - n))
            if kind == RunKind.analysis:
                step = 10 * (1 + n % 7)
                run = Run(kind=kind, params={"corpus_id": corpus_id, "base_model": template["base_model"], "step": step,
                                             "max_added": 60, "threshold": 0.01, "min_frequency": 2})
            elif kind == RunKind.expansion:
                analysis_id, parent = analyses[-1] if rng.random() < 0.3 else rng.choice(analyses)
                size = template["base_vocab_size"] + rng.randint(1, 60)
                run = Run(kind=kind, parent_id=parent, params={"analysis_id": analysis_id, "vocab_size": size,
                                                               "output_dir": str(root / "models" / str(n))})
            elif kind == RunKind.adaptation:
                run = Run(kind=kind, params={**adapt_params, "corpus_id": corpus_id}, total_steps=SMALL["steps"])
            elif kind == RunKind.distillation:
                run = Run(kind=kind, params={**distill_params, "corpus_id": corpus_id}, total_steps=SMALL["steps"])
            elif kind == RunKind.evaluation:
                if not model_runs:
                    continue
                run = Run(kind=kind, params={"seeds": 3, "epochs": 5, "model": f"run:{rng.choice(model_runs)}",
                                             "task_id": task.id})
            elif kind == RunKind.plan:
                run = Run(kind=kind, params={"teacher": "bundled", "latency_ms": 10.0, "percentile": 95,
                                             "device": "cpu", "threads": 1, "seq_len": 128})
            elif kind == RunKind.corpus_import:
                run = Run(kind=kind, params={"file": f"exports/pubmed-{n}.jsonl.gz", "name": None, "format": None,
                                             "text_field": "text", "source_bytes": rng.randint(1, 8) << 30,
                                             "corpus_id": corpus_id, "created": rng.random() < 0.5})
            else:
                specs = [f"run:{i}" for i in rng.sample(model_runs, min(3, len(model_runs)))]
                run = Run(kind=kind, params={"models": ["bundled", *specs], "corpus_id": None, "seq_len": 128,
                                             "batch_size": 32})
            run.created_at, run.stage, run.progress = created_at, "queued", 0.0
            session.add(run)
            session.flush()
            run.job_id = f"run-{run.id}"
            _set_status(run, STATUS_CYCLE[n % len(STATUS_CYCLE)], now, rng, tiny)
            if kind == RunKind.analysis:
                analysis = VocabAnalysis(run_id=run.id, corpus_id=corpus_id, step=run.params["step"], max_added=60,
                                         threshold=0.01, min_frequency=2, created_at=created_at, **template)
                session.add(analysis)
                session.flush()
                analyses.append((analysis.id, run.id))
                if run.status == RunStatus.succeeded:
                    session.add_all(CurvePointRow(analysis_id=analysis.id, **p) for p in points)
                    session.add(Artifact(run_id=run.id, kind="incremental_vocab", path=template["tokens_path"],
                                         bytes=100, sha256="0" * 64))
            elif kind in (RunKind.expansion, RunKind.adaptation, RunKind.distillation) \
                    and run.status == RunStatus.succeeded:
                model_runs.append(run.id)
        # The newest analysis of the newest corpus (what the Vocabulary page opens) is finished.
        newest = session.scalar(select(VocabAnalysis).where(VocabAnalysis.corpus_id == newest_corpus)
                                .order_by(VocabAnalysis.id.desc()).limit(1))
        if newest.run.status != RunStatus.succeeded:
            newest.run.status, newest.run.stage, newest.run.progress = RunStatus.succeeded, "done", 1.0
            newest.run.finished_at = now
            session.add_all(CurvePointRow(analysis_id=newest.id, **p) for p in points)

    # Statuses of the runs created by the product, then their pipelines and experiments follow.
    with sessions.begin() as session:
        for n, run in enumerate(session.scalars(select(Run).where(Run.id <= created).order_by(Run.id))):
            if run.kind not in (RunKind.pipeline, RunKind.experiment) and run.id != real.run_id:
                run.created_at = now - timedelta(minutes=10 * (runs + created - n))
                _set_status(run, STATUS_CYCLE[n % len(STATUS_CYCLE)], now, rng, tiny)
        session.flush()
        for parent in session.scalars(select(Run.id).where(Run.kind.in_([RunKind.pipeline, RunKind.experiment]))):
            store.refresh_pipeline(session, parent)

    with sessions.begin() as session:
        list_models(session)  # registers every finished run's model, as the worker does when a run ends
        by_spec = {spec: model_id for model_id, spec in session.execute(select(ModelRecord.id, ModelRecord.spec))}
        bundled = by_spec["bundled"]
        evaluations = session.scalars(select(Run).where(Run.kind == RunKind.evaluation)).all()
        for run in evaluations:
            existing = session.scalar(select(Evaluation).where(Evaluation.run_id == run.id))
            if existing is None:
                existing = Evaluation(run_id=run.id, model_id=by_spec.get(run.params["model"], bundled),
                                      task_id=task.id, metric="accuracy", seeds=3, settings={})
                session.add(existing)
            if run.status == RunStatus.succeeded:
                mean = rng.uniform(0.5, 0.95)
                test = {"accuracy": mean, "accuracy_std": 0.01, "macro_f1": mean - 0.05, "macro_f1_std": 0.02,
                        "seeds": 3, "per_seed": [{"accuracy": mean}] * 3}
                existing.results = {"metric": "accuracy", "lr": 5e-5, "test": test, "dev": test, "seeds": [],
                                    "converged": True, "seconds": 60.0}
                run.params = {**run.params, "result": {"metric": "accuracy", "lr": 5e-5, "converged": True,
                                                       "seconds": 60.0, "test": test, "dev": test}}
        for run in session.scalars(select(Run).where(Run.kind == RunKind.benchmark,
                                                     Run.status == RunStatus.succeeded)):
            for spec in run.params["models"]:
                model_id = by_spec.get(spec)
                if model_id is not None:
                    session.add(Measurement(model_id=model_id, run_id=run.id, kind="speed",
                                            context="cpu · seq 128 · batch 1 and 32",
                                            values={"latency_ms_p50": rng.uniform(1, 20), "latency_ms_p95": 25.0,
                                                    "throughput_per_s": rng.uniform(50, 900),
                                                    "speedup_vs_first": rng.uniform(1, 4),
                                                    "throughput_speedup_vs_first": 2.0, "params": 100_000}))
        trained = session.scalars(select(Run.id).where(Run.kind.in_([RunKind.adaptation, RunKind.distillation]))
                                  .order_by(Run.id)).all()
        scored = [r.id for r in evaluations]
        heavy = trained[-1]
        total = session.scalar(select(Run.id).order_by(Run.id.desc()).limit(1))

    # Metric rows: one long run, then loss/lr/held-out losses of every training run and the dev
    # curves of every evaluation, until `metrics` rows exist.
    rows = [{"run_id": heavy, "step": s, "name": name, "value": v, "created_at": now}
            for s in range(1, HEAVY_METRICS // 2 + 1) for name, v in (("loss", 8 / s ** 0.3), ("lr", 5e-4))]
    per_run = (metrics - len(rows)) // (len(trained) - 1 + len(scored))
    for run_id in trained[:-1]:
        for k in range(per_run):
            name = ("loss", "lr", "heldout_loss", "relation_loss")[k % 4]
            rows.append({"run_id": run_id, "step": 10 * (k // 4 + 1), "name": name, "value": rng.random(),
                         "created_at": now})
    for run_id in scored:
        for k in range(per_run):
            rows.append({"run_id": run_id, "step": k // 3 + 1, "name": f"seed{k % 3}/dev_accuracy",
                         "value": rng.random(), "created_at": now})
    rows += [dict(rows[-1], step=rows[-1]["step"] + 1 + i) for i in range(metrics - len(rows))]
    with sessions.begin() as session:
        for start in range(0, len(rows), 10_000):
            session.execute(insert(Metric), rows[start:start + 10_000])
    return {"runs": total, "metrics": len(rows), "heavy_run": heavy, "tiny": tiny}


def check_page(page: str, query: dict | None, at: AppTest) -> None:
    """What a page must show with a full store: the timed run drew the page, not an empty shell."""
    assert not at.exception, f"{page}: {at.exception}"
    # The only errors shown are the generated failures of runs (a user-fixable problem would be one too).
    assert all("generated" in e.value for e in at.error), f"{page}: {[e.value for e in at.error]}"
    charts, tables = len(at.get("plotly_chart")), len(at.dataframe)
    if page == "home.py":
        assert next(m.value for m in at.metric if m.label == "Corpora") == "4"
    elif page == "runs.py":
        assert tables and len(at.dataframe[0].value) == 15, "a page of the newest runs"
        assert at.number_input(key="runs_page").label == f"Page (of {-(-RUNS // 15)})", "the rest in pages"
        if query:
            assert charts == 2, "the loss and learning-rate curves of the long run"
    elif page == "vocabulary.py":
        assert charts == 1, "the curve of the newest analysis"
    elif page in ("models.py", "experiments.py"):
        assert tables and charts, f"{page}: {tables} tables, {charts} charts"


def render(page: str, query: dict | None = None) -> tuple[AppTest, float]:
    """The app from its entry point, switched to app/views/<page>; (the app, seconds of that run).
    The first run of an AppTest (the Overview page) also sets up AppTest itself, so it is not timed:
    the timed run is the one after switch_page, the Overview page included."""
    import streamlit as st

    at = AppTest.from_file(str(MAIN), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    at.query_params.update(query or {})
    at.switch_page(f"views/{page}")
    st.cache_data.clear()
    start = time.perf_counter()
    at.run()
    return at, time.perf_counter() - start


@pytest.mark.tried('1,000 runs and 100,000 metric rows in the store: every dashboard page under 2 s')
def test_every_page_renders_quickly_with_a_full_store(db_url, redis, tmp_path, monkeypatch):
    from db.session import get_sessionmaker

    home = tmp_path / "home"
    monkeypatch.setenv("ADAPT_DISTILL_HOME", str(home))
    monkeypatch.setenv("DATABASE_URL", db_url)
    sessions = get_sessionmaker(db_url)
    start = time.perf_counter()
    filled = fill_store(sessions, home / "generated")  # inside the data folder, which the dashboard may read
    fill_seconds = time.perf_counter() - start
    with sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == RUNS
        assert session.scalar(select(func.count()).select_from(Metric)) == METRICS
        kinds = dict(session.execute(select(Run.kind, func.count()).group_by(Run.kind)).all())
        statuses = dict(session.execute(select(Run.status, func.count()).group_by(Run.status)).all())
    assert set(kinds) == set(RunKind) and set(statuses) == set(RunStatus), (kinds, statuses)

    cases = [(page, None) for page in PAGES] + [("runs.py", {"run": str(filled["heavy_run"])})]
    timings = []
    for page, query in cases:
        render(page, query)  # warm-up: imports and per-process setup are not what a user waits for
        at, seconds = render(page, query)
        check_page(page, query, at)
        timings.append((page + (f"?run={query['run']}" if query else ""), seconds))
    # The Models page summarises every model with its evaluations: a fixed number of statements,
    # not one (or two) per evaluation.
    from app.data import models as models_data
    from db.session import get_engine

    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    event.listen(get_engine(db_url), "before_cursor_execute", count)
    try:
        rows = models_data.list_models(sessions)
    finally:
        event.remove(get_engine(db_url), "before_cursor_execute", count)
    evaluated = sum(len(r["scores"]) for r in rows)
    assert kinds[RunKind.evaluation] >= 100 and evaluated >= 50, (kinds, evaluated)
    assert len(statements) < 30, f"{len(statements)} statements for {len(rows)} models and their evaluations"

    dialect = db_url.split(":")[0].split("+")[0]
    table = "\n".join(f"  {page:<22} {seconds:6.3f} s" for page, seconds in timings)
    print(f"\n{dialect}: {RUNS} runs ({', '.join(f'{n} {k.value}' for k, n in kinds.items())}), "
          f"{METRICS:,} metric rows, filled in {fill_seconds:.1f} s\n{table}")
    slow = [(page, round(seconds, 3)) for page, seconds in timings if seconds >= BUDGET_S]
    assert not slow, f"pages slower than {BUDGET_S} s on {dialect}: {slow}\n{table}"


# --- two workers, one queue, one store ---------------------------------------------------------------

WORKER_RUNS = 50


def _start_worker(env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--queues", "cpu,gpu"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)


@pytest.mark.integration
@pytest.mark.tried('two workers serve 50 queued runs on one store (SQLite and PostgreSQL)')
def test_two_workers_serve_fifty_queued_runs_each_exactly_once(db_url, redis, redis_url, tmp_path, monkeypatch):
    """Two real `adapt-distill worker` processes against one Redis and one store: 50 queued
    vocabulary analyses (5 corpora x 10 settings, on a tiny BERT) all succeed, each executed by
    exactly one worker exactly once, and both workers take a share."""
    from rq import Worker

    from db.session import get_sessionmaker
    from worker import corpora as corpora_
    from worker.queueing.queues import SERIALIZER, get_queue
    from worker.vocabulary import submit_analysis

    home = tmp_path / "home"
    monkeypatch.setenv("ADAPT_DISTILL_HOME", str(home))
    monkeypatch.setenv("DATABASE_URL", db_url)
    sessions = get_sessionmaker(db_url)
    tiny = build_tiny_bert(home / "models" / "tiny")
    corpora = [corpora_.add_corpus(sessions, write_corpus(tmp_path / f"c{i}.txt", documents=150, seed=i))[0].id
               for i in range(5)]
    settings = [VocabConfig(step=step, max_added=max_added, min_frequency=min_frequency)
                for step, max_added in ((10, 30), (20, 60), (15, 45), (25, 50), (30, 60))
                for min_frequency in (1, 2)]
    assert len(corpora) * len(settings) == WORKER_RUNS

    env = {**os.environ, "ADAPT_DISTILL_HOME": str(home), "DATABASE_URL": db_url, "REDIS_URL": redis_url,
           "HF_HUB_OFFLINE": "1"}
    phases = {"setup": time.monotonic()}
    workers = [_start_worker(env), _start_worker(env)]
    try:
        deadline = time.monotonic() + 60  # both listen before anything is queued, so both can take work
        while len(Worker.all(connection=redis, queue=get_queue("cpu", redis), serializer=SERIALIZER)) < 2:
            assert all(w.poll() is None for w in workers), "a worker exited at start"
            assert time.monotonic() < deadline, "the workers did not register with Redis within 60 s"
            time.sleep(0.2)
        names = {w.name for w in Worker.all(connection=redis, serializer=SERIALIZER)}
        assert len(names) == 2
        phases["workers up"] = time.monotonic()

        started = time.monotonic()
        analyses = []
        for corpus_id in corpora:
            for config in settings:
                analysis, reused = submit_analysis(sessions, redis, corpus_id, str(tiny), config)
                assert not reused
                analyses.append((analysis.id, analysis.run_id, config))

        run_ids = [run_id for _, run_id, _ in analyses]
        deadline = time.monotonic() + 300
        while True:
            with sessions.begin() as session:
                runs = session.scalars(select(Run).where(Run.id.in_(run_ids))).all()
                pending = [r.id for r in runs if not r.status.finished]
            if not pending:
                break
            assert all(w.poll() is None for w in workers), "a worker died while serving"
            assert time.monotonic() < deadline, f"{len(pending)} runs not finished after 300 s: {pending}"
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        phases["served"] = time.monotonic()
    finally:
        for w in workers:  # both stop at once: each finishes the job it has, then quits
            if w.poll() is None:
                w.terminate()
        outputs = [stop_process(w) for w in workers]
    log = "\n".join(outputs)
    phases["stopped"] = time.monotonic()
    if os.environ.get("SHOW_WORKER_LOG"):
        print(log)

    with sessions.begin() as session:
        by_worker: dict[str, list[int]] = {}
        for analysis_id, run_id, config in analyses:
            run = store.get(session, Run, run_id)
            assert run.status == RunStatus.succeeded, f"run {run_id}: {run.status.value}: {run.error}"
            assert run.worker in names, f"run {run_id} ran on {run.worker!r}, not one of the two workers"
            by_worker.setdefault(run.worker, []).append(run_id)
            # A run executed twice would have saved its curve and its vocabulary artifact twice.
            analysis = store.get(session, VocabAnalysis, analysis_id)
            assert [p.added_tokens for p in analysis.points] == \
                list(range(0, config.max_added + 1, config.step)), f"run {run_id}: {len(analysis.points)} points"
            assert [a.kind for a in run.artifacts] == ["incremental_vocab"], f"run {run_id}: {run.artifacts}"
            # RQ keeps one result per execution of a job, and each worker logs each job it takes.
            job = Job.fetch(run.job_id, connection=redis, serializer=SERIALIZER)
            assert len(job.results()) == 1, f"run {run_id} was executed {len(job.results())} times"
            taken = [line for line in log.splitlines() if line.endswith(f" run {run_id} ({run.job_id})")]
            assert len(taken) == 1, f"run {run_id} was taken {len(taken)} times: {taken}"
    assert len(by_worker) == 2, f"both workers should have served runs: {({k: len(v) for k, v in by_worker.items()})}"
    assert "database is locked" not in log and "Traceback" not in log, log[-3000:]
    steps = list(phases.items())
    print(f"\n{db_url.split(':')[0].split('+')[0]}: {WORKER_RUNS} runs served in {elapsed:.1f} s, "
          f"{sorted(len(v) for v in by_worker.values())} per worker; "
          + ", ".join(f"{name} +{t - steps[i][1]:.1f} s" for i, (name, t) in enumerate(steps[1:])))
