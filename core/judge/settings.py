"""The settings of judging a model: fine-tuning on a labelled task (FinetuneConfig), the speed
benchmark (BENCH_DEFAULTS) and how a task file is read (TASK_FILE_DEFAULTS), with their checks.
Torch-free, so the CLI and the pages read the defaults and check settings without loading it."""

from __future__ import annotations

from dataclasses import dataclass

from core.checks import (MOST_BATCH, MOST_EPOCHS, MOST_LR, MOST_REPEATS, MOST_THREADS, MOST_WEIGHT_DECAY, check_device,
                         check_number, check_precision, check_seed, check_sequence, check_steps_or_fraction,
                         check_whole)
from core.errors import ConfigError

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
    onnx: tuple[str, ...] = ()
    """Also score each seed's fine-tuned model exported to ONNX in these precisions (fp32, int8) on
    test, run by ONNX Runtime: what serving it costs in score (core.export)."""
    keep: bool = False
    """Keep the fine-tuned model of the seed with the best dev score, its task head included, as a
    model of its own (to export and serve); otherwise each seed's weights go once it is scored."""

    def __post_init__(self):
        self.exclude_labels = tuple(self.exclude_labels)
        self.onnx = tuple(dict.fromkeys(self.onnx))
        if unknown := [p for p in self.onnx if p not in ("fp32", "int8")]:
            raise ConfigError(f"--onnx takes fp32 and int8, got {', '.join(map(str, unknown))}")
        check_seed(self.seed)
        check_whole("epochs", self.epochs, 1, MOST_EPOCHS)
        check_whole("batch-size", self.batch_size, 1, MOST_BATCH)
        check_whole("seeds", self.seeds, 1, 100)
        check_whole("patience", self.patience, 0, MOST_EPOCHS)
        check_sequence("max-length", self.max_length)
        if self.lr is not None:
            check_number("lr", self.lr, above=True, most=MOST_LR)
        check_steps_or_fraction("warmup", self.warmup)
        check_number("weight-decay", self.weight_decay, most=MOST_WEIGHT_DECAY)
        if self.scheme is not None and self.scheme.upper() not in TAG_SCHEMES:
            raise ConfigError(f"scheme must be one of {', '.join(TAG_SCHEMES)}, got '{self.scheme}'")
        self.device = check_device(self.device)
        check_precision(self.precision)

    def learning_rate(self, hidden: int) -> float:
        return self.lr if self.lr is not None else finetune_lr(hidden)

    def metric_for(self, task_type: str, labels: list[str], task: str = "this task") -> str:
        """The dev metric that picks the best epoch on a task of this type and labels, after
        refusing excluded labels that are not the task's or that leave nothing to score."""
        from core.judge.metrics import METRICS, primary_metric

        unknown = sorted(set(self.exclude_labels) - set(labels))
        if unknown:
            raise ConfigError(f"excluded label(s) {', '.join(unknown)} are not labels of {task} "
                              f"({', '.join(labels[:10])}{'...' if len(labels) > 10 else ''})")
        if task_type == "classification" and not set(labels) - set(self.exclude_labels):
            raise ConfigError(f"excluding {', '.join(self.exclude_labels)} leaves no label of {task} to score: "
                              f"exclude fewer labels")
        metric = self.metric or primary_metric(task_type, self.exclude_labels)
        if metric not in METRICS[task_type]:
            raise ConfigError(f"metric '{metric}' is not one of a {task_type} task's: {', '.join(METRICS[task_type])}")
        return metric



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


def check_bench(params: dict) -> dict:
    """The benchmark's settings (BENCH_DEFAULTS' keys) checked, the device name cleaned."""
    unknown = sorted(set(params) - set(BENCH_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown benchmark setting(s) {', '.join(unknown)}: use {', '.join(BENCH_DEFAULTS)}")
    check_sequence("seq-len", params["seq_len"])
    check_whole("batch-size", params["batch_size"], 1, MOST_BATCH)
    repeats = params["latency_repeats"]
    if isinstance(repeats, int) and 1 <= repeats < MIN_LATENCY_REPEATS:
        raise ConfigError(f"latency-repeats must be at least {MIN_LATENCY_REPEATS} (fewer batch-1 forwards give no "
                          f"real p95), got {repeats}: raise it (bench --repeats) to {MIN_LATENCY_REPEATS} or more")
    check_whole("latency-repeats", repeats, MIN_LATENCY_REPEATS, MOST_REPEATS)
    check_whole("throughput-repeats", params["throughput_repeats"], 1, MOST_REPEATS)
    check_whole("warmup", params["warmup"], 0, MOST_REPEATS)
    check_whole("threads", params["threads"], 1, MOST_THREADS)
    return {**params, "device": check_device(params["device"])}
