"""The models the product knows: the bundled one, every model a run wrote (`run:ID`) and any local
folder a user evaluated or benchmarked. Each has one row in the store, with its shape, size and
lineage; scores and measurements hang off it. A zip export carries a generated model card."""

from __future__ import annotations

import logging
import os
import re
import stat
import uuid
import zipfile
from collections.abc import Sequence
from datetime import timezone
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from core.errors import ConfigError, ModelError, NotFound
from core.folder_kinds import FINE_TUNED
from core.formatting import count
from core.model_io import BUNDLED, count_parameters, folder_size
from db import settings, store
from db.models import Corpus, Evaluation, Measurement, ModelRecord, Run, RunKind, RunStatus, VocabAnalysis
from worker.kinds import writes_model
from worker.naming import model_name, short_spec
from worker.specs import MODEL_OWNERS, RUN_PREFIX, ModelSpec, folder_shape

log = logging.getLogger(__name__)
BUNDLED_LABEL = "bundled · all-MiniLM-L6-v2 (6 layers, 384 hidden)"


def model_path(session: Session, record: ModelRecord) -> Path:
    """The folder of a model that exists now; a clear error for a run that has not finished."""
    path = ModelSpec.parse(record.spec).path(session)
    if not (path / "config.json").is_file():
        raise ModelError(f"the model folder of {record.spec} is gone ({path}): run it again or remove it")
    return path


def fill_details(session: Session, record: ModelRecord, path: Path | None = None) -> None:
    """Shape, parameters and size from the folder (`path`, for a run's model before the run is
    marked succeeded), once it exists."""
    if path is None:
        try:
            path = model_path(session, record)
        except (ConfigError, ModelError):
            return
    record.path = str(path)
    shape = folder_shape(path) or {}
    for key in ("vocab_size", "layers", "hidden", "heads", "intermediate"):
        setattr(record, key, shape.get(key))
    record.parameters = count_parameters(path)
    record.size_bytes = folder_size(path)


def ensure_model(session: Session, spec: str) -> ModelRecord:
    """The model's row, created the first time the product meets it (a queued run's model too)."""
    spec = ModelSpec.parse(spec).catalogue_key(session)
    record = session.scalar(select(ModelRecord).where(ModelRecord.spec == spec))
    if record is None:
        run_id = ModelSpec.parse(spec).run_id
        if run_id is not None:
            run = store.get(session, Run, run_id)
            record = ModelRecord(spec=spec, name=model_name(run)[:200], kind=model_kind(run), run_id=run.id,
                                 path=run.output_dir)
        elif spec == BUNDLED:
            record = ModelRecord(spec=spec, name=BUNDLED_LABEL, kind="bundled")
        else:
            ModelSpec.parse(spec).inspect()  # a folder the product can read (BERT family, safetensors)
            record = ModelRecord(spec=spec, name=short_spec(spec)[:200], kind="folder")
        session.add(record)
        session.flush()
    if record.parameters is None:
        fill_details(session, record)
    return record


def model_kind(run: Run) -> str:
    """What kind of model a run makes: its kind's name ('distillation'), 'fine-tuned' for an evaluation."""
    return FINE_TUNED if run.kind == RunKind.evaluation else run.kind.value


def register_run_model(session: Session, run: Run) -> ModelRecord:
    """Record the model a run has just written (its name follows the settings it ran with)."""
    record = ensure_model(session, f"{RUN_PREFIX}{run.id}")
    record.name = model_name(run)[:200]
    fill_details(session, record, Path(run.output_dir))
    return record


def get_model(session: Session, spec_or_id: str | int) -> ModelRecord:
    if isinstance(spec_or_id, int) or str(spec_or_id).isdigit():
        record = session.get(ModelRecord, int(spec_or_id))
        if record is None:
            raise NotFound(f"no model with id {spec_or_id}: `adapt-distill models list` shows them")
        return record
    return ensure_model(session, str(spec_or_id))


OLD_NAME = re.compile(r" · (adapted (?!teacher|student)|student of |expanded vocab )")


