"""The Train and Runs pages through Streamlit's AppTest, against a real SQLite store, a real Redis
and tiny BERTs trained inline for a few steps. Nothing is mocked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import build_tiny_bert, write_task_csv
from rq.job import Job
from streamlit.testing.v1 import AppTest

from app.data.common import duration
from db import store
from db.models import Corpus, Run, RunKind, RunStatus, utcnow
from worker import corpora, kinds, lifecycle, run_params, run_state, training
from worker.queueing.queues import SERIALIZER
from worker.queueing.submit import submit_runs

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "app" / "main.py"
TINY_STUDENT = {"layers": 1, "hidden": 16, "heads": 2, "intermediate": 32}
SMALL = {"seq_len": 32, "batch_size": 8}


def open_page(page: str, run: int | None = None) -> AppTest:
    """The app from its entry point, switched to a page (the Runs page at ?run=ID when given)."""
    at = AppTest.from_file(str(MAIN), default_timeout=120)
    if run is not None:
        at.query_params["run"] = str(run)
    at.run()
    assert not at.exception, at.exception
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, at.exception
    return at


def execute(sessions, runs) -> None:
    """Train the steps of a pipeline (or single runs) in this process, in order."""
    for run in runs:
        if run.kind != RunKind.pipeline:
            kinds.executor(run.kind)(sessions, run.id, lifecycle.reporter_for(sessions, run.id))


def finished_expansion(sessions, folder, vocab_size: int) -> int:
    """A succeeded expansion run whose model is `folder`, as the Vocabulary page leaves one."""
    with sessions.begin() as session:
        run = store.create_run(session, RunKind.expansion, {"analysis_id": 1, "vocab_size": vocab_size,
                                                            "output_dir": str(folder)})
        run.output_dir = str(folder)
        store.finish_run(session, run, RunStatus.succeeded)
        return run.id


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def plotly_specs(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def trace(spec: dict, name: str) -> dict:
    (found,) = [t for t in spec["data"] if t.get("name") == name]
    return found


def set_tiny_student(at: AppTest) -> None:
    at.checkbox(key="train_explicit").check().run()
    for name, value in TINY_STUDENT.items():
        at.number_input(key=f"train_{name}").set_value(value)


@pytest.fixture
def tiny(home):
    """A model folder in the data folder: the dashboard reads models only there (or in ADAPT_DISTILL_MODEL_DIRS)."""
    return build_tiny_bert(home / "models" / "teacher")


@pytest.fixture
def corpus_id(sessions, corpus_file) -> int:
    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    return corpus.id


# --- train ---------------------------------------------------------------------------------------

def test_student_parameters_match_a_real_bert(sessions, tiny):
    """The estimate's formula against BertForMaskedLM itself (tied decoder, no pooler)."""
    from transformers import BertConfig, BertForMaskedLM

    from app.data import train as train_data
    from core.configs import bert_parameters

    for vocab, hidden, layers, heads, intermediate, positions in [(94, 16, 1, 2, 32, 128), (500, 64, 3, 4, 100, 64),
                                                                  (30_522, 384, 6, 12, 1536, 512)]:
        model = BertForMaskedLM(BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                           num_attention_heads=heads, intermediate_size=intermediate,
                                           max_position_embeddings=positions))
        assert bert_parameters(vocab, hidden, layers, intermediate, positions) == \
            sum(p.numel() for p in model.parameters())
    shape = train_data.model_shape(sessions, str(tiny))
    real = BertForMaskedLM.from_pretrained(str(tiny))
    assert shape["parameters"] == sum(p.numel() for p in real.parameters())
    assert (shape["layers"], shape["hidden"], shape["vocab_size"]) == (2, 32, real.config.vocab_size)


def test_the_page_defaults_are_the_backend_defaults_and_no_torch_is_loaded():
    import subprocess
    import sys

    from app.data.train import TRAIN_DEFAULTS

    code = "import sys, app.data.train, worker.training; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    adapt, distill = run_params.adapt_config({}), run_params.distill_config({})
    assert TRAIN_DEFAULTS["adapt_lr"] == adapt.train.lr
    assert TRAIN_DEFAULTS["distill_lr"] == distill.train.lr
    assert TRAIN_DEFAULTS["adapt_steps"] == adapt.train.steps and TRAIN_DEFAULTS["seq_len"] == adapt.seq_len
    assert TRAIN_DEFAULTS["batch_size"] == distill.train.batch_size
    assert TRAIN_DEFAULTS["version"] == distill.version and TRAIN_DEFAULTS["init"] == distill.init


def test_the_dashboard_and_the_core_accept_the_same_devices():
    from core.checks import check_device
    from core.configs import TrainConfig
    from core.errors import ConfigError

    for name in ("auto", "cpu", "mps", "cuda", "cuda:1"):
        assert check_device(f" {name} ") == name == TrainConfig(device=name).device
        assert run_params.adapt_config({"device": name}).train.device == name
    for name in ("tpu", "cuda:", "gpu0"):
        with pytest.raises(ConfigError, match="device must be auto, cpu, mps, cuda or cuda:N"):
            TrainConfig(device=name)
        with pytest.raises(ConfigError, match="device must be auto, cpu, mps, cuda or cuda:N"):
            check_device(name)


