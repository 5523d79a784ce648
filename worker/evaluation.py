"""Judging models: labelled tasks in the store, evaluation runs (fine-tune a model on a task with
several seeds), benchmark runs (speed of several models side by side, and their intrinsic
measures on a corpus), and the intrinsic measures every model-making run records of its output."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core import memory
from core.corpus import read_documents
from core.errors import AdaptDistillError, ConfigError
from core.formatting import count, printable
from core.judge.settings import BENCH_DEFAULTS, MIN_LATENCY_REPEATS, TASK_FILE_DEFAULTS, FinetuneConfig, check_bench
from db import settings, store
from db.models import Corpus, Evaluation, Measurement, Run, RunKind, Task
from worker.catalogue import ensure_model, model_path, model_summary, refresh_cards, register_run_model, write_card
from worker.lifecycle import Reporter, execute
from worker.kinds import KINDS
from worker.resources import check_fits, check_fits_here
from worker.specs import ModelSpec, check_encoder, check_sequence_length, folder_shape

log = logging.getLogger(__name__)

FINETUNE_FIELDS = tuple(f.name for f in dataclasses.fields(FinetuneConfig))


# --- tasks ------------------------------------------------------------------------------------------

def add_task(sessions: sessionmaker[Session], train: str | Path, type: str, dev: str | Path | None = None,
             test: str | Path | None = None, name: str | None = None, format: str | None = None,
             text_field: str = TASK_FILE_DEFAULTS["text_field"], pair_field: str = TASK_FILE_DEFAULTS["pair_field"],
             label_field: str = TASK_FILE_DEFAULTS["label_field"], seed: int = TASK_FILE_DEFAULTS["seed"],
             dev_fraction: float = TASK_FILE_DEFAULTS["dev_fraction"],
             test_fraction: float = TASK_FILE_DEFAULTS["test_fraction"]) -> tuple[Task, bool]:
    """(task, created): validate and store a labelled task; the same content twice is one task."""
    from core.judge.tasks import ingest_task

    ingested = ingest_task(type, train, settings.tasks_dir(), dev, test, format, text_field, pair_field, label_field,
                           seed, dev_fraction, test_fraction)
    stats = ingested.stats
    names = {split: Path(path).name for split, path in (("train", train), ("dev", dev), ("test", test)) if path}
    return store.insert_once(sessions, lambda session: store.task_by_sha(session, ingested.sha256), lambda: Task(
        name=printable(name or Path(train).name)[:200], sha256=ingested.sha256, type=stats.type, path=str(ingested.path),
        source_names=names, labels=stats.labels, sizes=stats.sizes, label_counts=stats.label_counts,
        origin=stats.origin, has_pair=stats.has_pair))


def delete_task(sessions: sessionmaker[Session], task_id: int) -> None:
    """Delete a task, its stored files and its evaluations."""
    with sessions.begin() as session:
        task = store.get(session, Task, task_id)
        path = Path(task.path)
        session.delete(task)
    shutil.rmtree(path, ignore_errors=True)


def task_dict(task: Task) -> dict:
    return {"task_id": task.id, "name": task.name, "type": task.type, "labels": list(task.labels),
            "sizes": dict(task.sizes), "label_counts": dict(task.label_counts), "origin": dict(task.origin),
            "source_names": dict(task.source_names), "has_pair": task.has_pair, "sha256": task.sha256,
            "created": task.created_at.isoformat() if task.created_at else None}


# --- evaluation runs -----------------------------------------------------------------------------------

def finetune_config(params: dict) -> FinetuneConfig:
    return FinetuneConfig(**{k: v for k, v in params.items() if k in FINETUNE_FIELDS})


def check_finetune(session: Session, task_id: int, params: dict) -> tuple[FinetuneConfig, str]:
    """The fine-tuning settings for a task and the metric that selects: checked against the task."""
    config = finetune_config(params)
    if config.onnx:
        from core.export import require_onnx

        require_onnx()  # the one-line install hint now, not after the fine-tuning
    task = store.get(session, Task, task_id)
    metric = config.metric_for(task.type, task.labels, f"task {task_id}")
    return config, metric


def create_evaluation(sessions: sessionmaker[Session], model: str, task_id: int, params: dict,
                      parent_id: int | None = None, depends_on=()) -> Run:
    """A queued evaluation of a model on a task (its settings checked now)."""
    with sessions.begin() as session:
        config, metric = check_finetune(session, task_id, params)
        check_encoder(session, model, "model", "fine-tuning starts from")
        record = ensure_model(session, model)
        shape = ModelSpec.parse(record.spec).shape(session)
        if shape is not None:
            check_sequence_length(config.max_length, shape, f"model {record.spec}", "max-length")
            check_fits(memory.finetuning(shape, config.max_length, config.batch_size, config.precision),
                       config.device, KINDS[RunKind.evaluation].queue)
        run = store.create_run(session, RunKind.evaluation,
                               {**{k: v for k, v in params.items() if k in FINETUNE_FIELDS},
                                "model": record.spec, "task_id": task_id},
                               parent_id=parent_id, depends_on=[store.get(session, Run, r.id) for r in depends_on])
        run.job_id = f"run-{run.id}"
        if config.keep:  # the best seed's fine-tuned model goes here, a model of its own (run:ID)
            run.output_dir = str(settings.runs_dir() / str(run.id) / "model")
        settings_ = dataclasses.asdict(config)
        session.add(Evaluation(run_id=run.id, model_id=record.id, task_id=task_id, metric=metric,
                               seeds=config.seeds, settings={**settings_, "exclude_labels": list(config.exclude_labels)}))
        session.flush()
        return run


def execute_evaluation(sessions: sessionmaker[Session], run_id: int, report) -> None:
    def body(run: Run) -> None:
        from core.judge.finetune import evaluate_model
        from core.judge.tasks import load_task
        from worker.contamination import for_model
        from worker.run_state import run_dir

        with sessions.begin() as session:
            run = store.get(session, Run, run_id)
            evaluation = store.evaluation_for_run(session, run_id)
            path = model_path(session, evaluation.model)
            task_path, metric = Path(evaluation.task.path), evaluation.metric
            config = finetune_config({**run.params, "metric": metric})
            spec, task_id = evaluation.model.spec, evaluation.task_id
            keep = Path(run.output_dir) if config.keep and run.output_dir else None
        shape = folder_shape(path)
        if shape is not None:
            check_fits_here(memory.finetuning(shape, config.max_length, config.batch_size, config.precision),
                            config.device)
        task = load_task(task_path)
        # dev or test text in a corpus behind the model inflates its scores: found before fine-tuning
        contamination = for_model(sessions, spec, task_id, report)
        result = evaluate_model(path, task, run_dir(run_id) / "seeds", config, progress=report,
                                cancel=report.cancelled, on_metrics=report.metrics, keep=keep)
        report.flush()
        data = {**result.to_dict(), "contamination": contamination}
        for seed in data["seeds"]:  # kept in the seed's result.json (test_predictions); the store stays small
            seed.pop("test_predicted", None)
        with sessions.begin() as session:
            evaluation = store.evaluation_for_run(session, run_id)
            run = store.get(session, Run, run_id)
            kept = None
            if keep is not None:  # the fine-tuned model is a model of its own: run:ID
                record = register_run_model(session, run)
                kept = record.spec
                data["kept_model"] = {"spec": kept, "name": record.name, "seed": result.kept.get("seed")}
            evaluation.results = data
            test = result.test
            run.params = {**run.params, "result": {
                "metric": result.metric, "lr": result.lr, "converged": result.converged, "seconds": result.seconds,
                "test": {k: v for k, v in test.items() if k != "per_seed"},
                "dev": {k: v for k, v in result.dev.items() if k != "per_seed"}}}
            spec = evaluation.model.spec
        refresh_cards(sessions, [spec])
        if kept is not None:  # the run is not marked succeeded yet: its folder is named
            try:
                write_card(sessions, kept, keep)
            except Exception as exc:  # the model is fine without its card
                log.warning("the model card of %s could not be written: %s", kept, exc)

    execute(sessions, run_id, body)


def test_predictions(run_id: int, seeds: list[int]) -> dict[int, list] | None:
    """seed -> the test predictions of a finished evaluation run, from its seeds' result.json files;
    None when a seed has none (it finished before predictions were kept, or its files are gone)."""
    from core.train.checkpoints import read_json

    found = {}
    for seed in seeds:
        folder = settings.runs_dir() / str(run_id) / "seeds" / f"seed-{seed}"
        predicted = (read_json(folder / "result.json") or {}).get("test_predicted")
        if not predicted:
            return None
        found[seed] = predicted
    return found or None


def evaluation_dict(session: Session, run_id: int) -> dict:
    """An evaluation as `adapt-distill evaluate --json` prints it: the test scores' means, their
    "<name>_std" and "per_seed", with the model, task and how the seeds went."""
    evaluation = store.evaluation_for_run(session, run_id)
    run = evaluation.run
    results = evaluation.results or {}
    return {"run_id": run_id, "status": run.status.value, "error": run.error, "model": evaluation.model.spec,
            "task_id": evaluation.task_id, "metric": evaluation.metric, "seeds": evaluation.seeds,
            "metrics": results.get("test", {}), "dev": {k: v for k, v in results.get("dev", {}).items()
                                                           if k != "per_seed"},
            "converged": results.get("converged"), "lr": results.get("lr"), "onnx": results.get("test_onnx") or {},
            "kept_model": results.get("kept_model"),
            "contamination": results.get("contamination"),
            "epochs": [{"seed": s["seed"], "best_epoch": s["best_epoch"], "epochs_run": s["epochs_run"],
                        "stopped_early": s["stopped_early"]} for s in results.get("seeds", [])]}


# --- benchmark runs and intrinsic measures ---------------------------------------------------------------

def create_benchmark(sessions: sessionmaker[Session], models: list[str], params: dict | None = None,
                     corpus_id: int | None = None, parent_id: int | None = None, depends_on=()) -> Run:
    """A queued speed benchmark of several models side by side (the first is the reference), with
    their intrinsic measures on a corpus when one is given."""
    if not models:
        raise ConfigError("benchmark at least one model: pass --model M (more than once to compare)")
    params = bench_params(params)
    with sessions.begin() as session:
        if corpus_id is not None:
            store.get(session, Corpus, corpus_id)
        specs = [ensure_model(session, m).spec for m in models]
        if len(set(specs)) != len(specs):
            raise ConfigError("a model is listed twice: benchmark each model once")
        for spec in specs:
            shape = ModelSpec.parse(spec).shape(session)
            if shape is not None:
                check_sequence_length(params["seq_len"], shape, f"model {spec}")
                check_fits(memory.inference(shape, params["seq_len"], params["batch_size"]), params["device"],
                           KINDS[RunKind.benchmark].queue, subject=f"benchmarking {spec}")
        run = store.create_run(session, RunKind.benchmark, {**params, "models": specs, "corpus_id": corpus_id},
                               parent_id=parent_id, depends_on=[store.get(session, Run, r.id) for r in depends_on])
        run.job_id = f"run-{run.id}"
        return run


def bench_params(params: dict | None) -> dict:
    """The benchmark's settings with their defaults, checked."""
    params = {**BENCH_DEFAULTS, **{k: v for k, v in (params or {}).items() if v is not None}}
    return check_bench(params)