def list_models(session: Session) -> Sequence[ModelRecord]:
    """Every known model, newest first, the bundled one always among them. Models of runs that
    finished before the store knew models are added on the way."""
    ensure_model(session, BUNDLED)
    known = set(session.scalars(select(ModelRecord.run_id).where(ModelRecord.run_id.is_not(None))))
    for run in session.scalars(select(Run).where(Run.kind.in_(MODEL_OWNERS), Run.status == RunStatus.succeeded,
                                                 Run.output_dir.is_not(None))):
        if run.id not in known:
            register_run_model(session, run)
    for record in session.scalars(select(ModelRecord).where(ModelRecord.parameters.is_(None))):
        fill_details(session, record)
    records = session.scalars(select(ModelRecord).options(selectinload(ModelRecord.evaluations),
                                                          selectinload(ModelRecord.measurements),
                                                          selectinload(ModelRecord.run))
                              .order_by(ModelRecord.id.desc())).all()
    made = [r for r in records if r.run is None or r.run.status == RunStatus.succeeded]  # not those to come
    for record in made:  # names recorded before names said what a model is ('run:9 · student of run:7')
        if record.run is not None and OLD_NAME.search(record.name or ""):
            record.name = model_name(record.run)[:200]
    return sorted(made, key=lambda r: r.spec == BUNDLED)  # the models made here first, newest first


def models_to_come(session: Session) -> list[dict]:
    """The models that unfinished runs will make: [{run_id, kind, status}], oldest first."""
    runs = session.scalars(select(Run).where(Run.kind.in_(MODEL_OWNERS), Run.status.in_(
        (RunStatus.queued, RunStatus.running))).order_by(Run.id)).all()
    return [{"run_id": r.id, "kind": model_kind(r), "status": r.status.value} for r in runs if writes_model(r)]


def check_made(record: ModelRecord) -> None:
    """Refuse a model whose run has not made it yet (queued, running, failed, cancelled)."""
    if record.run is not None and record.run.status != RunStatus.succeeded:
        raise ConfigError(f"run {record.run_id} has not made its model yet ({record.run.status.value}): it is a "
                          f"model once the run succeeds; `adapt-distill runs list` shows its progress")


def lineage(session: Session, record: ModelRecord) -> list[dict]:
    """The chain of runs behind a model, newest first: {run, kind, what, corpus_id} per step."""
    chain, spec, seen = [], record.spec, set()
    while spec and (run_id := ModelSpec.parse(spec).run_id) is not None and run_id not in seen:
        seen.add(run_id)
        run = store.get(session, Run, run_id)
        params = run.params or {}
        item = {"run": run.id, "kind": run.kind.value, "name": model_name(run), "status": run.status.value,
                "corpus_id": params.get("corpus_id")}
        if run.kind == RunKind.expansion:
            analysis = store.get(session, VocabAnalysis, params["analysis_id"])
            item |= {"analysis_id": analysis.id, "corpus_id": analysis.corpus_id, "vocab_size": params.get("vocab_size")}
            chain.append(item)
            spec = analysis.base_model
            continue
        chain.append(item)
        spec = params.get("model") if run.kind in (RunKind.adaptation, RunKind.evaluation) else params.get("teacher")
        init = params.get("init")
        if run.kind == RunKind.distillation and init and init not in ("random", "teacher"):
            item["student_init"] = init
    chain.append({"run": None, "kind": "base", "name": spec, "status": None, "corpus_id": None})
    return chain


# --- scores and measures as the pages and the CLI show them -----------------------------------

def latest_measurement(record: ModelRecord, kind: str) -> Measurement | None:
    found = [m for m in record.measurements if m.kind == kind]
    return max(found, key=lambda m: (m.created_at.replace(tzinfo=timezone.utc) if m.created_at.tzinfo is None
                                     else m.created_at, m.id)) if found else None


def finished_evaluations(record: ModelRecord) -> list[Evaluation]:
    return [e for e in record.evaluations if e.run.status == RunStatus.succeeded and e.results]


def model_summary(session: Session, record: ModelRecord) -> dict:
    """A model as the CLI prints it and the pages list it."""
    speed = latest_measurement(record, "speed")
    intrinsic = latest_measurement(record, "intrinsic")
    scores = []
    for evaluation in finished_evaluations(record):
        test = evaluation.results.get("test", {})
        scores.append({"evaluation_run": evaluation.run_id, "task_id": evaluation.task_id,
                       "task": evaluation.task.name, "metric": evaluation.metric,
                       "mean": test.get(evaluation.metric), "std": test.get(f"{evaluation.metric}_std"),
                       "ci95": (test.get("ci95") or {}).get(evaluation.metric), "seeds": evaluation.seeds})
    return {
        "model_id": record.id, "spec": record.spec, "label": short_spec(record.spec), "name": record.name,
        "kind": record.kind,
        "run_id": record.run_id, "path": record.path, "parameters": record.parameters,
        "size_bytes": record.size_bytes, "vocab_size": record.vocab_size, "layers": record.layers,
        "hidden": record.hidden, "heads": record.heads, "intermediate": record.intermediate,
        "created": record.created_at.isoformat() if record.created_at else None,
        "scores": scores,
        "speed": dict(speed.values, context=speed.context, run_id=speed.run_id) if speed else None,
        "intrinsic": dict(intrinsic.values, context=intrinsic.context) if intrinsic else None,
    }