def test_train_page_estimates_and_launches_a_pipeline(sessions, redis, tiny, corpus_id):
    from core.formatting import parameters as compact_count  # parameters as every page shows them
    from core.configs import bert_parameters

    teacher_run = finished_expansion(sessions, tiny, 94)
    at = open_page("train")
    teacher = at.selectbox(key="train_teacher")
    assert teacher.value == f"run:{teacher_run}"  # the expanded model just made is proposed
    assert teacher.format_func(f"run:{teacher_run}") == \
        f"run:{teacher_run} · expanded teacher: the teacher with a vocabulary of 94 tokens"  # its analysis is not recorded
    teacher.set_value(f"run:{teacher_run}").run()
    assert at.selectbox(key="train_mode").value == "adapt-then-distill"
    set_tiny_student(at)
    at.number_input(key="train_adapt_steps").set_value(7)
    at.number_input(key="train_distill_steps").set_value(9)
    at.number_input(key="train_batch").set_value(8)
    at.number_input(key="train_seq_len").set_value(32)
    at.number_input(key="train_adapt_lr").set_value(1e-4)
    at.run()
    assert not at.exception and not at.error
    assert any("No worker serves the gpu queue, so a launched run waits" in w.value for w in at.warning)

    # The estimate: 8 x 32 tokens a step; the teacher trains in run 1, the tiny student in run 2.
    teacher_params = bert_parameters(94, 32, 2, 64, 128)
    student_params = bert_parameters(94, 16, 1, 32, 128)
    assert metric(at, "Tokens per step") == "256"
    assert metric(at, "Total tokens") == f"{16 * 256:,}"
    assert metric(at, "Teacher parameters") == compact_count(teacher_params)
    assert metric(at, "Student parameters") == compact_count(student_params)
    table = at.dataframe[0].value
    assert list(table["steps"]) == [7, 9]
    assert list(table["tokens"]) == [7 * 256, 9 * 256]
    assert list(table["trained parameters"]) == pytest.approx([teacher_params / 1e6, student_params / 1e6])
    guessed = (6 * teacher_params * 7 * 256 + (6 * student_params + 2 * teacher_params) * 9 * 256) / 1e11
    assert metric(at, "Time, first guess") == duration(guessed)  # before any run has been measured here
    with sessions.begin() as session:
        words = store.get(session, Corpus, corpus_id).words
    assert list(table["epochs"]) == pytest.approx([7 * 256 / words, 9 * 256 / words])
    assert any("rough proxy" in c for c in texts(at.caption))

    at.button(key="train_launch").click().run()
    assert not at.exception and not at.error
    with sessions.begin() as session:
        pipeline, adapted, student = sorted(store.rows(session, Run, kind=None, limit=100), key=lambda r: r.id)[1:]
        assert (pipeline.kind, adapted.kind, student.kind) == (RunKind.pipeline, RunKind.adaptation,
                                                               RunKind.distillation)
        assert pipeline.params["strategy"] == "adapt-then-distill"
        assert pipeline.params["teacher"] == adapted.params["model"] == f"run:{teacher_run}"
        assert {k: adapted.params[k] for k in ("steps", "lr", "batch_size", "seq_len")} == \
            {"steps": 7, "lr": 1e-4, "batch_size": 8, "seq_len": 32}
        assert {k: student.params[k] for k in ("steps", "lr", "batch_size", "seq_len", *TINY_STUDENT)} == \
            {"steps": 9, "lr": 5e-4, "batch_size": 8, "seq_len": 32, **TINY_STUDENT}
        assert student.params["teacher"] == f"run:{adapted.id}" and student.params["init"] == "random"
        assert [d.id for d in student.depends_on] == [adapted.id] and student.parent_id == pipeline.id
        ids = (pipeline.id, adapted.id, student.id)
    assert f"Pipeline {ids[0]} (adapt-then-distill) queued: runs {ids[1]} adaptation → {ids[2]} distillation." \
        in texts(at.success)
    first = Job.fetch(f"run-{ids[1]}", connection=redis, serializer=SERIALIZER)
    second = Job.fetch(f"run-{ids[2]}", connection=redis, serializer=SERIALIZER)
    assert first.get_status() == "queued" and first.origin == "gpu"
    assert second.get_status() == "deferred", "the distillation waits for the adaptation"
    links = at.get("page_link")
    assert any(link.proto.query_string == f"run={ids[0]}" for link in links), [link.proto for link in links]


def test_the_default_student_is_smaller_and_a_student_as_big_as_the_teacher_is_refused(sessions, redis, corpus_id):
    from core.formatting import parameters as compact_count  # parameters as every page shows them
    from core.configs import bert_parameters

    at = open_page("train")
    assert at.selectbox(key="train_teacher").value == "bundled"  # 6 layers x 384 hidden
    shape = at.selectbox(key="train_student")
    assert shape.value == "auto" and shape.format_func("auto").startswith("half the teacher · L3-H192")
    teacher, student = bert_parameters(30_522, 384, 6, 1536), bert_parameters(30_522, 192, 3, 768)
    assert metric(at, "Student parameters") == compact_count(student)
    assert f"{teacher / student:.1f}x smaller" in at.metric[3].proto.delta  # compresses by default
    assert not [c for c in texts(at.caption) if "not fewer" in c]

    shape.set_value("L6-H384").run()  # the bundled model's own shape
    refused = f"the student L6-H384 has {teacher:,} parameters, not fewer than the teacher's {teacher:,}"
    assert any(refused in c and "L3-H192" in c for c in texts(at.caption))  # and names the default to pick
    at.button(key="train_launch").click().run()
    assert len(at.error) == 1 and at.error[0].value.startswith(refused)
    with sessions.begin() as session:
        assert store.rows(session, Run, limit=100) == []

    at.checkbox(key="train_allow_larger").check().run()
    assert not [c for c in texts(at.caption) if "not fewer" in c]
    at.button(key="train_launch").click().run()
    assert not at.error and not at.exception
    with sessions.begin() as session:
        student_run = next(r for r in store.rows(session, Run, limit=100) if r.kind == RunKind.distillation)
        assert student_run.params["allow_larger_student"] is True
        assert (student_run.params["layers"], student_run.params["hidden"]) == (6, 384)


