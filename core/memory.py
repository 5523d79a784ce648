"""How much memory a run will take, estimated from shapes before anything is loaded, so a run that
cannot fit is refused when it is created (against the workers' memory) and again when it starts
(against what the device has free), with the largest batch that would fit, instead of ending in
an out-of-memory kill. Torch-free.

The counts follow the tensors a step keeps (weights, gradients, AdamW's two moments, the
activations saved for the backward pass, the MLM head's logits on the masked positions, MiniLM's
relation matrices) and were calibrated against the peak resident memory of the bundled 6L-384H
model on a CPU (`bench/memory_estimate.py` prints estimate and measurement side by side)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.configs import AdaptConfig, DistillConfig, relation_heads

GIB = 2**30
RUNTIME_BYTES = 700 * 2**20
"""Python, torch, the tokenizer and the token blocks of one job, before any model."""
SLACK = 1.3
"""The allocator's share over the counted activations (measured: 1.25 to 1.3 on the bundled model)."""
OPTIMIZER_BYTES = 16
"""Per trainable parameter: the fp32 weight, its gradient and AdamW's two moments."""
WEIGHT_BYTES = 4
MASKED_SHARE = 0.15


@dataclass(frozen=True)
class Estimate:
    """Bytes a run needs: `fixed` whatever the batch, plus `per_sequence` for each of the `batch`
    sequences of a (per-process) micro-batch."""

    fixed: int
    per_sequence: int
    batch: int
    shorter: str = "sequence length"
    """What else makes a sequence cheaper (named in the refusal)."""
    training: bool = True
    """Gradient accumulation can keep the effective batch (named in the refusal)."""

    @property
    def total(self) -> int:
        return self.fixed + self.per_sequence * self.batch

    def largest_batch(self, capacity: int) -> int:
        """The most sequences per micro-batch that fit in `capacity` bytes (0: not even one)."""
        return max(0, (capacity - self.fixed) // max(1, self.per_sequence))

    def problem(self, capacity: int, where: str, processes: int = 1, subject: str = "this run") -> str | None:
        """Why this does not fit in `capacity` bytes, which `where` has ("this machine has"), with
        what would; None when it fits."""
        if self.total <= capacity:
            return None
        fits = self.largest_batch(capacity)
        need = f"about {gib(self.total)} of memory"
        if fits < 1:
            return (f"{subject} needs {need} before its first sequence (the model's weights and optimizer state), "
                    f"more than {where} ({gib(capacity)}): pick a smaller model or a machine with more memory")
        most = fits * processes
        accumulate = ", and more gradient accumulation to keep the effective batch" if self.training else ""
        return (f"{subject} needs {need} at batch size {self.batch * processes:,}, more than {where} "
                f"({gib(capacity)}): use a batch size of {most:,} or less (or a shorter {self.shorter}){accumulate}")


def gib(size: int) -> str:
    return f"{size / GIB:,.1f} GiB"


def _activation_bytes(precision: str) -> int:
    return 2 if precision == "bf16" else 4


def layer_activations(seq_len: int, hidden: int, heads: int, intermediate: int, bytes_: int = 4) -> float:
    """Bytes one encoder layer keeps for the backward pass, per sequence: its inputs, Q/K/V, the
    attention scores and probabilities, the feed-forward pair, the LayerNorms and dropout masks."""
    return seq_len * bytes_ * (9 * hidden + 2 * intermediate + 2.5 * heads * seq_len)


def inference_activations(seq_len: int, hidden: int, heads: int, intermediate: int, bytes_: int = 4) -> float:
    """Bytes of one layer's forward without gradients (the peak of an inference), per sequence."""
    return seq_len * bytes_ * (6 * hidden + 2 * intermediate + 2 * heads * seq_len)


def mlm_head(seq_len: int, hidden: int, vocab_size: int) -> float:
    """The MLM head on the masked positions: logits, their softmax and its gradient, in fp32."""
    masked = MASKED_SHARE * seq_len
    return masked * 4 * 3 * (vocab_size + hidden)


def _batch(batch_size: int, processes: int) -> int:
    return max(1, math.ceil(batch_size / max(1, processes)))


def adaptation(shape: dict, config: AdaptConfig) -> Estimate:
    """Masked-LM training of a model of `shape` (as worker.specs gives it, with parameters)."""
    bytes_ = _activation_bytes(config.train.precision)
    per = shape["layers"] * layer_activations(config.seq_len, shape["hidden"], shape["heads"], shape["intermediate"],
                                              bytes_) + mlm_head(config.seq_len, shape["hidden"], shape["vocab_size"])
    return Estimate(RUNTIME_BYTES + OPTIMIZER_BYTES * shape["parameters"], int(SLACK * per),
                    _batch(config.train.batch_size, config.train.processes))


def distillation(teacher: dict, student: dict, config: DistillConfig) -> Estimate:
    """MiniLM distillation: the frozen teacher's forward, the student's training, and the relation
    matrices (Q-Q, K-K, V-V of teacher and student, with their softmax and gradient)."""
    bytes_ = _activation_bytes(config.train.precision)
    s = config.seq_len
    try:
        heads = student["heads"] if config.version == "v1" else relation_heads(student["hidden"], teacher["hidden"],
                                                                              config.relation_heads)
    except Exception:  # noqa: BLE001  (a bad choice is refused by the shape check, with its own message)
        heads = 1
    relations = 3 * 2 * 1.3 * heads * s * s * 4  # Q-Q, K-K, V-V; teacher and student; softmax and gradient
    per = (student["layers"] * layer_activations(s, student["hidden"], student["heads"], student["intermediate"], bytes_)
           + inference_activations(s, teacher["hidden"], teacher["heads"], teacher["intermediate"], bytes_)
           + relations)
    if config.mlm_weight > 0:
        per += mlm_head(s, student["hidden"], teacher["vocab_size"])
    fixed = RUNTIME_BYTES + WEIGHT_BYTES * teacher["parameters"] + OPTIMIZER_BYTES * student["parameters"]
    return Estimate(fixed, int(SLACK * per), _batch(config.train.batch_size, config.train.processes))


def finetuning(shape: dict, seq_len: int, batch_size: int, precision: str = "auto") -> Estimate:
    """Fine-tuning on a labelled task: the encoder trained, a small head (no MLM logits)."""
    per = shape["layers"] * layer_activations(seq_len, shape["hidden"], shape["heads"], shape["intermediate"],
                                              _activation_bytes(precision))
    return Estimate(RUNTIME_BYTES + OPTIMIZER_BYTES * shape["parameters"], int(SLACK * per), batch_size,
                    "max length", training=False)


def inference(shape: dict, seq_len: int, batch_size: int) -> Estimate:
    """A forward without gradients (the speed benchmark's throughput batch)."""
    per = inference_activations(seq_len, shape["hidden"], shape["heads"], shape["intermediate"])
    return Estimate(RUNTIME_BYTES + WEIGHT_BYTES * shape["parameters"], int(SLACK * per), batch_size,
                    training=False)
