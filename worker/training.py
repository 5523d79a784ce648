"""Adaptation, distillation and pipelines as runs: create (validate, record lineage) and execute
(call core with progress, metrics and cancel, under a heartbeat; in several data-parallel
processes when asked), then record the model the run wrote."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from core import memory
from core.configs import INITS, STRATEGIES, TrainConfig
from core.errors import AdaptDistillError, ConfigError
from core.model_io import folder_size
from core.train.tokens import CachedCorpus
from db import settings, store
from db.models import Corpus, Run, RunKind
from worker.corpora import file_sha256
from worker.lifecycle import TrainingReporter, execute
from worker.resources import check_memory, check_memory_now, check_pipeline_memory
from worker.run_params import adapt_config, bert_parameters_like, distill_config, memory_estimate, student_params
from worker.run_state import new_run, run_dir
from worker.specs import RUN_PREFIX, ModelSpec, check_sequence_length, check_trainable


def align_vocabulary(session: Session, model: Path, reference: Path, out: Path) -> Path:
    """The model itself when its vocabulary is the reference's (same tokens, same ids); else, when
    the reference's vocabulary is the model's followed by more tokens (an expansion of the same
    base), the model expanded with those tokens in that order, written to `out` once."""
    from core.model_io import METADATA_FILE, vocabulary, vocabulary_difference
    from core.vocab.expand import expand_model

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


def create_adaptation(sessions: sessionmaker[Session], corpus_id: int, model: str, params: dict,
                      parent_id=None, depends_on=()) -> Run:
    config = adapt_config(params)  # validates
    with sessions.begin() as session:
        store.get(session, Corpus, corpus_id)
        if not depends_on:
            model = ModelSpec.parse(model).check(session)
        shape = check_trainable(session, model, "model")
        if shape is not None:
            check_sequence_length(config.seq_len, shape, "model")
            check_memory(memory.adaptation(shape, config), config.train, RunKind.adaptation)
        return new_run(session, RunKind.adaptation, {**params, "corpus_id": corpus_id, "model": model},
                        parent_id, [store.get(session, Run, r.id) for r in depends_on])


def create_distillation(sessions: sessionmaker[Session], corpus_id: int, teacher: str, params: dict,
                        parent_id=None, depends_on=()) -> Run:
    distill_config(params)
    with sessions.begin() as session:
        store.get(session, Corpus, corpus_id)
        if not depends_on:
            teacher = ModelSpec.parse(teacher).check(session)
            init = params.get("init", "random")
            if init not in INITS:
                params = {**params, "init": ModelSpec.parse(init).check(session)}
        params = student_params(session, teacher, params)
        check_memory(memory_estimate(session, RunKind.distillation, {**params, "teacher": teacher}),
                     distill_config(params).train, RunKind.distillation)
        return new_run(session, RunKind.distillation, {**params, "corpus_id": corpus_id, "teacher": teacher},
                        parent_id, [store.get(session, Run, r.id) for r in depends_on])


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
        store.get(session, Corpus, corpus_id)
        teacher = ModelSpec.parse(teacher).check(session)
        if student_init:
            student_init = ModelSpec.parse(student_init).check(session)
        # the student is checked against the teacher now: adaptation keeps a model's shape
        student = student_params(session, teacher, {**distill_params, "init": student_init} if student_init
                                 else distill_params)
        check_pipeline_memory(session, strategy, teacher, student, adapt_params)
        pipeline = new_run(session, RunKind.pipeline, {"strategy": strategy, "corpus_id": corpus_id,
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
        pipeline = store.get(session, Run, pipeline_id)
        costs = {str(r.id): training_cost(session, store.get(session, Run, r.id)) for r in steps}
        if all(costs.values()):  # the weights of its steps in its progress (worker.progress.pipeline_progress)
            pipeline.params = {**pipeline.params, "step_costs": costs}
        return [pipeline] + [store.get(session, Run, r.id) for r in steps]


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
    tokens = float(steps) * per_step if steps else float(p.get("epochs") or 1) * store.get(session, Corpus, p["corpus_id"]).words
    try:
        if run.kind == RunKind.adaptation:
            shape = ModelSpec.parse(p["model"]).shape(session)
            return 6.0 * shape["parameters"] * tokens if shape else None
        teacher = ModelSpec.parse(p["teacher"]).shape(session)
        if teacher is None:
            return None
        init = p.get("init") or "random"
        student = ModelSpec.parse(init).shape(session) if init not in INITS else (
            {"parameters": bert_parameters_like(p, teacher)} if p.get("layers") else None)
        return (6.0 * student["parameters"] + 2.0 * teacher["parameters"]) * tokens if student else None
    except (AdaptDistillError, KeyError, OSError):
        return None


# A first guess of the counted FLOPs (training_cost's) a device trains per second, before any run has
# been measured: bench/train_throughput.py measured 1.4e11 on a 2-core CPU (adaptation of the bundled
# model, 1,022 tokens/s); a data-centre GPU does about a hundred times that.
FIRST_GUESS_FLOPS = {"cpu": 1e11, "cuda": 1e13}
MEASURED_RUNS = 5  # the latest finished training runs the speed is measured on


def training_speed(session: Session) -> tuple[float | None, list[int]]:
    """(seconds per counted FLOP, the runs measured) over the latest finished adaptations and
    distillations: their wall time, setup included, over their training_cost; (None, []) before one
    has finished."""
    from sqlalchemy import select

    from db.models import RunStatus
    from worker.progress import wall_seconds

    runs = session.scalars(select(Run).where(Run.kind.in_((RunKind.adaptation, RunKind.distillation)),
                                             Run.status == RunStatus.succeeded)
                           .order_by(Run.id.desc()).limit(MEASURED_RUNS)).all()
    measured = [(run.id, seconds, cost) for run in runs
                if (seconds := wall_seconds(run)) and (cost := training_cost(session, run))]
    if not measured:
        return None, []
    return sum(m[1] for m in measured) / sum(m[2] for m in measured), [m[0] for m in measured]


# --- executing --------------------------------------------------------------------------------

def _inputs(sessions, run_id: int, model_key: str):
    with sessions.begin() as session:
        run = store.get(session, Run, run_id)
        params, out = dict(run.params), Path(run.output_dir)
        corpus = store.get(session, Corpus, params["corpus_id"])
        model = ModelSpec.parse(params[model_key]).path(session)
        if params.get("align_to"):  # a student adapted beside an expanded teacher gets its tokens first
            model = align_vocabulary(session, model, ModelSpec.parse(params["align_to"]).path(session),
                                     run_dir(run_id) / "aligned-student")
        init = params.get("init")
        if init and init not in INITS:
            params["init"] = str(align_vocabulary(session, ModelSpec.parse(init).path(session), model,
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
    from worker.catalogue import register_run_model
    from worker.evaluation import describe_model

    report.flush()
    with sessions.begin() as session:
        run = store.get(session, Run, run_id)
        run.params = {**run.params, "result": {**result.to_dict(), "timing": report.clock.timing()}}
        out = Path(result.output_dir)
        weights = out / "model.safetensors"
        store.add_artifact(session, run_id, "model", str(out), folder_size(out),
                           file_sha256(weights) if weights.is_file() else "")
        register_run_model(session, run)
        corpus_id = run.params["corpus_id"]
    describe_model(sessions, run_id, f"{RUN_PREFIX}{run_id}", corpus_id, out, report)


def train(sessions: sessionmaker[Session], run_id: int, report: TrainingReporter | None, check: bool = True):
    """Run the core training of an adaptation or distillation run in this process (one of several
    under torchrun, when report is None: only the first process reports; their job checked the
    memory, so they do not: `check`)."""
    with sessions.begin() as session:
        kind = store.get(session, Run, run_id).kind
    progress = dict(progress=report, cancel=report.cancelled, on_metrics=report.metrics) if report else {}
    if kind == RunKind.adaptation:
        from core.train.adapt import adapt

        params, out, model, corpus = _inputs(sessions, run_id, "model")
        if check:
            check_memory_now(sessions, run_id, 1)
        return adapt(model, corpus, out, adapt_config(params), metadata={"run_id": run_id}, **progress)
    from core.train.distill import distill

    params, out, teacher, corpus = _inputs(sessions, run_id, "teacher")
    if check:
        check_memory_now(sessions, run_id, 1)
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
    from worker.lifecycle import STOPPING
    from worker.queueing.embedded import die_with_parent

    folder = run_dir(run_id)
    outcome, log_path = folder / PROCESSES_RESULT, folder / "processes.log"
    outcome.unlink(missing_ok=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "worker.ddp", str(run_id)]
    with open(log_path, "ab") as log_file:
        # the launcher dies with this work horse (and takes its processes with it), even on SIGKILL
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
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


def execute_training(sessions: sessionmaker[Session], run_id: int, report: TrainingReporter) -> None:
    def body(run: Run) -> None:
        processes = int(run.params.get("processes") or 1)
        try:
            if processes > 1:
                _inputs(sessions, run_id, "model" if run.kind == RunKind.adaptation else "teacher")  # once, here
                check_memory_now(sessions, run_id, processes)
                result = train_in_processes(sessions, run_id, processes)
            else:
                result = train(sessions, run_id, report)
        except BaseException:
            report.settle()
            raise
        _record(sessions, run_id, result, report)

    execute(sessions, run_id, body)


def set_processes(sessions: sessionmaker[Session], run_id: int, processes: int) -> None:
    """Continue a stopped training run with another number of data-parallel processes (its
    checkpoint and data order do not depend on it); checked like a new run's setting."""
    with sessions.begin() as session:
        run = store.get(session, Run, run_id)
        if run.kind not in (RunKind.adaptation, RunKind.distillation):
            raise ConfigError(f"run {run_id} is a {run.kind.value}: only adaptation and distillation runs use --gpus")
        params = {**run.params, "processes": processes}
        (adapt_config if run.kind == RunKind.adaptation else distill_config)(params)  # validates
        run.params = params