def test_validation_errors_are_one_line_and_create_nothing(sessions, redis, tiny, corpus_id, monkeypatch):
    at = open_page("train")
    at.selectbox(key="train_teacher").set_value("other").run()
    at.text_input(key="train_teacher_other").input(str(tiny)).run()

    def launch() -> str:
        at.button(key="train_launch").click().run()
        assert not at.exception
        assert len(at.error) == 1, texts(at.error)
        return at.error[0].value

    set_tiny_student(at)
    at.number_input(key="train_heads").set_value(3)
    assert launch() == "student hidden size 16 is not divisible by its 3 heads"

    at.number_input(key="train_heads").set_value(2)
    at.selectbox(key="train_init").set_value("teacher").run()
    assert launch().startswith("init 'teacher' copies every k-th teacher layer, so the student needs the teacher's "
                               "width (32 hidden, 2 heads)")

    at.selectbox(key="train_init").set_value("random")
    at.number_input(key="train_adapt_lr").set_value(1e-4)
    at.number_input(key="train_warmup").set_value(0.0)
    at.selectbox(key="train_schedule").set_value("cosine")
    at.text_input(key="train_device").input("tpu").run()
    assert launch() == "device must be auto, cpu, mps, cuda or cuda:N, got 'tpu'"

    at.text_input(key="train_device").input("auto")
    at.selectbox(key="train_mode").set_value("adapt-and-distill").run()
    at.selectbox(key="train_student_init").set_value("other").run()
    assert launch().startswith("adapt-and-distill adapts a small pretrained student too")

    at.selectbox(key="train_mode").set_value("adaptation").run()
    at.text_input(key="train_teacher_other").input(str(tiny.parent / "no-such-model")).run()
    assert "no such model folder" in launch()

    at.text_input(key="train_teacher_other").input(str(tiny)).run()
    monkeypatch.delenv("REDIS_URL")
    assert launch() == "REDIS_URL is not set: start everything with `adapt-distill up`, or set REDIS_URL"

    with sessions.begin() as session:
        assert store.rows(session, Run, limit=100) == []
    assert redis.keys("rq:job:*") == []


# --- runs ----------------------------------------------------------------------------------------

def test_runs_page_lists_runs_with_status_and_progress(sessions, tiny, corpus_id):
    queued = training.create_adaptation(sessions, corpus_id, str(tiny), {"steps": 10, **SMALL})
    running = training.create_distillation(sessions, corpus_id, str(tiny), {"steps": 40, **SMALL, **TINY_STUDENT})
    with sessions.begin() as session:
        run = store.get(session, Run, running.id)
        store.start_run(session, run)
        run.stage, run.progress, run.step, run.eta_seconds, run.latest_loss = "training", 0.25, 10, 95.0, 1.2346
    at = open_page("runs")
    assert not at.error
    table = at.dataframe[0].value
    assert list(table["id"]) == [running.id, queued.id]
    assert list(table["status"]) == ["running", "queued"]
    assert list(table["progress"]) == [25.0, 0.0]
    assert list(table["done"]) == ["10 / 40", ""]
    assert list(table["ETA"]) == ["1 min", ""]
    assert list(table["run"]) == ["student L1-H16", "adapted teacher"]  # what each makes

    # The run at work is shown; its live progress is drawn once on a plain rerun.
    assert at.selectbox(key="runs_selected").value == running.id
    (bar,) = at.get("progress")
    assert bar.proto.text == f"Run {running.id} · running: training · step 10 of 40 · ETA 1 min · loss 1.235 (25%)"
    assert [b.key for b in at.button if b.key in ("runs_cancel", "runs_resume", "runs_again")] == ["runs_cancel"], \
        "a running run offers what can be done to it: no Run again"


