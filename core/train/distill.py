"""Task-agnostic distillation (MiniLM family) into a small student that shares the teacher's
(expanded) vocabulary. The relations come from the query/key/value projections of the chosen
teacher layer and of the student's last layer, captured with forward hooks: SDPA attention
returns no attention weights, and the projections are what MiniLM needs anyway."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from core.errors import ConfigError
from core.train.losses import minilm_v1_loss, minilm_v2_loss
from core.train.mlm import Masker, masked_lm_loss, shard_of
from core.model_io import METADATA_FILE, load_mlm, vocabulary, vocabulary_difference
from core.configs import (INITS, relation_heads, PRESETS, DistillConfig, StudentShape, TrainConfig,  # noqa: F401
                          check_student_smaller, default_student)
from core.train.loop import finish, fit_and_save, prepare
from core.train.checkpoints import read_json
from core.seeds import seeded

@dataclass
class DistillResult:
    output_dir: Path
    steps: int
    resumed_from: int
    first_loss: float | None
    last_loss: float | None
    heldout_relation_loss_before: float | None
    heldout_relation_loss: float | None
    student_parameters: int
    teacher_parameters: int
    mlm_head_trained: bool
    tokens_per_second: float

    def to_dict(self) -> dict:
        data = asdict(self)
        data["output_dir"] = str(self.output_dir)
        return data


def relation_heads_for(config: DistillConfig, teacher_hidden: int) -> int:
    return relation_heads(config.student.hidden, teacher_hidden, config.relation_heads)


def teacher_layers_for(teacher_layers: int, student_layers: int) -> list[int]:
    """Teacher layers that initialise a student's: evenly spaced, the last one always included
    (12 -> 6: 1, 3, ..., 11; 6 -> 4: 1, 2, 4, 5; 6 -> 3: 1, 3, 5)."""
    if not 1 <= student_layers <= teacher_layers:
        raise ConfigError(f"the student has {student_layers} layers and the teacher {teacher_layers}: init 'teacher' "
                          f"needs 1 to {teacher_layers}")
    return [math.ceil((i + 1) * teacher_layers / student_layers) - 1 for i in range(student_layers)]


def build_student(teacher, shape: StudentShape, init: str, seed: int = 0):
    """A BertForMaskedLM student with the teacher's vocabulary and positions, initialised from the
    `student-init` stream of `seed`. With init 'teacher' its layers are copies of evenly spaced
    teacher layers and everything else (embeddings, MLM head, pooler) is the teacher's."""
    from transformers import BertConfig, BertForMaskedLM

    t = teacher.config
    config = BertConfig(vocab_size=t.vocab_size, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                        num_attention_heads=shape.heads, intermediate_size=shape.intermediate,
                        max_position_embeddings=t.max_position_embeddings, type_vocab_size=t.type_vocab_size,
                        pad_token_id=t.pad_token_id)
    with seeded(seed, "student-init"):
        student = BertForMaskedLM(config)
    if init == "teacher":
        if shape.hidden != t.hidden_size or shape.heads != t.num_attention_heads:
            raise ConfigError(f"init 'teacher' needs the teacher's width ({t.hidden_size} hidden, "
                              f"{t.num_attention_heads} heads); the student has {shape.hidden} and {shape.heads}")
        chosen = teacher_layers_for(t.num_hidden_layers, shape.layers)
        if teacher.bert.pooler is not None:
            student.bert.pooler = copy.deepcopy(teacher.bert.pooler)
        source = teacher.state_dict()
        state = {}
        for key in student.state_dict():
            if ".layer." in key:
                prefix, rest = key.split(".layer.", 1)
                index, tail = rest.split(".", 1)
                state[key] = source[f"{prefix}.layer.{chosen[int(index)]}.{tail}"]
            else:
                state[key] = source[key]
        student.load_state_dict(state)
    elif init != "random":
        raise ConfigError(f"unknown init '{init}': use random, teacher or a model folder")
    return student


class _Captured(Exception):
    """Raised by the value hook to end a forward pass once the projections are in hand."""


