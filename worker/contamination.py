"""Are a task's dev and test texts in the corpora a model was trained on? (core.judge.contamination.) An
evaluation checks every corpus behind its model before fine-tuning and stores the result with its
scores; an experiment shows the check of its corpus against its task. A result is kept next to
the task's stored files, one JSON file per corpus content hash, so a corpus is scanned once per task."""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.judge.contamination import NGRAM
from db import store
from db.models import Corpus, Evaluation, Run, RunKind, Task, VocabAnalysis
from worker.specs import ModelSpec

log = logging.getLogger(__name__)
SPLITS = ("dev", "test")  # train text in a corpus inflates nothing: fine-tuning sees it anyway
CACHE_PREFIX = "contamination-"
VERSION = 1  # bump when what is counted changes: older cached results are then checked again
NOT_CHECKED = {"checked": False, "reason": "not checked yet: the experiment's evaluations check it"}


def lineage_corpora(session: Session, spec: str) -> list[int]:
    """Every corpus behind a model: those of the adaptations and distillations it descends from
    (through teachers, student inits and aligned vocabularies) and of the analyses behind its
    expansions; sorted ids, [] for a model no run made."""
    found: set[int] = set()
    todo, seen = [spec], set()
    while todo:
        spec = todo.pop()
        run_id = ModelSpec.parse(spec).run_id if isinstance(spec, str) and spec.strip() else None
        if run_id is None or run_id in seen:
            continue
        seen.add(run_id)
        run = session.get(Run, run_id)
        if run is None:
            continue
        params = run.params or {}
        if run.kind == RunKind.expansion:
            analysis = session.get(VocabAnalysis, params.get("analysis_id"))
            if analysis is not None:
                found.add(analysis.corpus_id)
                todo.append(analysis.base_model)
        elif run.kind in (RunKind.adaptation, RunKind.distillation):
            if params.get("corpus_id") is not None:
                found.add(int(params["corpus_id"]))
            todo += [params.get(key) for key in ("model", "teacher", "init", "align_to")]
    return sorted(found)


def cache_file(task_path: str | Path, corpus_sha256: str) -> Path:
    return Path(task_path) / f"{CACHE_PREFIX}{corpus_sha256}.json"


def cached(task_path: str | Path, corpus_sha256: str) -> dict | None:
    """The stored result for this corpus content and task, or None."""
    try:
        data = json.loads(cache_file(task_path, corpus_sha256).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("version") != VERSION or data.get("n") != NGRAM:
        return None
    return data["result"]


def check(corpus_path: str | Path, corpus_sha256: str, corpus_bytes: int | None, task_path: str | Path,
          progress=None, cancel=None) -> dict:
    """The task's dev and test texts looked for in the corpus (a stored result when there is
    one), as core.judge.contamination's to_dict(); the result is stored for the next time."""
    result = cached(task_path, corpus_sha256)
    if result is not None:
        return result
    from core.corpus import read_documents
    from core.judge.contamination import example_text, find_in_corpus
    from core.judge.tasks import load_task

    task = load_task(task_path)
    texts = {split: [example_text(x) for x in task.splits[split]] for split in SPLITS}
    # read_documents: the lines training reads (shorter ones are never trained on)
    result = find_in_corpus(read_documents(corpus_path), texts, NGRAM, corpus_bytes, progress, cancel).to_dict()
    target = cache_file(task_path, corpus_sha256)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    try:
        partial.write_text(json.dumps({"version": VERSION, "n": NGRAM, "corpus_sha256": corpus_sha256,
                                       "result": result}), encoding="utf-8")
        os.replace(partial, target)
    except OSError as exc:  # the result is stored with the evaluation all the same
        partial.unlink(missing_ok=True)
        log.warning("the contamination check could not be kept in %s: %s", target.parent, exc)
    return result


def for_model(sessions: sessionmaker[Session], spec: str, task_id: int, report=None) -> dict[str, dict]:
    """{corpus id: result} for every corpus behind the model (see lineage_corpora), checked now
    or read from the stored results; a corpus deleted since says so."""
    with sessions.begin() as session:
        task_path = store.get(session, Task, task_id).path
        corpora = {}
        for corpus_id in lineage_corpora(session, spec):
            corpus = session.get(Corpus, corpus_id)
            corpora[corpus_id] = (corpus.path, corpus.sha256, corpus.bytes) if corpus is not None else None
    results: dict[str, dict] = {}
    for corpus_id, corpus in corpora.items():
        if corpus is None or not Path(corpus[0]).is_file():
            results[str(corpus_id)] = {"checked": False, "reason": "the corpus was deleted"}
            continue
        stage = f"checking corpus {corpus_id} for task text"
        results[str(corpus_id)] = check(*corpus, task_path,
                                        progress=(lambda _, f, stage=stage: report(stage, f)) if report else None,
                                        cancel=getattr(report, "cancelled", None))
    return results


def for_experiment(session: Session, params: dict) -> dict[str, dict]:
    """{corpus id: result} for an experiment: what its evaluations found (every corpus behind their
    models), and its own corpus from the stored result, or "not checked yet" (never a scan here:
    a page shows this)."""
    results: dict[str, dict] = {}
    runs = [m["evaluation"] for m in params.get("members", []) if m.get("evaluation")]
    if runs:
        for evaluation in session.scalars(select(Evaluation).where(Evaluation.run_id.in_(runs))):
            for corpus_id, result in ((evaluation.results or {}).get("contamination") or {}).items():
                if result.get("checked") or corpus_id not in results:
                    results[corpus_id] = result
    corpus_id, task_id = params.get("corpus_id"), params.get("task_id")
    if corpus_id is not None and not results.get(str(corpus_id), {}).get("checked"):
        corpus, task = session.get(Corpus, corpus_id), session.get(Task, task_id)
        found = cached(task.path, corpus.sha256) if corpus is not None and task is not None else None
        results[str(corpus_id)] = found or (NOT_CHECKED if corpus is not None and task is not None else
                                            {"checked": False, "reason": "the corpus or the task was deleted"})
    return results