def test_a_finished_pipeline_shows_curves_log_results_and_lineage(sessions, redis, tiny, corpus_id):
    runs = training.create_pipeline(sessions, "adapt-then-distill", corpus_id, str(tiny),
                                    {"steps": 6, "log_every": 2, "eval_every": 3, **SMALL},
                                    {"steps": 4, **SMALL, **TINY_STUDENT})
    execute(sessions, runs)
    pipeline, adapted, student = (r.id for r in runs)
    with sessions.begin() as session:
        metrics = {}
        for m in store.get(session, Run, adapted).metrics:
            metrics.setdefault(m.name, []).append((m.step, m.value))
        result = store.get(session, Run, adapted).params["result"]

    at = open_page("runs", run=adapted)
    assert not at.exception and not at.error
    assert at.selectbox(key="runs_selected").value == adapted
    loss, lr = plotly_specs(at)
    train = trace(loss, "training loss")
    assert train["x"] == [s for s, _ in metrics["loss"]] == [1, 2, 4, 6]
    assert train["y"] == pytest.approx([v for _, v in metrics["loss"]])
    heldout = trace(loss, "held-out MLM loss")
    assert heldout["x"] == [0, 3, 6] and heldout["y"] == pytest.approx([v for _, v in metrics["heldout_loss"]])
    assert trace(lr, "learning rate")["y"] == pytest.approx([v for _, v in metrics["lr"]])
    (log,) = at.code
    assert log.value.splitlines()[-1].startswith("step 6/6 heldout_loss=")
    assert metric(at, "Training loss") == f"{result['last_loss']:.4g}"
    assert metric(at, "Held-out MLM loss") == f"{result['heldout_loss']:.4g}"
    assert metric(at, "Training tokens/s") == f"{result['tokens_per_second']:,.0f}"
    assert any(f"`{result['output_dir']}`" in c for c in texts(at.caption))

    # The student: relation losses, its size, and the lineage back to the adapted teacher.
    at.selectbox(key="runs_selected").set_value(student).run()
    assert at.query_params["run"] == str(student)
    (loss, _) = plotly_specs(at)
    assert {t["name"] for t in loss["data"]} == {"training loss", "held-out relation loss"}
    assert metric(at, "Student parameters").endswith("M")
    assert "Teacher: `run:" in "".join(texts(at.markdown))
    at.button(key=f"runs_input_{student}_teacher").click().run()
    assert at.selectbox(key="runs_selected").value == adapted
    at.button(key=f"runs_part_of_{pipeline}").click().run()
    assert at.selectbox(key="runs_selected").value == pipeline
    steps = at.dataframe[1].value
    assert list(steps["id"]) == [adapted, student] and list(steps["status"]) == ["succeeded", "succeeded"]

    # Run the pipeline again: the same strategy and step settings, queued as a new chain.
    at.button(key="runs_again").click().run()
    assert not at.exception and not at.error
    with sessions.begin() as session:
        again = max(r.id for r in store.rows(session, Run, kind=RunKind.pipeline, limit=100))
        new_adapted, new_student = store.children(session, again)
        old_student = store.get(session, Run, student)
        assert new_adapted.params["steps"] == 6 and new_student.params["layers"] == 1
        assert {k: v for k, v in new_student.params.items() if k != "teacher"} == \
            {k: v for k, v in old_student.params.items() if k not in ("teacher", "result", "lease")}
        assert new_student.params["teacher"] == f"run:{new_adapted.id}"
        new_ids = (new_adapted.id, new_student.id)
    assert at.selectbox(key="runs_selected").value == again
    assert redis.exists(f"rq:job:run-{new_ids[0]}") and redis.exists(f"rq:job:run-{new_ids[1]}")


def test_cancel_resume_and_run_again(sessions, redis, tiny, corpus_id):
    run = training.create_adaptation(sessions, corpus_id, str(tiny), {"steps": 5, "lr": 2e-4, **SMALL})
    submit_runs(sessions, redis, [run])
    at = open_page("runs", run=run.id)
    assert not at.get("plotly_chart") and "No loss recorded yet." in texts(at.caption)
    assert not [b for b in at.button if b.key == "runs_resume"]

    at.button(key="runs_cancel").click().run()
    assert not at.exception and not at.error
    with sessions.begin() as session:
        assert store.get(session, Run, run.id).status == RunStatus.cancelled
    assert Job.fetch(f"run-{run.id}", connection=redis, serializer=SERIALIZER).get_status() == "canceled"
    assert f"Run {run.id} cancelled. Resume continues it from its last checkpoint." in texts(at.info)
    assert not [b for b in at.button if b.key == "runs_cancel"]
    header = next(m.value for m in at.markdown if "created" in m.value)
    assert header.startswith(":orange-badge[cancelled] · created")  # the stage repeats nothing
    assert list(at.dataframe[0].value["status"]) == ["cancelled"]

    at.button(key="runs_resume").click().run()
    assert not at.exception and not at.error
    with sessions.begin() as session:
        resumed = store.get(session, Run, run.id)
        assert resumed.status == RunStatus.queued and resumed.job_id == f"run-{run.id}-a2"
    assert Job.fetch(f"run-{run.id}-a2", connection=redis, serializer=SERIALIZER).get_status() == "queued"
    assert f"Run {run.id} queued to resume from its last checkpoint." in texts(at.success)
    # one status and one attempt number everywhere: badge, table, settings and job id
    header = next(m.value for m in at.markdown if "created" in m.value)
    assert header.startswith(":gray-badge[queued] · created") and header.endswith("· attempt 2")
    assert list(at.dataframe[0].value["status"]) == ["queued"]
    assert json.loads(at.json[0].value)["attempt"] == 2
    assert any(f"job: `run-{run.id}-a2`" in c for c in texts(at.caption))
    assert not [b for b in at.button if b.key == "runs_again"], "a queued run is not run again beside itself"

    at.button(key="runs_cancel").click().run()  # once stopped, it may be run again
    at.button(key="runs_again").click().run()
    assert not at.exception and not at.error
    with sessions.begin() as session:
        new = max(store.rows(session, Run, limit=100), key=lambda r: r.id)
        old = store.get(session, Run, run.id)
        assert new.id != run.id and new.kind == RunKind.adaptation and new.status == RunStatus.queued
        assert new.params == {k: v for k, v in old.params.items() if k != "attempt"}
        assert new.output_dir != old.output_dir
        new_id = new.id
    assert redis.exists(f"rq:job:run-{new_id}")
    assert at.selectbox(key="runs_selected").value == new_id


