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

from db import settings
from core.configs import (PRESETS, STRATEGIES, AdaptConfig, DistillConfig, bert_parameters, check_device,
                          default_student)
from core.corpus import preview
from core.errors import CorpusError
from core.configs import VocabConfig
from db import store
from db.models import Corpus, Metric, Run, RunKind, RunStatus, Task, VocabAnalysis
from worker import service
from worker.models import BUNDLED_LABEL, model_name
from worker.progress import active_steps, parent_progress
from worker.shapes import RUN_PREFIX, folder_shape

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


def write_upload(folder: Path, filename: str, content: bytes | BinaryIO) -> Path:
    """An upload copied into folder under its own (sanitised) name: the name carries the format
    (.csv.gz), and the copy is what the readers stream."""
    path = folder / _safe_name(filename)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        if isinstance(content, bytes):
            out.write(content)
        else:
            content.seek(0)
            shutil.copyfileobj(content, out, 1 << 20)
    return path


def add_upload(sessions: sessionmaker[Session], filename: str, content: bytes | BinaryIO, name: str | None = None,
               format: str | None = None, text_field: str = "text") -> tuple[dict, bool]:
    """Write an upload to storage, ingest it as a corpus and remove the copy: (corpus, created)."""
    folder = uploads_dir() / uuid.uuid4().hex
    folder.mkdir(parents=True)
    try:
        path = write_upload(folder, filename, content)
        corpus, created = service.add_corpus(sessions, path, (name or "").strip() or Path(filename).name,
                                             format or None, text_field.strip() or "text")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return corpus_dict(corpus), created


def corpus_dict(corpus: Corpus) -> dict:
    return {
        "id": corpus.id, "name": corpus.name, "source_name": corpus.source_name, "format": corpus.format,
        "documents": corpus.documents, "bytes": corpus.bytes, "source_bytes": corpus.source_bytes,
        "words": corpus.words, "distinct_words": corpus.distinct_words,
        "duplicates": corpus.duplicate_documents, "mean_length": round(corpus.mean_length, 1),
        "created": _when(corpus.created_at), "path": corpus.path, "sha256": corpus.sha256,
    }


def list_corpora(sessions: sessionmaker[Session]) -> list[dict]:
    """All corpora with their stats, newest first; read fresh (one small query), so a corpus added
    from the CLI, an import or another browser shows on every page at once."""
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


def token_caches(sessions: sessionmaker[Session], corpus_id: int) -> list[dict]:
    """A corpus's token streams in the data folder's cache (tokenizer key, tokens, id type, bytes)."""
    return service.token_caches(sessions, corpus_id)


def drop_token_caches(sessions: sessionmaker[Session], corpus_id: int) -> int:
    """Delete a corpus's token streams; the bytes freed."""
    return service.delete_token_caches(sessions, corpus_id)


# --- the import folder: big corpora read by a worker, never through the browser ----------------

def upload_limit_mb() -> int:
    """The largest browser upload, as this Streamlit server enforces it (server.maxUploadSize, which
    `adapt-distill dashboard` sets from ADAPT_DISTILL_UPLOAD_MB)."""
    return int(st.get_option("server.maxUploadSize"))


def importable_files() -> tuple[list[dict], bool]:
    """([{name, size}], truncated): the files a worker can import from ADAPT_DISTILL_IMPORT_DIR,
    by name. Raises ConfigError when the variable is unset or names no folder."""
    from worker.imports import list_importable

    files, truncated = list_importable(service.import_folder())
    return [{"name": f.name, "size": f.size} for f in files], truncated


def start_import(sessions: sessionmaker[Session], connection: Redis, file: str, name: str | None = None,
                 format: str | None = None, text_field: str = "text") -> tuple[int, bool]:
    """(run id, reused): check the file and queue its import on the cpu queue; the same import
    already queued or running is shown instead of queued twice."""
    from worker.submit import submit_import

    connection.ping()  # fail before a run row exists that no worker would ever see
    return submit_import(sessions, connection, file, name, format, text_field)


