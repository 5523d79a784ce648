"""Operations over the store and core, shared by the CLI (inline runs) and the RQ jobs.
Every run, inline or queued, has a row in the store, so the dashboard sees all of them."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db import settings
from core.corpus import ingest, read_documents
from core.errors import Cancelled, ConfigError, user_error
from core.formatting import printable
from core.model_io import BUNDLED, folder_size, inspect_model, resolve_model
from core.vocab.curve import CurvePoint, pick
from core.configs import VocabConfig
from db import store
from db.models import Corpus, Run, RunKind, RunStatus, VocabAnalysis, utcnow

log = logging.getLogger(__name__)
T = TypeVar("T")
Echo = Callable[[str, float], None]


# Set in a job's process when its worker is asked to stop (SIGTERM: `docker-compose stop`, Ctrl-C on
# `up`): the run saves a checkpoint at its next progress report, goes back to the queue, and a
# worker continues it from there.
STOPPING = threading.Event()


class Reporter:
    """Progress of one run, written to the store (and the RQ job's meta) when the stage changes
    or at most every `interval` seconds. Also answers the cancel check from the same read.

    A report never fails the run because Redis or the database is briefly away: the job's meta in
    Redis is a convenience and is skipped, and a store write that fails is tried again at the next
    report (the metrics wait for it) until the store has been unreachable for `patience` seconds."""

    def __init__(self, sessions: sessionmaker[Session], run_id: int, job=None, interval: float = 1.0,
                 echo: Echo | None = None, patience: float | None = None):
        self.sessions, self.run_id, self.job, self.interval, self.echo = sessions, run_id, job, interval, echo
        self.patience = float(os.environ.get("ADAPT_DISTILL_STORE_PATIENCE_S", "600")) if patience is None else patience
        self.stage: str | None = None
        self.last = 0.0
        self._cancel = False
        self.store_down_since: float | None = None
        self.redis_down = False

    def __call__(self, stage: str, fraction: float) -> None:
        if self.echo:
            self.echo(stage, fraction)
        now = time.monotonic()
        if stage == self.stage and now - self.last < self.interval and fraction < 1.0:
            return
        self.stage, self.last = stage, now
        try:
            with self.sessions.begin() as session:
                store.set_progress(session, self.run_id, *self.shown(stage, fraction))
                run = store.get_run(session, self.run_id)
                self.record(session, run, stage, fraction)
                self._cancel = run.status == RunStatus.cancelled
                meta = self.meta(run, stage, fraction)
        except OperationalError as exc:  # the database is away: the next report tries again
            self.store_down_since = self.store_down_since or now
            if now - self.store_down_since > self.patience:
                raise
            log.warning("run %s: progress not recorded (%s); trying again at the next report", self.run_id,
                        type(exc).__name__)
            return
        self.store_down_since = None
        self.recorded()
        if self.job is not None:
            self.job.meta.update(meta)
            try:
                self.job.save_meta()
                self.redis_down = False
            except RedisError as exc:  # Redis is only the queue; the store has the progress
                if not self.redis_down:
                    log.warning("run %s: Redis is unreachable (%s); the run goes on", self.run_id, exc)
                self.redis_down = True

    def shown(self, stage: str, fraction: float) -> tuple[str, float]:
        """The stage and progress the store shows for a report (subclasses may reword them)."""
        return stage, fraction

    def record(self, session: Session, run: Run, stage: str, fraction: float) -> None:
        """Subclasses write more of the run's state here, in the same transaction."""

    def recorded(self) -> None:
        """Called once what `record` wrote is committed."""

    def meta(self, run: Run, stage: str, fraction: float) -> dict:
        return {"stage": stage, "progress": fraction}

    def cancelled(self) -> bool:
        return self._cancel or STOPPING.is_set()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- corpora -------------------------------------------------------------------------------

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


def add_corpus(sessions: sessionmaker[Session], path: str | Path, name: str | None = None, format: str | None = None,
               text_field: str = "text", progress=None, source_name: str | None = None) -> tuple[Corpus, bool]:
    """(corpus, created). The same content added twice is one corpus. source_name: what the file is
    called where it came from (default: its name)."""
    path = Path(path)
    ingested = ingest(path, settings.corpora_dir(), format, text_field, progress)
    stats = ingested.stats
    source_name = source_name or path.name
    return insert_once(sessions, lambda session: store.corpus_by_sha(session, ingested.sha256), lambda: Corpus(
        name=printable(name or source_name)[:200], sha256=ingested.sha256, path=str(ingested.path),
        source_name=source_name[:500], format=ingested.format, bytes=stats.bytes, source_bytes=stats.source_bytes,
        documents=stats.documents, words=stats.words, distinct_words=stats.distinct_words,
        duplicate_documents=stats.duplicate_documents, mean_length=stats.mean_length))


def delete_corpus(sessions: sessionmaker[Session], corpus_id: int) -> None:
    """The corpus row, its stored text and its tokenized streams."""
    from core.train.tokens import delete_streams

    with sessions.begin() as session:
        corpus = store.get_corpus(session, corpus_id)
        path, sha = Path(corpus.path), corpus.sha256
        session.delete(corpus)
    path.unlink(missing_ok=True)
    delete_streams(settings.token_cache_dir(), sha)


def token_caches(sessions: sessionmaker[Session], corpus_id: int | None = None) -> list[dict]:
    """The tokenized streams of the stored corpora (of one when given): corpus, tokenizer, size."""
    from core.train.tokens import list_streams

    with sessions.begin() as session:
        corpora = {c.sha256: (c.id, c.name) for c in store.list_corpora(session)
                   if corpus_id is None or c.id == corpus_id}
    return [{"corpus_id": corpora[s.corpus_sha256][0], "corpus": corpora[s.corpus_sha256][1],
             "tokenizer": s.tokenizer_key, "tokens": s.tokens, "documents": s.documents, "dtype": s.dtype,
             "bytes": s.bytes, "path": str(s.path)}
            for s in list_streams(settings.token_cache_dir()) if s.corpus_sha256 in corpora]


def delete_token_caches(sessions: sessionmaker[Session], corpus_id: int) -> int:
    """Drop a corpus's tokenized streams (the next run tokenizes again); the bytes freed."""
    from core.train.tokens import delete_streams

    with sessions.begin() as session:
        sha = store.get_corpus(session, corpus_id).sha256
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
        for run in store.list_runs(session, RunKind.corpus_import, limit=50):
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
        from worker.training import Heartbeat

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

        with Heartbeat(sessions, run_id):  # reports are far apart when the documents are long
            corpus, created = add_corpus(sessions, path, params.get("name"), params.get("format"),
                                         params.get("text_field") or "text", progress,
                                         source_name=Path(file).name)
        with sessions.begin() as session:
            run = store.get_run(session, run_id)
            run.params = {**run.params, "corpus_id": corpus.id, "created": created}

    _execute(sessions, run_id, body, again=IMPORT_AGAIN)


# --- vocabulary analysis --------------------------------------------------------------------

def model_key(spec: str) -> str:
    """How a base model is recorded: 'bundled', a hub id, or an absolute folder."""
    spec = (spec or BUNDLED).strip()
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.is_dir() else spec


def create_analysis(sessions: sessionmaker[Session], corpus_id: int, base: str, config: VocabConfig
                    ) -> tuple[VocabAnalysis, bool]:
    """(analysis, reused): a new queued analysis, or an identical one that is done or under way."""
    with sessions.begin() as session:
        store.get_corpus(session, corpus_id)
    info = inspect_model(base)  # fails now, with a clear message, rather than in the worker
    key = model_key(base)
    with sessions.begin() as session:
        # One submitter at a time per corpus decides between reusing and creating: the corpus row is
        # locked (PostgreSQL; SQLite's BEGIN IMMEDIATE already serializes writers), so identical
        # analyses submitted at once become one.
        store.lock_corpus(session, corpus_id)
        found = store.find_reusable_analysis(session, corpus_id, key, config.step, config.max_added,
                                             config.min_frequency)
        if found is not None:
            return found, True
        params = {"corpus_id": corpus_id, "base_model": key, "step": config.step, "max_added": config.max_added,
                  "threshold": config.threshold, "min_frequency": config.min_frequency}
        run = store.create_run(session, RunKind.analysis, params)
        run.job_id = f"run-{run.id}"
        analysis = VocabAnalysis(
            run_id=run.id, corpus_id=corpus_id, base_model=key, step=config.step, max_added=config.max_added,
            threshold=config.threshold, min_frequency=config.min_frequency, base_vocab_size=info.vocab_size,
            hidden_size=info.hidden_size,
        )
        session.add(analysis)
        session.flush()
        return analysis, False


def _finish(sessions: sessionmaker[Session], run_id: int, status: RunStatus, error: str | None = None) -> None:
    """Record the outcome; runs waiting on a run that did not succeed are cancelled, and a
    pipeline's status follows its steps."""
    with sessions.begin() as session:
        run = store.get_run(session, run_id)
        store.finish_run(session, run, status, error)
        if status != RunStatus.succeeded:
            for waiting in store.dependents(session, run_id):
                if waiting.status == RunStatus.queued:
                    store.finish_run(session, waiting, RunStatus.cancelled, f"run {run_id} it needs {status.value}")
        if run.parent_id is not None:
            store.refresh_pipeline(session, run.parent_id)


def record_outcome(sessions: sessionmaker[Session], run_id: int, status: RunStatus, error: str | None = None,
                   attempts: int = 6, wait: float = 0.5) -> None:
    """`_finish`, tried again a few times: the outcome of hours of work is not lost because the
    database is briefly unreachable or its disk full at that moment (the failed write that made the
    run fail has freed its space by now)."""
    for attempt in range(attempts):
        try:
            _finish(sessions, run_id, status, error)
            return
        except OperationalError as exc:  # connection lost, database or disk full
            if attempt == attempts - 1:
                raise
            log.warning("recording run %s as %s failed (%s); trying again", run_id, status.value, exc)
            time.sleep(wait * 2 ** attempt)


def claim(sessions: sessionmaker[Session], run_id: int) -> bool:
    """Mark a queued run running, atomically: when the same run was queued twice (a reconciler and a
    resume at once), only the first job to claim it does the work. False: nothing to do."""
    from sqlalchemy import update

    with sessions.begin() as session:
        started = session.execute(
            update(Run).where(Run.id == run_id, Run.status == RunStatus.queued)
            .values(status=RunStatus.running, started_at=utcnow(), heartbeat_at=utcnow(), error=None)
        ).rowcount
        run = store.get_run(session, run_id)
        if not started:
            log.warning("run %s is %s, not queued: this job has nothing to do", run_id, run.status.value)
            return False
        if run.parent_id is not None:
            store.refresh_pipeline(session, run.parent_id)
    return True


def next_attempt(run: Run) -> int:
    """Count one more attempt of a run going back to the queue: params["attempt"] is the number
    the header, the settings and the job id (run-ID-aN) all show; 1, unrecorded, for the first."""
    attempt = int(run.params.get("attempt", 1)) + 1
    run.params = {**run.params, "attempt": attempt}
    run.job_id = f"run-{run.id}-a{attempt}"
    return attempt


def requeue_interrupted(sessions: sessionmaker[Session], run_id: int) -> bool:
    """A run stopped because its worker is stopping (not cancelled by the user) goes back to the
    queued state under a new job id, and onto the queue when Redis answers (else the reconciler
    queues it): the next worker continues it from the checkpoint it has just saved."""
    with sessions.begin() as session:
        run = store.get_run(session, run_id)
        if run.status != RunStatus.running:
            return False  # the user cancelled it meanwhile
        next_attempt(run)
        run.status, run.error = RunStatus.queued, None
        run.stage = "queued: its worker stopped; it continues from its checkpoint"
    try:
        from worker.queues import connect
        from worker.submit import enqueue

        enqueue(sessions, run_id, connect(), fail_run=False)
    except Exception as exc:
        log.warning("run %s is queued in the store; the reconciler will queue it (%s)", run_id, exc)
    return True


RESUME_NOTE = "resume continues from the last checkpoint"


def _execute(sessions: sessionmaker[Session], run_id: int, body: Callable[[Run], None],
             again: str = RESUME_NOTE) -> None:
    """Claim the run, do the work, and record the outcome once. `again` says how a cancelled run
    carries on."""
    if not claim(sessions, run_id):
        return
    with sessions.begin() as session:
        run = store.get_run(session, run_id)
    try:
        body(run)
    except Cancelled:
        if STOPPING.is_set() and requeue_interrupted(sessions, run_id):
            return
        record_outcome(sessions, run_id, RunStatus.cancelled, f"cancelled by the user; {again}")
        return
    except KeyboardInterrupt:  # Ctrl-C on an inline run: the loop has saved what it had done
        record_outcome(sessions, run_id, RunStatus.cancelled, f"interrupted (Ctrl-C); {again}")
        raise
    except BaseException as exc:
        known = user_error(exc)
        message = str(known) if known is not None else f"{type(exc).__name__}: {exc}"
        if known is None:
            log.error("run %s failed:\n%s", run_id, traceback.format_exc())
        record_outcome(sessions, run_id, RunStatus.failed, message or type(exc).__name__)
        raise
    record_outcome(sessions, run_id, RunStatus.succeeded)


def execute_analysis(sessions: sessionmaker[Session], run_id: int, report: Reporter) -> None:
    def body(run: Run) -> None:
        from core.model_io import load_tokenizer
        from core.vocab.curve import analyze

        with sessions.begin() as session:
            analysis = store.analysis_for_run(session, run_id)
            corpus = store.get_corpus(session, analysis.corpus_id)
            corpus_path, corpus_bytes = Path(corpus.path), corpus.bytes
            config = VocabConfig(analysis.step, analysis.max_added, analysis.threshold, analysis.min_frequency)
            base, hidden = analysis.base_model, analysis.hidden_size or 0
        if not corpus_path.is_file():
            raise ConfigError(f"the corpus file {corpus_path} is gone: add the corpus again")
        report("loading base tokenizer", 0.0)
        tokenizer = load_tokenizer(resolve_model(base))
        result = analyze(lambda: read_documents(corpus_path), tokenizer, config, hidden, corpus_bytes,
                         progress=report, cancel=report.cancelled)
        folder = settings.runs_dir() / str(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        tokens_path = folder / "incremental_vocab.txt"
        tmp = tokens_path.with_suffix(".tmp")
        tmp.write_text("".join(t + "\n" for t in result.incremental_tokens), encoding="utf-8")
        os.replace(tmp, tokens_path)
        with sessions.begin() as session:
            analysis = store.analysis_for_run(session, run_id)
            store.save_points(session, analysis, result.points)
            analysis.base_vocab_size = result.base_vocab_size
            analysis.picked_vocab_size = result.picked.vocab_size
            analysis.threshold_reached = result.threshold_reached
            analysis.tokens_path = str(tokens_path)
            analysis.documents, analysis.word_types, analysis.notes = result.documents, result.word_types, result.notes
            store.add_artifact(session, run_id, "incremental_vocab", str(tokens_path), tokens_path.stat().st_size,
                               file_sha256(tokens_path))

    _execute(sessions, run_id, body)


def curve_points(analysis: VocabAnalysis) -> list[CurvePoint]:
    return [
        CurvePoint(p.vocab_size, p.added_tokens, p.log_occurrence, p.relative_gain, p.tokens_per_word,
                   p.split_word_share, p.embedding_params)
        for p in analysis.points
    ]


def analysis_summary(analysis: VocabAnalysis, threshold: float | None = None) -> dict:
    """The analysis as the CLI prints it; the pick follows `threshold` (default: the analysis's own)."""
    threshold = analysis.threshold if threshold is None else threshold
    points = curve_points(analysis)
    picked, reached = pick(points, threshold) if points else (None, None)
    return {
        "analysis_id": analysis.id,
        "run_id": analysis.run_id,
        "status": analysis.run.status.value,
        "error": analysis.run.error,
        "corpus_id": analysis.corpus_id,
        "base_model": analysis.base_model,
        "base_vocab_size": analysis.base_vocab_size,
        "step": analysis.step,
        "max_added": analysis.max_added,
        "threshold": threshold,
        "picked_vocab_size": picked.vocab_size if picked else None,
        "threshold_reached": reached,
        "notes": (analysis.notes or []) + (
            [f"no candidate gained {threshold:.2%} or less; the largest one is picked"] if reached is False else []
        ),
        "points": [p.to_dict() for p in points],
    }


def read_tokens(analysis: VocabAnalysis) -> list[str]:
    if not analysis.tokens_path or not Path(analysis.tokens_path).is_file():
        raise ConfigError(f"analysis {analysis.id} has no incremental vocabulary file: run the analysis again")
    return Path(analysis.tokens_path).read_text(encoding="utf-8").splitlines()


# --- expansion -----------------------------------------------------------------------------

def default_model_dir(analysis_id: int, vocab_size: int) -> Path:
    return settings.home() / "models" / f"expanded-a{analysis_id}-v{vocab_size}"


PICK = "pick"  # an expansion created before its analysis has finished takes the size the analysis picks


def create_expansion(sessions: sessionmaker[Session], analysis_id: int, vocab_size: int | str,
                     out: str | Path | None = None, parent_id: int | None = None, threshold: float | None = None
                     ) -> Run:
    """An expansion run at vocab_size, or at the analysis's pick (vocab_size 'pick', by the
    analysis's threshold or `threshold`). Of an analysis that has not finished yet, it waits for it
    and checks the size when it runs."""
    with sessions.begin() as session:
        analysis = store.get_analysis(session, analysis_id)
        status = analysis.run.status
        if status.finished and status != RunStatus.succeeded:
            raise ConfigError(f"analysis {analysis_id} {status.value}: run it again first")
        if vocab_size != PICK and not isinstance(vocab_size, int):
            raise ConfigError(f"size must be a number of tokens or 'pick', got {vocab_size}")
        if isinstance(vocab_size, int) and status == RunStatus.succeeded:
            check_size(analysis, vocab_size)
            out = out or default_model_dir(analysis_id, vocab_size)
        out = Path(out).expanduser().resolve() if out else None
        if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ConfigError(f"{out} already exists and is not empty: choose another output folder or delete it")
        params = {"analysis_id": analysis_id, "vocab_size": vocab_size,
                  **({"threshold": threshold} if threshold is not None else {})}
        run = store.create_run(session, RunKind.expansion, params, parent_id=parent_id or analysis.run_id,
                               depends_on=[] if status.finished else [analysis.run])
        run.job_id = f"run-{run.id}"
        run.params = {**params, "output_dir": str(out or settings.runs_dir() / str(run.id) / "model")}
        return run


def check_size(analysis: VocabAnalysis, vocab_size: int) -> None:
    """An expansion's size must add at least one and at most all of the analysis's new tokens."""
    available = len(read_tokens(analysis))
    base = analysis.base_vocab_size
    if not base < vocab_size <= base + available:
        raise ConfigError(
            f"size must be between {base + 1} and {base + available} (base {base} + up to {available} new "
            f"tokens), got {vocab_size}"
        )


def picked_size(analysis: VocabAnalysis, threshold: float | None) -> int:
    """The size the paper's rule picks on a finished analysis's curve."""
    points = curve_points(analysis)
    if not points:
        raise ConfigError(f"analysis {analysis.id} has no curve: run it again")
    return pick(points, analysis.threshold if threshold is None else threshold)[0].vocab_size


def execute_expansion(sessions: sessionmaker[Session], run_id: int, report: Reporter) -> None:
    def body(run: Run) -> None:
        from core.vocab.expand import expand_model
        from worker.models import register_run_model

        with sessions.begin() as session:
            run = store.get_run(session, run_id)
            analysis = store.get_analysis(session, run.params["analysis_id"])
            if run.params["vocab_size"] == PICK:  # known now that the analysis has finished
                run.params = {**run.params, "vocab_size": picked_size(analysis, run.params.get("threshold"))}
            check_size(analysis, run.params["vocab_size"])
            params = dict(run.params)
            tokens = read_tokens(analysis)
            base, base_size = analysis.base_model, analysis.base_vocab_size
            corpus = store.get_corpus(session, analysis.corpus_id)
            metadata = {"analysis_id": analysis.id, "corpus_sha256": corpus.sha256, "corpus_name": corpus.name,
                        "base_model_spec": base}
        out = Path(params["output_dir"])
        added = params["vocab_size"] - base_size
        result = expand_model(resolve_model(base), tokens[:added], out, metadata, progress=report)
        weights = out / "model.safetensors"
        with sessions.begin() as session:
            run = store.get_run(session, run_id)
            run.output_dir = str(out)
            store.add_artifact(session, run_id, "model", str(out), folder_size(out),
                               file_sha256(weights) if weights.is_file() else "")
            if result.mlm_head_fresh:
                run.params = {**run.params, "note": "the base had no MLM head; a fresh, untrained one was added"}
            register_run_model(session, run)
        describe_model(sessions, run_id, f"run:{run_id}", analysis_corpus_id(sessions, params["analysis_id"]), out,
                       report)

    _execute(sessions, run_id, body)


def analysis_corpus_id(sessions: sessionmaker[Session], analysis_id: int) -> int:
    with sessions.begin() as session:
        return store.get_analysis(session, analysis_id).corpus_id


def describe_model(sessions: sessionmaker[Session], run_id: int, spec: str, corpus_id: int, path: Path,
                   report=None) -> None:
    """Measure the model a run has just written to `path` on its corpus (cheap: a sample and the
    held-out blocks) and write its model card. A failure is noted on the run; the model is fine."""
    from worker.evaluation import measure_intrinsic
    from worker.models import write_card

    for what, step in (("measuring", lambda: measure_intrinsic(sessions, spec, corpus_id, run_id, report, path)),
                       ("the model card", lambda: write_card(sessions, spec, path))):
        try:
            step()
        except Exception as exc:  # the run succeeded; say what could not be done
            log.warning("%s of %s failed: %s", what, spec, exc)
            with sessions.begin() as session:
                run = store.get_run(session, run_id)
                run.params = {**run.params, "notes": [*run.params.get("notes", []),
                                                      f"{what} failed: {type(exc).__name__}: {exc}"]}