def test_a_run_whose_worker_died_is_shown_abandoned(sessions, tiny, corpus_id):
    run = training.create_adaptation(sessions, corpus_id, str(tiny), {"steps": 50, **SMALL})
    with sessions.begin() as session:
        dead = store.get(session, Run, run.id)
        store.start_run(session, dead)
        dead.heartbeat_at = utcnow() - timedelta(minutes=5)
    at = open_page("runs")
    assert list(at.dataframe[0].value["status"]) == ["abandoned"]
    (warning,) = at.main.warning
    assert warning.value.startswith(f"Run {run.id} abandoned: its worker stopped answering")
    assert [b.key for b in at.button if b.key in ("runs_cancel", "runs_resume", "runs_again")] == \
        ["runs_resume", "runs_again"]
    assert not at.get("progress"), "nothing is live any more"


def test_an_empty_list_and_a_missing_run(sessions):
    at = open_page("runs")
    assert "Nothing has run yet." in texts(at.info)
    with sessions.begin() as session:
        kept = store.create_run(session, RunKind.analysis, {}).id
    at = open_page("runs", run=999)
    assert texts(at.error) == ["no run with id 999"]
    assert at.selectbox(key="runs_selected").value == kept


def test_the_train_page_proposes_the_newest_expansion_follows_a_link_and_keeps_the_choice(sessions, tiny,
                                                                                          corpus_id):
    older = finished_expansion(sessions, tiny, 94)
    newer = finished_expansion(sessions, tiny, 96)
    at = open_page("train")
    assert at.selectbox(key="train_teacher").value == f"run:{newer}"
    at.selectbox(key="train_teacher").set_value("bundled").run()
    at.switch_page("views/runs.py").run()
    at.switch_page("views/train.py").run()
    assert at.selectbox(key="train_teacher").value == "bundled"  # the user's choice stays
    linked = AppTest.from_file(str(MAIN), default_timeout=120)  # "Train with this model" on the Vocabulary page
    linked.query_params["teacher"] = f"run:{older}"
    linked.run()
    linked.switch_page("views/train.py").run()
    assert not linked.exception and linked.selectbox(key="train_teacher").value == f"run:{older}"


def test_a_resumed_run_tells_its_whole_story(sessions, tiny, corpus_id):
    """Cancelled at step 6 with a checkpoint, resumed: the bar starts at the checkpoint's step, the
    result keeps the first attempt's first loss and held-out "before", the curve is one line with
    no step twice and the resume marked, and the attempt is 2 in the header, settings and job id."""
    run = training.create_adaptation(sessions, corpus_id, str(tiny),
                                     {"steps": 12, "eval_every": 4, "checkpoint_every": 100, "log_every": 1,
                                      "lr": 1e-3, **SMALL})
    first = lifecycle.reporter_for(sessions, run.id)
    first.cancelled = lambda: first.reached >= 6
    kinds.executor(RunKind.adaptation)(sessions, run.id, first)
    with sessions.begin() as session:
        stopped = store.get(session, Run, run.id)
        assert stopped.status == RunStatus.cancelled and stopped.step == 6
    run_state.prepare_resume(sessions, run.id)
    second = lifecycle.reporter_for(sessions, run.id)
    assert second.reached == 6 and second.attempt == 2
    seen = []

    def watch(stage, fraction, report=second.__call__):
        report(stage, fraction)
        with sessions.begin() as session:
            row = store.get(session, Run, run.id)
            seen.append((stage, row.progress, row.step))

    kinds.executor(RunKind.adaptation)(sessions, run.id, _Calling(second, watch))
    stages = [stage for stage, _, _ in seen]
    setup = [(p, s) for _, p, s in seen[:stages.index("training")]]  # loading, tokenizing: before the first step
    assert setup and all(p == pytest.approx(0.5) and s == 6 for p, s in setup)  # not back to 0
    assert [(p, s) for stage, p, s in seen if stage == "training"][0] == (pytest.approx(0.5), 6)

    history = data_history(sessions, run.id)
    assert history["loss"]["step"] == list(range(1, 13))  # once each: the re-run steps 7.. replaced
    assert history["resumed"] == {"step": [6], "value": [2.0]}
    with sessions.begin() as session:
        done = store.get(session, Run, run.id)
        result = done.params["result"]
        assert done.status == RunStatus.succeeded and result["resumed_from"] == 6
        assert result["first_loss"] == history["loss"]["value"][0]  # the first attempt's first step
        assert result["heldout_loss_before"] == history["heldout_loss"]["value"][0]  # at step 0, attempt 1
        assert history["heldout_loss"]["step"][0] == 0
        assert done.job_id == f"run-{run.id}-a2"
    at = open_page("runs", run=run.id)
    header = next(m.value for m in at.markdown if "created" in m.value)
    assert header.startswith(":green-badge[succeeded] · created") and header.endswith("· attempt 2")
    assert json.loads(at.json[0].value)["attempt"] == 2
    assert metric(at, "Training loss") == f"{result['last_loss']:.4g}"
    loss_chart = plotly_specs(at)[0]
    assert [a["text"] for a in loss_chart["layout"]["annotations"]] == ["attempt 2 from here"]
    assert [s["x0"] for s in loss_chart["layout"]["shapes"]] == [6]
    assert trace(loss_chart, "training loss")["x"] == list(range(1, 13))
    assert "Resumed from step 6." in texts(at.caption)
    timing = result["timing"]  # the second attempt: steps 7 to 12, evaluations at 8 and 12, no checkpoint
    assert (timing["steps"], timing["evaluations"], timing["checkpoints"]) == (6, 2, 0)
    assert timing["step_s"] > 0 and timing["evaluation_s"] > 0 and timing["checkpoint_s"] is None
    assert any(c.startswith("Measured in the last attempt, as the ETA counts them: ") and "(2)" in c
               for c in texts(at.caption))