def execute_benchmark(sessions: sessionmaker[Session], run_id: int, report: Reporter) -> None:
    def body(run: Run) -> None:
        with sessions.begin() as session:
            params = dict(store.get(session, Run, run_id).params)
            paths = [(spec, model_path(session, ensure_model(session, spec))) for spec in params["models"]]
        _measure_speed(sessions, run_id, params, paths, report)
        if params.get("corpus_id") is not None:
            _measure_on_corpus(sessions, run_id, params["corpus_id"], paths, report)
        refresh_cards(sessions, [spec for spec, _ in paths])

    execute(sessions, run_id, body)


def _measure_speed(sessions, run_id: int, params: dict, paths: list[tuple[str, Path]], report) -> None:
    from core.judge.speed import measure_speed

    threads = params.get("threads", BENCH_DEFAULTS["threads"])  # a run queued before threads were a setting
    for _, path in paths:
        shape = folder_shape(path)
        if shape is not None:
            check_fits_here(memory.inference(shape, params["seq_len"], params["batch_size"]), params["device"])
    results = measure_speed(paths, params["device"], params["seq_len"], params["batch_size"],
                            # a run queued before 30 forwards were the least gets them when it runs
                            max(params["latency_repeats"], MIN_LATENCY_REPEATS), params["throughput_repeats"],
                            params["warmup"], threads=threads, progress=report, cancel=report.cancelled)
    context = speed_context(results[0].device, params["seq_len"], params["batch_size"], threads)
    with sessions.begin() as session:
        for result in results:
            record = ensure_model(session, result.name)
            session.add(Measurement(model_id=record.id, run_id=run_id, kind="speed", context=context,
                                    values=result.to_dict()))
        run = store.get(session, Run, run_id)
        run.params = {**run.params, "result": {"models": [bench_row(r.to_dict()) for r in results],
                                               "context": context}}


