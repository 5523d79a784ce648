"""Try it with no data of one's own: a corpus and a labelled task built on this machine from the
docstrings of the installed Python packages (worker.demo_data), added to the store, and a tiny experiment
on them that a CPU finishes in minutes."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from db import settings
from db.models import Corpus, Run, Task

# Sized for a quiet 2-core CPU in about 20 minutes (README: "The demo's budget") while the teacher
# comparison means something: 2 seeds each, and a test split of 360 examples (30%) so that the
# intervals over test examples are a few points wide. Fine-tuning the two teachers is most of the time.
DEMO_MINUTES = 16  # measured end to end (README: "The demo"), said on the Overview before the click
DEMO_DATA = {"labels": 4, "examples_per_label": 300, "max_corpus_mb": 4.0, "seed": 0}
DEMO_SPLITS = {"dev_fraction": 0.1, "test_fraction": 0.3}
DEMO_EXPERIMENT = {
    "vocab": {"step": 1000, "max_added": 3000},
    "adapt": {"steps": 120, "batch_size": 16, "seq_len": 64, "eval_every": 120, "checkpoint_every": 120},
    "distill": {"steps": 150, "batch_size": 16, "seq_len": 64, "eval_every": 150, "checkpoint_every": 150},
    "finetune": {"seeds": 2, "epochs": 5, "patience": 2, "max_length": 64, "batch_size": 16},
    "bench": {"latency_repeats": 30, "throughput_repeats": 3, "warmup": 2},  # 30: the fewest for a p95
}


def prepare_demo(sessions: sessionmaker[Session], progress=None) -> tuple[Corpus, Task]:
    """Build the docstring corpus and the which-package task (once; the same content is reused);
    `progress(stage, fraction)` hears how far it got."""
    from worker.corpora import add_corpus
    from worker.demo_data import build_demo
    from worker.evaluation import add_task

    folder = settings.home() / "demo"
    data = build_demo(folder, **DEMO_DATA, progress=progress)
    if progress:
        progress("adding the corpus and the task", 0.95)
    corpus, _ = add_corpus(sessions, data.corpus_path, name="demo · docstrings of installed packages")
    task, _ = add_task(sessions, data.task_path, "classification", name="demo · which package is this docstring from",
                       **DEMO_SPLITS)
    return corpus, task


def create_demo(sessions: sessionmaker[Session], progress=None) -> list[Run]:
    """The demo's corpus and task, and a tiny experiment with all three strategies on the bundled
    model: [experiment, its runs in order]."""
    from worker.experiments import create_experiment

    corpus, task = prepare_demo(sessions, progress)
    if progress:
        progress("recording the experiment", 0.99)
    return create_experiment(sessions, corpus.id, task.id, "bundled", name="demo: docstrings of installed packages",
                             **DEMO_EXPERIMENT)