class _Calling:
    """A reporter whose calls go through `call` (to look at the store after each report)."""

    def __init__(self, reporter, call):
        self.reporter, self.call = reporter, call

    def __call__(self, stage, fraction):
        self.call(stage, fraction)

    def __getattr__(self, name):
        return getattr(self.reporter, name)


def data_history(sessions, run_id: int) -> dict:
    from app.data.runs import metric_history

    return metric_history(sessions, run_id)


def test_a_pipeline_progresses_by_the_estimated_cost_of_its_steps(sessions, tiny, corpus_id):
    from app.data.runs import runs_page

    pipeline, adapted, student = training.create_pipeline(sessions, "adapt-then-distill", corpus_id, str(tiny),
                                                          {"steps": 30, **SMALL}, {"steps": 10, **SMALL, **TINY_STUDENT})
    costs = {int(k): v for k, v in pipeline.params["step_costs"].items()}
    assert set(costs) == {adapted.id, student.id}
    # the teacher adapts for 30 steps; the student of 1 layer, width 16 distils for 10 beside it
    assert costs[adapted.id] > 3 * costs[student.id] > 0
    share = costs[adapted.id] / (costs[adapted.id] + costs[student.id])
    with sessions.begin() as session:
        step = store.get(session, Run, adapted.id)
        store.start_run(session, step)
        step.started_at = utcnow() - timedelta(seconds=60)
        step.stage, step.progress, step.step, step.eta_seconds, step.eta_guess = "training", 0.5, 15, 60.0, False
        store.refresh_pipeline(session, pipeline.id)
    row = next(r for r in runs_page(sessions, 10, None)["runs"] if r["id"] == pipeline.id)
    assert row["status"] == "running" and row["progress"] == pytest.approx(0.5 * share)  # not "step 1 of 2 (0%)"
    # the running step's ETA plus the waiting step at the rate measured so far (120 s for its cost)
    assert row["eta_seconds"] == pytest.approx(60 + costs[student.id] * 120 / costs[adapted.id], rel=1e-3)
    assert row["eta"].endswith("(first guess)")  # no step has finished: the rate is the running step's guess
    with sessions.begin() as session:
        step = store.get(session, Run, adapted.id)
        step.started_at, step.finished_at = utcnow() - timedelta(seconds=100), utcnow()
        store.finish_run(session, step, RunStatus.succeeded)
        later = store.get(session, Run, student.id)
        store.start_run(session, later)
        later.stage, later.progress, later.eta_seconds, later.eta_guess = "training", 0.5, 5.0, False
        store.refresh_pipeline(session, pipeline.id)
    at = open_page("runs", run=pipeline.id)
    row = next(r for r in runs_page(sessions, 10, None)["runs"] if r["id"] == pipeline.id)
    assert row["progress"] == pytest.approx(share + 0.5 * (1 - share)) and row["eta"] == "5 s"
    # the CLI says the same: the weighted progress, and no stage that repeats the status
    env = {**os.environ}
    env.pop("REDIS_URL", None)
    listed = subprocess.run([sys.executable, "-m", "app.cli", "runs", "list"], env=env, capture_output=True,
                            text=True, timeout=120, check=True).stdout.splitlines()
    line = next(x for x in listed if x.split()[0] == str(pipeline.id))
    assert line.split()[1:4] == ["pipeline", "running", f"{row['progress']:.0%}"]
    assert line.split("  ")[-1].strip().startswith("step 2 of 2 · ")  # then what the pipeline makes
    done = next(x for x in listed if x.split()[0] == str(adapted.id))
    assert done.split()[1:4] == ["adaptation", "succeeded", "100%"] and "done" not in done
    (bar,) = [p for p in at.get("progress") if p.proto.text.startswith(f"Run {pipeline.id}")]
    assert bar.proto.text == f"Run {pipeline.id} · running: step 2 of 2 · ETA 5 s ({row['progress']:.0%})"
    assert list(at.dataframe[0].value["progress"])[list(at.dataframe[0].value["id"]).index(pipeline.id)] == \
        pytest.approx(100 * row["progress"])


