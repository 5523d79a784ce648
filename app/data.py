"""Data access for the pages: small functions of a sessionmaker that return plain dicts and
lists, so pages never hold ORM objects across reruns. Writes clear the caches they affect."""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path
from typing import BinaryIO

import streamlit as st
from redis import Redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core import settings
from core.corpus import preview
from core.errors import CorpusError
from core.vocab import VocabConfig
from db import store
from db.models import Corpus, Run, RunKind, RunStatus, VocabAnalysis
from worker import service

UPLOAD_TYPES = ["txt", "jsonl", "csv", "tsv", "gz"]
# A sessionmaker is cached by the database it talks to.
_BY_DATABASE = {sessionmaker: lambda sessions: str(sessions.kw["bind"].url)}


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else ""


# --- corpora -------------------------------------------------------------------------------

def uploads_dir() -> Path:
    return settings.home() / "uploads"


def _safe_name(filename: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename).name).strip("._")
    return name or "upload.txt"


def add_upload(sessions: sessionmaker[Session], filename: str, content: bytes | BinaryIO, name: str | None = None,
               format: str | None = None, text_field: str = "text") -> tuple[dict, bool]:
    """Write an upload to storage, ingest it as a corpus and remove the copy: (corpus, created).

    The copy keeps the upload's name (sanitised) because the name carries the format (.csv.gz)."""
    folder = uploads_dir() / uuid.uuid4().hex
    folder.mkdir(parents=True)
    path = folder / _safe_name(filename)
    try:
        with open(path, "wb") as out:
            if isinstance(content, bytes):
                out.write(content)
            else:
                content.seek(0)
                shutil.copyfileobj(content, out, 1 << 20)
        corpus, created = service.add_corpus(sessions, path, (name or "").strip() or Path(filename).name,
                                             format or None, text_field.strip() or "text")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    clear_caches()
    return corpus_dict(corpus), created


def corpus_dict(corpus: Corpus) -> dict:
    return {
        "id": corpus.id, "name": corpus.name, "source_name": corpus.source_name, "format": corpus.format,
        "documents": corpus.documents, "bytes": corpus.bytes, "source_bytes": corpus.source_bytes,
        "words": corpus.words, "distinct_words": corpus.distinct_words,
        "duplicates": corpus.duplicate_documents, "mean_length": round(corpus.mean_length, 1),
        "created": _when(corpus.created_at), "path": corpus.path, "sha256": corpus.sha256,
    }


@st.cache_data(ttl=30, hash_funcs=_BY_DATABASE, show_spinner=False)
def list_corpora(sessions: sessionmaker[Session]) -> list[dict]:
    """All corpora with their stats, newest first."""
    with sessions.begin() as session:
        return [corpus_dict(c) for c in store.list_corpora(session)]


def corpus_preview(sessions: sessionmaker[Session], corpus_id: int, n: int = 20) -> list[str]:
    """The first n stored documents of a corpus."""
    with sessions.begin() as session:
        path = Path(store.get_corpus(session, corpus_id).path)
    if not path.is_file():
        raise CorpusError(f"the stored text of corpus {corpus_id} is gone ({path.name}): delete it and add it again")
    return preview(path, n)


def count_analyses(sessions: sessionmaker[Session], corpus_id: int) -> int:
    with sessions.begin() as session:
        return session.scalar(select(func.count()).select_from(VocabAnalysis)
                              .where(VocabAnalysis.corpus_id == corpus_id)) or 0


def delete_corpus(sessions: sessionmaker[Session], corpus_id: int) -> None:
    """Delete a corpus, its stored text and its analyses (expanded models on disk stay)."""
    service.delete_corpus(sessions, corpus_id)
    clear_caches()


# --- vocabulary analyses --------------------------------------------------------------------

def analysis_dict(analysis: VocabAnalysis) -> dict:
    run = analysis.run
    return {
        "id": analysis.id, "run_id": analysis.run_id, "corpus_id": analysis.corpus_id,
        "status": run.status.value, "stage": run.stage, "progress": run.progress, "error": run.error,
        "base_model": analysis.base_model, "step": analysis.step, "max_added": analysis.max_added,
        "threshold": analysis.threshold, "min_frequency": analysis.min_frequency,
        "base_vocab_size": analysis.base_vocab_size, "picked_vocab_size": analysis.picked_vocab_size,
        "created": _when(analysis.created_at),
    }