@contextmanager
def capture_qkv(layer, stop: bool = False):
    """Collect the (B, T, H) outputs of a BERT layer's query, key and value projections. With
    stop=True the forward pass ends right after them (run it through `forward_until_captured`):
    nothing later in the model feeds the relation loss."""
    attention = layer.attention.self
    captured: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        captured.append(output)
        if stop and len(captured) == 3:
            raise _Captured

    handles = [m.register_forward_hook(hook) for m in (attention.query, attention.key, attention.value)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def forward_until_captured(encoder, ids: torch.Tensor) -> None:
    try:
        encoder(input_ids=ids)
    except _Captured:
        pass


def _layers(model):
    return model.bert.encoder.layer


def distill(
    teacher_path: str | Path,
    documents: Callable[[], Iterable[str]],
    out_dir: str | Path,
    config: DistillConfig,
    progress: Callable[[str, float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    on_metrics: Callable[[int, dict[str, float]], None] | None = None,
    metadata: dict | None = None,
) -> DistillResult:
    """Distil the teacher at teacher_path into a new student; write it to out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = config.train.seed
    teacher, _ = load_mlm(teacher_path, seed)
    if config.init not in INITS:
        difference = vocabulary_difference(vocabulary(config.init), vocabulary(teacher_path))
        if difference is not None:
            raise ConfigError(f"the student model at {config.init} does not have the teacher's vocabulary "
                              f"({difference}): expand its vocabulary the same way first")
        student, _ = load_mlm(config.init, seed)
        s = student.config
        config.student = StudentShape(s.num_hidden_layers, s.hidden_size, s.num_attention_heads, s.intermediate_size)
    else:
        if config.student is None:
            t = teacher.config
            config.student = default_student(t.num_hidden_layers, t.hidden_size, t.num_attention_heads,
                                             t.intermediate_size)
        student = build_student(teacher, config.student, config.init, seed)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    check_student_smaller(count(student), count(teacher), config.student.name, None, config.allow_larger_student)
    heads = relation_heads_for(config, teacher.config.hidden_size)
    teacher_layer = _layers(teacher)[config.teacher_layer]
    student_layer = _layers(student)[-1]
    prepared = prepare(teacher_path, documents, config.seq_len, config.heldout_fraction, config.train, progress,
                       cancel)
    device, held = prepared.device, prepared.heldout_blocks
    teacher.to(device).eval().requires_grad_(False)
    student.to(device)
    config = dataclasses.replace(config, train=prepared.train)
    masker = Masker(prepared.tokenizer) if config.mlm_weight > 0 else None

    def teacher_qkv(ids):
        with torch.inference_mode(), capture_qkv(teacher_layer, stop=True) as qkv:
            forward_until_captured(teacher.bert, ids)
        return [x.clone() for x in qkv]  # plain tensors again, usable as constants by autograd

    def relation(student_qkv, teacher_qkv_):
        # packed blocks have no padding: mask None takes the single fused KL pass
        if config.version == "v2":
            return minilm_v2_loss(student_qkv, teacher_qkv_, None, heads)
        return minilm_v1_loss(student_qkv, teacher_qkv_, None, config.student.heads,
                              teacher.config.num_attention_heads)

    def loss_fn(ids, generator, shard=None):
        labels, weight = None, 1.0
        inputs = ids.long()
        if masker is not None:
            inputs, labels, weight = shard_of(*masker(ids, generator), shard)
            labels = labels.to(device)
        elif shard is not None:
            inputs = inputs[shard.rows]  # equal rows per process: the relation loss is a mean over rows
        inputs = inputs.to(device)
        targets = teacher_qkv(inputs)
        mlm = None
        with capture_qkv(student_layer, stop=labels is None) as student_qkv:
            if labels is not None:  # the MLM term needs the whole student forward
                mlm = masked_lm_loss(student, inputs, labels)
            else:
                forward_until_captured(student.bert, inputs)
        loss = relation(student_qkv, targets)
        parts = {"relation_loss": float(loss.detach())}
        if labels is not None:
            parts["mlm_loss"] = float(mlm.detach()) * weight
            loss = loss + config.mlm_weight * mlm * weight
        return loss, parts

    def evaluate():
        total = 0.0
        with torch.no_grad():
            for start in range(0, len(held), config.train.batch_size):
                ids = torch.from_numpy(held[start:start + config.train.batch_size]).long().to(device)
                targets = teacher_qkv(ids)
                with capture_qkv(student_layer, stop=True) as student_qkv:
                    forward_until_captured(student.bert, ids)
                total += float(relation(student_qkv, targets)) * len(ids)
        return {"heldout_relation_loss": total / len(held)}

    loop, before = fit_and_save(student, prepared, loss_fn, evaluate, out_dir, on_metrics, progress, cancel)
    previous = read_json(Path(teacher_path) / METADATA_FILE)
    result = DistillResult(out_dir, loop.steps, loop.resumed_from, loop.first_loss, loop.last_loss,
                           before["heldout_relation_loss"] if before else None,
                           loop.last_eval.get("heldout_relation_loss"), count(student), count(teacher),
                           config.mlm_weight > 0, loop.tokens_per_second)
    finish(out_dir, {
        **{k: v for k, v in previous.items() if k in ("analysis_id", "corpus_sha256", "base_model_spec")},
        **(metadata or {}), "kind": "student", "teacher_model": str(teacher_path),
        "mlm_head_trained": config.mlm_weight > 0, "distill_config": asdict(config), "relation_heads": heads,
        "result": result.to_dict(),
    })
    return result