def import_dict(run: Run) -> dict:
    params = run.params or {}
    return {**run_dict(run), "file": params.get("file"), "name": params.get("name"),
            "source_bytes": params.get("source_bytes"), "corpus_id": params.get("corpus_id"),
            "created": params.get("created")}


def list_imports(sessions: sessionmaker[Session], limit: int = 5) -> list[dict]:
    """The most recent imports, newest first, with the corpus each made (name and documents)."""
    with sessions.begin() as session:
        rows = [import_dict(r) for r in store.list_runs(session, RunKind.corpus_import, limit=limit)]
        for row in rows:
            corpus = session.get(Corpus, row["corpus_id"]) if row["corpus_id"] is not None else None
            row["corpus"] = {"id": corpus.id, "name": corpus.name, "documents": corpus.documents,
                             "bytes": corpus.bytes} if corpus is not None else None
    return rows


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
    """The incremental vocabulary of a finished analysis, best first (each prefix is a candidate)."""
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
    check_readable(base)
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
        tasks = session.scalar(select(func.count()).select_from(Task)) or 0
        by_kind_status = session.execute(
            select(Run.kind, Run.status, func.count()).group_by(Run.kind, Run.status)).all()
        runs = [run_dict(r) for r in store.list_runs(session, limit=recent)]
    counts: dict[str, dict[str, int]] = {}
    for kind, status, n in by_kind_status:
        counts.setdefault(kind.value, {})[status.value] = n
    active = sum(n for kinds in counts.values() for status, n in kinds.items()
                 if status in (RunStatus.queued.value, RunStatus.running.value))
    return {"corpora": corpora, "tasks": tasks, "runs": counts, "active": active, "recent": runs}


# --- training: choices, estimate, launch ---------------------------------------------------

# The modes of the Train page: one run, or one of the paper's three orders as a pipeline.
SINGLE_MODES = ("adaptation", "distillation")
TRAIN_MODES = SINGLE_MODES + STRATEGIES
STUDENT_PRESETS = PRESETS
AUTO_STUDENT = "auto"  # half the teacher's layers and width (core.configs.default_student)
SHAPE_KEYS = ("layers", "hidden", "heads", "intermediate")
TRAINABLE = ("adaptation", "distillation")
RESUMABLE_KINDS = TRAINABLE + ("evaluation", "benchmark")  # continue from their checkpoints


def _train_defaults() -> dict:
    """The Train page's starting values: the core configs' own defaults (one source of truth)."""
    adapt, distill = AdaptConfig(), DistillConfig()
    train = adapt.train
    return {
        "adapt_steps": train.steps, "distill_steps": distill.train.steps, "adapt_lr": train.lr,
        "distill_lr": distill.train.lr, "batch_size": train.batch_size, "seq_len": adapt.seq_len,
        "grad_accum": train.grad_accum, "warmup": train.warmup, "schedule": train.schedule, "seed": train.seed,
        "eval_every": train.eval_every, "checkpoint_every": train.checkpoint_every, "device": train.device,
        "precision": train.precision, "processes": train.processes, "mask_probability": adapt.mask_probability,
        "whole_word": adapt.whole_word, "head_warmup": adapt.head_warmup,
        "student": AUTO_STUDENT, "shape": None, "allow_larger_student": distill.allow_larger_student,
        "init": distill.init, "version": distill.version, "teacher_layer": distill.teacher_layer,
        "mlm_weight": distill.mlm_weight, "student_init": None,
    }


TRAIN_DEFAULTS = _train_defaults()
_COMMON = ("batch_size", "grad_accum", "seq_len", "warmup", "schedule", "seed", "eval_every", "checkpoint_every",
           "device", "precision", "processes")


