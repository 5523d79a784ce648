"""Vocabulary analyses and expansions as runs: create (reusing an identical analysis), execute,
and read back the curve, the pick and the tokens."""

from __future__ import annotations

import os
from pathlib import Path

from redis import Redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.configs import VocabConfig
from core.corpus import read_documents
from core.errors import ConfigError
from core.model_io import BUNDLED, folder_size
from core.vocab.curve import CurvePoint, pick
from db import settings, store
from db.models import Corpus, Run, RunKind, RunStatus, VocabAnalysis
from worker.corpora import file_sha256
from worker.evaluation import describe_model
from worker.lifecycle import Reporter, execute
from worker.queueing.submit import enqueue, job_is_lost
from worker.specs import ModelSpec, check_encoder

# --- vocabulary analysis --------------------------------------------------------------------

def create_analysis(sessions: sessionmaker[Session], corpus_id: int, base: str, config: VocabConfig
                    ) -> tuple[VocabAnalysis, bool]:
    """(analysis, reused): a new queued analysis, or an identical one that is done or under way."""
    with sessions.begin() as session:
        store.get(session, Corpus, corpus_id)
        check_encoder(session, base or BUNDLED, "base model", "an expansion grows and then trains")
    info = ModelSpec.parse(base).inspect()  # fails now, with a clear message, rather than in the worker
    key = ModelSpec.parse(base or BUNDLED).key
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


def execute_analysis(sessions: sessionmaker[Session], run_id: int, report: Reporter) -> None:
    def body(run: Run) -> None:
        from core.model_io import load_tokenizer
        from core.vocab.curve import analyze

        with sessions.begin() as session:
            analysis = store.analysis_for_run(session, run_id)
            corpus = store.get(session, Corpus, analysis.corpus_id)
            corpus_path, corpus_bytes = Path(corpus.path), corpus.bytes
            config = VocabConfig(analysis.step, analysis.max_added, analysis.threshold, analysis.min_frequency)
            base, hidden = analysis.base_model, analysis.hidden_size or 0
        if not corpus_path.is_file():
            raise ConfigError(f"the corpus file {corpus_path} is gone: add the corpus again")
        report("loading base tokenizer", 0.0)
        tokenizer = load_tokenizer(ModelSpec.parse(base).path())
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

    execute(sessions, run_id, body)


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
        analysis = store.get(session, VocabAnalysis, analysis_id)
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
        from worker.catalogue import register_run_model

        with sessions.begin() as session:
            run = store.get(session, Run, run_id)
            analysis = store.get(session, VocabAnalysis, run.params["analysis_id"])
            if run.params["vocab_size"] == PICK:  # known now that the analysis has finished
                run.params = {**run.params, "vocab_size": picked_size(analysis, run.params.get("threshold"))}
            check_size(analysis, run.params["vocab_size"])
            params = dict(run.params)
            tokens = read_tokens(analysis)
            base, base_size = analysis.base_model, analysis.base_vocab_size
            corpus = store.get(session, Corpus, analysis.corpus_id)
            metadata = {"analysis_id": analysis.id, "corpus_sha256": corpus.sha256, "corpus_name": corpus.name,
                        "base_model_spec": base}
        out = Path(params["output_dir"])
        added = params["vocab_size"] - base_size
        result = expand_model(ModelSpec.parse(base).path(), tokens[:added], out, metadata, progress=report)
        weights = out / "model.safetensors"
        with sessions.begin() as session:
            run = store.get(session, Run, run_id)
            run.output_dir = str(out)
            store.add_artifact(session, run_id, "model", str(out), folder_size(out),
                               file_sha256(weights) if weights.is_file() else "")
            if result.mlm_head_fresh:
                run.params = {**run.params, "note": "the base had no MLM head; a fresh, untrained one was added"}
            register_run_model(session, run)
        describe_model(sessions, run_id, f"run:{run_id}", analysis_corpus_id(sessions, params["analysis_id"]), out,
                       report)

    execute(sessions, run_id, body)


def analysis_corpus_id(sessions: sessionmaker[Session], analysis_id: int) -> int:
    with sessions.begin() as session:
        return store.get(session, VocabAnalysis, analysis_id).corpus_id


def submit_analysis(sessions: sessionmaker[Session], connection: Redis, corpus_id: int, base: str,
                    config: VocabConfig) -> tuple[VocabAnalysis, bool]:
    """(analysis, reused). An identical analysis that is done or under way is reused, not queued again."""
    analysis, reused = create_analysis(sessions, corpus_id, base, config)
    if reused and job_is_lost(connection, analysis.run):
        with sessions.begin() as session:
            store.finish_run(session, store.get(session, Run, analysis.run_id), RunStatus.failed,
                             "its queued job was lost (Redis was flushed or restarted); queued again")
        analysis, reused = create_analysis(sessions, corpus_id, base, config)
    if not reused:
        enqueue(sessions, analysis.run_id, connection)
    return analysis, reused


def existing_expansion(sessions: sessionmaker[Session], analysis_id: int, vocab_size: int | str) -> Run | None:
    """An expansion of this analysis at this size that is queued, running, or done with its model
    still on disk: the same model, so asking again reuses it (as analyses are reused)."""
    if not isinstance(vocab_size, int):
        return None
    with sessions.begin() as session:
        analysis = store.get(session, VocabAnalysis, analysis_id)
        for run in session.scalars(select(Run).where(Run.kind == RunKind.expansion, Run.parent_id == analysis.run_id,
                                                     Run.status.in_((RunStatus.queued, RunStatus.running,
                                                                     RunStatus.succeeded))).order_by(Run.id)):
            folder = run.params.get("output_dir") or run.output_dir
            if run.params.get("vocab_size") == vocab_size and (
                    run.status != RunStatus.succeeded or (folder and (Path(folder) / "config.json").is_file())):
                return run
    return None


def submit_expansion(sessions: sessionmaker[Session], connection: Redis, analysis_id: int, vocab_size: int,
                     out: str | Path | None = None) -> tuple[int, bool]:
    """(run id, reused): a queued expansion, or, without an output folder of its own, the one that
    made (or is making) this model already."""
    found = existing_expansion(sessions, analysis_id, vocab_size) if out is None else None
    if found is not None:
        return found.id, True
    run = create_expansion(sessions, analysis_id, vocab_size, out)
    enqueue(sessions, run.id, connection)
    return run.id, False
