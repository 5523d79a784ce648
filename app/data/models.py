"""The Models page's reads and actions: every model with its size, scores and speed; one model's
lineage and evaluations; two side by side; evaluations, benchmarks and zip downloads."""

from __future__ import annotations

import tempfile
from pathlib import Path

from redis import Redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.data.common import queue_runs
from app.data.runs import metric_history
from core.folder_kinds import FINE_TUNED
from core.formatting import count, score_interval, seeds_spread, table_value
from db.models import Evaluation, Measurement, Run, Task
from worker import catalogue, evaluation


def list_models(sessions: sessionmaker[Session]) -> list[dict]:
    """Every model the product knows, newest first (with scores, speed and intrinsic measures).
    The summaries read each evaluation's run and task: those are loaded with two queries up front
    instead of one query per evaluation (the session finds them by id while they are held here:
    its identity map keeps only weak references)."""
    with sessions.begin() as session:
        records = catalogue.list_models(session)
        loaded = (session.scalars(select(Run).join(Evaluation, Evaluation.run_id == Run.id)).all(),
                  session.scalars(select(Task)).all())
        summaries = [catalogue.model_summary(session, record) for record in records]
        del loaded
        return summaries


def models_to_come(sessions: sessionmaker[Session]) -> list[dict]:
    """The models unfinished runs will make: [{run_id, kind, status}] (listed once they succeed)."""
    with sessions.begin() as session:
        return catalogue.models_to_come(session)


def score_on(model: dict, task_id: int | None) -> dict | None:
    """The latest finished score of a model on a task: {metric, mean, std, seeds, evaluation_run}."""
    found = [s for s in model["scores"] if s["task_id"] == task_id and s["mean"] is not None]
    return max(found, key=lambda s: s["evaluation_run"]) if found else None


# --- speed, compared only within one context ---------------------------------------------------------
# A context is the device, sequence length, batch and threads a benchmark ran with
# (worker.evaluation.speed_context): latencies from different contexts never share a table or an axis.

NOISY = "⚠"


def speed_measurements(sessions: sessionmaker[Session]) -> list[dict]:
    """Every speed measurement, newest first: {model_id, context, run_id, values} (one query)."""
    with sessions.begin() as session:
        found = session.execute(select(Measurement.model_id, Measurement.context, Measurement.run_id,
                                       Measurement.values).where(Measurement.kind == "speed")
                                .order_by(Measurement.created_at.desc(), Measurement.id.desc())).all()
        return [{"model_id": model_id, "context": context, "run_id": run_id, "values": dict(values or {})}
                for model_id, context, run_id, values in found]


def speed_in(measurements: list[dict], context: str | None) -> dict[int, dict]:
    """Per model id, its latest speed measurement in the context (its values, with run_id)."""
    found: dict[int, dict] = {}
    for m in measurements:
        if m["context"] == context and m["model_id"] not in found:
            found[m["model_id"]] = {**m["values"], "run_id": m["run_id"]}
    return found


def speed_contexts(rows: list[dict], measurements: list[dict], task_id: int | None) -> list[str]:
    """The contexts speed was measured in: first the one with the most models scored on the task
    (the chart's), then by the number of models measured; the latest measured first on a tie."""
    order = list(dict.fromkeys(m["context"] for m in measurements))
    scored = {m["model_id"] for m in rows if score_on(m, task_id)}
    return sorted(order, key=lambda c: (-len(scored & set(speed_in(measurements, c))),
                                        -len(speed_in(measurements, c)), order.index(c)))


def context_label(context: str, measurements: list[dict]) -> str:
    """A context as the selector shows it, with how many models were measured in it."""
    models = len(speed_in(measurements, context))
    recorded = "" if "thread" in context else " · threads not recorded (measured before they were)"
    return f"{context}{recorded} ({count(models, 'model')})"


def noisy_note(speed: dict | None) -> str:
    """"⚠ why" for a measurement flagged noisy, "" otherwise (and for one measured before the flag)."""
    if not speed or not speed.get("noisy"):
        return ""
    return f"{NOISY} {speed.get('noisy_reason') or 'noisy'}"