def list_analyses(sessions: sessionmaker[Session], corpus_id: int) -> list[dict]:
    """Analyses of one corpus with their run status, newest first."""
    with sessions.begin() as session:
        return [analysis_dict(a) for a in store.list_analyses(session, corpus_id)]


def analysis_view(sessions: sessionmaker[Session], analysis_id: int) -> dict:
    """Everything the vocabulary page shows about one analysis (always read fresh: it may be running)."""
    with sessions.begin() as session:
        analysis = store.get_analysis(session, analysis_id)
        return {**service.analysis_summary(analysis), **analysis_dict(analysis),
                "analysis_notes": list(analysis.notes or []), "tokens_path": analysis.tokens_path,
                "documents": analysis.documents,
                "word_types": analysis.word_types, "hidden_size": analysis.hidden_size}


@st.cache_data(max_entries=8, show_spinner=False)
def _read_tokens(path: str, mtime: float) -> list[str]:
    return Path(path).read_text(encoding="utf-8").splitlines()


def incremental_tokens(view: dict) -> list[str]:
    """The incremental vocabulary of a finished analysis, in the trainer's order."""
    path = Path(view["tokens_path"] or "")
    if not view["tokens_path"] or not path.is_file():
        raise CorpusError(f"analysis {view['id']} has no incremental vocabulary file: run the analysis again")
    return _read_tokens(str(path), path.stat().st_mtime)


def start_analysis(sessions: sessionmaker[Session], connection: Redis, corpus_id: int, base: str, step: int,
                   max_added: int, threshold: float, min_frequency: int) -> tuple[int, bool]:
    """(analysis id, reused): queue an analysis, or find an identical one done or under way."""
    from worker.submit import submit_analysis

    config = VocabConfig(step=int(step), max_added=int(max_added), threshold=float(threshold),
                         min_frequency=int(min_frequency))
    connection.ping()  # fail before a run row exists that no worker would ever see
    analysis, reused = submit_analysis(sessions, connection, corpus_id, base.strip() or "bundled", config)
    return analysis.id, reused


# --- expansions ----------------------------------------------------------------------------

def run_dict(run: Run) -> dict:
    params = run.params or {}
    return {
        "run_id": run.id, "kind": run.kind.value, "status": run.status.value, "stage": run.stage,
        "progress": run.progress, "error": run.error, "params": params,
        "vocab_size": params.get("vocab_size"), "output_dir": run.output_dir or params.get("output_dir"),
        "note": params.get("note"), "created": _when(run.created_at), "finished": _when(run.finished_at),
    }


def list_expansions(sessions: sessionmaker[Session], analysis_run_id: int) -> list[dict]:
    """Expansion runs made from one analysis run, newest first."""
    with sessions.begin() as session:
        runs = session.scalars(select(Run).where(Run.kind == RunKind.expansion, Run.parent_id == analysis_run_id)
                               .order_by(Run.id.desc())).all()
        return [run_dict(r) for r in runs]


def start_expansion(sessions: sessionmaker[Session], connection: Redis, analysis_id: int, vocab_size: int) -> int:
    """Queue the expanded model at vocab_size; the run id."""
    from worker.submit import submit_expansion

    connection.ping()
    return submit_expansion(sessions, connection, analysis_id, int(vocab_size))


# --- overview ------------------------------------------------------------------------------

def overview(sessions: sessionmaker[Session], recent: int = 10) -> dict:
    """Counts of what exists and the most recent runs."""
    with sessions.begin() as session:
        corpora = session.scalar(select(func.count()).select_from(Corpus)) or 0
        by_kind_status = session.execute(
            select(Run.kind, Run.status, func.count()).group_by(Run.kind, Run.status)).all()
        runs = [run_dict(r) for r in store.list_runs(session, limit=recent)]
    counts: dict[str, dict[str, int]] = {}
    for kind, status, n in by_kind_status:
        counts.setdefault(kind.value, {})[status.value] = n
    active = sum(n for kinds in counts.values() for status, n in kinds.items()
                 if status in (RunStatus.queued.value, RunStatus.running.value))
    return {"corpora": corpora, "runs": counts, "active": active, "recent": runs}


def clear_caches() -> None:
    list_corpora.clear()
