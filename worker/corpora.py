"""Corpora as the store knows them: added from a file or imported by a worker from the server's
import folder, their token caches, and deleting them."""

from __future__ import annotations

import hashlib
from pathlib import Path

from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from core.corpus import ingest
from core.errors import Cancelled, ConfigError
from core.formatting import count, printable
from db import settings, store
from db.models import Corpus, Run, RunKind, RunStatus, VocabAnalysis
from worker.kinds import MODEL_KINDS
from worker.lifecycle import Reporter, execute
from worker.queueing.submit import enqueue, job_is_lost


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- corpora -------------------------------------------------------------------------------

def add_corpus(sessions: sessionmaker[Session], path: str | Path, name: str | None = None, format: str | None = None,
               text_field: str = "text", progress=None, source_name: str | None = None) -> tuple[Corpus, bool]:
    """(corpus, created). The same content added twice is one corpus. source_name: what the file is
    called where it came from (default: its name)."""
    path = Path(path)
    ingested = ingest(path, settings.corpora_dir(), format, text_field, progress)
    stats = ingested.stats
    source_name = source_name or path.name
    return store.insert_once(sessions, lambda session: store.corpus_by_sha(session, ingested.sha256), lambda: Corpus(
        name=printable(name or source_name)[:200], sha256=ingested.sha256, path=str(ingested.path),
        source_name=source_name[:500], format=ingested.format, bytes=stats.bytes, source_bytes=stats.source_bytes,
        documents=stats.documents, words=stats.words, distinct_words=stats.distinct_words,
        duplicate_documents=stats.duplicate_documents, mean_length=stats.mean_length))


def dependents(session: Session, corpus_id: int) -> tuple[list[Run], list[Run]]:
    """(the models built from a corpus, the runs that use it and have not finished): its analyses and
    their expansions, adaptations and distillations on it, and the benchmarks, evaluations and
    experiments that read it."""
    analyses = store.rows(session, VocabAnalysis, corpus_id=corpus_id)
    analysis_ids, analysis_runs = {a.id for a in analyses}, {a.run_id for a in analyses}
    built, active = [], []
    for run in store.rows(session, Run):
        params = run.params or {}
        if not (params.get("corpus_id") == corpus_id or params.get("analysis_id") in analysis_ids
                or run.id in analysis_runs):
            continue
        if run.kind in MODEL_KINDS and run.status == RunStatus.succeeded:
            built.append(run)
        elif not run.status.finished:
            active.append(run)
    return built, active


def delete_corpus(sessions: sessionmaker[Session], corpus_id: int) -> None:
    """The corpus row, its stored text and its tokenized streams; refused while a model built from it
    exists (its lineage, measures and contamination checks read it) or a run that uses it has not
    finished."""
    from core.train.tokens import delete_streams
    from worker.naming import model_name

    with sessions.begin() as session:
        corpus = store.get(session, Corpus, corpus_id)
        built, active = dependents(session, corpus_id)
        if built:
            names = "; ".join(model_name(run) for run in built[:5]) + (f"; {len(built) - 5} more" if len(built) > 5
                                                                          else "")
            raise ConfigError(f"corpus {corpus_id} cannot be deleted: {count(len(built), 'model')} built from it "
                              f"({names}) need it for their lineage, measures and contamination checks. Its token "
                              f"streams can go: `adapt-distill corpus drop-cache {corpus_id}`")
        if active:
            runs = ", ".join(f"run {r.id} ({r.kind.value}, {r.status.value})" for r in active[:5])
            raise ConfigError(f"corpus {corpus_id} cannot be deleted while unfinished runs use it ({runs}): wait "
                              f"for them or cancel them first")
        path, sha = Path(corpus.path), corpus.sha256
        session.delete(corpus)
    path.unlink(missing_ok=True)
    delete_streams(settings.token_cache_dir(), sha)


