"""The typed settings of adaptation and distillation, with help beside each field and checks in
__post_init__ that name the option. Torch-free, so the dashboard and the queue side can validate
settings without loading it."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from core.checks import (MOST_BATCH, MOST_EPOCHS, MOST_GRAD_ACCUM, MOST_GRAD_NORM, MOST_LOSS_WEIGHT, MOST_LR, MOST_MIN_FREQUENCY,
                         MOST_STEPS, MOST_TOKENS_ADDED, MOST_WEIGHT_DECAY, SHAPE_BOUNDS, check_device,
                         check_heldout_fraction, check_number, check_precision, check_seed, check_sequence,
                         check_steps_or_fraction, check_whole)
from core.errors import ConfigError

STRATEGIES = ("adapt-then-distill", "distill-then-adapt", "adapt-and-distill")
ADAPT_LR = 5e-5
"""Peak learning rate of adaptation (continued pretraining of a pretrained model)."""
DISTILL_LR = 5e-4
"""Peak learning rate of distillation (a fresh, small student)."""


SCHEDULES = ("linear", "cosine", "constant")


@dataclass
class TrainConfig:
    """Optimisation settings common to adaptation and distillation."""

    steps: int = 1000
    """Optimizer steps (each of batch_size x grad_accum blocks)."""
    epochs: float | None = None
    """Passes over the training blocks; when set, it decides the number of steps."""
    batch_size: int = 32
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup: float = 0.06
    """Warmup: a fraction of the steps when < 1, else a number of steps."""
    schedule: str = "linear"
    max_grad_norm: float = 1.0
    seed: int = 0
    eval_every: int = 200
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu', 'mps', 'cuda' or 'cuda:N'."""
    precision: str = "auto"
    """'auto' (bf16 on a GPU that has it, else fp32), 'bf16' or 'fp32'."""
    processes: int = 1
    """Data-parallel processes (one per GPU; on the CPU, gloo processes). The global batch stays
    batch_size x grad_accum, split among them."""

    def __post_init__(self):
        for name in ("steps", "eval_every", "checkpoint_every", "log_every"):
            check_whole(name.replace("_", "-"), getattr(self, name), 1, MOST_STEPS)
        check_whole("batch-size", self.batch_size, 1, MOST_BATCH)
        check_whole("grad-accum", self.grad_accum, 1, MOST_GRAD_ACCUM,
                    "; for a larger effective batch, raise --batch-size too")
        check_whole("keep-checkpoints", self.keep_checkpoints, 1, 1_000)
        check_seed(self.seed)
        if not isinstance(self.processes, int) or not 1 <= self.processes <= 64:
            raise ConfigError(f"gpus (data-parallel processes) must be between 1 and 64, got {self.processes}")
        if self.batch_size % self.processes:
            raise ConfigError(f"batch-size {self.batch_size} does not split among {self.processes} processes: use a "
                              f"multiple of {self.processes}")
        if self.epochs is not None:
            check_number("epochs", self.epochs, above=True, most=MOST_EPOCHS)
        check_number("lr", self.lr, above=True, most=MOST_LR)
        check_steps_or_fraction("warmup", self.warmup)
        check_number("weight-decay", self.weight_decay, most=MOST_WEIGHT_DECAY)
        check_number("max-grad-norm", self.max_grad_norm, above=True, most=MOST_GRAD_NORM)
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got '{self.schedule}'")
        self.device = check_device(self.device)
        check_precision(self.precision)

    def for_blocks(self, blocks: int) -> "TrainConfig":
        """This config with `steps` set from `epochs` for a number of training blocks."""
        if self.epochs is None:
            return self
        per_step = self.batch_size * self.grad_accum
        return dataclasses.replace(self, steps=max(1, math.ceil(self.epochs * blocks / per_step)))

    @property
    def warmup_steps(self) -> int:
        return int(self.warmup * self.steps) if self.warmup < 1 else int(self.warmup)