# --- model cards and export ---------------------------------------------------------------------

def vocabulary_of(session: Session, record: ModelRecord) -> dict:
    """A model's vocabulary as a comparison shows it, whatever made the model: the expansion in its
    lineage (a student or an adapted model shares its teacher's), else its base vocabulary."""
    expansion = next((step for step in lineage(session, record) if step["kind"] == "expansion"), None)
    if expansion is None:
        return {"base_vocab_size": record.vocab_size, "added_tokens": 0, "vocab_size": record.vocab_size,
                "analysis_id": None}
    analysis = store.get(session, VocabAnalysis, expansion["analysis_id"])
    size = record.vocab_size or expansion.get("vocab_size")
    return {"base_vocab_size": analysis.base_vocab_size,
            "added_tokens": size - analysis.base_vocab_size if size else None, "vocab_size": size,
            "analysis_id": analysis.id}


def card_info(session: Session, record: ModelRecord, path: Path | None = None) -> dict:
    """What the model card says: lineage, data, vocabulary, training, scores, speed, versions.
    `path` is the folder, for a run describing the model it has just written."""
    from core.judge.card import library_versions
    from core.train.checkpoints import read_json

    path = path or model_path(session, record)
    meta = read_json(path / "adapt_distill.json")
    summary = model_summary(session, record)
    info: dict = {"name": record.name, "kind": meta.get("kind", record.kind),
                  "created": record.created_at.date().isoformat() if record.created_at else None,
                  "versions": library_versions(), "mlm_head_trained": meta.get("mlm_head_trained", True)}
    chain = lineage(session, record)
    info["base_model"] = chain[-1]["name"]
    corpus_id = next((step["corpus_id"] for step in chain if step.get("corpus_id")), None)
    if corpus_id is not None:
        corpus = session.get(Corpus, corpus_id)
        if corpus is not None:
            info["corpus"] = {"name": corpus.name, "sha256": corpus.sha256, "documents": corpus.documents,
                              "bytes": corpus.bytes}
    if meta.get("kind") == FINE_TUNED:  # an evaluation's kept model: its task and labels
        evaluation = session.scalar(select(Evaluation).where(Evaluation.run_id == record.run_id)) \
            if record.run_id is not None else None  # gone with its task, or a copied folder: what the folder says
        name = f"{evaluation.task.name} " if evaluation is not None else ""
        info |= {"task_type": meta.get("task_type"), "labels": meta.get("labels") or [],
                 "task": f"{name}(seed {meta.get('seed')}, the best dev {meta.get('metric')} of "
                         f"{count(int(meta.get('seeds') or 1), 'seed')})"}
    if "added_tokens" in meta:
        info["vocabulary"] = {"base_vocab_size": meta.get("base_vocab_size"), "added_tokens": meta["added_tokens"],
                              "vocab_size": record.vocab_size, "analysis_id": meta.get("analysis_id")}
    info["shape"] = {k: summary[k] for k in ("layers", "hidden", "heads", "intermediate", "vocab_size", "parameters",
                                             "size_bytes")}
    training = {name: meta[key] for name, key in (("adaptation", "adapt_config"), ("distillation", "distill_config"))
                if isinstance(meta.get(key), dict)}
    if training:
        info["training"] = {name: _flat(settings_) for name, settings_ in training.items()}
    strategy = strategy_of(session, record)
    if strategy:
        info["strategy"] = strategy
    scores = []
    for evaluation in finished_evaluations(record):
        test = evaluation.results.get("test", {})
        numbers = {k: v for k, v in test.items() if isinstance(v, float) and not k.endswith("_std")}
        scores.append({"task": evaluation.task.name, "task_type": evaluation.task.type,
                       "task_sha256": evaluation.task.sha256, "metric": evaluation.metric, "seeds": evaluation.seeds,
                       "per_seed": [s.get(evaluation.metric) for s in test.get("per_seed", [])],
                       "metrics": numbers, "std": {k: test.get(f"{k}_std") for k in numbers},
                       "ci95": dict(test.get("ci95") or {})})
    if scores:
        info["scores"] = scores
    if summary["speed"]:
        info["speed"] = {k: summary["speed"].get(k) for k in ("device", "seq_len", "batch_size", "threads",
                                                              "cpu_model", "latency_ms_p50", "latency_ms_p95",
                                                              "latency_ms_iqr", "throughput_per_s", "noisy_reason")}
    if summary["intrinsic"]:
        info["intrinsic"] = {**summary["intrinsic"], "corpus": summary["intrinsic"].get("context")}
    return info


