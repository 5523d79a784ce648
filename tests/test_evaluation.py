"""Judging models as a user does: labelled tasks, evaluations, benchmarks, the model registry and
its zip export through the `adapt-distill` console script, and a tiny experiment through real
worker processes. Tiny BERTs built on the fly, generated data with a learnable signal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from conftest import (
    build_tiny_bert,
    labelled_examples,
    stop_process,
    tiny_experiment,
    write_conll,
    write_corpus,
    write_task_csv,
)

from db import store
from db.models import Run, RunKind, RunStatus, Task

FAST_FINETUNE = ["--epochs", "14", "--lr", "1e-3", "--max-length", "32", "--patience", "0"]


def as_json(result) -> dict:
    return json.loads(result.stdout)


@pytest.fixture
def tiny(tmp_path):
    return build_tiny_bert(tmp_path / "tiny")


def test_tasks_are_added_split_and_counted_and_bad_files_are_refused(cli, tmp_path, home):
    added = as_json(cli("task", "add", str(write_task_csv(tmp_path / "intent.csv")), "--type", "classification",
                        "--json"))
    assert added["created"] and added["labels"] == ["alpha", "beta", "gamma"]
    assert sum(added["sizes"].values()) == 240 and added["sizes"]["test"] == 24  # a seeded, stratified 10%
    assert added["label_counts"]["train"]["alpha"] == 2 * added["label_counts"]["train"]["beta"]
    assert added["origin"]["dev"].startswith("split from train (seed 0")
    again = as_json(cli("task", "add", str(tmp_path / "intent.csv"), "--type", "classification", "--json"))
    assert again["task_id"] == added["task_id"] and not again["created"]

    ner = as_json(cli("task", "add", str(write_conll(tmp_path / "ner.conll")), "--type", "ner", "--json"))
    assert ner["labels"][0] == "O" and set(ner["label_counts"]["train"]) == {"LOC", "PER"}

    (tmp_path / "test.csv").write_text("text,label\nthe the xx,delta\n")
    bad = cli("task", "add", str(tmp_path / "intent.csv"), "--test", str(tmp_path / "test.csv"), "--type",
              "classification", ok=False)
    assert "labels that train lacks: delta" in bad.stderr
    (tmp_path / "tags.conll").write_text("word\nother O\n")
    bad = cli("task", "add", str(tmp_path / "tags.conll"), "--type", "ner", ok=False)
    assert "line 1 has no tag column" in bad.stderr
    listed = as_json(cli("task", "list", "--json"))["tasks"]
    assert len(listed) == 2
    header, *rows = cli("task", "list").stdout.splitlines()  # a table like the other lists
    assert header.split() == ["id", "type", "labels", "train", "dev", "test", "name"] and len(rows) == 2
    for task, row in zip(listed, rows):  # in the order of the JSON
        assert row.split()[:2] == [str(task["task_id"]), task["type"]] and row.split()[-1] == task["name"]
        assert [int(x.replace(",", "")) for x in row.split()[3:6]] == [task["sizes"][k] for k in ("train", "dev",
                                                                                                   "test")]
    assert sorted(p.name for p in (home / "tasks").iterdir()) == sorted(t["sha256"] for t in listed)  # no leftovers


def test_evaluate_from_files_beats_the_majority_class(cli, tiny, tmp_path, home):
    data = as_json(cli("evaluate", "--model", str(tiny), "--train", str(write_task_csv(tmp_path / "t.csv")),
                       "--task-type", "classification", "--seeds", "2", *FAST_FINETUNE, "--json"))
    metrics = data["metrics"]
    assert {"accuracy", "macro_f1", "micro_f1", "accuracy_std", "macro_f1_std", "per_seed"} <= set(metrics)
    assert len(metrics["per_seed"]) == 2 and data["metric"] == "macro_f1" and data["status"] == "succeeded"
    for name in ("accuracy", "macro_f1", "micro_f1"):  # every score with its interval over test examples
        low, high = metrics["ci95"][name]
        assert 0 <= low <= metrics[name] <= high <= 1, (name, low, high)
    assert metrics["bootstrap"] == {"resamples": 1000, "level": 0.95, "seed": 0}
    labels = [label for _, label in labelled_examples(240)]
    majority = Counter(labels).most_common(1)[0][1] / len(labels)
    assert metrics["accuracy"] > majority + 0.2
    shown = as_json(cli("models", "show", str(tiny), "--json"))
    assert shown["kind"] == "folder" and shown["scores"][0]["mean"] == pytest.approx(metrics["macro_f1"])
    run = next(r for r in as_json(cli("runs", "list", "--json"))["runs"] if r["run_id"] == data["run_id"])
    assert run["model"] == str(tiny) and run["metrics"]["test_macro_f1"] == pytest.approx(metrics["macro_f1"])
    assert run["metrics"]["test_accuracy_std"] == pytest.approx(metrics["accuracy_std"])
    line = next(x for x in cli("runs", "list").stdout.splitlines() if x.split()[0] == str(data["run_id"]))
    assert line.split()[1:4] == ["evaluation", "succeeded", "100%"] and line.endswith(f"of {tiny.name}")
    # its progress counts what its log counts: optimizer steps over all seeds, the epochs beside them
    assert run["step"] == run["total_steps"] > 0
    logged = (home / "runs" / str(data["run_id"]) / "run.log").read_text().splitlines()
    assert len(logged) == 2 * 14 and all(x.split()[1].endswith(f"/{run['total_steps']}") for x in logged)
    assert logged[-1].split()[:4] == ["step", f"{run['step']}/{run['total_steps']}", "epoch", "14"]

    excluded = as_json(cli("evaluate", "--model", str(tiny), "--task", str(data["task_id"]), "--exclude-label",
                           "alpha", "--seeds", "1", "--epochs", "1", "--json"))
    assert excluded["metric"] == "micro_f1"  # ChemProt style
    assert excluded["metrics"]["micro_f1_std"] is None  # one seed: no "± 0"
    table = cli("evaluate", "--model", str(tiny), "--task", str(data["task_id"]), "--seeds", "1", "--epochs", "1")
    assert "(1 seed," in table.stdout and "± 0" not in table.stdout and "95% interval" in table.stdout
    bad = cli("evaluate", "--model", str(tiny), "--task", str(data["task_id"]), "--exclude-label", "delta", ok=False)
    assert "excluded label(s) delta are not labels of task" in bad.stderr


def test_ner_evaluation_scores_entities(cli, tiny, tmp_path):
    task = as_json(cli("task", "add", str(write_conll(tmp_path / "n.conll")), "--type", "ner", "--json"))
    data = as_json(cli("evaluate", "--model", str(tiny), "--task", str(task["task_id"]), "--seeds", "1",
                       *FAST_FINETUNE, "--json"))
    assert data["metric"] == "entity_f1" and data["metrics"]["entity_f1"] > 0.6


def test_bench_ranks_a_smaller_model_faster_and_models_export_as_a_zip(cli, tiny, tmp_path, home):
    from transformers import AutoModel, BertConfig, BertModel

    big = tmp_path / "big"
    BertModel(BertConfig(vocab_size=94, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                         intermediate_size=1024, max_position_embeddings=128)).save_pretrained(big)
    (big / "vocab.txt").write_text((tiny / "vocab.txt").read_text())
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (big / name).write_text((tiny / name).read_text())
    result = as_json(cli("bench", "--model", str(big), "--model", str(tiny), "--seq-len", "64", "--batch-size", "8",
                         "--repeats", "30", "--json"))
    first, second = result["models"]
    assert set(first) >= {"model", "params", "size_bytes", "latency_ms_p50", "latency_ms_p95", "throughput_per_s",
                          "speedup_vs_first"}
    assert first["speedup_vs_first"] == 1.0 and second["speedup_vs_first"] > 1.5
    assert second["params"] < first["params"] and second["latency_ms_p95"] >= second["latency_ms_p50"]
    listed = next(r for r in as_json(cli("runs", "list", "--json"))["runs"] if r["kind"] == "benchmark")
    assert listed["step"] is None and listed["total_steps"] is None  # no "0 / 1,000": it counts no steps

    corpus = as_json(cli("corpus", "add", str(write_corpus(tmp_path / "c.txt")), "--json"))["corpus_id"]
    adapted = as_json(cli("adapt", "--teacher", str(tiny), "--corpus", str(corpus), "--steps", "3", "--seq-len", "32",
                          "--batch-size", "4", "--json"))["runs"][0]
    listed = as_json(cli("models", "list", "--json"))["models"]
    header, *rows = cli("models", "list").stdout.splitlines()
    assert header.split()[:4] == ["id", "model", "params", "size"] and len(rows) == len(listed)
    spec = f"run:{adapted['run_id']}"
    made = next(m for m in listed if m["spec"] == spec)
    assert made["kind"] == "adaptation" and made["parameters"] > 0 and made["intrinsic"]["perplexity"] > 1, made
    assert {m["spec"] for m in listed} >= {"bundled", spec, str(tiny)}
    card = (Path(made["path"]) / "README.md").read_text()  # every model a run writes carries its card
    assert "## Intrinsic measures" in card and "## Training procedure" in card
    assert not (tiny / "README.md").exists(), "a user's own folder is never written to"
    exported = as_json(cli("models", "export", spec, "--out", f"{tmp_path / 'exports'}/", "--json"))
    assert exported["zip"] == str(tmp_path / "exports" / f"run-{adapted['run_id']}.zip")  # a folder: <model>.zip in it
    again = as_json(cli("models", "export", spec, "--out", str(tmp_path / "exports"), "--json"))
    assert again["zip"] == exported["zip"]  # an existing folder, without the slash
    named = as_json(cli("models", "export", spec, "--out", str(tmp_path / "mine.zip"), "--json"))
    assert named["zip"] == str(tmp_path / "mine.zip")
    neither = cli("models", "export", spec, "--out", str(tmp_path / "model.bin"), ok=False)
    assert "neither a folder nor a .zip file" in neither.stderr and len(neither.stderr.splitlines()) == 1
    assert not (tmp_path / "model.bin").exists()
    with zipfile.ZipFile(exported["zip"]) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "unzipped")
    folder = tmp_path / "unzipped" / names[0].split("/")[0]
    assert not any("/checkpoints/" in n for n in names)
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers") and "## Intrinsic measures" in card
    assert AutoModel.from_pretrained(folder).config.hidden_size == 32
    bad = cli("models", "export", "run:999", ok=False)
    assert "no run with id 999" in bad.stderr


def test_a_cancelled_evaluation_resumes_and_scores(sessions, tiny, tmp_path):
    import threading
    import time

    from worker import evaluation
    from worker.lifecycle import execute_run
    from worker.run_state import prepare_resume, request_cancel

    task, _ = evaluation.add_task(sessions, write_task_csv(tmp_path / "t.csv"), "classification")
    run = evaluation.create_evaluation(sessions, str(tiny), task.id, {"seeds": 2, "epochs": 12, "patience": 0,
                                                                      "lr": 1e-3, "max_length": 32})
    worker = threading.Thread(target=execute_run, args=(sessions, run.id))
    worker.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with sessions.begin() as session:
            current = store.get(session, Run, run.id)
            if current.stage == "training" and (current.step or 0) > 0:
                break
        time.sleep(0.05)
    request_cancel(sessions, run.id)  # the job sees it at its next progress report and saves a checkpoint
    worker.join(120)
    with sessions.begin() as session:
        stopped = store.get(session, Run, run.id)
        assert stopped.status == RunStatus.cancelled and stopped.step < stopped.total_steps
    (queued,) = prepare_resume(sessions, run.id)
    execute_run(sessions, queued.id)
    with sessions.begin() as session:
        done = evaluation.evaluation_dict(session, run.id)
    assert done["status"] == "succeeded" and done["metrics"]["seeds"] == 2
    assert [e["epochs_run"] for e in done["epochs"]] == [12, 12]


def start_worker(home, redis_url):
    env = {**os.environ, "ADAPT_DISTILL_HOME": str(home), "REDIS_URL": redis_url, "HF_HUB_OFFLINE": "1"}
    env.pop("DATABASE_URL", None)
    return subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--queues", "cpu,gpu"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.integration
def test_a_tiny_experiment_runs_end_to_end_through_a_real_worker(sessions, redis, redis_url, home, tmp_path):
    import time

    from worker.experiments import experiment_view
    from worker.queueing.submit import submit_runs

    runs = tiny_experiment(sessions, tmp_path)
    kinds = Counter(r.kind for r in runs[1:])
    assert kinds == {RunKind.analysis: 1, RunKind.expansion: 1, RunKind.adaptation: 2, RunKind.distillation: 3,
                     RunKind.evaluation: 6, RunKind.benchmark: 1}
    submit_runs(sessions, redis, runs)
    worker = start_worker(home, redis_url)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            with sessions.begin() as session:
                status = store.get(session, Run, runs[0].id).status
            if status.finished:
                break
            time.sleep(0.5)
        with sessions.begin() as session:
            view = experiment_view(session, runs[0].id)
        assert view["status"] == "succeeded", [(r["run_id"], r["kind"], r["status"]) for r in view["runs"]]
    finally:
        log = stop_process(worker)
    assert [r["role"] for r in view["rows"]] == ["adapted teacher", "base teacher", "general student",
                                                  "adapt-then-distill", "distill-then-adapt", "adapt-and-distill"]
    for row in view["rows"]:
        assert row["score"] is not None and 0 <= row["score"] <= 1, row
        assert row["latency_ms_p50"] > 0 and row["parameters"] > 0, row
    for row in view["rows"]:  # each score with its interval; each model against the base teacher, paired
        low, high = row["score_ci95"]
        assert low <= row["score"] <= high, row
        if row["role"] == "base teacher":
            assert row["difference"] is None and row["verdict"] is None
        else:
            base = next(r for r in view["rows"] if r["role"] == "base teacher")
            assert row["difference"] == pytest.approx(row["score"] - base["score"], abs=1e-9), row
            assert row["difference_ci95"][0] <= row["difference"] <= row["difference_ci95"][1], row
            assert row["verdict"].startswith(f"the {row['role']} ")
    assert view["seed_note"].startswith("1 seed")
    with sessions.begin() as session:
        task = store.get(session, Task, view["settings"]["task_id"])
        majority = max(task.label_counts["train"].items(), key=lambda kv: (kv[1], kv[0]))[0]
        assert view["baseline"]["label"] == majority and view["baseline"]["test_examples"] == task.sizes["test"]
    students = [r for r in view["rows"] if r["role"] not in ("adapted teacher", "base teacher")]
    teacher_row = view["rows"][0]
    assert teacher_row["speedup"] == 1.0
    assert all(r["parameters"] < teacher_row["parameters"] for r in students)  # the default shape compresses
    with sessions.begin() as session:
        expansion = next(store.get(session, Run, r["run_id"]) for r in view["runs"] if r["kind"] == "expansion")
        assert isinstance(expansion.params["vocab_size"], int)  # the pick, resolved when it ran
        assert expansion.status == RunStatus.succeeded
    assert "Traceback" not in log, log[-3000:]


def test_an_experiment_is_never_taken_for_a_dead_worker(sessions):
    """Parents have no worker and no heartbeat of their own: only their steps can be abandoned."""
    from datetime import timedelta

    from db.models import utcnow
    from worker.run_state import find_dead_runs

    with sessions.begin() as session:
        parent = store.create_run(session, RunKind.experiment, {})
        step = store.create_run(session, RunKind.evaluation, {}, parent_id=parent.id)
        for run in (parent, step):
            store.start_run(session, run)
            run.heartbeat_at = utcnow() - timedelta(minutes=10)
        step_id = step.id
    assert find_dead_runs(sessions) == [step_id]


@pytest.mark.parametrize("change, message", [
    ({"finetune": {"exclude_labels": ["delta"]}}, "excluded label\\(s\\) delta are not labels of task"),
    ({"finetune": {"metric": "entity_f1"}}, "metric 'entity_f1' is not one of a classification task's"),
    ({"bench": {"seq_len": 0}}, "seq-len must be between 8 and"),
    ({"strategies": ["distil-and-adapt"]}, "strategies must be some of"),
    ({"student": {"student": "L2-H128"}}, "not fewer than the teacher's"),
])
def test_an_experiment_that_cannot_work_is_refused_before_anything_is_recorded(sessions, tiny, tmp_path, change,
                                                                              message):
    from core.errors import ConfigError
    from worker import corpora, evaluation
    from worker.experiments import create_experiment

    corpus, _ = corpora.add_corpus(sessions, write_corpus(tmp_path / "c.txt"))
    task, _ = evaluation.add_task(sessions, write_task_csv(tmp_path / "t.csv"), "classification")
    with pytest.raises(ConfigError, match=message):
        create_experiment(sessions, corpus.id, task.id, str(tiny), **change)
    with sessions.begin() as session:
        assert store.rows(session, Run, limit=100) == []


def _row(role, score, ci, difference=None, difference_ci=None, converged=True, seeds=3):
    return {"role": role, "score": score, "score_ci95": ci, "difference": difference,
            "difference_ci95": difference_ci, "converged": converged, "seeds": seeds}


def test_the_verdict_says_better_only_when_the_paired_interval_excludes_zero():
    from worker.experiments import judgement

    rows = [_row("base teacher", 0.70, [0.66, 0.74]),
            _row("adapted teacher", 0.731, [0.69, 0.77], 0.031, [0.012, 0.050]),
            _row("adapt-then-distill", 0.69, [0.65, 0.73], -0.01, [-0.03, 0.01]),
            _row("general student", 0.60, [0.56, 0.64], -0.10, [-0.14, -0.06], converged=False)]
    found = judgement(rows)
    assert rows[1]["verdict"] == "the adapted teacher is better than the base teacher by 3.1 points (+1.2 to +5.0)"
    assert "not distinguishable with this budget" in rows[2]["verdict"]
    assert rows[3]["verdict"].startswith("the general student is worse than the base teacher by 10.0 points")
    assert found["budget_too_small"]
    assert "general student still improved at the last fine-tuning epoch" in found["summary"]
    # the adapted teacher's own interval overlaps the base's, but its paired difference is clear of zero
    assert "; adapt-then-distill cannot be told apart from the base teacher (the 95% interval of the difference " \
           "holds zero)" in found["summary"]
    assert found["seed_note"] is None
    apart = [_row("base teacher", 0.5, [0.45, 0.55]), _row("adapted teacher", 0.8, [0.75, 0.85], 0.3, [0.25, 0.35])]
    assert judgement(apart) == {"summary": None, "budget_too_small": False, "seed_note": None}
    floor = {"label": "alpha", "score": 0.46}
    found = judgement(apart + [_row("general student", 0.49, [0.44, 0.54], -0.01, [-0.05, 0.03])], floor)
    assert "; base teacher, general student cannot be told apart from always answering 'alpha' (0.4600)." \
        in found["summary"]  # the adapted teacher's interval (0.75 to 0.85) is clear of the floor
    one = [_row("base teacher", 0.5, [0.45, 0.55], seeds=1)]
    assert judgement(one)["seed_note"].startswith("1 seed: the intervals cover the choice of test examples")


def test_an_experiment_progresses_by_the_time_its_runs_take_and_says_how_long_is_left(sessions):
    from datetime import timedelta

    from db.models import RunStatus, utcnow
    from worker.progress import experiment_progress

    with sessions.begin() as session:
        parent = store.create_run(session, RunKind.experiment, {})
        kinds = [RunKind.adaptation, RunKind.evaluation, RunKind.evaluation, RunKind.evaluation, RunKind.benchmark]
        steps = [store.create_run(session, kind, {}, parent_id=parent.id) for kind in kinds]
        assert experiment_progress(parent, steps) == (0.0, None, True)  # nothing measured: no invented ETA
        now = utcnow()
        for step, seconds in ((steps[0], 300), (steps[1], 60)):
            store.start_run(session, step)
            step.started_at, step.finished_at = now - timedelta(seconds=seconds), now
            store.finish_run(session, step, RunStatus.succeeded)
        running = steps[2]
        store.start_run(session, running)
        running.started_at, running.eta_seconds, running.eta_guess = now - timedelta(seconds=20), 40.0, False
        progress, eta, guess = experiment_progress(parent, steps)
        # finished 300 + 60 s; running 20 s spent, 40 s left; queued: an evaluation as the measured one (60 s)
        # and a benchmark, of a kind never finished here, at the mean of the finished runs (180 s): a first guess
        assert eta == pytest.approx(40 + 60 + 180, abs=1)
        assert progress == pytest.approx((300 + 60 + 20) / (300 + 60 + 60 + 60 + 180), abs=1e-3)
        assert guess
        store.finish_run(session, steps[4], RunStatus.cancelled)  # a run that will not run counts for nothing
        progress, eta, guess = experiment_progress(parent, steps)
        assert eta == pytest.approx(40 + 60, abs=1) and not guess


def test_an_experiment_weighs_its_queued_runs_by_their_cost_at_the_rate_measured(sessions):
    from datetime import timedelta

    from db.models import RunStatus, utcnow
    from worker.progress import experiment_progress

    with sessions.begin() as session:
        parent = store.create_run(session, RunKind.experiment, {})
        done, small, large = [store.create_run(session, RunKind.evaluation, {}, parent_id=parent.id) for _ in range(3)]
        parent.params = {"step_costs": {str(done.id): 1e12, str(small.id): 5e11, str(large.id): 4e12}}
        store.start_run(session, done)
        done.started_at, done.finished_at = utcnow() - timedelta(seconds=100), utcnow()
        store.finish_run(session, done, RunStatus.succeeded)
        progress, eta, guess = experiment_progress(parent, [done, small, large])
    # 100 s per 1e12 FLOPs: the small one 50 s, the large one 400 s, not the 100 s each of a plain mean
    assert eta == pytest.approx(450, abs=1) and not guess
    assert progress == pytest.approx(100 / 550, abs=1e-3)


def test_an_experiment_recorded_with_fewer_latency_repeats_reruns_with_thirty(sessions, tmp_path):
    from worker.experiments import rerun

    parent = tiny_experiment(sessions, tmp_path)[0]
    with sessions.begin() as session:  # as the demo recorded it before 30 batch-1 forwards were the least
        run = store.get(session, Run, parent.id)
        run.params = {**run.params, "bench": {"latency_repeats": 10, "throughput_repeats": 3, "warmup": 2}}
    again = rerun(sessions, parent.id)
    benchmark = next(r for r in again if r.kind == RunKind.benchmark)
    assert benchmark.params["latency_repeats"] == 30 and benchmark.params["throughput_repeats"] == 3


@pytest.mark.tried("a model folder holds links to files and folders outside it; the model is exported as a zip")
def test_an_export_holds_the_model_folders_own_files_never_what_its_links_point_at(sessions, tmp_path, home):
    from conftest import build_tiny_bert

    from worker.catalogue import export_zip

    model = build_tiny_bert(tmp_path / "model")
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "passwd").write_text("root:x:0:0\n")
    (model / "notes.txt").symlink_to(secret / "passwd")
    (model / "elsewhere").symlink_to(secret, target_is_directory=True)
    (model / "extra").mkdir()
    (model / "extra" / "kept.txt").write_text("a regular file of the folder\n")
    out = export_zip(sessions, str(model), tmp_path / "m.zip")
    with zipfile.ZipFile(out) as archive:
        names = [n.split("/", 1)[1] for n in archive.namelist()]
        assert not any("root:x" in archive.read(n).decode("utf-8", "replace") for n in archive.namelist())
    assert "extra/kept.txt" in names and "config.json" in names
    assert not any(n.startswith(("notes.txt", "elsewhere")) for n in names), names
