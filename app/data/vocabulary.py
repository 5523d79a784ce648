"""The Vocabulary page's reads and actions: analyses of a corpus and their curves, the incremental
vocabulary, and the expanded models written from an analysis."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from redis import Redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.data.common import check_readable, run_dict, when
from core.configs import VocabConfig
from core.errors import CorpusError
from db import store
from db.models import Run, RunKind, VocabAnalysis
from worker import vocabulary


def analysis_dict(analysis: VocabAnalysis) -> dict:
    run = analysis.run
    return {
        "id": analysis.id, "run_id": analysis.run_id, "corpus_id": analysis.corpus_id,
        "status": run.status.value, "stage": run.stage, "progress": run.progress, "error": run.error,
        "base_model": analysis.base_model, "step": analysis.step, "max_added": analysis.max_added,
        "threshold": analysis.threshold, "min_frequency": analysis.min_frequency,
        "base_vocab_size": analysis.base_vocab_size, "picked_vocab_size": analysis.picked_vocab_size,
        "created": when(analysis.created_at),
    }


def list_analyses(sessions: sessionmaker[Session], corpus_id: int) -> list[dict]:
    """Analyses of one corpus with their run status, newest first."""
    with sessions.begin() as session:
        return [analysis_dict(a) for a in store.rows(session, VocabAnalysis, corpus_id=corpus_id)]


def analysis_view(sessions: sessionmaker[Session], analysis_id: int) -> dict:
    """Everything the vocabulary page shows about one analysis (always read fresh: it may be running)."""
    with sessions.begin() as session:
        analysis = store.get(session, VocabAnalysis, analysis_id)
        return {**vocabulary.analysis_summary(analysis), **analysis_dict(analysis),
                "analysis_notes": list(analysis.notes or []), "tokens_path": analysis.tokens_path,
                "documents": analysis.documents,
                "word_types": analysis.word_types, "hidden_size": analysis.hidden_size}


@st.cache_data(max_entries=8, show_spinner=False)
def _read_tokens(path: str, mtime: float) -> list[str]:
    return Path(path).read_text(encoding="utf-8").splitlines()


def incremental_tokens(view: dict) -> list[str]:
    """The incremental vocabulary of a finished analysis, best first (each prefix is a candidate)."""
    path = Path(view["tokens_path"] or "")
    if not view["tokens_path"] or not path.is_file():
        raise CorpusError(f"analysis {view['id']} has no incremental vocabulary file: run the analysis again")
    return _read_tokens(str(path), path.stat().st_mtime)


def start_analysis(sessions: sessionmaker[Session], connection: Redis, corpus_id: int, base: str, step: int,
                   max_added: int, threshold: float, min_frequency: int) -> tuple[int, bool]:
    """(analysis id, reused): queue an analysis, or find an identical one done or under way."""
    config = VocabConfig(step=int(step), max_added=int(max_added), threshold=float(threshold),
                         min_frequency=int(min_frequency))
    check_readable(base)
    connection.ping()  # fail before a run row exists that no worker would ever see
    analysis, reused = vocabulary.submit_analysis(sessions, connection, corpus_id, base.strip() or "bundled", config)
    return analysis.id, reused


# --- expansions ----------------------------------------------------------------------------

def list_expansions(sessions: sessionmaker[Session], analysis_run_id: int) -> list[dict]:
    """Expansion runs made from one analysis run, newest first."""
    with sessions.begin() as session:
        runs = session.scalars(select(Run).where(Run.kind == RunKind.expansion, Run.parent_id == analysis_run_id)
                               .order_by(Run.id.desc())).all()
        return [run_dict(r) for r in runs]


def start_expansion(sessions: sessionmaker[Session], connection: Redis, analysis_id: int,
                    vocab_size: int) -> tuple[int, bool]:
    """Queue the expanded model at vocab_size, or reuse the run that made (or makes) it: (run id, reused)."""
    connection.ping()
    return vocabulary.submit_expansion(sessions, connection, analysis_id, int(vocab_size))
