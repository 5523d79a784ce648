"""The Experiment page's reads and actions: launch the paper's comparison, follow it, re-run it,
and put several experiments side by side."""

from __future__ import annotations

from collections import Counter

from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from app.data.common import check_readable, queue_runs
from core.configs import STRATEGIES
from worker import experiments

# What the page starts with: enough to see the comparison on a CPU within the hour; raise the
# budget and seeds for numbers worth reporting.
EXPERIMENT_DEFAULTS = {"strategies": list(STRATEGIES), "adapt_steps": 300, "distill_steps": 600, "batch_size": 16,
                       "seq_len": 128, "seeds": 3, "epochs": 10, "student": "auto", "expand": "pick"}


def start_experiment(sessions: sessionmaker[Session], connection: Redis, choices: dict) -> int:
    """Record and queue an experiment from the page's choices; its run id. Nothing is recorded
    when a setting cannot work."""
    c = {**EXPERIMENT_DEFAULTS, **choices}
    check_readable(c["teacher"], c.get("student_init"))
    training = {"batch_size": int(c["batch_size"]), "seq_len": int(c["seq_len"])}
    student = {} if c["student"] == "auto" else {"student": c["student"]}
    runs = queue_runs(sessions, connection, lambda: experiments.create_experiment(
        sessions, int(c["corpus_id"]), int(c["task_id"]), c["teacher"], c["strategies"], student,
        c.get("student_init") or None, {**training, "steps": int(c["adapt_steps"])},
        {**training, "steps": int(c["distill_steps"])}, {"seeds": int(c["seeds"]), "epochs": int(c["epochs"])},
        {}, c["expand"], {}, (c.get("name") or "").strip() or None))
    return runs[0].id


def start_demo(sessions: sessionmaker[Session], connection: Redis, progress=None) -> int:
    """Build the sample corpus and task from the installed packages and queue the tiny experiment;
    `progress(stage, fraction)` hears how far the building got."""
    from worker.demo import create_demo

    return queue_runs(sessions, connection, lambda: create_demo(sessions, progress))[0].id


def rerun(sessions: sessionmaker[Session], connection: Redis, experiment_id: int) -> int:
    """Queue the experiment again with its settings; the new experiment's run id."""
    return queue_runs(sessions, connection, lambda: experiments.rerun(sessions, experiment_id))[0].id


def list_experiments(sessions: sessionmaker[Session]) -> list[dict]:
    with sessions.begin() as session:
        return experiments.list_experiments(session)


def experiment_view(sessions: sessionmaker[Session], experiment_id: int) -> dict:
    with sessions.begin() as session:
        return experiments.experiment_view(session, experiment_id)


def chart_rows(views: list[dict]) -> list[dict]:
    """The trade-off chart's points of one or several experiments, each with the context its speed
    was measured in (the chart puts only one context on its axis)."""
    return [{"label": r["role"] + (" ⚠" if r.get("noisy") else ""), "score": r["score"],
             "score_ci95": r.get("score_ci95"), "latency_ms_p50": r["latency_ms_p50"], "parameters": r["parameters"],
             "context": r.get("speed_context"), "experiment": f"{v['experiment_id']} · {v['name']}"}
            for v in views for r in v["rows"]]


def one_context(points: list[dict]) -> tuple[list[dict], list[str]]:
    """(the points measured in the context most of them share, the other contexts): latencies from
    different devices, shapes or threads never share an axis."""
    timed = [p for p in points if p.get("latency_ms_p50")]
    contexts = Counter(p.get("context") for p in timed)
    if not contexts:
        return points, []
    main = contexts.most_common(1)[0][0]
    return [p for p in points if p.get("context") == main], [str(c) for c in contexts if c != main]