def mode_stages(mode: str) -> list[tuple[str, str]]:
    """(run kind, what it does) for each run a mode creates, in order."""
    return {
        "adaptation": [("adaptation", "adapt the teacher")],
        "distillation": [("distillation", "distil the teacher into the student")],
        "adapt-then-distill": [("adaptation", "adapt the teacher"),
                               ("distillation", "distil the adapted teacher into the student")],
        "distill-then-adapt": [("distillation", "distil the teacher into the student"),
                               ("adaptation", "adapt the student")],
        "adapt-and-distill": [("adaptation", "adapt the teacher"), ("adaptation", "adapt the student"),
                              ("distillation", "distil the adapted teacher into the adapted student")],
    }[mode]


def training_params(choices: dict) -> tuple[dict, dict]:
    """(adaptation params, distillation params) as worker.training records them, from the Train
    page's choices (missing ones take TRAIN_DEFAULTS)."""
    c = {**TRAIN_DEFAULTS, **choices}
    common = {k: c[k] for k in _COMMON}
    adapt = {**common, "steps": int(c["adapt_steps"]), "lr": float(c["adapt_lr"]),
             "mask_probability": float(c["mask_probability"]), "whole_word": bool(c["whole_word"]),
             "head_warmup": float(c["head_warmup"])}
    distill = {**common, "steps": int(c["distill_steps"]), "lr": float(c["distill_lr"]), "version": c["version"],
               "teacher_layer": int(c["teacher_layer"]), "mlm_weight": float(c["mlm_weight"])}
    if c["allow_larger_student"]:
        distill["allow_larger_student"] = True
    if c["mode"] != "adapt-and-distill":  # there the adapted student's own shape and weights are used
        distill.update({**{k: int(v) for k, v in (c["shape"] or {}).items()},
                        "init": "random" if c["init"] is None else c["init"].strip()})
        if c["student"] != AUTO_STUDENT:
            distill["student"] = c["student"]
    return adapt, distill


def model_choices(sessions: sessionmaker[Session]) -> list[dict]:
    """Models a training run can start from, as {spec, kind, label}: the bundled model, then the
    models that finished expansions, adaptations and distillations wrote, newest first."""
    with sessions.begin() as session:
        runs = session.scalars(
            select(Run).where(Run.kind.in_([RunKind.expansion, RunKind.adaptation, RunKind.distillation]),
                              Run.status == RunStatus.succeeded, Run.output_dir.is_not(None))
            .order_by(Run.id.desc())).all()
        made = [{"spec": f"{RUN_PREFIX}{r.id}", "kind": r.kind.value, "label": model_name(r)} for r in runs]
    return [{"spec": "bundled", "kind": "bundled", "label": BUNDLED_LABEL}] + made


def check_readable(*specs: str | None) -> None:
    """Refuse a model folder typed in the dashboard outside the data folder, the bundled model and
    ADAPT_DISTILL_MODEL_DIRS (the command line reads any folder: its user is on the machine)."""
    from core.model_io import check_model_root

    for spec in specs:
        if spec and spec.strip():
            check_model_root(spec, settings.home(), settings.model_dirs())


def _model_folder(sessions: sessionmaker[Session], spec: str) -> Path | None:
    """The local folder of a model spec; None for a hub id that is not downloaded yet."""
    from core.errors import ConfigError
    from core.model_io import BUNDLED, hub_allowed, names_folder, resolve_model

    spec = spec.strip()
    check_readable(spec)
    if spec.startswith(RUN_PREFIX):
        try:
            run_id = int(spec[len(RUN_PREFIX):])
        except ValueError:
            raise ConfigError(f"'{spec}': write run:ID with a run id") from None
        with sessions.begin() as session:
            run = store.get_run(session, run_id)
            if run.status != RunStatus.succeeded or not run.output_dir:
                raise ConfigError(f"run {run_id} has no finished model yet ({run.status.value})")
            return Path(run.output_dir)
    if spec == BUNDLED or names_folder(spec) or not hub_allowed():
        return resolve_model(spec)  # raises ModelError with what to do
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(spec, "config.json")
    return Path(cached).parent if isinstance(cached, str) else None


