"""Adaptation, distillation and pipelines as runs: create (validate, record lineage), execute
(call core with progress, metrics, cancel), cancel, resume, and the detection of runs whose
worker died."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import settings
from core.configs import (ADAPT_LR, DISTILL_LR, INITS, PRESETS, STRATEGIES, AdaptConfig, DistillConfig, TrainConfig,
                          check_student_smaller)
from core.errors import AdaptDistillError, ConfigError
from core.train.eta import PHASES, Clock
from core.model_io import inspect_model, resolve_model
from core.train.tokens import CachedCorpus
from db import store
from db.models import Run, RunKind, RunStatus, utcnow
from worker.service import Reporter, _execute, _finish, file_sha256, folder_size, next_attempt
from worker.shapes import RUN_PREFIX, spec_shape, student_of

log = logging.getLogger(__name__)


RESUMED = "resumed"  # a metric at the step a resumed attempt went on from; its value, the attempt


class TrainingReporter(Reporter):
    """Progress plus training detail: step of total, ETA (core.train.eta: steps, evaluations and
    checkpoints timed as they happen), latest loss, the metric history and a log. Before the first
    step (loading, tokenizing) the bar stays at the step the run starts from, a resumed run's
    checkpoint, and the stage says how far the setup is."""

    def __init__(self, sessions, run_id, total_steps: int, job=None, interval: float = 1.0, echo=None,
                 start_step: int = 0, eval_every: int | None = None, checkpoint_every: int | None = None,
                 attempt: int = 1):
        super().__init__(sessions, run_id, job, interval, echo)
        self.total = total_steps
        self.pending: list[tuple[int, str, float]] = []
        self.written = 0
        self.reached = start_step
        self.latest: dict[str, float] = {"step": start_step}
        self.clock = Clock(total_steps, eval_every, checkpoint_every or 10**12)
        self.attempt = attempt
        self.log_path = run_dir(run_id) / "run.log"

    def __call__(self, stage: str, fraction: float) -> None:
        if stage in PHASES:
            self.reached = int(round(fraction * self.total))
        self.clock.observe(stage, self.reached, time.monotonic())
        super().__call__(stage, fraction)

    def shown(self, stage: str, fraction: float) -> tuple[str, float]:
        if stage in PHASES:
            return stage, fraction
        setup = f"{stage} ({fraction:.0%})" if 0 < fraction < 1 else stage
        return setup, self.reached / self.total if self.total else 0.0

    def metrics(self, step: int, values: dict[str, float]) -> None:
        if "total_steps" in values:  # the loop starts: how many steps it runs, not a metric
            values = dict(values)
            self.total = self.clock.total = int(values.pop("total_steps"))
            if step > 0:  # from a checkpoint: where the curve goes on is marked
                values[RESUMED] = float(self.attempt)
            if not values:
                return
        self.pending += [(step, k, float(v)) for k, v in values.items()]
        self.latest.update(values, step=step)
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(f"step {step}/{self.total} " + " ".join(f"{k}={v:.5g}" for k, v in values.items()) + "\n")

    def record(self, session: Session, run: Run, stage: str, fraction: float) -> None:
        step = self.reached if stage in PHASES else int(self.latest["step"])
        if stage in PHASES:
            run.eta_seconds, run.eta_guess = self.clock.remaining(step)
        run.step, run.total_steps = step, self.total
        if "loss" in self.latest:
            run.latest_loss = self.latest["loss"]
        for step_, name, value in self.pending:
            store.add_metric(session, self.run_id, step_, name, value)
        self.written = len(self.pending)

    def recorded(self) -> None:
        del self.pending[:self.written]  # kept until committed: a failed write is retried with them
        self.written = 0

    def meta(self, run: Run, stage: str, fraction: float) -> dict:
        return {"stage": stage, "progress": fraction, "step": run.step, "total_steps": self.total,
                "eta_seconds": run.eta_seconds, "latest_loss": run.latest_loss}

    def settle(self) -> None:
        """Best effort, when the run stops on an error: write the step it reached and the metrics not
        yet written, so that the failed run shows where it got to (a failure here is only logged)."""
        try:
            with self.sessions.begin() as session:
                self.record(session, store.get_run(session, self.run_id), "stopped", 0.0)
            self.recorded()
        except Exception as exc:
            log.warning("run %s: could not record where it stopped: %s", self.run_id, exc)

    def flush(self) -> None:
        if self.pending:
            with self.sessions.begin() as session:
                self.record(session, store.get_run(session, self.run_id), self.stage or "training", 1.0)
            self.recorded()


class Heartbeat:
    """Writes heartbeat_at every few seconds from a thread, so a dead worker is noticed even
    while one training step takes long."""

    def __init__(self, sessions, run_id: int, every: float | None = None):
        every = every if every is not None else float(os.environ.get("ADAPT_DISTILL_HEARTBEAT_S", "5"))
        self.sessions, self.run_id, self.every = sessions, run_id, every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while not self.stop.wait(self.every):
            try:
                with self.sessions.begin() as session:
                    store.get_run(session, self.run_id).heartbeat_at = utcnow()
            except Exception as exc:  # a missed beat is not fatal; the next one may pass
                log.warning("heartbeat of run %s failed: %s", self.run_id, exc)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)


def run_dir(run_id: int) -> Path:
    path = settings.runs_dir() / str(run_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- configs <-> params --------------------------------------------------------------------

def _train_config(params: dict, lr: float) -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{"lr": lr, **{k: v for k, v in params.items() if k in fields}})


def adapt_config(params: dict) -> AdaptConfig:
    fields = {f.name for f in dataclasses.fields(AdaptConfig)} - {"train"}
    return AdaptConfig(**{k: v for k, v in params.items() if k in fields}, train=_train_config(params, ADAPT_LR))


def distill_config(params: dict) -> DistillConfig:
    """The distillation settings of a run's params. The student's shape is resolved against the
    teacher when the run is created (`student_params`); before that a preset or the four explicit
    dimensions give it, else None (derived from the teacher when the run starts)."""
    explicit = [params.get(k) for k in ("layers", "hidden", "heads", "intermediate")]
    known = params.get("student") in PRESETS or all(v is not None for v in explicit)
    shape = student_of(params, None) if known else None
    fields = {f.name for f in dataclasses.fields(DistillConfig)} - {"train", "student", "init"}
    init = params.get("init") if params.get("init") in INITS else "random"  # a model init is resolved at run time
    return DistillConfig(student=shape, init=init,
                         **{k: v for k, v in params.items() if k in fields}, train=_train_config(params, DISTILL_LR))


# --- model specs -----------------------------------------------------------------------------

def resolve_spec(session: Session, spec: str) -> Path:
    """A model folder for 'bundled', a folder, a hub id, or run:ID (the model a finished run made)."""
    if spec.startswith(RUN_PREFIX):
        run = store.get_run(session, int(spec[len(RUN_PREFIX):]))
        if run.status != RunStatus.succeeded or not run.output_dir:
            raise ConfigError(f"run {run.id} has no finished model yet ({run.status.value})")
        return Path(run.output_dir)
    return resolve_model(spec)


def check_spec(session: Session, spec: str) -> str:
    """Validate a model spec now (a clear error here beats one in the worker); returns it normalized."""
    if spec.startswith(RUN_PREFIX):
        try:
            run = store.get_run(session, int(spec[len(RUN_PREFIX):]))
        except ValueError:
            raise ConfigError(f"'{spec}': write run:ID with a run id") from None
        if run.kind not in (RunKind.expansion, RunKind.adaptation, RunKind.distillation):
            raise ConfigError(f"run {run.id} is a {run.kind.value}; it made no model")
        return spec
    from worker.service import model_key

    inspect_model(spec)
    return model_key(spec)


def align_vocabulary(session: Session, model: Path, reference: Path, out: Path) -> Path:
    """The model itself when its vocabulary is the reference's (same tokens, same ids); else, when
    the reference's vocabulary is the model's followed by more tokens (an expansion of the same
    base), the model expanded with those tokens in that order, written to `out` once."""
    from core.model_io import METADATA_FILE
    from core.vocab.expand import expand_model
    from core.model_io import vocabulary, vocabulary_difference

    mine, theirs = vocabulary(model), vocabulary(reference)
    if vocabulary_difference(mine, theirs) is None:
        return model
    if len(mine) >= len(theirs) or theirs[:len(mine)] != mine:
        where = vocabulary_difference(mine, theirs[:len(mine)]) or "the student has more"
        raise ConfigError(f"the student's vocabulary is neither the teacher's nor its base's ({len(mine):,} and "
                          f"{len(theirs):,} tokens; {where}): pick a student with the teacher's vocabulary")
    if not (out / "config.json").is_file():
        meta_file = reference / METADATA_FILE
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        expand_model(model, theirs[len(mine):], out,
                     {**({"analysis_id": meta["analysis_id"]} if "analysis_id" in meta else {}),
                      "aligned_to": str(reference)})
    difference = vocabulary_difference(vocabulary(out), theirs)
    if difference is not None:
        raise ConfigError(f"{out} does not have the teacher's vocabulary ({difference}): delete it and resume")
    return out


# --- creating runs ----------------------------------------------------------------------------

def _new_run(session, kind: RunKind, params: dict, parent_id=None, depends_on=()) -> Run:
    run = store.create_run(session, kind, params, parent_id=parent_id, depends_on=depends_on)
    run.job_id = f"run-{run.id}"
    run.output_dir = params.get("output_dir") or str(run_dir(run.id) / "model")
    run.total_steps = params.get("steps")
    return run


TRAINABLE = "bert"  # adaptation and distillation train BertForMaskedLM (encoder `bert`, head `cls`)


def check_trainable(session: Session, spec: str, what: str) -> dict | None:
    """The shape of the model `spec` names, after refusing one the training code cannot train (by
    its architecture); None when it cannot be known yet (a hub id not downloaded)."""
    from core.model_io import names_folder

    shape = spec_shape(session, spec)
    if shape is None and not spec.startswith(RUN_PREFIX) and names_folder(spec):
        kind = "not a BERT configuration"
    elif shape is not None and shape.get("model_type", TRAINABLE) != TRAINABLE:
        kind = f"a '{shape['model_type']}' model"
    else:
        return shape
    raise ConfigError(f"the {what} {spec} is {kind}: adaptation and distillation train BERT models (model_type "
                      f"'bert') only; pick a BERT checkpoint")


def check_sequence_length(seq_len: int, shape: dict, what: str) -> None:
    if seq_len > shape["positions"]:
        raise ConfigError(f"seq-len {seq_len} is longer than the {what} can read ({shape['positions']} positions): "
                          f"use --seq-len {shape['positions']} or less")


def create_adaptation(sessions: sessionmaker[Session], corpus_id: int, model: str, params: dict,
                      parent_id=None, depends_on=()) -> Run:
    config = adapt_config(params)  # validates
    with sessions.begin() as session:
        store.get_corpus(session, corpus_id)
        if not depends_on:
            model = check_spec(session, model)
        shape = check_trainable(session, model, "model")
        if shape is not None:
            check_sequence_length(config.seq_len, shape, "model")
        return _new_run(session, RunKind.adaptation, {**params, "corpus_id": corpus_id, "model": model},
                        parent_id, [store.get_run(session, r.id) for r in depends_on])


def student_params(session: Session, teacher: str, params: dict) -> dict:
    """The params with the student's shape written out in full (a preset or explicit dimensions on
    top of the shape derived from the teacher), after refusing a student that is not smaller than
    its teacher in parameters (unless allow_larger_student). Left as they are when the teacher's
    shape cannot be known yet (a hub id not downloaded)."""
    teacher_shape = check_trainable(session, teacher, "teacher")
    if teacher_shape is None:
        return params
    config = distill_config(params)
    check_sequence_length(config.seq_len, teacher_shape, "teacher")
    layers = teacher_shape["layers"]
    if not -layers <= config.teacher_layer < layers:
        raise ConfigError(f"teacher-layer {config.teacher_layer} is out of range: the teacher has {layers} layers "
                          f"(use 0 to {layers - 1}, or -1 for the last)")
    init = params.get("init") or "random"
    if init not in INITS:
        student = check_trainable(session, init, "student")
        if student is None:
            return params
        name, student_parameters = f"at {init}", bert_parameters_like(student, teacher_shape)
    else:
        shape = student_of(params, teacher_shape)
        params = {**params, "layers": shape.layers, "hidden": shape.hidden, "heads": shape.heads,
                  "intermediate": shape.intermediate}
        name = shape.name
        student_parameters = bert_parameters_like(dataclasses.asdict(shape), teacher_shape)
        if init == "teacher" and (shape.hidden, shape.heads) != (teacher_shape["hidden"], teacher_shape["heads"]):
            raise ConfigError(f"init 'teacher' needs the teacher's width ({teacher_shape['hidden']} hidden, "
                              f"{teacher_shape['heads']} heads); the student {name} has {shape.hidden} and "
                              f"{shape.heads}: use --init random or the teacher's width")
        if init == "teacher" and shape.layers > layers:
            raise ConfigError(f"init 'teacher' copies teacher layers: the student's {shape.layers} layers are more "
                              f"than the teacher's {layers}")
        if config.relation_heads is not None and (shape.hidden % config.relation_heads
                                                  or teacher_shape["hidden"] % config.relation_heads):
            raise ConfigError(f"relation-heads {config.relation_heads} must divide both the student's hidden size "
                              f"({shape.hidden}) and the teacher's ({teacher_shape['hidden']})")
    suggestion = student_of({}, teacher_shape).describe()
    check_student_smaller(student_parameters, teacher_shape["parameters"], name, suggestion,
                          bool(params.get("allow_larger_student")))
    return params


def bert_parameters_like(student: dict, teacher: dict) -> int:
    """Parameters of a student that shares the teacher's vocabulary and positions."""
    from core.configs import bert_parameters

    return bert_parameters(teacher["vocab_size"], student["hidden"], student["layers"], student["intermediate"],
                           teacher["positions"], teacher["token_types"])


