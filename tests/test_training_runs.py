"""Adaptation, distillation and pipelines as runs: inline through the CLI, and through real
worker processes (cancel, a worker killed with SIGKILL, resume)."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from conftest import build_tiny_bert, stop_process, wait_for_run

from core.errors import ConfigError
from db import store
from db.models import Run, RunKind, RunStatus, VocabAnalysis
from worker import corpora, kinds, lifecycle, run_state, training, vocabulary
from worker.queueing.submit import cancel, resume, submit_runs

pytestmark = pytest.mark.integration
TINY_STUDENT = {"layers": 1, "hidden": 16, "heads": 2, "intermediate": 32}


@pytest.fixture
def tiny(tmp_path):
    return build_tiny_bert(tmp_path / "teacher")


def start_worker(home, redis_url, queues="gpu,cpu"):
    env = {**os.environ, "ADAPT_DISTILL_HOME": str(home), "REDIS_URL": redis_url, "ADAPT_DISTILL_HEARTBEAT_S": "0.5"}
    env.pop("DATABASE_URL", None)
    return subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--queues", queues], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_until(sessions, run_id, condition, timeout=120):
    return wait_for_run(sessions, run_id, timeout, until=condition)


def test_worker_parent_never_imports_torch():
    code = "import sys, app.cli.parser, worker.queueing.queues, worker.queueing.submit; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_pipeline_inline_from_the_cli(home, tiny, corpus_file):
    env = {**os.environ, "ADAPT_DISTILL_HOME": str(home)}
    env.pop("DATABASE_URL", None)

    def cli(*args):
        result = subprocess.run([sys.executable, "-m", "app.cli", *args, "--json"], env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    corpus = cli("corpus", "add", str(corpus_file))["corpus_id"]
    out = cli("pipeline", "--strategy", "distill-then-adapt", "--corpus", str(corpus), "--teacher", str(tiny),
              "--layers", "1", "--hidden", "16", "--heads", "2", "--intermediate", "32", "--adapt-steps", "4",
              "--distill-steps", "4", "--seq-len", "32", "--batch-size", "8")
    kinds = [(r["kind"], r["status"]) for r in out["runs"]]
    assert kinds == [("pipeline", "succeeded"), ("distillation", "succeeded"), ("adaptation", "succeeded")]
    adapted = out["runs"][2]
    assert {"first_loss", "last_loss", "heldout_loss"} <= set(adapted["metrics"])
    from transformers import AutoModelForMaskedLM

    assert AutoModelForMaskedLM.from_pretrained(adapted["output_dir"]).config.hidden_size == 16
    bad = subprocess.run([sys.executable, "-m", "app.cli", "pipeline", "--strategy", "adapt-and-distill",
                          "--corpus", str(corpus), "--teacher", str(tiny)], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "pass --student-init" in bad.stderr and "Traceback" not in bad.stderr


def test_a_pipeline_through_a_real_worker_produces_a_student(sessions, redis, redis_url, home, tiny, corpus_file):
    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    runs = training.create_pipeline(sessions, "adapt-then-distill", corpus.id, str(tiny),
                                    {"steps": 6, "seq_len": 32, "batch_size": 8},
                                    {"steps": 6, "seq_len": 32, "batch_size": 8, **TINY_STUDENT})
    worker = start_worker(home, redis_url)
    try:
        submit_runs(sessions, redis, runs)
        pipeline = wait_until(sessions, runs[0].id, lambda r: r.status.finished, timeout=180)
        assert pipeline.status == RunStatus.succeeded, pipeline.error
        with sessions.begin() as session:
            adapted, student = store.children(session, runs[0].id)
            assert [d.id for d in student.depends_on] == [adapted.id]
            assert student.params["teacher"] == f"run:{adapted.id}"
            assert len([m for m in student.metrics if m.name == "relation_loss"]) >= 2
            assert student.started_at >= adapted.finished_at
        from transformers import AutoModelForMaskedLM

        assert AutoModelForMaskedLM.from_pretrained(pipeline.output_dir).config.hidden_size == 16
    finally:
        stop_process(worker)


def test_cancel_stops_a_running_job_and_resume_continues(sessions, redis, redis_url, home, tiny, corpus_file):
    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    run = training.create_adaptation(sessions, corpus.id, str(tiny), {"steps": 3000, "seq_len": 32, "batch_size": 4,
                                                                      "checkpoint_every": 10_000})
    worker = start_worker(home, redis_url)
    try:
        submit_runs(sessions, redis, [run])
        wait_until(sessions, run.id, lambda r: (r.step or 0) >= 5)
        cancel(sessions, redis, run.id, grace=20)
        stopped = wait_until(sessions, run.id, lambda r: r.status == RunStatus.cancelled)
        assert stopped.step < 3000
        from rq.job import Job

        from worker.queueing.queues import SERIALIZER

        job = Job.fetch(stopped.job_id, connection=redis, serializer=SERIALIZER)
        deadline = time.monotonic() + 20
        while job.get_status(refresh=True) == "started" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert job.get_status() != "started"
        assert (home / "runs" / str(run.id) / "model" / "checkpoints" / "latest").is_file()
        with sessions.begin() as session:
            store.get(session, Run, run.id).params = {**stopped.params, "steps": stopped.step + 20}
        resume(sessions, redis, run.id)
        done = wait_until(sessions, run.id, lambda r: r.status.finished)
        assert done.status == RunStatus.succeeded, done.error
        assert done.params["result"]["resumed_from"] >= 5
    finally:
        stop_process(worker)


@pytest.mark.tried('the worker running a training run is SIGKILLed')
def test_a_killed_worker_is_detected_and_the_run_resumed(sessions, redis, redis_url, home, tiny, corpus_file):
    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    run = training.create_distillation(sessions, corpus.id, str(tiny), {"steps": 3000, "seq_len": 32, "batch_size": 4,
                                                                        "checkpoint_every": 10, **TINY_STUDENT})
    worker = start_worker(home, redis_url)
    submit_runs(sessions, redis, [run])
    wait_until(sessions, run.id, lambda r: (r.step or 0) >= 25)
    for process in psutil.Process(worker.pid).children(recursive=True) + [psutil.Process(worker.pid)]:
        process.send_signal(signal.SIGKILL)
    stop_process(worker)
    time.sleep(2)
    assert run_state.find_dead_runs(sessions, stale_after=1.5) == [run.id]
    with sessions.begin() as session:
        dead = store.get(session, Run, run.id)
        assert dead.status == RunStatus.abandoned and "resume continues" in dead.error
        dead.params = {**dead.params, "steps": dead.step + 15}
    worker = start_worker(home, redis_url)
    try:
        resume(sessions, redis, run.id)
        done = wait_until(sessions, run.id, lambda r: r.status.finished, timeout=180)
        assert done.status == RunStatus.succeeded, done.error
        assert done.params["result"]["resumed_from"] >= 20  # from the last checkpoint, not from zero
    finally:
        stop_process(worker)


def test_short_adapt_and_distill_on_the_bundled_model(sessions, corpus_file):
    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    small = {"seq_len": 32, "batch_size": 4, "steps": 2, "eval_every": 100}
    with pytest.raises(ConfigError, match="not fewer than the teacher's"):  # the same model compresses nothing
        training.create_pipeline(sessions, "adapt-and-distill", corpus.id, "bundled", small,
                                 {**small, "relation_heads": 12}, student_init="bundled")
    with sessions.begin() as session:
        assert store.rows(session, Run, limit=100) == []  # refused before anything was recorded
    runs = training.create_pipeline(sessions, "adapt-and-distill", corpus.id, "bundled", small,
                                    {**small, "relation_heads": 12, "allow_larger_student": True},
                                    student_init="bundled")
    for run in runs[1:]:
        kinds.executor(run.kind)(sessions, run.id, lifecycle.reporter_for(sessions, run.id))
    with sessions.begin() as session:
        pipeline = store.get(session, Run, runs[0].id)
        assert pipeline.status == RunStatus.succeeded
        made = [r.kind for r in store.children(session, runs[0].id)]
        assert made == [RunKind.adaptation, RunKind.adaptation, RunKind.distillation]
    meta = json.loads((__import__("pathlib").Path(pipeline.output_dir) / "adapt_distill.json").read_text())
    assert meta["kind"] == "student" and meta["relation_heads"] == 12


def test_the_student_shape_is_resolved_against_the_teacher_when_the_run_is_created(sessions, tiny, corpus_file):
    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    derived = training.create_distillation(sessions, corpus.id, str(tiny), {"steps": 2})
    assert {k: derived.params[k] for k in ("layers", "hidden", "heads", "intermediate")} == \
        {"layers": 1, "hidden": 16, "heads": 1, "intermediate": 32}  # half of the 2 x 32 teacher
    wider = training.create_distillation(sessions, corpus.id, str(tiny), {"steps": 2, "layers": 2})
    assert (wider.params["layers"], wider.params["hidden"]) == (2, 16)  # an override on top of the derived shape
    with pytest.raises(ConfigError, match="not fewer than the teacher's"):
        training.create_distillation(sessions, corpus.id, str(tiny), {"steps": 2, "student": "L2-H128"})
    pipeline = training.create_pipeline(sessions, "adapt-then-distill", corpus.id, str(tiny), {"steps": 2},
                                        {"steps": 2})
    assert pipeline[2].params["hidden"] == 16  # through the adaptation run that has not run yet


def test_adapt_and_distill_expands_the_student_like_the_expanded_teacher(sessions, tmp_path, corpus_file):
    """The teacher is an expansion made by the vocabulary workflow; the small pretrained student has
    the base vocabulary and gets the same new tokens before it is adapted."""
    from core.configs import VocabConfig

    base = build_tiny_bert(tmp_path / "base", words=["the", "of", "and", "in", "with", "was"])
    student = build_tiny_bert(tmp_path / "student", words=["the", "of", "and", "in", "with", "was"], seed=1)
    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    analysis, _ = vocabulary.create_analysis(sessions, corpus.id, str(base), VocabConfig(step=20, max_added=40))
    vocabulary.execute_analysis(sessions, analysis.run_id, lifecycle.Reporter(sessions, analysis.run_id))
    with sessions.begin() as session:
        size = store.get(session, VocabAnalysis, analysis.id).base_vocab_size + 40
    expansion = vocabulary.create_expansion(sessions, analysis.id, size, tmp_path / "expanded")
    vocabulary.execute_expansion(sessions, expansion.id, lifecycle.Reporter(sessions, expansion.id))
    small = {"seq_len": 32, "batch_size": 4, "steps": 2, "eval_every": 100}
    runs = training.create_pipeline(sessions, "adapt-and-distill", corpus.id, f"run:{expansion.id}", small,
                                    {**small, "relation_heads": 2, "allow_larger_student": True},
                                    student_init=str(student))
    for run in runs[1:]:
        kinds.executor(run.kind)(sessions, run.id, lifecycle.reporter_for(sessions, run.id))
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    with sessions.begin() as session:
        steps = store.children(session, runs[0].id)
        assert all(s.status == RunStatus.succeeded for s in steps), [s.error for s in steps]
        adapted_student, final = steps[1], steps[2]
    teacher_tokens = AutoTokenizer.from_pretrained(tmp_path / "expanded").get_vocab()
    assert AutoTokenizer.from_pretrained(adapted_student.output_dir).get_vocab() == teacher_tokens
    model = AutoModelForMaskedLM.from_pretrained(final.output_dir)
    assert model.config.vocab_size == len(teacher_tokens) and model.config.hidden_size == 32


def test_a_failed_step_cancels_what_waits_on_it_and_resume_revives_the_pipeline(sessions, tiny, corpus_file):
    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    small = {"steps": 3, "seq_len": 32, "batch_size": 4}
    pipeline, adapted, student = training.create_pipeline(sessions, "adapt-then-distill", corpus.id, str(tiny),
                                                          small, {**small, **TINY_STUDENT})
    run_state.request_cancel(sessions, adapted.id)  # the user cancels the first step only
    with sessions.begin() as session:
        assert store.get(session, Run, student.id).status == RunStatus.cancelled
        assert store.get(session, Run, pipeline.id).status == RunStatus.cancelled
    revived = run_state.prepare_resume(sessions, adapted.id)
    assert [r.id for r in revived] == [adapted.id, student.id]
    for run in revived:
        kinds.executor(run.kind)(sessions, run.id, lifecycle.reporter_for(sessions, run.id))
    with sessions.begin() as session:
        assert store.get(session, Run, pipeline.id).status == RunStatus.succeeded


@pytest.mark.tried('NaN, infinite and out-of-range settings; seq-len, teacher layer, relation heads, init that cannot work')
def test_bad_settings_record_nothing(sessions, tiny, corpus_file):
    from core.errors import ConfigError

    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    with pytest.raises(ConfigError, match="not divisible"):
        training.create_pipeline(sessions, "adapt-then-distill", corpus.id, str(tiny), {"steps": 2},
                                 {"steps": 2, "hidden": 30, "heads": 4})
    with pytest.raises(ConfigError, match="device must be"):
        training.create_adaptation(sessions, corpus.id, str(tiny), {"device": "tpu"})
    nan, inf = float("nan"), float("inf")
    for params, message in (({"lr": nan}, "lr must be a positive number"), ({"lr": inf}, "lr must be a positive"),
                            ({"epochs": nan}, "epochs must be"), ({"warmup": nan}, "warmup must be"),
                            ({"weight_decay": -0.1}, "weight-decay must be"),
                            ({"heldout_fraction": 0.0}, "heldout-fraction"),
                            ({"heldout_fraction": 0.6}, "heldout-fraction")):
        with pytest.raises(ConfigError, match=message):
            training.create_adaptation(sessions, corpus.id, str(tiny), params)
    for params, message in (({"mlm_weight": nan}, "mlm-weight must be"), ({"heldout_fraction": 0.9}, "heldout-frac"),
                            ({"lr": nan}, "lr must be")):
        with pytest.raises(ConfigError, match=message):
            training.create_distillation(sessions, corpus.id, str(tiny), {"layers": 1, "hidden": 16, "heads": 2,
                                                                          "intermediate": 32, **params})
    student = {"layers": 1, "hidden": 16, "heads": 2, "intermediate": 32}
    with pytest.raises(ConfigError, match="seq-len 1024 is longer than the model can read .128 positions"):
        training.create_adaptation(sessions, corpus.id, str(tiny), {"seq_len": 1024})
    for params, message in (({"seq_len": 256}, "longer than the teacher can read"),
                            ({"teacher_layer": 2}, "teacher-layer 2 is out of range: the teacher has 2 layers"),
                            ({"teacher_layer": -3}, "teacher-layer -3 is out of range"),
                            ({"init": "teacher"}, "init 'teacher' copies every k-th teacher layer"),
                            ({"relation_heads": 5}, "relation-heads 5 must divide")):
        with pytest.raises(ConfigError, match=message):
            training.create_distillation(sessions, corpus.id, str(tiny), {**student, **params})
        with pytest.raises(ConfigError, match=message):
            training.create_pipeline(sessions, "adapt-then-distill", corpus.id, str(tiny), {"steps": 2},
                                     {**student, **params})
    with sessions.begin() as session:
        assert store.rows(session, Run, limit=100) == []


def test_runs_commands(home, sessions, tiny, corpus_file):
    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    run = training.create_adaptation(sessions, corpus.id, str(tiny), {"steps": 3, "seq_len": 32, "batch_size": 4})
    env = {**os.environ, "ADAPT_DISTILL_HOME": str(home)}
    for key in ("DATABASE_URL", "REDIS_URL"):
        env.pop(key, None)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "app.cli", "runs", *args], env=env, capture_output=True,
                              text=True, timeout=300)

    assert json.loads(cli("cancel", str(run.id), "--json").stdout)["status"] == "cancelled"
    resumed = json.loads(cli("resume", str(run.id), "--json").stdout)["runs"][0]
    assert resumed["status"] == "succeeded" and resumed["metrics"]["steps"] == 3
    listed = json.loads(cli("list", "--json").stdout)["runs"]
    assert [(r["run_id"], r["status"]) for r in listed] == [(run.id, "succeeded")]
    again = cli("cancel", str(run.id))
    assert again.returncode == 2 and again.stderr.strip() == f"error: run {run.id} is already succeeded"


def test_a_models_name_says_what_it_is(sessions, tmp_path, tiny, corpus_file):
    """Names read as what each model is in the paper's strategies, not as 'student of run:4'."""
    from conftest import tiny_experiment
    from worker.naming import model_name

    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    small = {"steps": 2, "seq_len": 32, "batch_size": 4}
    _, adapted, student = training.create_pipeline(sessions, "adapt-then-distill", corpus.id, "bundled", small,
                                                   {**small, "layers": 3, "hidden": 192, "heads": 6})
    _, general, adapted_general = training.create_pipeline(sessions, "distill-then-adapt", corpus.id, "bundled",
                                                           {**small}, {**small, "layers": 3, "hidden": 192,
                                                                       "heads": 6})
    alone = training.create_distillation(sessions, corpus.id, str(tiny), {"steps": 2, **TINY_STUDENT})
    experiment = tiny_experiment(sessions, tmp_path / "experiment")
    with sessions.begin() as session:
        names = {r.id: model_name(store.get(session, Run, r.id)) for r in
                 (adapted, student, general, adapted_general, alone, *experiment[1:])}
    assert names[adapted.id] == f"run:{adapted.id} · adapted teacher: the bundled MiniLM"
    assert names[student.id] == (f"run:{student.id} · adapt-then-distill student L3-H192 of the adapted teacher "
                                 f"(run:{adapted.id})")
    assert names[general.id] == f"run:{general.id} · general student L3-H192 of the bundled MiniLM"
    assert names[adapted_general.id] == (f"run:{adapted_general.id} · distill-then-adapt student: the general "
                                         f"student L3-H192 (run:{general.id})")
    assert names[alone.id] == f"run:{alone.id} · student L1-H16 of teacher"
    by_kind = {}
    for run in experiment[1:]:
        by_kind.setdefault(run.kind, []).append(names[run.id])
    expansion = by_kind[RunKind.expansion][0]
    by_kind = {}
    for run in experiment[1:]:
        by_kind.setdefault(run.kind, []).append(names[run.id])
    expansion = by_kind[RunKind.expansion][0]
    assert expansion.endswith("expanded teacher: teacher with a vocabulary of the picked size")  # not analysed yet
    assert by_kind[RunKind.adaptation][0].endswith(f"adapted teacher: the expanded teacher ({expansion.split(' · ')[0]})")
    assert {n.split(" · ")[1].split(" L")[0].split(" of ")[0] for n in by_kind[RunKind.distillation]} == \
        {"general student", "adapt-then-distill student", "adapt-and-distill student"}
    assert model_name(experiment[-1]).endswith(" · benchmark")  # a run that makes no model
    assert not any("run:" in n.split(" · ")[1] and " of run:" in n for n in names.values())  # no bare references
