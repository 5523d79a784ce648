"""The Train page's reads and actions: its modes (one run, or one of the paper's three orders as a
pipeline), its starting values (the core configs' own), the models a run can start from and their
shapes, what a launch would do, and the launch."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from redis import Redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.data.common import BY_DATABASE, check_readable, queue_runs
from core.configs import (
    INITS,
    PRESETS,
    SHAPE_FIELDS,
    STRATEGIES,
    AdaptConfig,
    DistillConfig,
    default_student,
)
from core.checks import check_device
from db.models import Run, RunKind, RunStatus
from worker.catalogue import BUNDLED_LABEL
from worker.naming import model_name
from worker.kinds import MODEL_KINDS, TRAINING
from worker.specs import RUN_PREFIX, ModelSpec, folder_shape, student_problem, with_parameters

SINGLE_MODES = tuple(kind.value for kind in TRAINING)  # one adaptation or one distillation
TRAIN_MODES = SINGLE_MODES + STRATEGIES
AUTO_STUDENT = "auto"  # half the teacher's layers and width (core.configs.default_student)
STAGE_CHOICES = {RunKind.adaptation: "adapt", RunKind.distillation: "distill"}  # adapt_steps, distill_lr...


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


def mode_stages(mode: str) -> list[tuple[RunKind, str]]:
    """(run kind, what it does) for each run a mode creates, in order."""
    adapt, distill = RunKind.adaptation, RunKind.distillation
    return {
        adapt.value: [(adapt, "adapt the teacher")],
        distill.value: [(distill, "distil the teacher into the student")],
        "adapt-then-distill": [(adapt, "adapt the teacher"), (distill, "distil the adapted teacher into the student")],
        "distill-then-adapt": [(distill, "distil the teacher into the student"), (adapt, "adapt the student")],
        "adapt-and-distill": [(adapt, "adapt the teacher"), (adapt, "adapt the student"),
                              (distill, "distil the adapted teacher into the adapted student")],
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
            select(Run).where(Run.kind.in_(MODEL_KINDS), Run.status == RunStatus.succeeded,
                              Run.output_dir.is_not(None))
            .order_by(Run.id.desc())).all()
        made = [{"spec": f"{RUN_PREFIX}{r.id}", "kind": r.kind.value, "label": model_name(r)} for r in runs]
    return [{"spec": "bundled", "kind": "bundled", "label": BUNDLED_LABEL}] + made


def _model_folder(sessions: sessionmaker[Session], spec: str) -> Path | None:
    """The local folder of a model spec; None for a hub id that is not downloaded yet."""
    check_readable(spec)
    with sessions.begin() as session:
        return ModelSpec.parse(spec).folder_now(session)


@st.cache_data(ttl=60, hash_funcs=BY_DATABASE, show_spinner=False)
def model_shape(sessions: sessionmaker[Session], spec: str) -> dict | None:
    """The architecture of a model from its config.json, without loading it: vocab_size, layers,
    hidden, heads, intermediate, positions, token_types and parameters (as a BertForMaskedLM).
    None for a hub id not downloaded yet. Raises ModelError/ConfigError for a spec that cannot work."""
    folder = _model_folder(sessions, spec)
    return None if folder is None else folder_shape(folder)


def shape_name(shape: dict) -> str:
    """'L3-H192', as core.configs.StudentShape names a shape (layers and hidden size)."""
    return f"L{shape['layers']}-H{shape['hidden']}"


def student_shape(choices: dict, teacher: dict | None = None) -> dict | None:
    """layers, hidden, heads, intermediate of the chosen preset (or of the shape derived from the
    teacher) with the explicit overrides; None for the derived shape of an unknown teacher."""
    c = {**TRAIN_DEFAULTS, **choices}
    if c["student"] in PRESETS:
        shape = dict(zip(SHAPE_FIELDS, PRESETS[c["student"]]))
    elif c["student"] != AUTO_STUDENT:  # a shape a plan picked, 'L1-H224': the teacher's head size and FFN ratio
        if teacher is None:
            return None
        from worker.specs import shape_from_name

        named = shape_from_name(c["student"], teacher)
        shape = {k: getattr(named, k) for k in SHAPE_FIELDS}
    elif teacher is not None:
        derived = default_student(teacher["layers"], teacher["hidden"], teacher["heads"], teacher["intermediate"])
        shape = {k: getattr(derived, k) for k in SHAPE_FIELDS}
    else:
        return None
    shape.update({k: int(v) for k, v in (c["shape"] or {}).items() if v is not None})
    return shape


def _student(sessions: sessionmaker[Session], c: dict,
             teacher: dict | None) -> tuple[dict | None, str | None, str | None]:
    """(the student's architecture with its parameters, or None; why it cannot be known, or None;
    what is wrong with it as worker.specs.student_problem says, or None)."""
    from core.errors import AdaptDistillError

    init = "random" if c["init"] is None else c["init"].strip()
    if c["mode"] == "adapt-and-distill":
        model = c["student_init"] or ""
    else:
        model = None if init in INITS else init
    if model is not None:  # a pretrained student: its own shape
        if not model.strip():
            return None, "choose the student model", None
        try:
            student = model_shape(sessions, model)
        except AdaptDistillError as exc:
            return None, f"student: {exc}", None
        if student is None:
            return None, None, None
        if c["mode"] == "adapt-and-distill" and teacher is not None:  # it gets the teacher's vocabulary
            student = with_parameters({**student, "vocab_size": teacher["vocab_size"]})
        name, init = f"at {model}", "random"  # its weights are its own, whatever its width
    else:
        student = student_shape(c, teacher)
        if student is None:
            return None, None, None
        name = shape_name(student)
        if teacher is not None:  # it shares the teacher's vocabulary and positions
            student = with_parameters({**student, **{k: teacher[k] for k in ("vocab_size", "positions",
                                                                            "token_types")}})
    if teacher is None:  # its size cannot be compared yet: only its own shape is checked, against itself
        problem = student_problem(student, student, name, allow_larger=True)
        return (None if problem else student), None, problem
    # The shape and the init first: a student that cannot be built has no size worth showing.
    problem = student_problem(student, teacher, name, init, allow_larger=True)
    if problem:
        return None, None, problem
    return student, None, student_problem(student, teacher, name, init, bool(c["allow_larger_student"]))


def training_estimate(sessions: sessionmaker[Session], choices: dict, corpus_words: int, gpu: bool = False) -> dict:
    """What a launch would do: tokens per optimizer step, each run's steps, tokens, trained
    parameters and epochs over the corpus (its word count stands in for its token count), the
    teacher's and student's sizes, and the problems found (plain strings; nothing raises), the one
    with the student's shape also as student_problem; and how long it would take (stage_times; `gpu`:
    a worker with a GPU would take it, for the first guess)."""
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
    distils = any(kind == RunKind.distillation for kind, _ in mode_stages(c["mode"]))
    student, unknown, wrong = _student(sessions, c, teacher) if distils else (None, None, None)
    problems += [p for p in (unknown, wrong) if p]
    tokens_per_step = int(c["batch_size"]) * int(c["grad_accum"]) * int(c["seq_len"])
    stages = []
    for kind, what in mode_stages(c["mode"]):
        steps = int(c[f"{STAGE_CHOICES[kind]}_steps"])
        trained = teacher if kind == RunKind.adaptation and "teacher" in what else student
        tokens = steps * tokens_per_step
        stages.append({"kind": kind.value, "what": what, "steps": steps, "tokens": tokens,
                       "parameters": trained["parameters"] if trained and "parameters" in trained else None,
                       "epochs": tokens / corpus_words if corpus_words else None,
                       "memory": stage_memory(c, kind, teacher, trained)})
    return {"tokens_per_step": tokens_per_step, "total_tokens": sum(s["tokens"] for s in stages), "stages": stages,
            "teacher": teacher, "student": student, "problems": problems, "student_problem": wrong,
            **stage_times(sessions, stages, teacher, gpu)}


def stage_times(sessions: sessionmaker[Session], stages: list[dict], teacher: dict | None, gpu: bool) -> dict:
    """Each stage's time (its "seconds", None while a shape is unknown) at the training speed the
    latest finished runs measured, or at a first guess for the device; {"seconds": the total,
    "speed_runs": the runs measured ([] for a guess)}."""
    from worker.training import FIRST_GUESS_FLOPS, training_speed

    with sessions.begin() as session:
        rate, measured = training_speed(session)
    rate = rate or 1 / FIRST_GUESS_FLOPS["cuda" if gpu else "cpu"]
    for stage in stages:  # training_cost's count: 6 per trained parameter and token, 2 per teacher one
        teacher_part = 2 * teacher["parameters"] if stage["kind"] == RunKind.distillation.value and teacher else 0
        stage["seconds"] = (6 * stage["parameters"] + teacher_part) * stage["tokens"] * rate \
            if stage["parameters"] else None
    known = [s["seconds"] for s in stages if s["seconds"] is not None]
    return {"seconds": sum(known) if len(known) == len(stages) else None, "speed_runs": measured}


def stage_memory(c: dict, kind: RunKind, teacher: dict | None, trained: dict | None) -> int | None:
    """Bytes a stage will take (core.memory's estimate, the one its run is checked against); None
    while a shape or a setting is not known or not valid."""
    from core import memory
    from core.errors import AdaptDistillError
    from worker import run_params

    if teacher is None or trained is None or "layers" not in trained:
        return None
    adapt, distill = training_params(c)
    try:
        if kind == RunKind.adaptation:
            return memory.adaptation({**teacher, **trained}, run_params.adapt_config(adapt)).total
        return memory.distillation(teacher, {**teacher, **trained}, run_params.distill_config(distill)).total
    except (AdaptDistillError, KeyError, TypeError, ValueError):
        return None


def start_training(sessions: sessionmaker[Session], connection: Redis, choices: dict) -> list[dict]:
    """Validate the choices, create the runs and queue them (a pipeline's steps wait on each other).
    Returns [{run_id, kind}] with the pipeline first. Nothing is created when a check fails."""
    from core.errors import ConfigError
    from worker import run_params, training
    from worker.kinds import GPU
    from worker.queueing.serve import check_device_served

    c = {**TRAIN_DEFAULTS, **choices}
    if c["mode"] not in TRAIN_MODES:
        raise ConfigError(f"unknown mode '{c['mode']}': use one of {', '.join(TRAIN_MODES)}")
    teacher = (c["teacher"] or "").strip()
    if not teacher:
        raise ConfigError("choose a teacher: bundled, a model a run made, a folder or a hub id")
    check_readable(teacher, c["student_init"], None if c["init"] in (None, *INITS) else c["init"])
    c["device"] = check_device(c["device"])
    adapt, distill = training_params(c)
    kinds = {kind for kind, _ in mode_stages(c["mode"])}
    # Both configs are checked before any row exists: a pipeline writes its first runs before the
    # second config would be looked at.
    if RunKind.adaptation in kinds:
        run_params.adapt_config(adapt)
    if RunKind.distillation in kinds:
        run_params.distill_config(distill)
        if c["mode"] != "adapt-and-distill" and distill["init"] == "":
            raise ConfigError("choose the student's initial model, or init random or teacher")
        problem = training_estimate(sessions, c, 0)["student_problem"]
        if problem:
            raise ConfigError(problem)
    student_init = (c["student_init"] or "").strip() or None
    if c["mode"] == "adapt-and-distill" and not student_init:
        raise ConfigError("adapt-and-distill adapts a small pretrained student too: choose the student to adapt "
                          "(it needs the teacher's base vocabulary)")
    corpus_id = int(c["corpus_id"])

    def create() -> list[Run]:
        check_device_served(connection, GPU, c["device"], int(c["processes"]))
        if c["mode"] == RunKind.adaptation.value:
            return [training.create_adaptation(sessions, corpus_id, teacher, adapt)]
        if c["mode"] == RunKind.distillation.value:
            return [training.create_distillation(sessions, corpus_id, teacher, distill)]
        return training.create_pipeline(sessions, c["mode"], corpus_id, teacher, adapt, distill,
                                        student_init if c["mode"] == "adapt-and-distill" else None)

    return [{"run_id": r.id, "kind": r.kind.value} for r in queue_runs(sessions, connection, create)]
