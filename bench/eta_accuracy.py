"""How right is the Runs page's ETA? One real adaptation of the bundled model on the CPU, with
held-out evaluations and checkpoints on the way, watched at every report:

    python bench/eta_accuracy.py                      # 120 steps, evaluation every 20, checkpoint every 30
    python bench/eta_accuracy.py --steps 300 --eval-every 50 --checkpoint-every 100

At 10%, 25%, 50% and 75% of the steps it prints the time the run then really had left (to the last
step's report) beside two estimates made at that moment from the same run:
- counted (core.train.eta, what the dashboard shows): steps left at the measured seconds per step, plus
  the evaluations and checkpoints still due at their measured cost, and whether it was a first guess;
- steps only (the estimate before core.train.eta): seconds since the first step / steps done x steps left,
  which spreads the evaluations and checkpoints done so far over the steps and knows nothing of
  the ones to come.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MARKS = (0.10, 0.25, 0.50, 0.75)


def corpus(path: Path, documents: int = 3000) -> Path:
    import random

    rng = random.Random(0)
    words = ["patient", "dose", "renal", "mg", "tumour", "biopsy", "clinical", "cardiac", "therapy", "acute",
             "chronic", "lesion", "the", "of", "and", "with", "was", "in", "a", "after"]
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(40, 120)))
                              for _ in range(documents)), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=120, help="optimizer steps (default: %(default)s)")
    parser.add_argument("--eval-every", type=int, default=20, help="held-out evaluation interval (default: %(default)s)")
    parser.add_argument("--checkpoint-every", type=int, default=30, help="checkpoint interval (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="blocks per step (default: %(default)s)")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per block (default: %(default)s)")
    args = parser.parse_args()

    import os

    home = Path(tempfile.mkdtemp(prefix="eta-bench-"))
    os.environ["ADAPT_DISTILL_HOME"] = str(home)
    os.environ.pop("DATABASE_URL", None)
    from db.migrate import upgrade
    from db.session import get_sessionmaker
    from worker import corpora, lifecycle, training

    upgrade()
    sessions = get_sessionmaker()
    added, _ = corpora.add_corpus(sessions, corpus(home / "notes.txt"))
    run = training.create_adaptation(sessions, added.id, "bundled", {
        "steps": args.steps, "eval_every": args.eval_every, "checkpoint_every": args.checkpoint_every,
        "batch_size": args.batch_size, "seq_len": args.seq_len, "device": "cpu", "heldout_fraction": 0.2})
    report = lifecycle.reporter_for(sessions, run.id)
    seen: list[tuple[float, int, float | None, bool]] = []  # (time, step, counted ETA, first guess)

    class Watched:
        def __call__(self, stage, fraction):
            report(stage, fraction)
            if stage == "training":
                step = report.reached
                seen.append((time.monotonic(), step, *report.clock.remaining(step)))

        def __getattr__(self, name):
            return getattr(report, name)

    training.EXECUTORS[run.kind](sessions, run.id, Watched())
    end = max(t for t, s, *_ in seen if s == args.steps)
    start_step = next(s for _, s, *_ in seen if s > 0)
    began = next(t for t, s, *_ in seen if s == start_step)
    timing = report.clock.timing()
    print(f"adaptation of the bundled model, {args.steps} steps of {args.batch_size} x {args.seq_len} tokens on the "
          f"CPU; an evaluation every {args.eval_every} steps and at the last, a checkpoint every "
          f"{args.checkpoint_every}")
    print(f"measured: {timing['step_s']:.3f} s per step, {timing['evaluation_s']:.3f} s per evaluation "
          f"({timing['evaluations']}), {timing['checkpoint_s'] or 0:.3f} s per checkpoint ({timing['checkpoints']})\n")
    print(f"{'at step':>8} {'really left':>12} {'counted':>9} {'error':>7} {'guess':>6} {'steps only':>11} {'error':>7}")
    for mark in MARKS:
        at = max(start_step + 1, round(mark * args.steps))
        now, step, counted, guess = next(x for x in seen if x[1] >= at)
        left = end - now
        done = step - start_step
        steps_only = (now - began) / done * (args.steps - step) if done > 0 else float("nan")
        print(f"{step:>8} {left:>11.1f}s {counted:>8.1f}s {100 * (counted - left) / left:>+6.0f}% "
              f"{'yes' if guess else 'no':>6} {steps_only:>10.1f}s {100 * (steps_only - left) / left:>+6.0f}%")


if __name__ == "__main__":
    main()
