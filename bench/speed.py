"""Benchmark inference speed: the paper's teacher and student shapes and the bundled model,
side by side (core.judge.speed.measure_speed).

    python bench/speed.py --device cpu --seq-len 128 --batch-size 32 --repeats 30
    python bench/speed.py --threads 1,2 --rounds 3 --no-bundled   # the ratio at 1 and 2 threads, 3 times

By default it builds, with random weights in a temporary folder, the AdaLM paper's shapes:
BERT-base (12 layers x 768 hidden x 12 heads x 3072 FFN) and its student (6 x 384 x 12 heads x
1536), both with a 30522-token vocabulary; adds the bundled all-MiniLM-L6-v2 and any
--model NAME=FOLDER; and times them with BERT-base first, so the speed-ups are against it.
Random weights time the same as trained ones: the forward does the same arithmetic. Every
model sees the same token ids; repetitions are interleaved across the models; latency is one
sequence (batch 1), throughput is sequences per second at --batch-size (median forward).

torch is pinned to each of --threads (default 1) for a whole measurement. With several thread
counts or --rounds above 1, the measurements alternate (round 1 at each thread count, then round
2, ...) so that a change in the machine's load hits every setting alike, and a second table gives
each model's speed-up against the first as the mean and the range (min-max) over the rounds.
Each row carries the 1-minute load average before and after it and is flagged when noisy."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import transformers  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from core.devices import resolve_device  # noqa: E402
from core.judge.speed import SpeedResult, measure_speed  # noqa: E402
from core.model_io import bundled_path  # noqa: E402

VOCAB = 30522
# (name, layers, hidden, heads, FFN): the AdaLM paper's teacher and student.
PAPER_SHAPES = [("BERT-base (random init)", 12, 768, 12, 3072), ("student L6-H384 (random init)", 6, 384, 12, 1536)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, auto, cuda or cuda:N (default cpu)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=30, help="timed batch-1 forwards per model (default 30)")
    parser.add_argument("--throughput-repeats", type=int, default=5, help="timed batch forwards per model (default 5)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed forwards per model and batch shape")
    parser.add_argument("--threads", default="1", help="torch threads, pinned for a whole measurement; several "
                                                         "comma-separated (1,2) are measured in turn (default 1)")
    parser.add_argument("--rounds", type=int, default=1, help="times to repeat every measurement (default 1)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=FOLDER",
                        help="another model folder to time (repeatable)")
    parser.add_argument("--no-paper-shapes", action="store_true", help="skip the random BERT-base and student")
    parser.add_argument("--no-bundled", action="store_true", help="skip the bundled all-MiniLM-L6-v2")
    args = parser.parse_args(argv)
    extra = []
    for spec in args.model:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            parser.error(f"--model takes NAME=FOLDER, got '{spec}'")
        extra.append((name, Path(folder).expanduser()))
    args.extra = extra
    try:
        args.threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        parser.error(f"--threads takes whole numbers separated by commas (1,2), got '{args.threads}'")
    if any(t < 1 for t in args.threads) or args.rounds < 1:
        parser.error("--threads and --rounds must be at least 1")
    if args.no_paper_shapes and args.no_bundled and not extra:
        parser.error("nothing to time: drop --no-paper-shapes or --no-bundled, or pass --model NAME=FOLDER")
    return args


def build_paper_shapes(root: Path) -> list[tuple[str, Path]]:
    """The paper's shapes with random weights, saved as safetensors under root."""
    from transformers import BertConfig, BertModel

    models = []
    for name, layers, hidden, heads, ffn in PAPER_SHAPES:
        folder = root / f"L{layers}-H{hidden}"
        torch.manual_seed(0)
        config = BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                            intermediate_size=ffn)
        BertModel(config).save_pretrained(str(folder))
        models.append((name, folder))
    return models


def _noisy(r: SpeedResult) -> str:
    return f"noisy: {r.noisy_reason}" if r.noisy else ""


def _load(r: SpeedResult) -> str:
    return "?" if r.load_before is None else f"{r.load_before:.2f} → {r.load_after:.2f}"


