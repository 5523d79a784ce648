"""Model shapes before anything runs: the architecture of a model folder from its config.json, and
of the model a queued run will write (an adaptation keeps its input's shape, an expansion grows the
vocabulary, a distillation writes its student). Launches use them to refuse a student that is not
smaller than its teacher before a single run is recorded."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sqlalchemy.orm import Session

from core.configs import INITS, PRESETS, SHAPE_FIELDS, StudentShape, bert_parameters, default_student
from core.errors import ConfigError, ModelError
from db import store
from db.models import RunKind, RunStatus

RUN_PREFIX = "run:"


def run_id_of(spec: str) -> int | None:
    """The run id of a 'run:ID' spec; None for any other spec."""
    if not spec.startswith(RUN_PREFIX):
        return None
    try:
        return int(spec[len(RUN_PREFIX):])
    except ValueError:
        raise ConfigError(f"'{spec}': write run:ID with a run id") from None


def with_parameters(shape: dict) -> dict:
    return {**shape, "parameters": bert_parameters(shape["vocab_size"], shape["hidden"], shape["layers"],
                                                   shape["intermediate"], shape["positions"], shape["token_types"])}


def folder_shape(folder: Path) -> dict | None:
    """vocab_size, layers, hidden, heads, intermediate, positions, token_types and parameters (as a
    BertForMaskedLM) from a model folder's config.json; None when it is not a BERT config."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        raise ModelError(f"{folder} has no readable config.json: pass a Hugging Face model folder") from None
    try:
        shape = {"vocab_size": int(config["vocab_size"]), "layers": int(config["num_hidden_layers"]),
                 "hidden": int(config["hidden_size"]), "heads": int(config["num_attention_heads"]),
                 "intermediate": int(config["intermediate_size"]),
                 "positions": int(config.get("max_position_embeddings", 512)),
                 "token_types": int(config.get("type_vocab_size", 2)),
                 "model_type": str(config.get("model_type") or "unknown")}
    except (KeyError, TypeError, ValueError):
        return None  # not a BERT config (DistilBERT names its fields differently): size unknown
    return with_parameters(shape)


def shape_from_name(name: str, teacher: dict | None) -> StudentShape:
    """'L3-H192': that many layers and that width, with the teacher's head size and FFN ratio."""
    match = re.fullmatch(r"L(\d+)-H(\d+)", name.strip(), flags=re.IGNORECASE)
    if match is None:
        raise ConfigError(f"unknown student shape '{name}': use a preset ({', '.join(PRESETS)}) or L<layers>-H<hidden>, "
                          f"e.g. L3-H192")
    if teacher is None:
        raise ConfigError(f"the student shape '{name}' takes heads and FFN size from the teacher, whose shape is not "
                          f"known yet: give --heads and --intermediate too")
    layers, hidden = int(match[1]), int(match[2])
    head_size = max(1, teacher["hidden"] // teacher["heads"])
    return StudentShape(layers, hidden, max(1, hidden // head_size),
                        max(1, round(hidden * teacher["intermediate"] / teacher["hidden"])))


def student_of(params: dict, teacher: dict | None) -> StudentShape:
    """The student a distillation's params describe: the four explicit dimensions when all are
    given; else a preset or an L<layers>-H<hidden> name, else the shape derived from the teacher,
    with the explicit ones on top."""
    explicit = {k: params.get(k) for k in SHAPE_FIELDS}
    if all(v is not None for v in explicit.values()):
        return StudentShape(**{k: int(v) for k, v in explicit.items()})
    name, base = params.get("student") or None, None
    if name is not None and name not in PRESETS:
        name, base = None, shape_from_name(name, teacher)
    elif name is None and teacher is not None:
        base = default_student(teacher["layers"], teacher["hidden"], teacher["heads"], teacher["intermediate"])
    return StudentShape.parse(name, base=base, **explicit)


def spec_shape(session: Session, spec: str, depth: int = 0) -> dict | None:
    """The shape of the model a spec names, or will name once its run has finished; None when it
    cannot be known without downloading (a hub id not in the cache)."""
    from core.model_io import BUNDLED, resolve_model

    if depth > 20:
        raise ConfigError(f"'{spec}' refers to runs in a cycle")
    run_id = run_id_of(spec)
    if run_id is None:
        path = Path(spec).expanduser()
        if spec == BUNDLED or path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
            return folder_shape(resolve_model(spec))
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(spec, "config.json")
        return folder_shape(Path(cached).parent) if isinstance(cached, str) else None
    run = store.get_run(session, run_id)
    if run.status == RunStatus.succeeded and run.output_dir and (Path(run.output_dir) / "config.json").is_file():
        return folder_shape(Path(run.output_dir))
    params = run.params or {}
    if run.kind == RunKind.expansion:
        analysis = store.get_analysis(session, params["analysis_id"])
        base = spec_shape(session, analysis.base_model, depth + 1)
        size = params.get("vocab_size")
        return base and with_parameters({**base, "vocab_size": size if isinstance(size, int) else base["vocab_size"]})
    if run.kind == RunKind.adaptation:
        shape = spec_shape(session, params["model"], depth + 1)
        if shape and params.get("align_to"):
            target = spec_shape(session, params["align_to"], depth + 1)
            shape = target and with_parameters({**shape, "vocab_size": target["vocab_size"]})
        return shape
    if run.kind == RunKind.distillation:
        teacher = spec_shape(session, params["teacher"], depth + 1)
        init = params.get("init") or "random"
        if init not in INITS:
            student = spec_shape(session, init, depth + 1)
            return student and teacher and with_parameters({**student, "vocab_size": teacher["vocab_size"]})
        if teacher is None:
            return None
        s = student_of(params, teacher)
        return with_parameters({**teacher, "layers": s.layers, "hidden": s.hidden, "heads": s.heads,
                                "intermediate": s.intermediate, "model_type": "bert"})
    raise ConfigError(f"run {run_id} is a {run.kind.value}; it makes no model")
