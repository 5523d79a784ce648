"""A model spec, parsed once: 'bundled', 'run:ID' (the model a run writes), a local folder, or a
hub id. `ModelSpec` answers the key a model is recorded under, its folder, and its shape before
anything runs: the architecture of a folder from its config.json, and of the model a queued run
will write (an adaptation keeps its input's shape, an expansion grows the vocabulary, a
distillation writes its student). Launches use shapes to refuse a student that is not smaller than
its teacher before a single run is recorded."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.configs import (
    INITS,
    PRESETS,
    SHAPE_FIELDS,
    StudentShape,
    bert_parameters,
    default_student,
    student_not_smaller,
)
from core.checks import check_config_dimensions
from core.errors import ConfigError, ModelError
from core.model_io import (
    BUNDLED,
    ModelInfo,
    bundled_path,
    check_model_root,
    download,
    hub_allowed,
    inspect_model,
    local_folder,
)
from core.folder_kinds import not_trainable
from db import store
from db.models import Run, RunKind, RunStatus, VocabAnalysis
from worker.kinds import MODEL_KINDS, writes_model

RUN_PREFIX = "run:"
MODEL_OWNERS = (*MODEL_KINDS, RunKind.evaluation)  # an evaluation has a model folder only when it keeps one


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
    if isinstance(config, dict):
        check_config_dimensions(config, str(Path(folder) / "config.json"))
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


TRAINABLE = "bert"  # adaptation and distillation train BertForMaskedLM (encoder `bert`, head `cls`)


def check_encoder(session: Session, spec: str, what: str, uses: str = "adaptation and distillation train") -> None:
    """Refuse a model that cannot start a training or a fine-tuning: an ONNX export, a fine-tuned
    model with its task head (what `uses` does is said in the error)."""
    spec_ = ModelSpec.parse(spec)
    if spec_.kind == "run":
        run = spec_.run(session)
        if run.kind == RunKind.evaluation:
            raise ConfigError(f"the {what} {spec} is a fine-tuned model with its task head: {uses} an encoder; "
                              f"use the model it was fine-tuned from, {run.params.get('model')}")
    elif spec_.kind == "folder" and (why := not_trainable(Path(spec_.text).expanduser())):
        raise ConfigError(f"the {what} {spec} is {why}: {uses} a PyTorch encoder; use the model it was made from")


def check_trainable(session: Session, spec: str, what: str) -> dict | None:
    """The shape of the model `spec` names, after refusing one the training code cannot train (by
    its architecture, or an export or a fine-tuned model); None when it cannot be known yet (a hub
    id not downloaded)."""
    check_encoder(session, spec, what)
    spec_ = ModelSpec.parse(spec)
    shape = spec_.shape(session)
    if shape is None and spec_.kind == "folder":
        kind = "not a BERT configuration"
    elif shape is not None and shape.get("model_type", TRAINABLE) != TRAINABLE:
        kind = f"a '{shape['model_type']}' model"
    else:
        return shape
    raise ConfigError(f"the {what} {spec} is {kind}: adaptation and distillation train BERT models (model_type "
                      f"'bert') only; pick a BERT checkpoint")


def check_sequence_length(seq_len: int, shape: dict, what: str, option: str = "seq-len") -> None:
    if seq_len > shape["positions"]:
        raise ConfigError(f"{option} {seq_len} is longer than the {what} can read ({shape['positions']} positions): "
                          f"use --{option} {shape['positions']} or less")


def student_problem(student: dict, teacher: dict, name: str, init: str = "random", allow_larger: bool = False,
                    relation_heads: int | None = None) -> str | None:
    """What is wrong with distilling `teacher` into `student` (shapes with their parameters, as
    `ModelSpec.shape` gives them), or None. The one check of a student's shape: the Train page shows
    its answer under the form, the CLI and the worker refuse the run with it."""
    if min(student["layers"], student["hidden"], student["heads"], student["intermediate"]) < 1 \
            or student["hidden"] % student["heads"]:
        return f"student hidden size {student['hidden']} is not divisible by its {student['heads']} heads"
    if init == "teacher" and (student["hidden"] != teacher["hidden"] or student["heads"] != teacher["heads"]
                              or student["layers"] > teacher["layers"]):
        return (f"init 'teacher' copies every k-th teacher layer, so the student needs the teacher's width "
                f"({teacher['hidden']} hidden, {teacher['heads']} heads) and at most its {teacher['layers']} layers; "
                f"the student {name} has {student['hidden']} hidden, {student['heads']} heads and "
                f"{student['layers']} layers: change the shape or use init random")
    if relation_heads is not None and (student["hidden"] % relation_heads or teacher["hidden"] % relation_heads):
        return (f"relation-heads {relation_heads} must divide both the student's hidden size ({student['hidden']}) "
                f"and the teacher's ({teacher['hidden']})")
    if allow_larger:
        return None
    suggestion = student_of({}, teacher).describe()
    return student_not_smaller(student["parameters"], teacher["parameters"], name, suggestion)


@dataclass(frozen=True)
class ModelSpec:
    """A model as the user names it. `parse` is the only place a spec's text is read."""

    text: str
    kind: str  # "bundled", "run", "folder" or "hub"
    run_id: int | None = None

    @classmethod
    def parse(cls, spec: str | None) -> ModelSpec:
        text = (spec or "").strip()
        if not text:
            raise ConfigError("no model given: pass bundled, run:ID, a model folder or a hub id")
        if text == BUNDLED:
            return cls(text, "bundled")
        if text.startswith(RUN_PREFIX):
            try:
                return cls(text, "run", int(text[len(RUN_PREFIX):]))
            except ValueError:
                raise ConfigError(f"'{text}': write run:ID with a run id") from None
        path_like = Path(text).expanduser().exists() or text.startswith((".", "/", "~")) or text.count("/") > 1
        return cls(text, "folder" if path_like else "hub")  # a hub id is "name" or "org/name"

    @property
    def key(self) -> str:
        """How the model is recorded: 'bundled', 'run:ID', a hub id, or an absolute folder."""
        path = Path(self.text).expanduser()
        return str(path.resolve()) if self.kind == "folder" and path.is_dir() else self.text

    def run(self, session: Session) -> Run:
        """The run that writes a 'run:ID' model; a clear error when it makes none."""
        run = store.get(session, Run, self.run_id)
        if not writes_model(run):
            hint = " (an evaluation keeps its fine-tuned model with --keep)" if run.kind == RunKind.evaluation else ""
            raise ConfigError(f"run {run.id} is a {run.kind.value}; it made no model{hint}")
        return run

    def path(self, session: Session | None = None) -> Path:
        """The folder of a model that exists now (a hub id is fetched where that is allowed); a clear
        error for a run that has not finished. A run's model needs the session that knows it."""
        if self.kind == "bundled":
            return bundled_path()
        if self.kind == "folder":
            return local_folder(self.text)
        if self.kind == "hub":
            return download(self.text)
        if session is None:
            raise ConfigError(f"{self.text} names a run: only the store knows its folder")
        run = store.get(session, Run, self.run_id)
        if run.status != RunStatus.succeeded or not run.output_dir:
            raise ConfigError(f"run {run.id} has no finished model yet ({run.status.value})")
        return Path(run.output_dir)

    def cached_folder(self) -> Path | None:
        """A hub id's folder in the local hub cache, None when it has not been downloaded."""
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(self.text, "config.json")
        return Path(cached).parent if isinstance(cached, str) else None

    def folder_now(self, session: Session) -> Path | None:
        """The model's folder without downloading anything: None for a hub id not in the cache where
        fetching is allowed (where it is not, the hub id is refused with what to do)."""
        if self.kind == "hub" and hub_allowed():
            return self.cached_folder()
        return self.path(session)

    def inspect(self, session: Session | None = None) -> ModelInfo:
        """The model checked: BERT family, WordPiece tokenizer, safetensors weights."""
        return inspect_model(self.path(session), self.text)

    def check_root(self, home: Path, model_dirs=()) -> None:
        """Refuse a folder outside the data folder, the bundled model and `model_dirs` (the folders a
        dashboard user may name); bundled, run and hub models name no folder of the user's and pass."""
        if self.kind == "folder":
            check_model_root(self.text, home, model_dirs)

    def check(self, session: Session) -> str:
        """Validate the spec now (a clear error here beats one in the worker) and return its key."""
        if self.kind == "run":
            return f"{RUN_PREFIX}{self.run(session).id}"
        self.inspect()  # a missing folder, an unreadable one or an unreachable hub id fails here
        return self.key

    def catalogue_key(self, session: Session) -> str:
        """The key of the model's row in the catalogue: as `key`, except that a folder a finished run
        wrote is that run's model."""
        if self.kind == "run":
            return f"{RUN_PREFIX}{self.run(session).id}"
        if self.kind == "bundled":
            return self.text
        if self.kind == "folder" and Path(self.text).expanduser().is_dir():
            owner = session.scalar(select(Run.id).where(Run.output_dir == self.key, Run.kind.in_(MODEL_OWNERS),
                                                        Run.status == RunStatus.succeeded).limit(1))
            return f"{RUN_PREFIX}{owner}" if owner else self.key
        self.path()  # a missing folder or an unreachable hub id fails here, clearly
        return self.text

    def shape(self, session: Session, depth: int = 0) -> dict | None:
        """The shape of the model, or of the one its run will write; None when it cannot be known
        without downloading (a hub id not in the cache)."""
        if depth > 20:
            raise ConfigError(f"'{self.text}' refers to runs in a cycle")
        if self.kind == "hub":
            cached = self.cached_folder()
            return folder_shape(cached) if cached else None
        if self.kind != "run":
            return folder_shape(self.path())
        return run_shape(session, store.get(session, Run, self.run_id), depth)


