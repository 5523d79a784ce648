"""The memory estimate (core.memory) beside the measured peak: short adaptation, distillation and
fine-tuning-free inference runs of the bundled model at several batch sizes, each in a process of
its own (the CLI, inline), whose peak resident memory the kernel reports when it exits.

    python bench/memory_estimate.py [--steps 2]

It prints one row per run: the estimate, the measured peak and their ratio. The check that refuses
a run compares the estimate with a machine's memory, so an estimate at or a little above the
measurement is what we want: far below lets a run be killed out of memory, far above refuses runs
that would fit. CPU only (on a GPU the allocator, not the resident set, holds the activations)."""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import memory  # noqa: E402
from core.configs import AdaptConfig, DistillConfig, TrainConfig, default_student  # noqa: E402
from core.model_io import bundled_path  # noqa: E402
from worker.specs import folder_shape, with_parameters  # noqa: E402

WORDS = ("kinase protein enzyme binding receptor cell the of and phosphorylation inhibits pathway "
         "expression signalling membrane ligand").split()


def peak_of(command: list[str], env: dict) -> int:
    """Bytes of the peak resident memory of a command (its process; the kernel's ru_maxrss)."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    if status:
        raise SystemExit(f"{' '.join(command)} failed: {process.stderr.read().decode()[-500:]}")
    return usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batches", default="8,32,64", help="batch sizes, comma-separated")
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "app.cli"]
    teacher = folder_shape(bundled_path())
    s = default_student(teacher["layers"], teacher["hidden"], teacher["heads"], teacher["intermediate"])
    student = with_parameters({**teacher, "layers": s.layers, "hidden": s.hidden, "heads": s.heads,
                               "intermediate": s.intermediate})
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "ADAPT_DISTILL_HOME": home, "DATABASE_URL": f"sqlite:///{home}/store.db",
               "ADAPT_DISTILL_REDIS_TIMEOUT_S": "1"}
        env.pop("REDIS_URL", None)
        rng = random.Random(0)
        corpus = Path(home) / "corpus.txt"
        corpus.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(200)) for _ in range(3000)))
        subprocess.run(cli + ["corpus", "add", str(corpus), "--name", "bench"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        print(f"bundled model ({teacher['parameters'] / 1e6:.1f}M parameters), student {s.name}, seq-len "
              f"{args.seq_len}, {args.steps} steps, fp32 on the CPU\n")
        print(f"{'run':<14} {'batch':>6} {'estimate':>10} {'measured':>10} {'ratio':>6}")
        for batch in (int(b) for b in args.batches.split(",")):
            train = TrainConfig(steps=args.steps, batch_size=batch, device="cpu")
            common = ["--corpus", "1", "--steps", str(args.steps), "--batch-size", str(batch), "--seq-len",
                      str(args.seq_len), "--eval-every", "1000", "--device", "cpu"]
            runs = [("adaptation", memory.adaptation(teacher, AdaptConfig(seq_len=args.seq_len, train=train)),
                     cli + ["adapt", *common]),
                    ("distillation", memory.distillation(teacher, student, DistillConfig(seq_len=args.seq_len,
                                                                                         train=train)),
                     cli + ["distill", *common])]
            for name, estimate, command in runs:
                measured = peak_of(command, env)
                print(f"{name:<14} {batch:>6} {memory.gib(estimate.total):>10} {memory.gib(measured):>10} "
                      f"{estimate.total / measured:>6.2f}")


if __name__ == "__main__":
    main()
