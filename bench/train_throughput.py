"""Benchmark the training steps: adaptation against a plain Hugging Face Trainer, and
distillation against a student-only masked-LM step.

    python bench/train_throughput.py --model bundled --seq-len 128 --batch 16 --steps 20

On the same model folder, corpus, batch size, sequence length and machine it times:

  (a) ours:      core.train.adapt.adapt (core.train.loop.run_loop over core.train.mlm.pack_documents blocks,
                 Masker, masked_lm_loss, AdamW); every token of a packed block is real;
  (b) baseline:  transformers.Trainer + DataCollatorForLanguageModeling (mlm_probability 0.15)
                 on documents tokenized one by one, truncated and padded to seq-len, the same
                 AutoModelForMaskedLM class; tokens/s counts the real (non-padding) tokens;
  (c) distill:   core.train.distill.distill (teacher forward in inference mode, student forward,
                 MiniLMv2 relation loss, backward, AdamW) into a random --student;
  (d) student:   core.train.adapt.adapt of a random student of the same shape (masked_lm_loss only).

Each run does --steps optimizer steps; the first --warmup-steps are excluded. The clock reads
at the end of each optimizer step (run_loop's per-step metrics hook, the Trainer's
on_step_end), so each timed step holds data, masking, forward, backward and optimizer step for
both. Rates use the median step time (other load on a shared machine inflates single steps; the
mean is shown too) and the mean tokens per timed step; 'cores used' (process CPU seconds per
wall second) shows such competition. Without --corpus a synthetic corpus (bench/make_corpus.py)
is written under bench/data/. The baseline needs `accelerate` (the Trainer's requirement)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForMaskedLM,
    DataCollatorForLanguageModeling,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.utils import logging as hf_logging  # noqa: E402

from bench.make_corpus import generate  # noqa: E402
from core.configs import (  # noqa: E402
    PRESETS,
    AdaptConfig,  # noqa: E402
    DistillConfig,
    StudentShape,
    TrainConfig,  # noqa: E402
)
from core.corpus import read_documents  # noqa: E402
from core.devices import autocast_dtype, resolve_device  # noqa: E402
from core.model_io import load_mlm, load_tokenizer  # noqa: E402
from worker.specs import ModelSpec  # noqa: E402
from core.train.adapt import adapt  # noqa: E402
from core.train.distill import build_student, distill  # noqa: E402

DATA_DIR = Path(__file__).resolve().parent / "data"
TINY_HELDOUT = 1e-9  # split_heldout keeps one block: the held-out evaluations stay negligible
ADAPT_LR, DISTILL_LR, WEIGHT_DECAY, LR_WARMUP = 5e-5, 5e-4, 0.01, 0.06
TARGET_SPEEDUP, TARGET_DISTILL_RATIO = 1.5, 1.5


@dataclass
class Measurement:
    """Per timed step: wall seconds, real tokens and padded tokens. Rates use the median step
    time (robust to other load on a shared machine) and the mean tokens per step."""

    name: str
    seconds: list[float]
    real: list[int]
    padded: list[int]
    cores_used: float
    """Process CPU seconds per wall second over the timed steps: below the thread count when
    something else competes for the cores."""

    @classmethod
    def pooled(cls, runs: list["Measurement"]) -> "Measurement":
        """The timed steps of several runs of one method, as one measurement."""
        return cls(runs[0].name, [x for r in runs for x in r.seconds], [x for r in runs for x in r.real],
                   [x for r in runs for x in r.padded], statistics.fmean(r.cores_used for r in runs))

    @property
    def seconds_per_step(self) -> float:
        return statistics.median(self.seconds)

    @property
    def mean_seconds_per_step(self) -> float:
        return statistics.fmean(self.seconds)

    @property
    def real_per_second(self) -> float:
        return statistics.fmean(self.real) / self.seconds_per_step

    @property
    def padded_per_second(self) -> float:
        return statistics.fmean(self.padded) / self.seconds_per_step


class StepClock:
    """Wall-clock time at the end of each optimizer step."""

    def __init__(self, device: torch.device):
        self.device = device
        self.ends: list[float] = []
        self.cpu: list[float] = []

    def tick(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.ends.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """run_loop's hook: with log_every=1 the training metrics (they carry 'loss') come right
        after each optimizer step, before any evaluation."""
        if "loss" in metrics:
            self.tick()

    def durations(self, warmup: int) -> list[float]:
        """Seconds of each step after the warmup ones (end of one step to the end of the next)."""
        if len(self.ends) <= warmup:
            raise RuntimeError(f"only {len(self.ends)} steps were clocked, need more than {warmup}")
        return [b - a for a, b in zip(self.ends[warmup - 1:], self.ends[warmup:])]

    def cores_used(self, warmup: int) -> float:
        return (self.cpu[-1] - self.cpu[warmup - 1]) / (self.ends[-1] - self.ends[warmup - 1])


class TrainerClock(TrainerCallback):
    def __init__(self, clock: StepClock):
        self.clock = clock

    def on_step_end(self, args, state, control, **kwargs):
        self.clock.tick()


class CountingCollator:
    """Wraps a collator and records the real (attention_mask) and padded tokens of each batch."""

    def __init__(self, collator):
        self.collator = collator
        self.real: list[int] = []
        self.padded: list[int] = []

    def __call__(self, examples):
        batch = self.collator(examples)
        self.real.append(int(batch["attention_mask"].sum()))
        self.padded.append(batch["input_ids"].numel())
        return batch


class EncodedDocuments(torch.utils.data.Dataset):
    def __init__(self, encoding: dict[str, list]):
        self.encoding = encoding
        self.size = len(encoding["input_ids"])

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return {key: values[index] for key, values in self.encoding.items()}


# --- setup -----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, help="one document per line (default: a generated corpus)")
    parser.add_argument("--corpus-mb", type=float, default=5.0, help="size of the generated corpus (default 5)")
    parser.add_argument("--model", default="bundled", help="'bundled' or a BERT masked-LM folder")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per run, warmup included")
    parser.add_argument("--warmup-steps", type=int, default=3, help="steps excluded from the timing")
    parser.add_argument("--student", default="L3-H256", choices=list(PRESETS))
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the four runs this many times and pool "
                        "their timed steps (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not 1 <= args.warmup_steps < args.steps:
        parser.error("need 1 <= --warmup-steps < --steps")
    if importlib.util.find_spec("accelerate") is None:
        parser.error("the Trainer baseline needs accelerate: pip install accelerate")
    return args


def ensure_corpus(path: Path | None, megabytes: float) -> Path:
    """The given corpus, or a synthetic one generated once under bench/data/."""
    if path is not None:
        return path
    path = DATA_DIR / f"corpus-{megabytes:g}mb.txt"
    if not path.is_file():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        size, lines, _ = generate(str(path), int(megabytes * 1_000_000), seed=0)
        print(f"generated {path.name}: {size / 1e6:.1f} MB, {lines} documents", file=sys.stderr)
    return path


def train_config(args: argparse.Namespace, lr: float) -> TrainConfig:
    """Per-step logging (the clock), no checkpoint and one evaluation at the very end."""
    return TrainConfig(steps=args.steps, batch_size=args.batch, lr=lr, weight_decay=WEIGHT_DECAY, warmup=LR_WARMUP,
                       seed=args.seed, eval_every=args.steps, checkpoint_every=args.steps, log_every=1,
                       device=args.device)


def documents_of(corpus: Path) -> Callable[[], Iterable[str]]:
    return lambda: read_documents(corpus)


# --- the four runs ---------------------------------------------------------------------------

def packed_measurement(name: str, clock: StepClock, args) -> Measurement:
    """Packed blocks have no padding: every step trains batch x seq-len real tokens."""
    seconds = clock.durations(args.warmup_steps)
    tokens = [args.batch * args.seq_len] * len(seconds)
    return Measurement(name, seconds, tokens, tokens, clock.cores_used(args.warmup_steps))


def measure_adapt(name: str, model_path: Path, corpus: Path, args, device: torch.device) -> Measurement:
    """core.train.adapt.adapt with a step clock; packed blocks, so every token is real."""
    clock = StepClock(device)
    config = AdaptConfig(seq_len=args.seq_len, heldout_fraction=TINY_HELDOUT, train=train_config(args, ADAPT_LR))
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as out:
        adapt(model_path, documents_of(corpus), out, config, on_metrics=clock.on_metrics)
    return packed_measurement(name, clock, args)


def baseline_dataset(model_path: Path, corpus: Path, seq_len: int):
    """(tokenizer, dataset): each document tokenized alone, truncated and padded to seq_len."""
    tokenizer = load_tokenizer(model_path)
    documents = list(read_documents(corpus))
    encoding = tokenizer(documents, truncation=True, max_length=seq_len, padding="max_length")
    return tokenizer, EncodedDocuments(dict(encoding))


def baseline_arguments(out: str, args, device: torch.device) -> TrainingArguments:
    return TrainingArguments(
        output_dir=out, per_device_train_batch_size=args.batch, max_steps=args.steps, learning_rate=ADAPT_LR,
        weight_decay=WEIGHT_DECAY, warmup_steps=LR_WARMUP, lr_scheduler_type="linear", max_grad_norm=1.0,
        seed=args.seed, data_seed=args.seed, eval_strategy="no", save_strategy="no", logging_strategy="no",
        report_to="none", disable_tqdm=True, use_cpu=device.type == "cpu", dataloader_num_workers=0,
        bf16=autocast_dtype("auto", device) is not None,
    )


def measure_baseline(model_path: Path, corpus: Path, args, device: torch.device) -> Measurement:
    """A plain Trainer run; the timed batches are those of the steps after warmup."""
    tokenizer, dataset = baseline_dataset(model_path, corpus, args.seq_len)
    collator = CountingCollator(DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=args.seed))
    clock = StepClock(device)
    torch.manual_seed(args.seed)
    model = AutoModelForMaskedLM.from_pretrained(str(model_path), use_safetensors=True)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model=model, args=baseline_arguments(out, args, device), data_collator=collator,
                          train_dataset=dataset, processing_class=tokenizer, callbacks=[TrainerClock(clock)])
        trainer.remove_callback(PrinterCallback)  # no end-of-training metrics dump
        trainer.train()
    timed = slice(args.warmup_steps, args.steps)  # batch i feeds step i, whatever the prefetching
    return Measurement("HF Trainer, padded (baseline)", clock.durations(args.warmup_steps), collator.real[timed],
                       collator.padded[timed], clock.cores_used(args.warmup_steps))


def measure_distill(model_path: Path, corpus: Path, args, device: torch.device) -> Measurement:
    """core.train.distill.distill (MiniLMv2, last teacher layer) into a random student."""
    clock = StepClock(device)
    config = DistillConfig(student=StudentShape.parse(args.student), seq_len=args.seq_len,
                           heldout_fraction=TINY_HELDOUT, train=train_config(args, DISTILL_LR))
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as out:
        distill(model_path, documents_of(corpus), out, config, on_metrics=clock.on_metrics)
    return packed_measurement(f"distill step ({args.student})", clock, args)


def measure_student_mlm(model_path: Path, corpus: Path, args, device: torch.device) -> Measurement:
    """The same student shape trained by core.train.adapt (masked_lm_loss), from a saved random init."""
    teacher, _ = load_mlm(model_path)
    torch.manual_seed(args.seed)
    student = build_student(teacher, StudentShape.parse(args.student), "random")
    with tempfile.TemporaryDirectory() as folder:
        student.save_pretrained(folder)
        load_tokenizer(model_path).save_pretrained(folder)
        return measure_adapt(f"student-only MLM step ({args.student})", Path(folder), corpus, args, device)


def measure_rounds(model_path: Path, corpus: Path, args, device: torch.device) -> list[Measurement]:
    """(ours, baseline, distill, student-only), each pooled over --rounds alternating runs."""
    runs: list[list[Measurement]] = [[], [], [], []]
    for _ in range(args.rounds):
        runs[0].append(measure_adapt("ours: adapt, packed (core.train.adapt)", model_path, corpus, args, device))
        runs[1].append(measure_baseline(model_path, corpus, args, device))
        runs[2].append(measure_distill(model_path, corpus, args, device))
        runs[3].append(measure_student_mlm(model_path, corpus, args, device))
    return [Measurement.pooled(r) for r in runs]


# --- report ----------------------------------------------------------------------------------

def describe_model(path: Path) -> str:
    model, _ = load_mlm(path)
    config = model.config
    return (f"{type(model).__name__} L{config.num_hidden_layers}-H{config.hidden_size}, vocab {config.vocab_size}, "
            f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
            f"attention {config._attn_implementation}")


def header(args, model_path: Path, corpus: Path, device: torch.device) -> list[str]:
    timed = args.steps - args.warmup_steps
    return [
        f"machine: {platform.machine()} {platform.processor() or ''}".rstrip()
        + f", {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, device {device}",
        f"torch {torch.__version__}, transformers {transformers.__version__}",
        f"model: {args.model} ({describe_model(model_path)}), student {args.student}",
        f"corpus: {corpus.name} ({corpus.stat().st_size / 1e6:.1f} MB)",
        f"seq-len {args.seq_len}, batch {args.batch}, steps {args.steps} ({args.warmup_steps} warmup, {timed} timed)"
        + (f" x {args.rounds} rounds" if args.rounds > 1 else ""),
    ]


def table(rows: list[Measurement], baseline: Measurement) -> list[str]:
    lines = [f"{'method':<36} {'tokens/s real':>13} {'tokens/s padded':>15} {'s/step':>7} {'(mean)':>7} "
             f"{'vs baseline':>11} {'cores used':>10}"]
    for row in rows:
        ratio = row.real_per_second / baseline.real_per_second
        lines.append(f"{row.name:<36} {row.real_per_second:>13,.0f} {row.padded_per_second:>15,.0f} "
                     f"{row.seconds_per_step:>7.3f} {row.mean_seconds_per_step:>7.3f} {ratio:>10.2f}x "
                     f"{row.cores_used:>10.2f}")
    return lines


def verdicts(ours: Measurement, baseline: Measurement, distilled: Measurement, student: Measurement) -> list[str]:
    speedup = ours.real_per_second / baseline.real_per_second
    ratio = distilled.seconds_per_step / student.seconds_per_step
    met = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    return [
        f"{distilled.name}: {distilled.seconds_per_step:.3f} s/step ({distilled.cores_used:.2f} cores used); "
        f"{student.name}: {student.seconds_per_step:.3f} s/step ({student.cores_used:.2f}); ratio {ratio:.2f}x",
        f"target adaptation >= {TARGET_SPEEDUP}x baseline: {speedup:.2f}x, {met(speedup >= TARGET_SPEEDUP)}",
        f"target distillation <= {TARGET_DISTILL_RATIO}x student-only: {ratio:.2f}x, "
        f"{met(ratio <= TARGET_DISTILL_RATIO)}",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model_path = ModelSpec.parse(args.model).path()
    corpus = ensure_corpus(args.corpus, args.corpus_mb)
    ours, baseline, distilled, student = measure_rounds(model_path, corpus, args, device)
    print("\n".join(header(args, model_path, corpus, device) + [""] + table([ours, baseline], baseline) + [""]
                    + verdicts(ours, baseline, distilled, student)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
