"""Try it with no data of one's own: a corpus and a labelled task built on this machine from the
docstrings of the installed Python packages (core.demo), added to the store, and a tiny experiment
on them that a CPU finishes in minutes."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from core import settings
from db.models import Corpus, Run, Task

# Small on purpose: the point is to see every stage and the table, not to reach the paper's scores.
DEMO_DATA = {"labels": 4, "examples_per_label": 150, "max_corpus_mb": 4.0, "seed": 0}
DEMO_EXPERIMENT = {
    "vocab": {"step": 1000, "max_added": 3000},
    "adapt": {"steps": 40, "batch_size": 16, "seq_len": 64, "eval_every": 40, "checkpoint_every": 40},
    "distill": {"steps": 60, "batch_size": 16, "seq_len": 64, "eval_every": 60, "checkpoint_every": 60},
    "finetune": {"seeds": 1, "epochs": 5, "patience": 2, "max_length": 64, "batch_size": 16},
    "bench": {"latency_repeats": 10, "throughput_repeats": 3, "warmup": 2},
}


def prepare_demo(sessions: sessionmaker[Session]) -> tuple[Corpus, Task]:
    """Build the docstring corpus and the which-package task (once; the same content is reused)."""
    from core.demo import build_demo
    from worker.evaluation import add_task
    from worker.service import add_corpus

    folder = settings.home() / "demo"
    data = build_demo(folder, **DEMO_DATA)
    corpus, _ = add_corpus(sessions, data.corpus_path, name="demo · docstrings of installed packages")
    task, _ = add_task(sessions, data.task_path, "classification", name="demo · which package is this docstring from")
    return corpus, task


def create_demo(sessions: sessionmaker[Session]) -> list[Run]:
    """The demo's corpus and task, and a tiny experiment with all three strategies on the bundled
    model: [experiment, its runs in order]."""
    from worker.experiments import create_experiment

    corpus, task = prepare_demo(sessions)
    return create_experiment(sessions, corpus.id, task.id, "bundled", name="demo: docstrings of installed packages",
                             **DEMO_EXPERIMENT)