def token_caches(sessions: sessionmaker[Session], corpus_id: int | None = None) -> list[dict]:
    """The tokenized streams of the stored corpora (of one when given): corpus, tokenizer, size."""
    from core.train.tokens import list_streams

    with sessions.begin() as session:
        corpora = {c.sha256: (c.id, c.name) for c in store.rows(session, Corpus)
                   if corpus_id is None or c.id == corpus_id}
    return [{"corpus_id": corpora[s.corpus_sha256][0], "corpus": corpora[s.corpus_sha256][1],
             "tokenizer": s.tokenizer_key, "tokens": s.tokens, "documents": s.documents, "dtype": s.dtype,
             "bytes": s.bytes, "path": str(s.path)}
            for s in list_streams(settings.token_cache_dir()) if s.corpus_sha256 in corpora]


def delete_token_caches(sessions: sessionmaker[Session], corpus_id: int) -> int:
    """Drop a corpus's tokenized streams (the next run tokenizes again); the bytes freed."""
    from core.train.tokens import delete_streams

    with sessions.begin() as session:
        sha = store.get(session, Corpus, corpus_id).sha256
    return delete_streams(settings.token_cache_dir(), sha)


# --- importing a file of the server's import folder on a worker ------------------------------

IMPORT_AGAIN = "import the file again to start over"


def import_folder() -> Path:
    """The import folder of this process (ADAPT_DISTILL_IMPORT_DIR); ConfigError when unset."""
    from worker.imports import IMPORT_ENV

    folder = settings.import_dir()
    if folder is None:
        raise ConfigError(f"{IMPORT_ENV} is not set where this runs: set it to the import folder for the dashboard "
                          f"and for every worker (the same files under the same names)")
    return folder


def create_import(sessions: sessionmaker[Session], file: str, name: str | None = None, format: str | None = None,
                  text_field: str = "text") -> tuple[Run, bool]:
    """(run, reused): a queued import of `file` (relative to the import folder), checked now; an
    import of the same file with the same options that is queued or running is reused."""
    from core.corpus import detect_format
    from worker.imports import resolve_import

    file = (file or "").strip()
    path = resolve_import(import_folder(), file)
    detect_format(file, format or None)  # an unknown format fails here, not on the worker
    params = {"file": file, "name": (name or "").strip() or None, "format": format or None,
              "text_field": (text_field or "").strip() or "text", "source_bytes": path.stat().st_size}
    with sessions.begin() as session:
        for run in store.rows(session, Run, kind=RunKind.corpus_import, limit=50):
            if (not run.status.finished and all(run.params.get(k) == params[k]
                                                 for k in ("file", "name", "format", "text_field"))):
                return run, True
        run = store.create_run(session, RunKind.corpus_import, params)
        run.job_id = f"run-{run.id}"
        return run, False


def execute_import(sessions: sessionmaker[Session], run_id: int, report: Reporter) -> None:
    """Read the file into a corpus (the same content is the corpus that exists), reporting the share
    of the file read; the corpus id goes into the run's params."""
    def body(run: Run) -> None:
        from worker.imports import resolve_import

        params = dict(run.params)
        file = params["file"]
        # Resolved again here, in the worker's own import folder: the file (or a link) may have
        # changed since it was queued.
        path = resolve_import(import_folder(), file)
        report("reading the file", 0.0)

        def progress(done: int, total: int) -> None:
            report("reading the file", min(done / total, 1.0) if total else 1.0)
            if report.cancelled():
                raise Cancelled("the import was cancelled")

        corpus, created = add_corpus(sessions, path, params.get("name"), params.get("format"),
                                     params.get("text_field") or "text", progress, source_name=Path(file).name)
        with sessions.begin() as session:
            run = store.get(session, Run, run_id)
            run.params = {**run.params, "corpus_id": corpus.id, "created": created}

    execute(sessions, run_id, body, again=IMPORT_AGAIN)


def submit_import(sessions: sessionmaker[Session], connection: Redis, file: str, name: str | None = None,
                  format: str | None = None, text_field: str = "text") -> tuple[int, bool]:
    """(run id, reused): queue the import of a file of the import folder on the cpu queue; an
    identical import already queued or running is reused (queued again when Redis lost its job)."""
    run, reused = create_import(sessions, file, name, format, text_field)
    if not reused or job_is_lost(connection, run):
        enqueue(sessions, run.id, connection)
    return run.id, reused
