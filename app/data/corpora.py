"""The Corpora page's reads and actions: corpora with their stats, uploads ingested at once,
large files imported by a worker from the server's import folder, previews, token caches, deletion.
The Vocabulary, Train, Experiment and Models pages list the corpora from here too."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import streamlit as st
from redis import Redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.data.common import run_dict, upload_folder, when, write_upload
from core.corpus import preview
from core.errors import CorpusError
from db import store
from db.models import Corpus, Run, RunKind, VocabAnalysis
from worker import corpora

UPLOAD_TYPES = ["txt", "jsonl", "csv", "tsv", "gz"]


def add_upload(sessions: sessionmaker[Session], filename: str, content: bytes | BinaryIO, name: str | None = None,
               format: str | None = None, text_field: str = "text") -> tuple[dict, bool]:
    """Write an upload to storage, ingest it as a corpus and remove the copy: (corpus, created)."""
    with upload_folder() as folder:
        path = write_upload(folder, filename, content)
        corpus, created = corpora.add_corpus(sessions, path, (name or "").strip() or Path(filename).name,
                                             format or None, text_field.strip() or "text")
    return corpus_dict(corpus), created


def corpus_dict(corpus: Corpus) -> dict:
    return {
        "id": corpus.id, "name": corpus.name, "source_name": corpus.source_name, "format": corpus.format,
        "documents": corpus.documents, "bytes": corpus.bytes, "source_bytes": corpus.source_bytes,
        "words": corpus.words, "distinct_words": corpus.distinct_words,
        "duplicates": corpus.duplicate_documents, "mean_length": round(corpus.mean_length, 1),
        "created": when(corpus.created_at), "path": corpus.path, "sha256": corpus.sha256,
    }


def list_corpora(sessions: sessionmaker[Session]) -> list[dict]:
    """All corpora with their stats, newest first; read fresh (one small query), so a corpus added
    from the CLI, an import or another browser shows on every page at once."""
    with sessions.begin() as session:
        return [corpus_dict(c) for c in store.rows(session, Corpus)]


def corpus_preview(sessions: sessionmaker[Session], corpus_id: int, n: int = 20) -> list[str]:
    """The first n stored documents of a corpus."""
    with sessions.begin() as session:
        path = Path(store.get(session, Corpus, corpus_id).path)
    if not path.is_file():
        raise CorpusError(f"the stored text of corpus {corpus_id} is gone ({path.name}): delete it and add it again")
    return preview(path, n)


def count_analyses(sessions: sessionmaker[Session], corpus_id: int) -> int:
    with sessions.begin() as session:
        return session.scalar(select(func.count()).select_from(VocabAnalysis)
                              .where(VocabAnalysis.corpus_id == corpus_id)) or 0


def delete_corpus(sessions: sessionmaker[Session], corpus_id: int) -> None:
    """Delete a corpus, its stored text and its analyses (expanded models on disk stay)."""
    corpora.delete_corpus(sessions, corpus_id)


def token_caches(sessions: sessionmaker[Session], corpus_id: int) -> list[dict]:
    """A corpus's token streams in the data folder's cache (tokenizer key, tokens, id type, bytes)."""
    return corpora.token_caches(sessions, corpus_id)


def drop_token_caches(sessions: sessionmaker[Session], corpus_id: int) -> int:
    """Delete a corpus's token streams; the bytes freed."""
    return corpora.delete_token_caches(sessions, corpus_id)


# --- the import folder: big corpora read by a worker, never through the browser ----------------

def upload_limit_mb() -> int:
    """The largest browser upload, as this Streamlit server enforces it (server.maxUploadSize, which
    `adapt-distill dashboard` sets from ADAPT_DISTILL_UPLOAD_MB)."""
    return int(st.get_option("server.maxUploadSize"))


def importable_files() -> tuple[list[dict], bool]:
    """([{name, size}], truncated): the files a worker can import from ADAPT_DISTILL_IMPORT_DIR,
    by name. Raises ConfigError when the variable is unset or names no folder."""
    from worker.imports import list_importable

    files, truncated = list_importable(corpora.import_folder())
    return [{"name": f.name, "size": f.size} for f in files], truncated


def start_import(sessions: sessionmaker[Session], connection: Redis, file: str, name: str | None = None,
                 format: str | None = None, text_field: str = "text") -> tuple[int, bool]:
    """(run id, reused): check the file and queue its import on the cpu queue; the same import
    already queued or running is shown instead of queued twice."""
    connection.ping()  # fail before a run row exists that no worker would ever see
    return corpora.submit_import(sessions, connection, file, name, format, text_field)


def import_dict(run: Run) -> dict:
    params = run.params or {}
    return {**run_dict(run), "file": params.get("file"), "name": params.get("name"),
            "source_bytes": params.get("source_bytes"), "corpus_id": params.get("corpus_id"),
            "created": params.get("created")}


def list_imports(sessions: sessionmaker[Session], limit: int = 5) -> list[dict]:
    """The most recent imports, newest first, with the corpus each made (name and documents)."""
    with sessions.begin() as session:
        rows = [import_dict(r) for r in store.rows(session, Run, kind=RunKind.corpus_import, limit=limit)]
        for row in rows:
            corpus = session.get(Corpus, row["corpus_id"]) if row["corpus_id"] is not None else None
            row["corpus"] = {"id": corpus.id, "name": corpus.name, "documents": corpus.documents,
                             "bytes": corpus.bytes} if corpus is not None else None
    return rows
