"""The Models page's reads and actions: every model with its size, scores and speed; one model's
lineage and evaluations; two side by side; evaluations, benchmarks and zip downloads."""

from __future__ import annotations

import tempfile
from pathlib import Path

from redis import Redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.data import metric_history
from db.models import Evaluation, Run, Task
from worker import evaluation, models


def list_models(sessions: sessionmaker[Session]) -> list[dict]:
    """Every model the product knows, newest first (with scores, speed and intrinsic measures).
    The summaries read each evaluation's run and task: those are loaded with two queries up front
    instead of one query per evaluation (the session finds them by id while they are held here:
    its identity map keeps only weak references)."""
    with sessions.begin() as session:
        records = models.list_models(session)
        loaded = (session.scalars(select(Run).join(Evaluation, Evaluation.run_id == Run.id)).all(),
                  session.scalars(select(Task)).all())
        summaries = [models.model_summary(session, record) for record in records]
        del loaded
        return summaries


def score_on(model: dict, task_id: int | None) -> dict | None:
    """The latest finished score of a model on a task: {metric, mean, std, seeds, evaluation_run}."""
    found = [s for s in model["scores"] if s["task_id"] == task_id and s["mean"] is not None]
    return max(found, key=lambda s: s["evaluation_run"]) if found else None


def table_rows(rows: list[dict], task_id: int | None) -> list[dict]:
    """The models table: what each model is, how big, how good on the task, how fast."""
    out = []
    for m in rows:
        score = score_on(m, task_id)
        speed = m["speed"] or {}
        out.append({"id": m["model_id"], "model": m["name"], "kind": m["kind"], "parameters": m["parameters"],
                    "size": m["size_bytes"], "score": score["mean"] if score else None,
                    "± std": score["std"] if score else None, "seeds": score["seeds"] if score else None,
                    "p50 ms": speed.get("latency_ms_p50"), "seq/s": speed.get("throughput_per_s"),
                    "tokens/word": (m["intrinsic"] or {}).get("tokens_per_word"), "spec": m["spec"]})
    return out


def tradeoff_rows(rows: list[dict], task_id: int | None) -> list[dict]:
    """The chart's points: models with a score on the task and a speed measurement."""
    points = []
    for m in rows:
        score = score_on(m, task_id)
        if score and m["speed"]:
            points.append({"label": m["label"], "score": score["mean"], "score_std": score["std"],
                           "latency_ms_p50": m["speed"]["latency_ms_p50"], "parameters": m["parameters"]})
    return points


def model_detail(sessions: sessionmaker[Session], spec: str) -> dict:
    """A model's summary, lineage and every evaluation of it (finished or not)."""
    with sessions.begin() as session:
        record = models.ensure_model(session, spec)
        evaluations = [{"run_id": e.run_id, "task": e.task.name, "task_id": e.task_id, "metric": e.metric,
                        "status": e.run.status.value, "seeds": e.seeds,
                        "mean": (e.results or {}).get("test", {}).get(e.metric),
                        "std": (e.results or {}).get("test", {}).get(f"{e.metric}_std"),
                        "converged": (e.results or {}).get("converged")}
                       for e in sorted(record.evaluations, key=lambda e: e.run_id, reverse=True)]
        return {**models.model_summary(session, record), "lineage": models.lineage(session, record),
                "evaluations": evaluations}


def start_evaluation(sessions: sessionmaker[Session], connection: Redis, spec: str, task_id: int,
                     params: dict) -> int:
    """Queue an evaluation of a model on a task; its run id."""
    from worker.submit import submit_runs

    connection.ping()  # fail before a run row exists that no worker would ever see
    run = evaluation.create_evaluation(sessions, spec, task_id, params)
    submit_runs(sessions, connection, [run])
    return run.id


def start_benchmark(sessions: sessionmaker[Session], connection: Redis, specs: list[str],
                    corpus_id: int | None = None) -> int:
    """Queue a benchmark of the models side by side (the first is the reference); its run id."""
    from worker.submit import submit_runs

    connection.ping()
    run = evaluation.create_benchmark(sessions, specs, None, corpus_id)
    submit_runs(sessions, connection, [run])
    return run.id


def zip_bytes(sessions: sessionmaker[Session], spec: str) -> bytes:
    """The model folder as a zip with its model card (built when the download is clicked)."""
    with tempfile.TemporaryDirectory() as folder:
        return models.export_zip(sessions, spec, Path(folder) / "model.zip").read_bytes()


def compare(sessions: sessionmaker[Session], first: str, second: str) -> dict:
    """Two models side by side: each setting (shape, vocabulary, training) with both values and
    whether they differ, their scores, and the loss histories of the runs that made them."""
    infos, histories = {}, {}
    with sessions.begin() as session:
        for spec in (first, second):
            record = models.ensure_model(session, spec)
            info = models.card_info(session, record)
            infos[spec] = {**{f"shape.{k}": v for k, v in info.get("shape", {}).items()},
                           **{f"vocabulary.{k}": v for k, v in info.get("vocabulary", {}).items()},
                           **{f"{stage}.{k}": v for stage, values in info.get("training", {}).items()
                              for k, v in values.items()},
                           "strategy": info.get("strategy"), "base model": info.get("base_model"),
                           "corpus": (info.get("corpus") or {}).get("name")}
            histories[spec] = record.run_id
        scores = {spec: models.model_summary(session, models.ensure_model(session, spec))["scores"]
                  for spec in (first, second)}
    keys = list(dict.fromkeys([*infos[first], *infos[second]]))
    settings = [{"setting": k, first: _text(infos[first].get(k)), second: _text(infos[second].get(k)),
                 "differs": infos[first].get(k) != infos[second].get(k)} for k in keys]
    return {"settings": settings, "scores": scores,
            "histories": {spec: metric_history(sessions, run_id) if run_id else {}
                          for spec, run_id in histories.items()}}


def score_pairs(scores: dict[str, list[dict]], first: str, second: str) -> list[dict]:
    """A row per task either model was scored on: {task, metric, first: mean, second: mean}."""
    tasks = {s["task_id"]: s for spec in (first, second) for s in scores[spec]}
    rows = []
    for task_id, s in tasks.items():
        row = {"task": s["task"], "metric": s["metric"]}
        for spec in (first, second):
            found = score_on({"scores": scores[spec]}, task_id)
            row[spec] = found["mean"] if found else None
        rows.append(row)
    return rows


def _text(value) -> str:
    return "" if value is None else str(value)


def producing_run(sessions: sessionmaker[Session], spec: str) -> int | None:
    with sessions.begin() as session:
        return models.ensure_model(session, spec).run_id


def evaluation_history(sessions: sessionmaker[Session], run_id: int) -> dict:
    return metric_history(sessions, run_id)
