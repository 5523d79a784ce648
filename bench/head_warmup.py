"""Benchmark the MLM head's warm-up: adapting a model that has no trained MLM head (the bundled
all-MiniLM-L6-v2) with and without first training the new head alone.

    python bench/head_warmup.py --model bundled --steps 100 --head-warmup 0.1

On the same model, corpus, seed, batch size, sequence length and learning rate it runs:

  (a) cold:        everything (encoder and the random head) trains from step 0 for --steps;
  (b) warm:        the head alone (encoder frozen) for --head-warmup, then everything for --steps;
  (c) warm, equal: the same warm-up, then everything for --steps minus the warm-up steps, so that
                   (c) and (a) make the same number of optimizer steps.

For each it prints the held-out MLM loss the run measured before its main phase (for (b) and (c)
with the warmed-up head), the held-out loss at the end on the same blocks and masks, how far the
encoder's weights moved from the source (relative L2 norm), and the wall time. Without --corpus
the demo corpus (docstrings of the installed Python packages, `adapt-distill demo`) is written
under bench/data/."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.configs import AdaptConfig, TrainConfig  # noqa: E402
from core.model_io import load_mlm  # noqa: E402
from worker.specs import ModelSpec  # noqa: E402
from core.train.adapt import adapt  # noqa: E402


def demo_corpus(mb: float) -> Path:
    from worker.demo_data import build_demo

    folder = Path(__file__).parent / "data" / f"demo-{mb:g}mb"
    if not (folder / "corpus.txt").is_file():
        build_demo(folder, max_corpus_mb=mb)
    return folder / "corpus.txt"


def encoder_shift(source: dict, folder: Path) -> float:
    """‖W - W0‖ / ‖W0‖ over the encoder layers' weights."""
    adapted = load_mlm(folder)[0].state_dict()
    keys = [k for k in source if k.startswith("bert.encoder.")]
    moved = sum(float((adapted[k] - source[k]).pow(2).sum()) for k in keys)
    total = sum(float(source[k].pow(2).sum()) for k in keys)
    return (moved / total) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--corpus", type=Path, help="one document per line (default: the demo corpus)")
    parser.add_argument("--corpus-mb", type=float, default=2.0, help="size of the demo corpus")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--head-warmup", type=float, default=0.1, help="fraction of --steps (< 1) or steps")
    parser.add_argument("--head-lr", type=float, default=AdaptConfig().head_lr)
    parser.add_argument("--lr", type=float, default=AdaptConfig().train.lr)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    corpus = args.corpus or demo_corpus(args.corpus_mb)
    lines = [line for line in corpus.read_text(encoding="utf-8").splitlines() if len(line) >= 5]
    model = ModelSpec.parse(args.model).path()
    source = {k: v.clone() for k, v in load_mlm(model)[0].state_dict().items()}
    warm = AdaptConfig(head_warmup=args.head_warmup).head_warmup_steps(args.steps)
    runs = [("(a) cold", 0, args.steps), ("(b) warm", args.head_warmup, args.steps),
            ("(c) warm, equal steps", args.head_warmup, args.steps - warm)]
    print(f"model {args.model}, corpus {corpus.name} ({len(lines):,} documents), batch {args.batch}, "
          f"seq {args.seq_len}, lr {args.lr:g}, head lr {args.head_lr:g}, seed {args.seed}, "
          f"torch threads {torch.get_num_threads()}\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, head_warmup, steps in runs:
            config = AdaptConfig(seq_len=args.seq_len, head_warmup=head_warmup, head_lr=args.head_lr,
                                 train=TrainConfig(steps=steps, batch_size=args.batch, lr=args.lr, seed=args.seed,
                                                   eval_every=10 ** 9, device="cpu"))
            if head_warmup and config.head_warmup_steps(steps) != warm:  # (c): the same warm-up as (b)
                config.head_warmup = warm
            began = time.perf_counter()
            out = Path(tmp) / name.split()[0].strip("()")
            result = adapt(model, lambda: iter(lines), out, config)
            minutes = (time.perf_counter() - began) / 60
            rows.append((name, result.head_warmup_steps, result.steps, result.heldout_loss_before,
                         result.heldout_loss, encoder_shift(source, out), minutes))
    print("| run | head-only steps | all-weights steps | held-out loss before | held-out loss after | "
          "encoder moved | minutes |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, head, steps, before, after, shift, minutes in rows:
        print(f"| {name} | {head} | {steps} | {before:.3f} | {after:.3f} | {shift:.2%} | {minutes:.1f} |")


if __name__ == "__main__":
    main()