@st.cache_data(ttl=60, hash_funcs=_BY_DATABASE, show_spinner=False)
def model_shape(sessions: sessionmaker[Session], spec: str) -> dict | None:
    """The architecture of a model from its config.json, without loading it: vocab_size, layers,
    hidden, heads, intermediate, positions, token_types and parameters (as a BertForMaskedLM).
    None for a hub id not downloaded yet. Raises ModelError/ConfigError for a spec that cannot work."""
    folder = _model_folder(sessions, spec)
    return None if folder is None else folder_shape(folder)


def student_shape(choices: dict, teacher: dict | None = None) -> dict | None:
    """layers, hidden, heads, intermediate of the chosen preset (or of the shape derived from the
    teacher) with the explicit overrides; None for the derived shape of an unknown teacher."""
    c = {**TRAIN_DEFAULTS, **choices}
    if c["student"] != AUTO_STUDENT:
        shape = dict(zip(SHAPE_KEYS, STUDENT_PRESETS[c["student"]]))
    elif teacher is not None:
        derived = default_student(teacher["layers"], teacher["hidden"], teacher["heads"], teacher["intermediate"])
        shape = {k: getattr(derived, k) for k in SHAPE_KEYS}
    else:
        return None
    shape.update({k: int(v) for k, v in (c["shape"] or {}).items() if v is not None})
    return shape


def _student(sessions: sessionmaker[Session], c: dict, teacher: dict | None) -> tuple[dict | None, str | None]:
    """(the student's architecture with its parameters, or None; a problem, or None)."""
    from core.errors import AdaptDistillError

    init = "random" if c["init"] is None else c["init"].strip()
    if c["mode"] == "adapt-and-distill":
        model = c["student_init"] or ""
    else:
        model = None if init in ("random", "teacher") else init
    if model is not None:
        if not model.strip():
            return None, "choose the student model"
        try:
            shape = model_shape(sessions, model)
        except AdaptDistillError as exc:
            return None, f"student: {exc}"
        if shape is None:
            return None, None
        if c["mode"] == "adapt-and-distill" and teacher is not None:  # it gets the teacher's vocabulary
            shape = {**shape, "vocab_size": teacher["vocab_size"]}
            shape["parameters"] = bert_parameters(shape["vocab_size"], shape["hidden"], shape["layers"],
                                                  shape["intermediate"], shape["positions"], shape["token_types"])
        return shape, _not_smaller(shape, teacher, c) if teacher is not None else None
    shape = student_shape(c, teacher)
    if shape is None:
        return None, None
    if min(shape.values()) < 1 or shape["hidden"] % shape["heads"]:
        return None, (f"student hidden size {shape['hidden']} must be positive and divisible by its "
                      f"{shape['heads']} heads")
    if teacher is None:
        return shape, None
    if init == "teacher" and (shape["hidden"] != teacher["hidden"] or shape["heads"] != teacher["heads"]
                              or shape["layers"] > teacher["layers"]):
        return shape, (f"init 'teacher' copies every k-th teacher layer, so the student needs the teacher's width "
                       f"({teacher['hidden']} hidden, {teacher['heads']} heads) and at most its {teacher['layers']} "
                       f"layers; this student has {shape['hidden']} hidden, {shape['heads']} heads and "
                       f"{shape['layers']} layers: change the shape or use init random")
    parameters = bert_parameters(teacher["vocab_size"], shape["hidden"], shape["layers"], shape["intermediate"],
                                 teacher["positions"], teacher["token_types"])
    student = {**shape, "vocab_size": teacher["vocab_size"], "parameters": parameters}
    return student, _not_smaller(student, teacher, c)