def test_a_model_that_does_not_exist_yet_is_to_come_not_a_model(sessions, tiny, corpus_id, home):
    from worker.evaluation import create_benchmark

    queued = training.create_adaptation(sessions, corpus_id, str(tiny), {"steps": 10, **SMALL})
    create_benchmark(sessions, [f"run:{queued.id}"])  # the catalogue meets the model before it exists
    env = {**os.environ, "ADAPT_DISTILL_HOME": str(home)}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "app.cli", "models", *args], env=env, capture_output=True,
                              text=True, timeout=120)

    listed = json.loads(cli("list", "--json").stdout)
    assert f"run:{queued.id}" not in [m["spec"] for m in listed["models"]]
    assert listed["to_come"] == [{"run_id": queued.id, "kind": "adaptation", "status": "queued"}]
    assert cli("list").stdout.splitlines()[-1] == f"to come: run:{queued.id} (adaptation, queued)"
    shown = cli("show", f"run:{queued.id}")
    assert shown.returncode != 0 and "Traceback" not in shown.stderr and len(shown.stderr.splitlines()) == 1
    assert f"run {queued.id} has not made its model yet (queued)" in shown.stderr and not shown.stdout
    at = open_page("models")
    assert [c.value for c in at.caption if "To come" in c.value] == [
        f":material/hourglass_top: To come, listed here once their runs succeed: run {queued.id} (adaptation, "
        f"queued)."]
    assert all(f"run:{queued.id}" not in str(frame.value.to_dict()) for frame in at.dataframe)


def test_a_student_for_a_latency_budget_is_measured_and_taken(sessions, redis, tiny, corpus_id):
    """Train page: the budget's plan runs (here in this process), its chart shows, and its pick
    becomes the student's shape; a budget nothing meets says so."""
    teacher_run = finished_expansion(sessions, tiny, 94)
    at = open_page("train")
    assert at.selectbox(key="train_teacher").value == f"run:{teacher_run}"
    at.toggle(key="train_plan_open").set_value(True).run()
    at.number_input(key="train_plan_budget").set_value(60_000.0)
    at.number_input(key="train_plan_seq_len").set_value(32)
    at.button(key="train_plan_measure").click().run()
    assert not at.exception and not at.error
    plan_id = at.session_state["train_plan_run"]
    with sessions.begin() as session:
        plan = store.get(session, Run, plan_id)
        assert plan.kind == RunKind.plan and plan.params["teacher"] == f"run:{teacher_run}"
        assert plan.queue == "gpu"  # the default: where a trained student is served
    lifecycle.execute_run(sessions, plan_id)
    at.run()
    assert not at.exception and not at.error
    assert any(c.startswith("The pick: L2-H32") for c in texts(at.caption)), texts(at.caption)
    at.button(key="train_plan_take").click().run()
    shape = at.selectbox(key="train_student")
    assert shape.value == "L2-H32" and shape.format_func("L2-H32") == "L2-H32 · 2 heads, the budget's pick"

    at.number_input(key="train_plan_budget").set_value(0.1)
    at.selectbox(key="train_plan_queue").set_value("cpu")
    at.button(key="train_plan_measure").click().run()
    with sessions.begin() as session:
        assert store.get(session, Run, at.session_state["train_plan_run"]).queue == "cpu"
    lifecycle.execute_run(sessions, at.session_state["train_plan_run"])
    at.run()
    assert any("No shape of this teacher's family answers within 0.10 ms" in w.value for w in at.warning)


def test_a_launch_says_how_long_it_will_take_at_the_speed_measured(sessions, tiny, corpus_id):
    from app.data import train as train_data
    from worker.progress import wall_seconds
    from worker.training import FIRST_GUESS_FLOPS, training_cost

    choices = {"mode": "adapt-then-distill", "corpus_id": corpus_id, "teacher": str(tiny), "adapt_steps": 1000,
               "distill_steps": 1000, **SMALL, "student": "auto"}
    guess = train_data.training_estimate(sessions, choices, 10_000)
    on_gpu = train_data.training_estimate(sessions, choices, 10_000, gpu=True)
    assert guess["speed_runs"] == [] and guess["seconds"] > 0
    assert on_gpu["seconds"] == pytest.approx(guess["seconds"] * FIRST_GUESS_FLOPS["cpu"] / FIRST_GUESS_FLOPS["cuda"])

    run = training.create_adaptation(sessions, corpus_id, str(tiny), {"steps": 4, **SMALL})
    execute(sessions, [run])
    measured = train_data.training_estimate(sessions, choices, 10_000)
    with sessions.begin() as session:
        done = store.get(session, Run, run.id)
        rate = wall_seconds(done) / training_cost(session, done)
    assert measured["speed_runs"] == [run.id]
    adaptation = measured["stages"][0]
    assert adaptation["seconds"] == pytest.approx(6 * adaptation["parameters"] * 1000 * 8 * 32 * rate)
    at = open_page("train")
    assert metric(at, "Time")  # measured: no "first guess" left on the page
    assert any("Time at the speed the last 1 training run measured (run " in c for c in texts(at.caption))


