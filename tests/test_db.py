import multiprocessing as mp

import pytest
from sqlalchemy import func, inspect, select, text

from core.errors import NotFound
from db import store
from db.migrate import upgrade
from db.models import Artifact, Corpus, CurvePointRow, Metric, Run, RunKind, RunStatus, VocabAnalysis
from db.session import get_engine, get_sessionmaker

TABLES = {"corpora", "vocab_analyses", "curve_points", "runs", "run_dependencies", "metrics", "artifacts",
          "tasks", "models", "evaluations", "measurements", "alembic_version"}


def make_corpus(session, sha="a" * 64):
    corpus = Corpus(name="c", sha256=sha, path="/x", source_name="c.txt", format="txt", bytes=1, source_bytes=1,
                    documents=1, words=1, distinct_words=1, duplicate_documents=0, mean_length=1.0)
    session.add(corpus)
    session.flush()
    return corpus


def test_migrations_create_the_schema_and_are_idempotent(db_url):
    upgrade(db_url)  # a second time changes nothing
    engine = get_engine(db_url)
    assert TABLES <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [newest_revision()]
        assert newest_revision() == "0004"  # a new migration updates this line: it is a schema change


def newest_revision() -> str:
    from alembic.script import ScriptDirectory

    from db.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_models_of_earlier_runs_are_known_after_the_upgrade(db_url):
    """0003 adds the model registry and fills it with the models runs had already written."""
    from alembic import command
    from sqlalchemy import create_engine

    from db.migrate import alembic_config
    from db.models import ModelRecord

    engine = create_engine(db_url)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0003")
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE measurements")
        connection.exec_driver_sql("DROP TABLE evaluations")
        connection.exec_driver_sql("DROP TABLE models")
        connection.exec_driver_sql("DROP TABLE tasks")
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0002'")
        for run_id, kind, status, out in ((1, "adaptation", "succeeded", "/m/1"), (2, "distillation", "failed", "/m/2"),
                                          (3, "analysis", "succeeded", None), (4, "expansion", "succeeded", "/m/4")):
            connection.execute(text(
                "INSERT INTO runs (id, kind, status, params, stage, progress, output_dir, created_at) "
                "VALUES (:id, :kind, :status, '{}', 'done', 1.0, :out, CURRENT_TIMESTAMP)"),
                {"id": run_id, "kind": kind, "status": status, "out": out})
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    engine.dispose()
    with get_sessionmaker(db_url).begin() as session:
        rows = session.scalars(select(ModelRecord).order_by(ModelRecord.run_id)).all()
        assert [(r.spec, r.kind, r.run_id, r.path) for r in rows] == [("run:1", "adaptation", 1, "/m/1"),
                                                                      ("run:4", "expansion", 4, "/m/4")]


def test_runs_metrics_artifacts_and_lineage(db_url):
    sessions = get_sessionmaker(db_url)
    with sessions.begin() as session:
        parent = store.create_run(session, RunKind.analysis, {"step": 10})
        child = store.create_run(session, RunKind.expansion, {"size": 5}, parent_id=parent.id, depends_on=[parent])
        store.start_run(session, child)
        store.add_metric(session, child.id, 1, "loss", 2.5)
        store.add_metric(session, child.id, 2, "loss", 1.5)
        store.add_artifact(session, child.id, "model", "/m", 123, "f" * 64)
        child_id, parent_id = child.id, parent.id
    with sessions.begin() as session:
        child = store.get(session, Run, child_id)
        assert child.status == RunStatus.running and child.started_at is not None
        assert [d.id for d in child.depends_on] == [parent_id] and child.parent_id == parent_id
        assert [(m.step, m.value) for m in sorted(child.metrics, key=lambda m: m.step)] == [(1, 2.5), (2, 1.5)]
        store.set_progress(session, parent_id, "measuring perplexity", 1.0)  # its steps are done ...
        assert store.get(session, Run, parent_id).progress == store.RUNNING_MOST < 1  # ... but it is not done
        store.finish_run(session, store.get(session, Run, parent_id), RunStatus.succeeded)
        assert store.get(session, Run, parent_id).progress == 1.0
        store.finish_run(session, child, RunStatus.failed, "boom: do X")
    with sessions.begin() as session:
        child = store.get(session, Run, child_id)
        assert (child.status, child.error, child.stage) == (RunStatus.failed, "boom: do X", "failed")
        assert child.finished_at >= child.started_at
        session.delete(child)
    with sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(Metric)) == 0
        assert session.scalar(select(func.count()).select_from(Artifact)) == 0
        with pytest.raises(NotFound):
            store.get(session, Run, child_id)


def test_corpus_delete_cascades_to_analyses_and_points(db_url):
    sessions = get_sessionmaker(db_url)
    with sessions.begin() as session:
        corpus = make_corpus(session)
        run = store.create_run(session, RunKind.analysis, {})
        analysis = VocabAnalysis(run_id=run.id, corpus_id=corpus.id, base_model="bundled", step=1, max_added=2,
                                 threshold=0.01, min_frequency=2)
        session.add(analysis)
        session.flush()
        session.add(CurvePointRow(analysis_id=analysis.id, vocab_size=10, added_tokens=0, log_occurrence=-5.0,
                                  relative_gain=None, tokens_per_word=1.0, split_word_share=0.0, embedding_params=0))
        corpus_id = corpus.id
    with sessions.begin() as session:
        session.delete(store.get(session, Corpus, corpus_id))
    with sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(VocabAnalysis)) == 0
        assert session.scalar(select(func.count()).select_from(CurvePointRow)) == 0


def test_same_content_is_one_corpus(db_url):
    from sqlalchemy.exc import IntegrityError

    sessions = get_sessionmaker(db_url)
    with sessions.begin() as session:
        make_corpus(session)
    with pytest.raises(IntegrityError):
        with sessions.begin() as session:
            make_corpus(session)


def _writer(url, run_id, n, queue):
    try:
        sessions = get_sessionmaker(url)
        for step in range(n):
            with sessions.begin() as session:  # a read, then a write: the classic lock upgrade
                run = store.get(session, Run, run_id)
                store.set_progress(session, run_id, "writing", step / n)
                store.add_metric(session, run.id, step, "loss", float(step))
        queue.put(None)
    except Exception as exc:  # reported to the parent, which fails the test with it
        queue.put(repr(exc))


def test_several_processes_write_sqlite_at_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    upgrade(url)
    with get_sessionmaker(url).begin() as session:
        run_id = store.create_run(session, RunKind.analysis, {}).id
    context = mp.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_writer, args=(url, run_id, 60, queue)) for _ in range(4)]
    for w in workers:
        w.start()
    results = [queue.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(30)
    assert results == [None] * 4
    with get_sessionmaker(url).begin() as session:
        assert session.scalar(select(func.count()).select_from(Metric)) == 240
    with get_engine(url).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def _migrator(url, queue):
    try:
        upgrade(url)
        queue.put(None)
    except Exception as exc:
        queue.put(repr(exc))


def test_processes_starting_together_migrate_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    context = mp.get_context("spawn")
    queue = context.Queue()
    procs = [context.Process(target=_migrator, args=(url, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert results == [None] * 3
    with get_engine(url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1


def test_migrations_match_the_models(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from db.models import Base

    with get_engine(db_url).connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