def _flat(config: dict) -> dict:
    """A nested settings dict as one level (train.lr -> lr)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= {k: v for k, v in _flat(value).items() if k not in out}
        elif value is not None:
            out[key] = value
    return out


def strategy_of(session: Session, record: ModelRecord) -> str | None:
    """The paper's order a model was made by: its run's own (experiments label their runs) or
    its pipeline's."""
    if record.run_id is None:
        return None
    run = store.get(session, Run, record.run_id)
    if run.params.get("strategy"):
        return run.params["strategy"]
    parent = store.get(session, Run, run.parent_id) if run.parent_id else None
    return parent.params.get("strategy") if parent is not None and parent.kind == RunKind.pipeline else None


def write_card(sessions: sessionmaker[Session], spec: str, path: Path | None = None) -> Path:
    """(Re)write the model card README.md in the folder of a model adapt-distill made; its path."""
    from core.judge.card import write_model_card

    with sessions.begin() as session:
        record = ensure_model(session, spec)
        if record.kind in ("bundled", "folder"):
            raise ConfigError(f"{spec} is not a model adapt-distill made; its folder is left as it is")
        path = path or model_path(session, record)
        info = card_info(session, record, path)
    return write_model_card(path, info)


def refresh_cards(sessions: sessionmaker[Session], specs: list[str]) -> None:
    """Rewrite the cards of the models adapt-distill made among specs (after new scores or speed).
    A card that cannot be written is logged: the scores are in the store all the same."""
    for spec in specs:
        with sessions.begin() as session:
            made = ensure_model(session, spec).kind not in ("bundled", "folder")
        if made:
            try:
                write_card(sessions, spec)
            except Exception as exc:  # the card is a copy of what the store holds
                log.warning("the model card of %s could not be written: %s", spec, exc)


def model_files(folder: Path) -> list[Path]:
    """The regular files inside a model folder, sorted: a link (to a file or a folder, inside or out)
    is never followed, so an export holds what the folder holds and nothing it points at."""
    found = []
    for root, folders, files in os.walk(folder, followlinks=False):
        folders[:] = [f for f in folders if not os.path.islink(os.path.join(root, f))]
        found += [Path(root, f) for f in files if stat.S_ISREG(os.lstat(os.path.join(root, f)).st_mode)]
    return sorted(found)


def export_name(spec: str) -> str:
    """A model's name in file names: 'run-8', 'bundled', a folder by its own name."""
    spec = Path(spec).name if Path(spec).is_absolute() else spec
    return spec.replace(":", "-").replace("/", "_").strip("._-") or "model"


def export_path(out: str | Path | None, name: str) -> Path:
    """Where an export goes: `<name>.zip` in the data folder's exports/, or in the folder `out`
    names (an existing one, or a path ending in /), else `out` itself, which must end in .zip."""
    if out is None:
        return settings.home() / "exports" / f"{name}.zip"
    text = str(out)
    path = Path(text).expanduser()
    if text.endswith(("/", os.sep)) or path.is_dir():
        return path / f"{name}.zip"
    if path.suffix.lower() != ".zip":
        raise ConfigError(f"--out {text} is neither a folder nor a .zip file: name a .zip file, or end the path "
                          f"with / for a folder ({text}/ writes {text}/{name}.zip)")
    return path


def export_zip(sessions: sessionmaker[Session], spec: str, out: str | Path | None = None) -> Path:
    """A zip of the model folder (checkpoints left out) with a fresh model card, written under a
    temporary name and renamed; the zip's path."""
    from core.judge.card import model_card

    with sessions.begin() as session:
        record = ensure_model(session, spec)
        path = model_path(session, record)
        info = card_info(session, record)
        name = export_name(record.spec)
    out = export_path(out, name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{out.name}")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            for file in model_files(path):
                relative = file.relative_to(path)
                if relative.parts[0] not in ("checkpoints",) and file.name != "README.md":
                    archive.write(file, f"{name}/{relative.as_posix()}")
            archive.writestr(f"{name}/README.md", model_card(info))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