def _not_smaller(student: dict, teacher: dict, c: dict) -> str | None:
    """The problem with a student that is not smaller than its teacher, unless the user allowed it."""
    if c["allow_larger_student"] or student["parameters"] < teacher["parameters"]:
        return None
    derived = default_student(teacher["layers"], teacher["hidden"], teacher["heads"], teacher["intermediate"])
    return (f"the student ({count(student['parameters'])} parameters) is not smaller than the teacher "
            f"({count(teacher['parameters'])}): distilling into it compresses nothing. Pick a smaller shape (the "
            f"default for this teacher is {derived.describe()}), or tick \"Allow a student that is not smaller\"")


def training_estimate(sessions: sessionmaker[Session], choices: dict, corpus_words: int) -> dict:
    """What a launch would do: tokens per optimizer step, each run's steps, tokens, trained
    parameters and epochs over the corpus (its word count stands in for its token count), the
    teacher's and student's sizes, and the problems found (plain strings; nothing raises)."""
    from core.errors import AdaptDistillError

    c = {**TRAIN_DEFAULTS, **choices}
    problems: list[str] = []
    teacher = None
    if not (c["teacher"] or "").strip():
        problems.append("choose a teacher")
    else:
        try:
            teacher = model_shape(sessions, c["teacher"])
        except AdaptDistillError as exc:
            problems.append(f"teacher: {exc}")
    distils = any(kind == "distillation" for kind, _ in mode_stages(c["mode"]))
    student, problem = _student(sessions, c, teacher) if distils else (None, None)
    problems += [problem] if problem else []
    tokens_per_step = int(c["batch_size"]) * int(c["grad_accum"]) * int(c["seq_len"])
    stages = []
    for kind, what in mode_stages(c["mode"]):
        steps = int(c["adapt_steps"] if kind == "adaptation" else c["distill_steps"])
        trained = teacher if kind == "adaptation" and "teacher" in what else student
        tokens = steps * tokens_per_step
        stages.append({"kind": kind, "what": what, "steps": steps, "tokens": tokens,
                       "parameters": trained["parameters"] if trained and "parameters" in trained else None,
                       "epochs": tokens / corpus_words if corpus_words else None})
    return {"tokens_per_step": tokens_per_step, "total_tokens": sum(s["tokens"] for s in stages), "stages": stages,
            "teacher": teacher, "student": student, "problems": problems}


def start_training(sessions: sessionmaker[Session], connection: Redis, choices: dict) -> list[dict]:
    """Validate the choices, create the runs and queue them (a pipeline's steps wait on each other).
    Returns [{run_id, kind}] with the pipeline first. Nothing is created when a check fails."""
    from core.errors import ConfigError
    from worker import training
    from worker.submit import submit_runs

    c = {**TRAIN_DEFAULTS, **choices}
    if c["mode"] not in TRAIN_MODES:
        raise ConfigError(f"unknown mode '{c['mode']}': use one of {', '.join(TRAIN_MODES)}")
    teacher = (c["teacher"] or "").strip()
    if not teacher:
        raise ConfigError("choose a teacher: bundled, a model a run made, a folder or a hub id")
    check_readable(teacher, c["student_init"], None if c["init"] in (None, "random", "teacher") else c["init"])
    c["device"] = check_device(c["device"])
    adapt, distill = training_params(c)
    kinds = {kind for kind, _ in mode_stages(c["mode"])}
    # Both configs are checked before any row exists: a pipeline writes its first runs before the
    # second config would be looked at.
    if "adaptation" in kinds:
        training.adapt_config(adapt)
    if "distillation" in kinds:
        training.distill_config(distill)
        if c["mode"] != "adapt-and-distill" and distill["init"] == "":
            raise ConfigError("choose the student's initial model, or init random or teacher")
        estimate = training_estimate(sessions, c, 0)
        problem = next((p for p in estimate["problems"] if p.startswith(("init 'teacher'", "the student ("))), None)
        if problem:
            raise ConfigError(problem)
    student_init = (c["student_init"] or "").strip() or None
    if c["mode"] == "adapt-and-distill" and not student_init:
        raise ConfigError("adapt-and-distill adapts a small pretrained student too: choose the student to adapt "
                          "(it needs the teacher's base vocabulary)")
    connection.ping()  # fail before a run row exists that no worker would ever see
    from worker.queues import GPU
    from worker.serve import check_device_served

    check_device_served(connection, GPU, c["device"], int(c["processes"]))
    corpus_id = int(c["corpus_id"])
    if c["mode"] == "adaptation":
        runs = [training.create_adaptation(sessions, corpus_id, teacher, adapt)]
    elif c["mode"] == "distillation":
        runs = [training.create_distillation(sessions, corpus_id, teacher, distill)]
    else:
        runs = training.create_pipeline(sessions, c["mode"], corpus_id, teacher, adapt, distill,
                                        student_init if c["mode"] == "adapt-and-distill" else None)
    submit_runs(sessions, connection, runs)
    return [{"run_id": r.id, "kind": r.kind.value} for r in runs]