def table(results: list[SpeedResult]) -> list[str]:
    batch = results[0].batch_size
    lines = [
        f"| model | encoder parameters | size MB | p50 ms | p95 ms | IQR ms | sequences/s at batch {batch} "
        f"| speed-up at batch 1 | speed-up at batch {batch} | noisy |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        lines.append(f"| {r.name} | {r.params / 1e6:.1f}M | {r.size_bytes / 1e6:.1f} | {r.latency_ms_p50:.1f} "
                     f"| {r.latency_ms_p95:.1f} | {r.latency_ms_iqr:.1f} | {r.throughput_per_s:.1f} "
                     f"| {r.speedup_vs_first:.2f}x | {r.throughput_speedup_vs_first:.2f}x | {_noisy(r)} |")
    return lines


def rounds_table(measured: list[tuple[int, int, list[SpeedResult]]]) -> list[str]:
    """A row per thread count, round and model: (threads, round, results) in the order measured."""
    batch = measured[0][2][0].batch_size
    lines = [
        f"| threads | round | model | p50 ms | p95 ms | IQR ms | sequences/s at batch {batch} | speed-up at batch 1 "
        f"| speed-up at batch {batch} | load average before → after | noisy |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for threads, round_, results in measured:
        for r in results:
            lines.append(f"| {threads} | {round_} | {r.name} | {r.latency_ms_p50:.1f} | {r.latency_ms_p95:.1f} "
                         f"| {r.latency_ms_iqr:.1f} | {r.throughput_per_s:.1f} | {r.speedup_vs_first:.2f}x "
                         f"| {r.throughput_speedup_vs_first:.2f}x | {_load(r)} | {_noisy(r)} |")
    return lines


def _spread(values: list[float], digits: int = 2, unit: str = "") -> str:
    return f"{sum(values) / len(values):.{digits}f}{unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def summary_table(measured: list[tuple[int, int, list[SpeedResult]]]) -> list[str]:
    """Per thread count and model: p50, throughput and the speed-ups against the first model as the
    mean (min-max) over the rounds."""
    rounds = len({round_ for _, round_, _ in measured})
    batch = measured[0][2][0].batch_size
    lines = [
        f"| threads | model | p50 ms | sequences/s at batch {batch} | speed-up at batch 1 | speed-up at batch {batch} "
        f"| noisy rounds |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for threads in dict.fromkeys(t for t, _, _ in measured):
        runs = [results for t, _, results in measured if t == threads]
        for i, first in enumerate(runs[0]):
            same = [results[i] for results in runs]
            lines.append(f"| {threads} | {first.name} | {_spread([r.latency_ms_p50 for r in same], 1)} "
                         f"| {_spread([r.throughput_per_s for r in same], 1)} "
                         f"| {_spread([r.speedup_vs_first for r in same], unit='x')} "
                         f"| {_spread([r.throughput_speedup_vs_first for r in same], unit='x')} "
                         f"| {sum(r.noisy for r in same)} of {rounds} |")
    return lines


def machine_line(args: argparse.Namespace, device: torch.device, first: SpeedResult) -> str:
    return (f"machine: {first.cpu_model}, {os.cpu_count()} cores ({platform.machine()}), device {device}; "
            f"torch {first.torch_version}, transformers {transformers.__version__}; seq-len {args.seq_len}, "
            f"{args.repeats} batch-1 and {args.throughput_repeats} batch-{args.batch_size} forwards per model, "
            f"interleaved, after {args.warmup} warm-up forwards; torch threads {','.join(map(str, args.threads))}"
            + (f", {args.rounds} rounds alternating the thread counts" if args.rounds > 1 else ""))


def progress_printer():
    if not sys.stderr.isatty():
        return None
    return lambda stage, fraction: print(f"\r{stage}: {fraction:4.0%}", end="", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as root:
        models = [] if args.no_paper_shapes else build_paper_shapes(Path(root))
        if not args.no_bundled:
            models.append(("bundled all-MiniLM-L6-v2", bundled_path()))
        models += args.extra
        measured = []
        for round_ in range(1, args.rounds + 1):
            for threads in args.threads:
                results = measure_speed(models, device=str(device), seq_len=args.seq_len, batch_size=args.batch_size,
                                        latency_repeats=args.repeats, throughput_repeats=args.throughput_repeats,
                                        warmup=args.warmup, threads=threads, progress=progress_printer())
                measured.append((threads, round_, results))
    if sys.stderr.isatty():
        print(file=sys.stderr)
    first = measured[0][2][0]
    if len(measured) == 1:
        lines = table(measured[0][2]) + ["", f"load average {_load(first)}"]
    else:
        lines = rounds_table(measured) + [""] + summary_table(measured)
    print("\n".join(lines + ["", machine_line(args, device, first)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
