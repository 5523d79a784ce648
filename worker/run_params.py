"""A run's params (the JSON the store keeps) as the typed configs of core, and the shapes they
describe: the student a distillation's params name, and what a run will take in memory."""

from __future__ import annotations

import dataclasses

from sqlalchemy.orm import Session

from core import memory
from core.configs import (ADAPT_LR, DISTILL_LR, INITS, PRESETS, SHAPE_FIELDS, AdaptConfig, DistillConfig,
                          TrainConfig, bert_parameters)
from core.errors import ConfigError
from db.models import RunKind
from worker.specs import ModelSpec, check_sequence_length, check_trainable, student_of, student_problem


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
    student = student_shape(session, params, teacher_shape)
    if student is None:
        return params
    if init in INITS:
        params = {**params, **{k: student[k] for k in SHAPE_FIELDS}}
    name = f"at {init}" if init not in INITS else student_of(params, teacher_shape).name
    # a model of its own: any width, and relation heads are checked when it loads
    problem = student_problem(student, teacher_shape, name, init if init in INITS else "random",
                              bool(params.get("allow_larger_student")),
                              config.relation_heads if init in INITS else None)
    if problem:
        raise ConfigError(problem)
    return params


def student_shape(session: Session, params: dict, teacher: dict) -> dict | None:
    """The shape (with parameters) of the student a distillation's params describe: a model of its
    own (init) or a shape on top of the teacher's; None when it cannot be known yet."""
    init = params.get("init") or "random"
    if init not in INITS:
        student = check_trainable(session, init, "student")
        return None if student is None else {**student, "parameters": bert_parameters_like(student, teacher)}
    student = dataclasses.asdict(student_of(params, teacher))
    return {**teacher, **student, "parameters": bert_parameters_like(student, teacher)}


def memory_estimate(session: Session, kind: RunKind, params: dict):
    """What an adaptation or distillation with these params will take in memory (core.memory), or
    None while a model's shape cannot be known (a hub id not downloaded)."""
    if kind == RunKind.adaptation:
        shape = ModelSpec.parse(params["model"]).shape(session)
        return None if shape is None else memory.adaptation(shape, adapt_config(params))
    teacher = ModelSpec.parse(params["teacher"]).shape(session)
    student = None if teacher is None else student_shape(session, params, teacher)
    return None if student is None else memory.distillation(teacher, student, distill_config(params))


def bert_parameters_like(student: dict, teacher: dict) -> int:
    """Parameters of a student that shares the teacher's vocabulary and positions."""
    return bert_parameters(teacher["vocab_size"], student["hidden"], student["layers"], student["intermediate"],
                           teacher["positions"], teacher["token_types"])