def run_shape(session: Session, run: Run, depth: int = 0) -> dict | None:
    """The shape of the model a run writes: read from its folder once it has, else worked out from
    its settings and the shapes of the models it starts from."""
    if run.status == RunStatus.succeeded and run.output_dir and (Path(run.output_dir) / "config.json").is_file():
        return folder_shape(Path(run.output_dir))
    params = run.params or {}

    def shape_of(spec: str) -> dict | None:
        return ModelSpec.parse(spec).shape(session, depth + 1)

    if run.kind == RunKind.expansion:
        analysis = store.get(session, VocabAnalysis, params["analysis_id"])
        base = shape_of(analysis.base_model)
        size = params.get("vocab_size")
        return base and with_parameters({**base, "vocab_size": size if isinstance(size, int) else base["vocab_size"]})
    if run.kind == RunKind.evaluation and writes_model(run):  # its model is the one it fine-tuned, with a head
        return shape_of(params["model"])
    if run.kind == RunKind.adaptation:
        shape = shape_of(params["model"])
        if shape and params.get("align_to"):
            target = shape_of(params["align_to"])
            shape = target and with_parameters({**shape, "vocab_size": target["vocab_size"]})
        return shape
    if run.kind == RunKind.distillation:
        teacher = shape_of(params["teacher"])
        init = params.get("init") or "random"
        if init not in INITS:
            student = shape_of(init)
            return student and teacher and with_parameters({**student, "vocab_size": teacher["vocab_size"]})
        if teacher is None:
            return None
        s = student_of(params, teacher)
        return with_parameters({**teacher, "layers": s.layers, "hidden": s.hidden, "heads": s.heads,
                                "intermediate": s.intermediate, "model_type": "bert"})
    raise ConfigError(f"run {run.id} is a {run.kind.value}; it makes no model")