def test_the_runs_table_fits_1280_px_pages_and_filters(sessions, tiny, corpus_id):
    """Every cell fits its column at 1280 px (no "succeede", "evaluati", "150 / 15"); a long list
    pages; kinds and statuses filter it; an evaluation and a benchmark say what they judged."""
    from app.data import runs as runs_data
    from worker.evaluation import add_task, create_benchmark, create_evaluation

    task, _ = add_task(sessions, write_task_csv(tiny.parent / "t.csv"), "classification")
    long_run = training.create_pipeline(sessions, "adapt-then-distill", corpus_id, str(tiny),
                                        {"steps": 150_000, **SMALL}, {"steps": 150_000, **SMALL, **TINY_STUDENT})
    evaluation = create_evaluation(sessions, str(tiny), task.id, {"seeds": 1, "epochs": 1})
    with sessions.begin() as session:
        run = store.get(session, Run, long_run[2].id)
        store.start_run(session, run)
        run.step, run.total_steps, run.eta_seconds, run.eta_guess = 149_999, 150_000, 2 * 86_400 + 3 * 3600, True
        store.finish_run(session, store.get(session, Run, evaluation.id), RunStatus.abandoned, "worker died")
    for _ in range(18):
        create_benchmark(sessions, [str(tiny), "bundled"])
    rows = runs_data.runs_page(sessions, 100, None)["runs"]
    assert sum(runs_data.COLUMN_PX.values()) <= runs_data.TABLE_PX
    for row in runs_data.table_rows(rows):
        for column in ("run", "status", "done", "ETA", "created"):
            assert len(str(row[column])) <= runs_data.fits(column), (column, row[column])
    by_id = {r["id"]: r for r in runs_data.table_rows(rows)}
    assert by_id[long_run[2].id]["done"] == "149,999 / 150,000" and by_id[long_run[2].id]["ETA"] == "~2 d 3 h"
    assert by_id[evaluation.id]["run"] == f"evaluation of {tiny.name}"
    assert by_id[rows[0]["id"]]["run"].startswith(f"benchmark of {tiny.name}, bundled")

    at = open_page("runs")
    assert not at.exception and not at.error
    assert len(at.dataframe[0].value) == 15 and at.number_input(key="runs_page").value == 1
    at.number_input(key="runs_page").set_value(2).run()
    assert list(at.dataframe[0].value["id"]) == [r["id"] for r in rows[15:]]
    at.multiselect(key="runs_kinds").set_value(["evaluation"]).run()
    assert list(at.dataframe[0].value["id"]) == [evaluation.id] and not at.number_input  # one page: no pager
    at.multiselect(key="runs_kinds").set_value([]).run()
    at.multiselect(key="runs_statuses").set_value(["running", "abandoned"]).run()
    assert list(at.dataframe[0].value["id"]) == [evaluation.id, long_run[2].id]  # newest first


def test_a_benchmark_shows_a_formatted_table_and_no_steps(sessions, tiny, corpus_id):
    from worker.evaluation import create_benchmark

    bench = create_benchmark(sessions, [str(tiny)], {"latency_repeats": 30, "throughput_repeats": 2, "warmup": 1,
                                                     "batch_size": 2, "seq_len": 16})
    execute(sessions, [bench])
    at = open_page("runs", run=bench.id)
    assert not at.exception and not at.error
    assert at.dataframe[0].value["done"].iloc[0] == ""  # never "0 / 1,000"
    table = at.dataframe[1]
    assert list(table.value.columns) == ["model", "parameters", "size", "p50 ms", "p95 ms", "seq/s", "speed-up",
                                         "noisy"]
    formats = {k: c["type_config"]["format"] for k, c in json.loads(table.proto.columns).items() if "type_config" in c}
    assert formats["size"] == "%.1f MB" and formats["speed-up"] == "%.1fx"  # "97.1 MB", "4.6x"
    assert table.value["model"].iloc[0] == tiny.name and table.value["speed-up"].iloc[0] == 1.0
    assert any("Measured in cpu · seq 16" in c.value for c in at.caption), [c.value for c in at.caption]


def test_the_runs_page_opens_on_the_run_at_work_not_the_newest(sessions, tiny, corpus_id):
    from worker.evaluation import create_benchmark

    working = training.create_adaptation(sessions, corpus_id, str(tiny), {"steps": 10, **SMALL})
    with sessions.begin() as session:
        store.start_run(session, store.get(session, Run, working.id))
    for _ in range(12):  # newer queued runs push it below the table's first rows
        newest = create_benchmark(sessions, ["bundled"])
    at = open_page("runs")
    assert at.dataframe[0].value["id"].iloc[0] == newest.id
    assert at.selectbox(key="runs_selected").value == working.id


def test_the_runs_page_shows_a_finished_plan(sessions, tiny, corpus_id):
    from worker.planning import create_plan

    plan = create_plan(sessions, str(tiny), 60_000, seq_len=32)
    lifecycle.execute_run(sessions, plan.id)
    at = open_page("runs", run=plan.id)
    assert not at.exception and not at.error
    assert at.get("plotly_chart") and any(c.startswith("The pick: L2-H32") for c in texts(at.caption))
    assert at.subheader[0].value == f"Run {plan.id} · plan for 60000 ms (teacher)"


def test_a_run_at_work_on_a_later_page_keeps_the_page_live_without_a_rerun_loop(sessions, tiny, corpus_id):
    """The table shows a page of runs, the live refresh follows the whole store: a queued run on
    page 2 keeps the page live (and the page is drawn once, not rerun forever)."""
    from worker.evaluation import create_benchmark

    waiting = training.create_adaptation(sessions, corpus_id, str(tiny), {"steps": 10, **SMALL})
    for _ in range(16):
        done = create_benchmark(sessions, ["bundled"])
        with sessions.begin() as session:
            store.finish_run(session, store.get(session, Run, done.id), RunStatus.succeeded)
    at = AppTest.from_file(str(MAIN), default_timeout=30)
    at.switch_page("views/runs.py").run()  # a rerun loop would time out here
    assert not at.exception and not at.error
    assert waiting.id not in list(at.dataframe[0].value["id"]) and at.selectbox(key="runs_selected").value == waiting.id