def how_measured(speeds: list[dict]) -> str:
    """How the numbers of a context were taken, from what the measurements recorded."""
    recorded = [v for v in speeds if v.get("threads") is not None]
    if not recorded:
        return ("Measured before threads, repeats and the machine's load were recorded: compare these only with "
                "each other, and benchmark again for numbers taken the way the others are.")

    def values(key: str) -> str:
        found = sorted({str(v.get(key)) for v in recorded if v.get(key) not in (None, "")})
        return " or ".join(found) if found else "?"

    return (f"Each benchmark times its models side by side on the same token ids: {values('warmup')} warm-up forwards "
            f"per model, then {values('latency_repeats')} batch-1 forwards per model interleaved across the models "
            f"(latency: p50 and p95 over them; IQR, their spread, is p75 - p25) and {values('throughput_repeats')} "
            f"batch forwards (throughput: sequences per second of the median one), with torch pinned to "
            f"{values('threads')} thread(s); torch {values('torch_version')} on {values('cpu_model')}. "
            f"{NOISY} marks a noisy measurement: its p95 over 3x its p50, or, by the machine's load average, other "
            f"work started, stopped or crowded the cores while it ran. Parameters are the encoder's, what is timed; "
            f"size is the folder on disk.")


def table_rows(rows: list[dict], task_id: int | None, speed: dict[int, dict]) -> list[dict]:
    """The models table: what each model is, how big, how good on the task, how fast in the
    chosen speed context (speed: speed_in of it)."""
    out = []
    for m in rows:
        score = score_on(m, task_id)
        measured = speed.get(m["model_id"]) or {}
        out.append({"id": m["model_id"], "model": m["name"], "kind": m["kind"],
                    "parameters": table_value("parameters", m["parameters"]),
                    "size": table_value("size", m["size_bytes"]), "score": score["mean"] if score else None,
                    "95% interval": score_interval(score.get("ci95")) if score else None,
                    "seeds": seeds_spread(score["seeds"], score["std"]) if score else None,
                    "p50 ms": measured.get("latency_ms_p50"), "seq/s": measured.get("throughput_per_s"),
                    "noisy": NOISY if measured.get("noisy") else None,
                    "tokens/word": (m["intrinsic"] or {}).get("tokens_per_word"), "spec": m["spec"]})
    return out


def speed_rows(rows: list[dict], speed: dict[int, dict]) -> list[dict]:
    """The speed table of one context: each measured model with the parameters of what was timed
    (the encoder) beside its folder's size, latency p50/p95/IQR, throughput and the noisy flag.
    Measurements from before the encoder was counted show no parameters (theirs were the checkpoint's)."""
    out = []
    for m in rows:
        v = speed.get(m["model_id"])
        if v is None:
            continue
        out.append({"model": m["name"],
                    "encoder parameters": table_value("parameters", v.get("params")) if "threads" in v else None,
                    "size": table_value("size", v.get("size_bytes", m["size_bytes"])), "threads": v.get("threads"),
                    "p50 ms": v.get("latency_ms_p50"), "p95 ms": v.get("latency_ms_p95"),
                    "IQR ms": v.get("latency_ms_iqr"), "seq/s": v.get("throughput_per_s"),
                    "batch": v.get("batch_size"), "noisy": noisy_note(v) or None, "benchmark run": v.get("run_id")})
    return out


def tradeoff_rows(rows: list[dict], task_id: int | None, speed: dict[int, dict], context: str | None) -> list[dict]:
    """The chart's points: models with a score on the task and a speed measurement in the one
    context (a noisy one marked ⚠ beside its label)."""
    points = []
    for m in rows:
        score = score_on(m, task_id)
        measured = speed.get(m["model_id"])
        if score and measured and measured.get("latency_ms_p50"):
            points.append({"label": m["label"] + (f" {NOISY}" if measured.get("noisy") else ""), "name": m.get("name"),
                           "score": score["mean"], "score_ci95": score.get("ci95"),
                           "latency_ms_p50": measured["latency_ms_p50"], "parameters": m["parameters"],
                           "context": context})
    return points