# --- runs: list, one run, actions -----------------------------------------------------------

ACTIVE = ("queued", "running")


def count(n: int | None) -> str:
    """'6.3K', '22.7M', '1.2B' parameters; '?' when unknown."""
    if n is None:
        return "?"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:,.1f}{unit}"
    return f"{n:,}"


def duration(seconds: float | None) -> str:
    """'45 s', '12 min', '3 h 05 min', '2 d 4 h'; '' when unknown."""
    if seconds is None:
        return ""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def run_row(run: Run, steps: list[Run] | None = None) -> dict:
    """One line of the runs list; an active pipeline's progress and ETA come from its `steps`."""
    running = run.status.value == "running"
    progress, eta, guess = float(run.progress or 0.0), run.eta_seconds if running else None, bool(run.eta_guess)
    if steps and run.status.value in ACTIVE:
        progress, eta, guess = parent_progress(run, steps)
    return {
        "id": run.id, "kind": run.kind.value, "status": run.status.value, "stage": run.stage,
        "progress": min(max(progress, 0.0), 1.0), "step": run.step, "total_steps": run.total_steps,
        "eta_seconds": eta, "eta_guess": guess and eta is not None,
        "eta": (duration(eta) + (" (first guess)" if guess else "")) if eta is not None else "",
        "latest_loss": run.latest_loss, "parent_id": run.parent_id, "error": run.error,
        "created": _when(run.created_at), "finished": _when(run.finished_at),
    }


def _rows(session: Session, runs: list[Run]) -> list[dict]:
    steps = active_steps(session, runs)
    return [run_row(r, steps.get(r.id)) for r in runs]


def refresh_runs(sessions: sessionmaker[Session], limit: int = 200) -> list[dict]:
    """Mark running runs whose worker stopped answering as abandoned, then list runs newest first."""
    from worker.training import find_dead_runs

    find_dead_runs(sessions)
    with sessions.begin() as session:
        return _rows(session, list(store.list_runs(session, limit=limit)))


def any_active(sessions: sessionmaker[Session]) -> bool:
    """Whether a run is queued or running (the Runs page refreshes itself while one is)."""
    with sessions.begin() as session:
        return session.scalar(select(Run.id).where(Run.status.in_([RunStatus.queued, RunStatus.running]))
                              .limit(1)) is not None


def runs_page(sessions: sessionmaker[Session], limit: int, run_id: int | None) -> dict:
    """The Runs page in one read: {"runs": the list, newest first; "view": the run_view of run_id,
    the newest when None, None when there is none}. The chosen run's row in the list and its view
    are made from the same row object, so the header, the table and the progress bar agree."""
    from worker.training import find_dead_runs

    find_dead_runs(sessions)
    with sessions.begin() as session:
        runs = list(store.list_runs(session, limit=limit))
        rows = _rows(session, runs)
        if run_id is None and runs:
            run_id = runs[0].id
        run = session.get(Run, run_id) if run_id is not None else None  # the listed object when listed
        row = next((r for r in rows if r["id"] == run_id), None)
        return {"runs": rows, "view": _view(session, run, row) if run is not None else None}


