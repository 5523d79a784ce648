"""The typed settings of adaptation and distillation, with help beside each field and checks in
__post_init__ that name the option. Torch-free, so the dashboard and the queue side can validate
settings without loading it."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field

from core.errors import ConfigError

STRATEGIES = ("adapt-then-distill", "distill-then-adapt", "adapt-and-distill")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DEVICE_HELP = "auto, cpu, mps, cuda or cuda:N"
ADAPT_LR = 5e-5
"""Peak learning rate of adaptation (continued pretraining of a pretrained model)."""
DISTILL_LR = 5e-4
"""Peak learning rate of distillation (a fresh, small student)."""


def check_seed(value: int) -> None:
    if not isinstance(value, int) or value < 0:
        raise ConfigError(f"seed must be a whole number >= 0, got {value}")


def check_heldout_fraction(value: float) -> None:
    """The share of blocks held out, for every stage: more than none, at most half."""
    if not 0 < value <= 0.5:
        raise ConfigError(f"heldout-fraction must be more than 0 and at most 0.5, got {value}")


def check_device(name: str) -> str:
    """The device name, stripped, or a ConfigError naming the accepted ones. The one check used by
    the configs, the CLI and the dashboard."""
    name = (name or "auto").strip()
    if not _DEVICE.match(name):
        raise ConfigError(f"device must be {DEVICE_HELP}, got '{name}'")
    return name


def check_number(name: str, value: float, least: float = 0.0, above: bool = False) -> None:
    """A finite number >= `least` (> `least` with `above`), else a ConfigError naming the option."""
    if not math.isfinite(value) or value < least or (above and value == least):
        bound = "a positive number" if above and least == 0 else f"a number {'>' if above else '>='} {least:g}"
        raise ConfigError(f"{name} must be {bound}, got {value}")


SEQUENCE_TOKENS = (8, 8192)  # the least and most tokens per sequence a run may ask for


def check_sequence(name: str, value: int) -> None:
    """Tokens per sequence: within SEQUENCE_TOKENS."""
    least, most = SEQUENCE_TOKENS
    if not least <= value <= most:
        raise ConfigError(f"{name} must be between {least} and {most}, got {value}")


PRECISIONS = ("auto", "bf16", "fp32")


def check_precision(value: str) -> None:
    if value not in PRECISIONS:
        raise ConfigError(f"precision must be auto, bf16 or fp32, got '{value}'")


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
        for name in ("steps", "batch_size", "grad_accum", "eval_every", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        check_seed(self.seed)
        if not 1 <= self.processes <= 64:
            raise ConfigError(f"gpus (data-parallel processes) must be between 1 and 64, got {self.processes}")
        if self.batch_size % self.processes:
            raise ConfigError(f"batch-size {self.batch_size} does not split among {self.processes} processes: use a "
                              f"multiple of {self.processes}")
        if self.epochs is not None:
            check_number("epochs", self.epochs, above=True)
        check_number("lr", self.lr, above=True)
        check_number("warmup", self.warmup)
        check_number("weight-decay", self.weight_decay)
        check_number("max-grad-norm", self.max_grad_norm, above=True)
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
        check_number("head-warmup (a fraction of the steps, or steps)", self.head_warmup)
        check_number("head-lr", self.head_lr, above=True)
        check_sequence("seq-len", self.seq_len)
        check_heldout_fraction(self.heldout_fraction)
        if not 0 < self.mask_probability < 1:
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
        if min(self.layers, self.hidden, self.heads, self.intermediate) < 1:
            raise ConfigError("student layers, hidden, heads and intermediate must all be positive")
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
        check_number("mlm-weight", self.mlm_weight)
        check_sequence("seq-len", self.seq_len)
        check_heldout_fraction(self.heldout_fraction)


TASK_TYPES = ("classification", "ner")
TAG_SCHEMES = ("IOB1", "IOB2", "IOE1", "IOE2", "IOBES", "BIOES", "BILOU")


def finetune_lr(hidden: int) -> float:
    """A fine-tuning learning rate that suits a model's width: BERT-base's 3e-5 for 768 and wider,
    more for smaller models, which need larger steps to move in the few epochs a task allows
    (the small-BERT studies found 1e-4 and above best below 512 hidden)."""
    if hidden >= 768:
        return 3e-5
    if hidden >= 384:
        return 1e-4
    if hidden >= 192:
        return 2e-4
    return 3e-4


@dataclass
class FinetuneConfig:
    """Fine-tuning a model on a labelled task to score it: several seeds, each trained up to
    `epochs` with early stopping on the dev set, the best dev epoch scored on test."""

    epochs: int = 10
    """Most passes over the training examples; early stopping usually ends a seed sooner."""
    patience: int = 2
    """Stop a seed after this many epochs without a better dev score (0: never stop early)."""
    lr: float | None = None
    """Peak learning rate; None picks one from the model's width (finetune_lr)."""
    batch_size: int = 16
    max_length: int = 128
    """Tokens per example (both texts of a pair together); longer ones are truncated."""
    warmup: float = 0.1
    """Warmup: a fraction of the most steps when < 1, else a number of steps."""
    weight_decay: float = 0.01
    seeds: int = 3
    """Fine-tunings with different seeds; scores are their mean and standard deviation."""
    seed: int = 0
    """The first seed; the others follow it (seed, seed + 1, ...)."""
    metric: str | None = None
    """The dev metric that picks the best epoch; None: macro-F1 (classification), micro-F1 when labels
    are excluded, entity F1 (ner)."""
    exclude_labels: tuple[str, ...] = ()
    """Labels left out of micro- and macro-F1 (ChemProt style: the negative class is not scored)."""
    scheme: str | None = None
    """Tag scheme for strict entity matching (IOB1, IOB2, IOE1, IOE2, IOBES, BILOU); None: the
    conlleval rules, which accept IOB1 and IOB2."""
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self):
        self.exclude_labels = tuple(self.exclude_labels)
        check_seed(self.seed)
        for name in ("epochs", "batch_size", "seeds"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be a whole number of at least 1, got {value}")
        if not isinstance(self.patience, int) or self.patience < 0:
            raise ConfigError(f"patience must be a whole number >= 0, got {self.patience}")
        check_sequence("max-length", self.max_length)
        if self.lr is not None:
            check_number("lr", self.lr, above=True)
        check_number("warmup", self.warmup)
        check_number("weight-decay", self.weight_decay)
        if self.scheme is not None and self.scheme.upper() not in TAG_SCHEMES:
            raise ConfigError(f"scheme must be one of {', '.join(TAG_SCHEMES)}, got '{self.scheme}'")
        self.device = check_device(self.device)
        check_precision(self.precision)

    def learning_rate(self, hidden: int) -> float:
        return self.lr if self.lr is not None else finetune_lr(hidden)


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
        if self.step < 1:
            raise ConfigError(f"step must be a positive number of tokens, got {self.step}")
        if self.max_added < self.step:
            raise ConfigError(f"max-added ({self.max_added}) must be at least step ({self.step})")
        if not 0 < self.threshold < 1:
            raise ConfigError(f"threshold must be between 0 and 1 (0.01 is 1%), got {self.threshold}")
        if self.min_frequency < 1:
            raise ConfigError(f"min-frequency must be at least 1, got {self.min_frequency}")


MIN_LATENCY_REPEATS = 30  # fewer and the p95 is one or two forwards: noise, not a tail
# How speed is measured unless told otherwise (`adapt-distill bench`, evaluations, experiments). One
# torch thread: batch-1 latency as one serving worker sees it, and the same number whatever the
# machine's core count (core.judge.speed pins it for the whole measurement).
BENCH_DEFAULTS = {"device": "auto", "seq_len": 128, "batch_size": 32, "latency_repeats": MIN_LATENCY_REPEATS,
                  "throughput_repeats": 5, "warmup": 3, "threads": 1}

# How a labelled task file is read and split when the user does not say (`adapt-distill task add`,
# core.judge.tasks.ingest_task, worker.evaluation.add_task): the fields of CSV/TSV/JSONL rows, and
# the seeded, stratified share of train split off as dev and as test when those files are not given.
TASK_FILE_DEFAULTS = {"text_field": "text", "pair_field": "text_pair", "label_field": "label", "seed": 0,
                      "dev_fraction": 0.1, "test_fraction": 0.1}