def speed_context(device: str, seq_len: int, batch_size: int, threads: int) -> str:
    """What makes speed measurements comparable: only those with the same context are put side by
    side (measurements stored before threads were recorded have no "thread" in theirs)."""
    return f"{device} · seq {seq_len} · batch 1 and {batch_size} · {count(threads, 'thread')}"


def _measure_on_corpus(sessions, run_id: int, corpus_id: int, paths: list[tuple[str, Path]], report) -> None:
    """Intrinsic measures of the models not yet measured on the corpus (the runs that made the
    others measured them already)."""
    with sessions.begin() as session:
        done = {m.model.spec for m in session.scalars(select(Measurement).where(
            Measurement.kind == "intrinsic", Measurement.context.startswith(f"corpus {corpus_id} ·")))}
    todo = [(spec, path) for spec, path in paths if spec not in done]
    for k, (spec, path) in enumerate(todo):
        measure_intrinsic(sessions, spec, corpus_id, run_id,
                          (lambda stage, f, k=k: report(stage, (k + f) / len(todo))), path)


def bench_row(result: dict) -> dict:
    """One model of `adapt-distill bench --json`."""
    return {"model": result["name"], "params": result["params"], "size_bytes": result["size_bytes"],
            "latency_ms_p50": result["latency_ms_p50"], "latency_ms_p95": result["latency_ms_p95"],
            "throughput_per_s": result["throughput_per_s"], "speedup_vs_first": result["speedup_vs_first"],
            "throughput_speedup_vs_first": result["throughput_speedup_vs_first"], "device": result["device"],
            "seq_len": result["seq_len"], "batch_size": result["batch_size"],
            **{key: result.get(key) for key in BENCH_MEASUREMENT_KEYS}}