def model_detail(sessions: sessionmaker[Session], spec: str) -> dict:
    """A model's summary, lineage and every evaluation of it (finished or not)."""
    with sessions.begin() as session:
        record = catalogue.ensure_model(session, spec)
        evaluations = [{"run_id": e.run_id, "task": e.task.name, "task_id": e.task_id, "metric": e.metric,
                        "status": e.run.status.value, "seeds": e.seeds,
                        "mean": (e.results or {}).get("test", {}).get(e.metric),
                        "std": (e.results or {}).get("test", {}).get(f"{e.metric}_std"),
                        "ci95": ((e.results or {}).get("test", {}).get("ci95") or {}).get(e.metric),
                        "converged": (e.results or {}).get("converged")}
                       for e in sorted(record.evaluations, key=lambda e: e.run_id, reverse=True)]
        summary = catalogue.model_summary(session, record)
        return {**summary, "lineage": catalogue.lineage(session, record), "evaluations": evaluations,
                "fine_tuned": kept_scores(summary)}


def kept_scores(summary: dict) -> dict | None:
    """What a fine-tuned model's folder says of the seed it was kept from (its adapt_distill.json):
    {seed, seeds, metric, dev, test}; None for another kind of model."""
    import json

    if summary["kind"] != FINE_TUNED or not summary["path"]:
        return None
    try:
        return json.loads((Path(summary["path"]) / "adapt_distill.json").read_text())
    except (OSError, ValueError):
        return None


def start_evaluation(sessions: sessionmaker[Session], connection: Redis, spec: str, task_id: int,
                     params: dict) -> int:
    """Queue an evaluation of a model on a task; its run id."""
    runs = queue_runs(sessions, connection, lambda: [evaluation.create_evaluation(sessions, spec, task_id, params)])
    return runs[0].id


def start_benchmark(sessions: sessionmaker[Session], connection: Redis, specs: list[str],
                    corpus_id: int | None = None, threads: int | None = None) -> int:
    """Queue a benchmark of the models side by side (the first is the reference), with torch pinned
    to `threads` (None: the default, one); its run id."""
    runs = queue_runs(sessions, connection,
                      lambda: [evaluation.create_benchmark(sessions, specs, {"threads": threads}, corpus_id)])
    return runs[0].id


def zip_bytes(sessions: sessionmaker[Session], spec: str) -> bytes:
    """The model folder as a zip with its model card (built when the download is clicked)."""
    with tempfile.TemporaryDirectory() as folder:
        return catalogue.export_zip(sessions, spec, Path(folder) / "model.zip").read_bytes()


def onnx_export(sessions: sessionmaker[Session], spec: str, precision: str) -> dict:
    """The model's ONNX export in the data folder's exports/ (made now, or the one made before):
    what its export.json says, with its folder ("path")."""
    from worker.exports import export_onnx_model

    return export_onnx_model(sessions, spec, None, precision, reuse=True)


def folder_zip(folder: str) -> bytes:
    """A folder's files as a zip, built when the download is clicked."""
    import io
    import zipfile

    root, data = Path(folder), io.BytesIO()
    with zipfile.ZipFile(data, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for file in sorted(p for p in root.iterdir() if p.is_file() and not p.is_symlink()):
            archive.write(file, f"{root.name}/{file.name}")
    return data.getvalue()


def compare(sessions: sessionmaker[Session], first: str, second: str) -> dict:
    """Two models side by side: each setting (shape, vocabulary, training) with both values and
    whether they differ, their scores, and the loss histories of the runs that made them."""
    infos, histories = {}, {}
    with sessions.begin() as session:
        for spec in (first, second):
            record = catalogue.ensure_model(session, spec)
            info = catalogue.card_info(session, record)
            vocabulary = info.get("vocabulary") or catalogue.vocabulary_of(session, record)  # a student's too
            infos[spec] = {**{f"shape.{k}": v for k, v in info.get("shape", {}).items()},
                           **{f"vocabulary.{k}": v for k, v in vocabulary.items()},
                           **{f"{stage}.{k}": v for stage, values in info.get("training", {}).items()
                              for k, v in values.items()},
                           "strategy": info.get("strategy"), "base model": info.get("base_model"),
                           "corpus": (info.get("corpus") or {}).get("name")}
            histories[spec] = record.run_id
        scores = {spec: catalogue.model_summary(session, catalogue.ensure_model(session, spec))["scores"]
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


def evaluation_history(sessions: sessionmaker[Session], run_id: int) -> dict:
    return metric_history(sessions, run_id)