@dataclass
class AdaptConfig:
    """Masked-LM adaptation settings (optimisation in `train`)."""

    seq_len: int = 128
    """Tokens per packed block, [CLS] and [SEP] included."""
    mask_probability: float = 0.15
    whole_word: bool = False
    """Mask whole words (all their ## pieces) instead of single tokens."""
    heldout_fraction: float = 0.02
    """Share of the blocks kept out of training to measure MLM loss and perplexity."""
    head_warmup: float = 0.1
    """When the model has no trained MLM head: steps that train the head alone (encoder frozen)
    before the run, a fraction of `steps` when < 1, else a number of steps; 0 skips it."""
    head_lr: float = 1e-3
    """Peak learning rate of the head's warm-up."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=ADAPT_LR))

    def head_warmup_steps(self, steps: int) -> int:
        return int(self.head_warmup * steps) if self.head_warmup < 1 else int(self.head_warmup)

    def __post_init__(self):
        check_steps_or_fraction("head-warmup", self.head_warmup)
        check_number("head-lr", self.head_lr, above=True, most=MOST_LR)
        check_sequence("seq-len", self.seq_len)
        check_heldout_fraction(self.heldout_fraction)
        if not isinstance(self.mask_probability, (int, float)) or not 0 < self.mask_probability < 1:
            raise ConfigError(f"mask-probability must be between 0 and 1, got {self.mask_probability}")


# layers, hidden, attention heads, intermediate
PRESETS = {
    "L6-H384": (6, 384, 12, 1536),
    "L4-H312": (4, 312, 12, 1248),
    "L3-H256": (3, 256, 4, 1024),
    "L2-H128": (2, 128, 2, 512),
}
INITS = ("random", "teacher")
SHAPE_FIELDS = ("layers", "hidden", "heads", "intermediate")


@dataclass
class StudentShape:
    layers: int
    hidden: int
    heads: int
    intermediate: int

    def __post_init__(self):
        for name in SHAPE_FIELDS:
            check_whole(f"the student's {name}", getattr(self, name), 1, SHAPE_BOUNDS[name])
        if self.hidden % self.heads:
            raise ConfigError(f"student hidden size {self.hidden} is not divisible by its {self.heads} heads")

    @property
    def name(self) -> str:
        """'L3-H192': layers and hidden size, as the presets are named."""
        return f"L{self.layers}-H{self.hidden}"

    def describe(self) -> str:
        return f"{self.name} ({self.layers} layers, {self.hidden} hidden, {self.heads} heads, {self.intermediate} FFN)"

    @classmethod
    def parse(cls, preset: str | None = None, base: "StudentShape | None" = None, **explicit) -> "StudentShape":
        """A preset name (L6-H384, L4-H312, L3-H256, L2-H128), else `base` (usually the shape derived
        from the teacher), with optional explicit overrides of layers, hidden, heads, intermediate."""
        if preset is not None and preset not in PRESETS:
            raise ConfigError(f"unknown student preset '{preset}': use one of {', '.join(PRESETS)}")
        if preset is not None:
            values = dict(zip(SHAPE_FIELDS, PRESETS[preset]))
        elif base is not None:
            values = dataclasses.asdict(base)
        else:
            values = {}
        values.update({k: int(v) for k, v in explicit.items() if v is not None})
        missing = [k for k in SHAPE_FIELDS if k not in values]
        if missing:
            raise ConfigError(f"the student shape needs a preset, the teacher's shape or all of layers, hidden, heads "
                              f"and intermediate (missing: {', '.join(missing)})")
        return cls(**values)


def default_student(layers: int, hidden: int, heads: int, intermediate: int) -> StudentShape:
    """The paper's ratio applied to a teacher: half the layers and half the hidden width, with the
    teacher's head size and FFN ratio kept (12L-768H -> L6-H384, 6 heads; the bundled 6L-384H ->
    L3-H192, 6 heads, 768 FFN)."""
    head_size = max(1, hidden // heads)
    student_hidden = max(head_size, (hidden // 2) // head_size * head_size)
    student_heads = max(1, student_hidden // head_size)
    student_intermediate = max(1, round(intermediate * student_hidden / hidden))
    return StudentShape(max(1, layers // 2), student_hidden, student_heads, student_intermediate)


def bert_parameters(vocab_size: int, hidden: int, layers: int, intermediate: int, positions: int = 512,
                    token_types: int = 2) -> int:
    """Parameters of a BertForMaskedLM: embeddings, encoder layers and the MLM head (whose decoder
    shares the word embeddings, so only its bias counts)."""
    embeddings = (vocab_size + positions + token_types) * hidden + 2 * hidden  # + LayerNorm
    # Q, K, V and output projections, two LayerNorms, the feed-forward pair.
    layer = 4 * (hidden * hidden + hidden) + 4 * hidden + (hidden * intermediate + intermediate) \
        + (intermediate * hidden + hidden)
    head = hidden * hidden + hidden + 2 * hidden + vocab_size  # transform, LayerNorm, decoder bias
    return embeddings + layers * layer + head


def student_not_smaller(student: int, teacher: int, student_name: str, suggestion: str | None) -> str | None:
    """What is wrong with a student that is not smaller than its teacher in parameters; None when it is."""
    if student < teacher:
        return None
    hint = f"pick a smaller shape (the default for this teacher is {suggestion})" if suggestion else \
        "pick a smaller student"
    return (f"the student {student_name} has {student:,} parameters, not fewer than the teacher's {teacher:,}: "
            f"distilling into it compresses nothing. {hint[0].upper() + hint[1:]}, or allow a student that is not "
            f"smaller (--allow-larger-student; on the Train page, its tick box)")


def check_student_smaller(student: int, teacher: int, student_name: str, suggestion: str | None,
                          allow_larger: bool) -> None:
    """Refuse a student that is not smaller than its teacher in parameters, unless allowed."""
    problem = None if allow_larger else student_not_smaller(student, teacher, student_name, suggestion)
    if problem:
        raise ConfigError(problem)


@dataclass
class DistillConfig:
    """Distillation settings (optimisation in `train`)."""

    student: StudentShape | None = None
    """The student's shape; None derives it from the teacher (`default_student`)."""
    init: str = "random"
    """'random', 'teacher' (every k-th teacher layer; needs equal widths) or a model folder."""
    version: str = "v2"
    """'v2': MiniLMv2 Q-Q/K-K/V-V relations; 'v1': attention distributions + value relation."""
    teacher_layer: int = -1
    """Teacher layer whose relations are taught (negative counts from the end)."""
    relation_heads: int | None = None
    """Relation heads (v2); None picks the largest of 48, 24, 16, 12, 8, 4, 2, 1 dividing both widths."""
    mlm_weight: float = 0.0
    """Weight of an extra student MLM loss (teacher and student then both see the masked input)."""
    seq_len: int = 128
    heldout_fraction: float = 0.02
    allow_larger_student: bool = False
    """Distil into a student that is not smaller than the teacher (refused otherwise)."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=DISTILL_LR))

    def __post_init__(self):
        if self.version not in ("v1", "v2"):
            raise ConfigError(f"version must be v1 or v2, got '{self.version}'")
        check_number("mlm-weight", self.mlm_weight, most=MOST_LOSS_WEIGHT)
        if self.relation_heads is not None:
            check_whole("relation-heads", self.relation_heads, 1, SHAPE_BOUNDS["heads"],
                        " (it must divide both hidden sizes; leave it out to pick one)")
        check_whole("teacher-layer", self.teacher_layer, -SHAPE_BOUNDS["layers"], SHAPE_BOUNDS["layers"] - 1)
        check_sequence("seq-len", self.seq_len)
        check_heldout_fraction(self.heldout_fraction)


def relation_heads(student_hidden: int, teacher_hidden: int, chosen: int | None = None) -> int:
    """The relation heads of MiniLMv2: `chosen` when it divides both widths, else (None) the largest
    of 48, 24, 16, 12, 8, 4, 2, 1 that does."""
    if chosen is not None:
        if student_hidden % chosen or teacher_hidden % chosen:
            raise ConfigError(f"relation heads ({chosen}) must divide both the student hidden size "
                              f"({student_hidden}) and the teacher's ({teacher_hidden})")
        return chosen
    return next(h for h in (48, 24, 16, 12, 8, 4, 2, 1) if not student_hidden % h and not teacher_hidden % h)


@dataclass(frozen=True)
class VocabConfig:
    """How the incremental vocabulary is searched (defaults from the AdaLM paper)."""

    step: int = 10_000
    """Tokens added from one candidate to the next."""
    max_added: int = 40_000
    """Largest number of tokens added to the base vocabulary."""
    threshold: float = 0.01
    """Pick the first candidate whose relative gain in P(D) is at most this."""
    min_frequency: int = 2
    """A word must occur this often for the trainer to learn merges from it."""

    def __post_init__(self):
        check_whole("step", self.step, 1, MOST_TOKENS_ADDED)
        check_whole("max-added", self.max_added, 1, MOST_TOKENS_ADDED)
        if self.max_added < self.step:
            raise ConfigError(f"max-added ({self.max_added:,}) must be at least step ({self.step:,})")
        if not isinstance(self.threshold, (int, float)) or not 0 < self.threshold < 1:
            raise ConfigError(f"threshold must be between 0 and 1 (0.01 is 1%), got {self.threshold}")
        check_whole("min-frequency", self.min_frequency, 1, MOST_MIN_FREQUENCY)