# How a measurement was taken (core.judge.speed.SpeedResult): added to `bench --json` after the keys above.
BENCH_MEASUREMENT_KEYS = ("latency_ms_iqr", "threads", "latency_repeats", "throughput_repeats", "warmup",
                          "torch_version", "cpu_model", "load_before", "load_after", "seconds", "noisy",
                          "noisy_reason")


def measure_intrinsic(sessions: sessionmaker[Session], spec: str, corpus_id: int, run_id: int | None = None,
                      report=None, path: Path | None = None) -> dict:
    """Parameters, size, tokens per word and unknown rate on the corpus, and MLM perplexity on
    its held-out blocks when the model has a trained MLM head; stored as a measurement. `path`
    is the folder, for a run measuring the model it has just written (not yet succeeded)."""
    from core.judge.measures import intrinsic_measures

    with sessions.begin() as session:
        record = ensure_model(session, spec)
        path = path or model_path(session, record)
        corpus = store.get(session, Corpus, corpus_id)
        corpus_path, corpus_name = Path(corpus.path), corpus.name
    if not corpus_path.is_file():
        raise ConfigError(f"the corpus file {corpus_path} is gone: add the corpus again")
    measures = intrinsic_measures(path, lambda: read_documents(corpus_path), progress=report,
                                  cancel=getattr(report, "cancelled", None))
    values = measures.to_dict()
    with sessions.begin() as session:
        record = ensure_model(session, spec)
        session.add(Measurement(model_id=record.id, run_id=run_id, kind="intrinsic",
                                context=f"corpus {corpus_id} · {corpus_name}"[:200], values=values))
    return values


def models_table(sessions: sessionmaker[Session]) -> list[dict]:
    from worker.catalogue import list_models

    with sessions.begin() as session:
        return [model_summary(session, m) for m in list_models(session)]


def describe_model(sessions: sessionmaker[Session], run_id: int, spec: str, corpus_id: int, path: Path,
                   report=None) -> None:
    """Measure the model a run has just written to `path` on its corpus (cheap: a sample and the
    held-out blocks) and write its model card. A failure is noted on the run; the model is fine."""
    from worker.evaluation import measure_intrinsic

    for what, step in (("measuring", lambda: measure_intrinsic(sessions, spec, corpus_id, run_id, report, path)),
                       ("the model card", lambda: write_card(sessions, spec, path))):
        try:
            step()
        except Exception as exc:  # the run succeeded; say what could not be done
            log.warning("%s of %s failed: %s", what, spec, exc)
            with sessions.begin() as session:
                run = store.get(session, Run, run_id)
                run.params = {**run.params, "notes": [*run.params.get("notes", []),
                                                      f"{what} failed: {type(exc).__name__}: {exc}"]}


def evaluation_cost(session: Session, run: Run) -> float | None:
    """The FLOPs an evaluation will spend fine-tuning, to weigh it in an experiment's progress: 6 per
    parameter and token of its most epochs over train, once per seed; None when unknown."""
    p, config = run.params, finetune_config(run.params)
    try:
        shape = ModelSpec.parse(p["model"]).shape(session)
    except (AdaptDistillError, KeyError, OSError):  # a weight for progress only: never a reason to fail
        return None
    task = session.get(Task, p["task_id"])
    if not shape or task is None:
        return None
    tokens = float(task.sizes.get("train", 0)) * config.max_length * config.epochs * config.seeds
    return 6.0 * shape["parameters"] * tokens or None