def _ref(run: Run) -> dict:
    return {"id": run.id, "kind": run.kind.value, "status": run.status.value}


def _inputs(session: Session, params: dict) -> list[dict]:
    """The models a run reads, as {role, spec, run (a _ref for run:ID, else None)}."""
    inputs = []
    for role in ("model", "teacher", "init", "student_init"):
        spec = params.get(role)
        if not spec or spec in ("random", "teacher"):
            continue
        ref = None
        if str(spec).startswith(RUN_PREFIX):
            found = session.get(Run, int(str(spec)[len(RUN_PREFIX):]))
            ref = _ref(found) if found is not None else None
        inputs.append({"role": "student init" if role == "student_init" else role, "spec": spec, "run": ref})
    return inputs


def run_view(sessions: sessionmaker[Session], run_id: int) -> dict:
    """Everything the Runs page shows about one run (read fresh: it may be running)."""
    with sessions.begin() as session:
        return _view(session, store.get_run(session, run_id))


def _view(session: Session, run: Run, row: dict | None = None) -> dict:
    params = dict(run.params or {})
    corpus = session.get(Corpus, params["corpus_id"]) if params.get("corpus_id") is not None else None
    parent = session.get(Run, run.parent_id) if run.parent_id else None
    children = list(store.children(session, run.id))
    return {
        **(row or run_row(run, children)),
        "params": {k: v for k, v in params.items() if k != "result"}, "result": params.get("result") or {},
        "output_dir": run.output_dir, "started": _when(run.started_at), "worker": run.worker,
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
        from worker.training import request_cancel

        request_cancel(sessions, run_id)
        return
    from worker.submit import cancel

    cancel(sessions, connection, run_id, grace=grace)


def resume_run(sessions: sessionmaker[Session], connection: Redis, run_id: int) -> None:
    """Queue a cancelled, failed or abandoned adaptation or distillation again, from its last checkpoint."""
    from worker.submit import resume

    connection.ping()
    resume(sessions, connection, run_id)


def _check_finished_inputs(sessions: sessionmaker[Session], run_id: int, params: dict) -> None:
    from core.errors import ConfigError

    with sessions.begin() as session:
        for item in _inputs(session, params):
            ref = item["run"]
            if ref is not None and ref["status"] != "succeeded":
                raise ConfigError(f"run {run_id} reads the model of run {ref['id']}, which is {ref['status']}: "
                                  f"run that one (or its pipeline) again instead")


def run_again(sessions: sessionmaker[Session], connection: Redis, run_id: int) -> list[dict]:
    """Create and queue new runs with the settings of an adaptation, a distillation or a pipeline;
    [{run_id, kind}] with a pipeline first."""
    from core.errors import ConfigError
    from worker import training
    from worker.submit import submit_runs

    kind, params = training.copy_params(sessions, run_id)
    connection.ping()
    if kind == RunKind.pipeline:
        with sessions.begin() as session:
            steps = [(s.kind, s.id) for s in store.children(session, run_id)]
        adapt = next((training.copy_params(sessions, i)[1] for k, i in steps if k == RunKind.adaptation), {})
        distill = next((training.copy_params(sessions, i)[1] for k, i in steps if k == RunKind.distillation), {})
        runs = training.create_pipeline(sessions, params["strategy"], params["corpus_id"], params["teacher"],
                                        adapt, distill, params.get("student_init"))
    elif kind.value in TRAINABLE:
        _check_finished_inputs(sessions, run_id, params)
        if kind == RunKind.adaptation:
            runs = [training.create_adaptation(sessions, params["corpus_id"], params["model"], params)]
        else:
            runs = [training.create_distillation(sessions, params["corpus_id"], params["teacher"], params)]
    else:
        raise ConfigError(f"run {run_id} is a {kind.value}: only adaptation, distillation and pipeline runs can "
                          f"run again here")
    submit_runs(sessions, connection, runs)
    return [{"run_id": r.id, "kind": r.kind.value} for r in runs]