def create_distillation(sessions: sessionmaker[Session], corpus_id: int, teacher: str, params: dict,
                        parent_id=None, depends_on=()) -> Run:
    distill_config(params)
    with sessions.begin() as session:
        store.get_corpus(session, corpus_id)
        if not depends_on:
            teacher = check_spec(session, teacher)
            init = params.get("init", "random")
            if init not in INITS:
                params = {**params, "init": check_spec(session, init)}
        params = student_params(session, teacher, params)
        return _new_run(session, RunKind.distillation, {**params, "corpus_id": corpus_id, "teacher": teacher},
                        parent_id, [store.get_run(session, r.id) for r in depends_on])


def create_pipeline(sessions: sessionmaker[Session], strategy: str, corpus_id: int, teacher: str,
                    adapt_params: dict, distill_params: dict, student_init: str | None = None) -> list[Run]:
    """The paper's three orders as a chain of runs; returns [pipeline, step1, step2, ...]."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy '{strategy}': use one of {', '.join(STRATEGIES)}")
    adapt_config(adapt_params)  # both stages are checked before anything is recorded
    distill_config(distill_params)
    if strategy == "adapt-and-distill" and not student_init:
        raise ConfigError("adapt-and-distill adapts a small pretrained student too: pass --student-init MODEL "
                          "(a folder, a hub id, bundled or run:ID) with the teacher's vocabulary")
    with sessions.begin() as session:
        store.get_corpus(session, corpus_id)
        teacher = check_spec(session, teacher)
        if student_init:
            student_init = check_spec(session, student_init)
        # the student is checked against the teacher now: adaptation keeps a model's shape
        student_params(session, teacher, {**distill_params, "init": student_init} if student_init else distill_params)
        pipeline = _new_run(session, RunKind.pipeline, {"strategy": strategy, "corpus_id": corpus_id,
                                                        "teacher": teacher, "student_init": student_init})
        pipeline.output_dir = None
        pipeline_id = pipeline.id
    make_adapt = lambda model, deps=(): create_adaptation(  # noqa: E731
        sessions, corpus_id, model, adapt_params, pipeline_id, deps)
    make_distill = lambda model, params, deps=(): create_distillation(  # noqa: E731
        sessions, corpus_id, model, params, pipeline_id, deps)
    if strategy == "adapt-then-distill":
        adapted = make_adapt(teacher)
        steps = [adapted, make_distill(f"{RUN_PREFIX}{adapted.id}", distill_params, [adapted])]
    elif strategy == "distill-then-adapt":
        student = make_distill(teacher, distill_params)
        steps = [student, make_adapt(f"{RUN_PREFIX}{student.id}", [student])]
    else:
        adapted = make_adapt(teacher)
        adapted_student = create_adaptation(sessions, corpus_id, student_init, {**adapt_params, "align_to": teacher},
                                            pipeline_id)
        steps = [adapted, adapted_student,
                 make_distill(f"{RUN_PREFIX}{adapted.id}", {**distill_params, "init": f"{RUN_PREFIX}{adapted_student.id}"},
                              [adapted, adapted_student])]
    with sessions.begin() as session:
        pipeline = store.get_run(session, pipeline_id)
        costs = {str(r.id): training_cost(session, store.get_run(session, r.id)) for r in steps}
        if all(costs.values()):  # the weights of its steps in its progress (app.data.pipeline_progress)
            pipeline.params = {**pipeline.params, "step_costs": costs}
        return [pipeline] + [store.get_run(session, r.id) for r in steps]


def training_cost(session: Session, run: Run) -> float | None:
    """The training FLOPs a run will spend, to weigh the steps of a pipeline: 6 per parameter
    trained and token (forward and backward), plus 2 per teacher parameter and token for a
    distillation, times the tokens of its steps (its epochs over the corpus's words when it counts
    epochs); None when a shape cannot be known without downloading."""
    p = run.params
    config = TrainConfig()
    steps = p.get("steps")
    per_step = int(p.get("batch_size") or config.batch_size) * int(p.get("grad_accum") or config.grad_accum) \
        * int(p.get("seq_len") or 128)
    tokens = float(steps) * per_step if steps else float(p.get("epochs") or 1) * store.get_corpus(
        session, p["corpus_id"]).words
    try:
        if run.kind == RunKind.adaptation:
            shape = spec_shape(session, p["model"])
            return 6.0 * shape["parameters"] * tokens if shape else None
        teacher = spec_shape(session, p["teacher"])
        if teacher is None:
            return None
        init = p.get("init") or "random"
        student = spec_shape(session, init) if init not in INITS else (
            {"parameters": bert_parameters_like(p, teacher)} if p.get("layers") else None)
        return (6.0 * student["parameters"] + 2.0 * teacher["parameters"]) * tokens if student else None
    except (AdaptDistillError, KeyError, OSError):
        return None


# --- executing --------------------------------------------------------------------------------

def _inputs(sessions, run_id: int, model_key: str):
    with sessions.begin() as session:
        run = store.get_run(session, run_id)
        params, out = dict(run.params), Path(run.output_dir)
        corpus = store.get_corpus(session, params["corpus_id"])
        model = resolve_spec(session, params[model_key])
        if params.get("align_to"):  # a student adapted beside an expanded teacher gets its tokens first
            model = align_vocabulary(session, model, resolve_spec(session, params["align_to"]),
                                     run_dir(run_id) / "aligned-student")
        init = params.get("init")
        if init and init not in INITS:
            params["init"] = str(align_vocabulary(session, resolve_spec(session, init), model,
                                                  run_dir(run_id) / "aligned-student"))
        source = corpus_source(corpus)
    if not source.path.is_file():
        raise ConfigError(f"the corpus file {source.path} is gone: add the corpus again")
    return params, out, model, source


def corpus_source(corpus) -> CachedCorpus:
    """A stored corpus as training reads it: tokenized once per tokenizer, into the data folder's
    token cache, and memory-mapped from there by every run."""
    return CachedCorpus(Path(corpus.path), corpus.sha256, corpus.documents, settings.token_cache_dir())


def _record(sessions, run_id: int, result, report: TrainingReporter) -> None:
    """The result, the model as an artifact and as a known model, its intrinsic measures and card."""
    from worker.models import register_run_model
    from worker.service import describe_model

    report.flush()
    with sessions.begin() as session:
        run = store.get_run(session, run_id)
        run.params = {**run.params, "result": {**result.to_dict(), "timing": report.clock.timing()}}
        out = Path(result.output_dir)
        weights = out / "model.safetensors"
        store.add_artifact(session, run_id, "model", str(out), folder_size(out),
                           file_sha256(weights) if weights.is_file() else "")
        register_run_model(session, run)
        corpus_id = run.params["corpus_id"]
    describe_model(sessions, run_id, f"{RUN_PREFIX}{run_id}", corpus_id, out, report)


def train(sessions: sessionmaker[Session], run_id: int, report: TrainingReporter | None):
    """Run the core training of an adaptation or distillation run in this process (one of several
    under torchrun, when report is None: only the first process reports)."""
    with sessions.begin() as session:
        kind = store.get_run(session, run_id).kind
    progress = dict(progress=report, cancel=report.cancelled, on_metrics=report.metrics) if report else {}
    if kind == RunKind.adaptation:
        from core.train.adapt import adapt

        params, out, model, corpus = _inputs(sessions, run_id, "model")
        return adapt(model, corpus, out, adapt_config(params), metadata={"run_id": run_id}, **progress)
    from core.train.distill import distill

    params, out, teacher, corpus = _inputs(sessions, run_id, "teacher")
    config = distill_config(params)
    if params.get("init") and params["init"] not in INITS:
        config.init = params["init"]
    return distill(teacher, corpus, out, config, metadata={"run_id": run_id}, **progress)


PROCESSES_RESULT = "processes-result.json"  # what the first of several processes hands back


class HandedResult(dict):
    """A result that training processes wrote as JSON, read back."""

    output_dir = property(lambda self: self["output_dir"])

    def to_dict(self) -> dict:
        return dict(self)


def train_in_processes(sessions: sessionmaker[Session], run_id: int, processes: int) -> HandedResult:
    """Run the training under torchrun, `processes` data-parallel processes (worker.ddp), and wait:
    the first reports progress to the store and writes the model; a stop request (SIGTERM to this
    process) is passed on, and they checkpoint and stop."""
    import signal
    import subprocess
    import sys

    from core.errors import AdaptDistillError, Cancelled
    from worker.service import STOPPING

    folder = run_dir(run_id)
    outcome, log_path = folder / PROCESSES_RESULT, folder / "processes.log"
    outcome.unlink(missing_ok=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "worker.ddp", str(run_id)]
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        passed_on = False
        while process.poll() is None:
            if STOPPING.is_set() and not passed_on:
                process.send_signal(signal.SIGTERM)
                passed_on = True
            time.sleep(0.2)
    data = json.loads(outcome.read_text(encoding="utf-8")) if outcome.is_file() else {}
    if data.get("cancelled"):
        raise Cancelled(data["cancelled"])
    if "error" in data:
        raise (AdaptDistillError if data.get("known") else RuntimeError)(data["error"])
    if process.returncode != 0 or "result" not in data:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"the {processes} training processes stopped (exit {process.returncode}) without a "
                           f"result; {log_path} says: {' | '.join(tail)}")
    return HandedResult(data["result"])


def _execute_training(sessions: sessionmaker[Session], run_id: int, report: TrainingReporter) -> None:
    def body(run: Run) -> None:
        processes = int(run.params.get("processes") or 1)
        try:
            with Heartbeat(sessions, run_id):
                if processes > 1:
                    _inputs(sessions, run_id, "model" if run.kind == RunKind.adaptation else "teacher")  # once, here
                    result = train_in_processes(sessions, run_id, processes)
                else:
                    result = train(sessions, run_id, report)
        except BaseException:
            report.settle()
            raise
        _record(sessions, run_id, result, report)

    _execute(sessions, run_id, body)


execute_adaptation = execute_distillation = _execute_training


def _evaluation_executors() -> dict:
    from worker.evaluation import execute_benchmark, execute_evaluation

    return {RunKind.evaluation: execute_evaluation, RunKind.benchmark: execute_benchmark}


# Run kinds that train (or measure) models and report like training: progress, metrics, resume.
EXECUTORS = {RunKind.adaptation: execute_adaptation, RunKind.distillation: execute_distillation,
             **_evaluation_executors()}


def reporter_for(sessions, run_id: int, job=None, echo=None) -> TrainingReporter:
    """The reporter of a training (or evaluation) run: its steps, evaluation and checkpoint
    intervals for the ETA, and the step a resume starts from (its checkpoint's)."""
    with sessions.begin() as session:
        run = store.get_run(session, run_id)
        params, out = dict(run.params), run.output_dir
        trains = run.kind in (RunKind.adaptation, RunKind.distillation)
    total = int(params.get("steps") or TrainConfig().steps)  # epochs and evaluations say theirs when they start
    if not trains:
        return TrainingReporter(sessions, run_id, total, job=job, echo=echo)
    from core.train.checkpoints import checkpoint_step, latest_checkpoint

    config = TrainConfig()
    checkpoint = latest_checkpoint(Path(out)) if out else None
    return TrainingReporter(sessions, run_id, total, job=job, echo=echo, attempt=int(params.get("attempt", 1)),
                            start_step=checkpoint_step(checkpoint) if checkpoint else 0,
                            eval_every=int(params.get("eval_every") or config.eval_every),
                            checkpoint_every=int(params.get("checkpoint_every") or config.checkpoint_every))


# --- cancel, resume, dead workers ---------------------------------------------------------------

def request_cancel(sessions: sessionmaker[Session], run_id: int) -> RunStatus:
    """Mark a run (and a pipeline's unfinished steps) cancelled; a running job sees it within a
    second, saves a checkpoint and stops. Returns the status the run had."""
    with sessions.begin() as session:
        run = store.get_run(session, run_id)
        previous = run.status
        if previous.finished:
            raise ConfigError(f"run {run_id} is already {previous.value}")
        ids = [r.id for r in store.children(session, run_id) if not r.status.finished] + [run_id]
    for rid in ids:
        _finish(sessions, rid, RunStatus.cancelled, "cancelled by the user")
    return previous


def find_dead_runs(sessions: sessionmaker[Session], stale_after: float = 60.0) -> list[int]:
    """Mark running runs whose heartbeat is older than stale_after seconds as abandoned (their
    pipeline and the steps waiting on them follow)."""
    cutoff = utcnow() - timedelta(seconds=stale_after)
    dead = []
    with sessions.begin() as session:
        # pipelines and experiments have no worker of their own: their status follows their steps
        for run in session.scalars(select(Run).where(Run.status == RunStatus.running,
                                                     Run.kind.not_in([RunKind.pipeline, RunKind.experiment]))):
            beat = run.heartbeat_at or run.started_at
            if beat is not None and beat.tzinfo is None:
                beat = beat.replace(tzinfo=cutoff.tzinfo)
            if beat is not None and beat < cutoff:
                dead.append((run.id, beat))
    for run_id, beat in dead:
        _finish(sessions, run_id, RunStatus.abandoned,
                f"its worker stopped answering (last heartbeat {beat:%Y-%m-%d %H:%M:%S} UTC); "
                f"resume continues from the last checkpoint")
    return [run_id for run_id, _ in dead]


def prepare_resume(sessions: sessionmaker[Session], run_id: int) -> list[Run]:
    """Put a cancelled, failed or abandoned training run back in the queued state, with the steps
    that were cancelled because of it; their pipeline runs again. Returns the runs to queue."""
    with sessions.begin() as session:
        run = store.get_run(session, run_id)
        if run.kind not in EXECUTORS:
            raise ConfigError(f"run {run_id} is a {run.kind.value}; only adaptation and distillation runs resume")
        if run.status not in (RunStatus.cancelled, RunStatus.failed, RunStatus.abandoned):
            raise ConfigError(f"run {run_id} is {run.status.value}: only cancelled, failed or abandoned runs resume")
        revived, frontier = [run], [run]
        while frontier:
            for waiting in store.dependents(session, frontier.pop().id):
                if waiting.status == RunStatus.cancelled and waiting not in revived:
                    revived.append(waiting)
                    frontier.append(waiting)
        for r in revived:
            next_attempt(r)
            r.status, r.stage, r.error, r.finished_at = RunStatus.queued, "queued", None, None
        if run.parent_id is not None:
            parent = store.get_run(session, run.parent_id)
            if parent.kind == RunKind.pipeline:
                parent.status, parent.error, parent.finished_at = RunStatus.running, None, None
                parent.stage = "resumed"
        return revived


def set_processes(sessions: sessionmaker[Session], run_id: int, processes: int) -> None:
    """Continue a stopped training run with another number of data-parallel processes (its
    checkpoint and data order do not depend on it); checked like a new run's setting."""
    with sessions.begin() as session:
        run = store.get_run(session, run_id)
        if run.kind not in (RunKind.adaptation, RunKind.distillation):
            raise ConfigError(f"run {run_id} is a {run.kind.value}: only adaptation and distillation runs use --gpus")
        params = {**run.params, "processes": processes}
        (adapt_config if run.kind == RunKind.adaptation else distill_config)(params)  # validates
        run.params = params


def copy_params(sessions: sessionmaker[Session], run_id: int) -> tuple[RunKind, dict]:
    """The settings of a run, for 'run again with the same settings'."""
    with sessions.begin() as session:
        run = store.get_run(session, run_id)
        params = {k: v for k, v in run.params.items() if k not in ("result", "attempt", "output_dir")}
        return run.kind, params
