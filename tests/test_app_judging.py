"""The Tasks, Experiment and Models pages (and the demo button) through Streamlit's AppTest, with a
real SQLite store, a real Redis and a tiny experiment run for real in this process, and how every
page shows what it shows: blank cells, whole dates, counts, labels that fit. Nothing is mocked."""

from __future__ import annotations

import json
import math
from collections import Counter

import pandas as pd
import pytest
from conftest import tiny_experiment, write_corpus, write_task_csv
from rq.job import Job
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Column, Metric, PageLink
from test_app import MAIN, metric, texts

from db import store
from db.models import Corpus, Run, RunKind, RunStatus, Task
from worker import corpora as corpora_
from worker import evaluation
from worker.lifecycle import execute_run
from worker.queueing.queues import SERIALIZER


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(MAIN), default_timeout=180).run()
    assert not at.exception, at.exception
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, at.exception
    return at


def plotly_charts(at: AppTest) -> list:
    return at.get("plotly_chart")


def frame(at: AppTest, column: str):
    """The first table on the page with this column (AppTest finds tables by position, not key)."""
    for element in at.dataframe:
        if column in element.value.columns:
            return element.value
    raise AssertionError(f"no table with a column '{column}': {[list(e.value.columns) for e in at.dataframe]}")


@pytest.fixture
def finished_experiment(sessions, tmp_path):
    """A tiny experiment (tiny BERT teacher, generated corpus and task) run to the end in this process."""
    runs = tiny_experiment(sessions, tmp_path, seeds=2)
    for run in runs[1:]:
        execute_run(sessions, run.id)
    return {"experiment": runs[0].id, "task": runs[0].params["task_id"], "runs": runs}


def test_tasks_page_adds_counts_refuses_and_deletes(sessions, home, tmp_path):
    at = open_page("tasks")
    assert "No task yet: add one above, or try the demo on the Overview page." in texts(at.info)
    at.file_uploader(key="tasks_train_0").upload("intent.csv", write_task_csv(tmp_path / "t.csv").read_bytes(),
                                                 "text/csv")
    at.run()
    at.button(key="tasks_add").click().run()
    assert not at.exception and not at.error
    assert any(s.startswith("Added task 1 'intent.csv': train ") for s in texts(at.success))
    labels = frame(at, "label")
    assert list(labels["label"]) == ["alpha", "beta", "gamma"] and set(labels.columns) >= {"train", "dev", "test"}
    assert list((home / "uploads").iterdir()) == [], "the upload copies are removed"

    at.radio(key="tasks_type").set_value("ner").run()
    at.file_uploader(key="tasks_train_1").upload("bad.conll", b"word\nother O\n", "text/plain")
    at.run()
    at.button(key="tasks_add").click().run()
    assert [e for e in texts(at.error)] == ["bad.conll: line 1 has no tag column (token and tag per line, separated "
                                            "by whitespace or a tab)"]
    with sessions.begin() as session:
        assert len(store.rows(session, Task)) == 1

    at.button(key="tasks_delete").click().run()
    assert "Deleted task 1 'intent.csv'." in texts(at.success)
    with sessions.begin() as session:
        assert store.rows(session, Task) == []


def test_experiment_and_models_pages_show_the_table_the_chart_and_the_lineage(sessions, redis, finished_experiment):
    experiment_id = finished_experiment["experiment"]
    at = open_page("experiments")
    assert at.selectbox(key="experiments_selected").value == experiment_id
    table = frame(at, "macro_f1")
    assert list(table["model"]) == ["adapted teacher", "base teacher", "general student", "adapt-then-distill",
                                    "distill-then-adapt", "adapt-and-distill"]
    assert table["macro_f1"].notna().all() and table["p50 ms"].notna().all()
    assert table["speed-up"].iloc[0] == pytest.approx(1.0)
    assert any(c.proto.spec and "Pareto front" in c.proto.spec for c in plotly_charts(at))

    at.button(key="experiments_rerun").click().run()
    assert not at.exception and not at.error
    with sessions.begin() as session:
        experiments = store.rows(session, Run, kind=RunKind.experiment, limit=100)
        assert len(experiments) == 2 and experiments[0].params["name"] == "tiny (again)"
        queued = [r for r in store.children(session, experiments[0].id) if r.job_id]
    assert all(Job.exists(r.job_id, connection=redis) for r in queued if r.kind != RunKind.analysis or
               r.status == RunStatus.queued)

    models = open_page("models")
    assert models.selectbox(key="models_task").value == finished_experiment["task"]
    listed = frame(models, "tokens/word")
    assert listed["score"].notna().sum() == 6  # the six models of the experiment are scored on the task
    assert any(c.proto.spec and "Pareto front" in c.proto.spec for c in plotly_charts(models))
    student = next(r.id for r in finished_experiment["runs"] if (r.params or {}).get("strategy") == "adapt-and-distill")
    models.selectbox(key="models_selected").set_value(f"run:{student}").run()
    assert not models.exception
    lineage = models.markdown[0].value
    assert f"run:{student}" in lineage and "adapted" in lineage
    assert models.get("download_button"), "a made model can be downloaded as a zip"
    assert frame(models, "converged")["status"].tolist() == ["succeeded"]

    teacher = next(r.id for r in finished_experiment["runs"] if (r.params or {}).get("strategy") == "adapted teacher")
    models.selectbox(key="models_first").set_value(f"run:{teacher}").run()
    models.selectbox(key="models_second").set_value(f"run:{student}").run()
    diff = frame(models, "setting")
    assert "shape.layers" in list(diff["setting"])  # the student is smaller: its shape differs
    assert not diff["setting"].str.startswith("vocabulary.").any(), "the student shares its teacher's vocabulary"
    models.checkbox(key="models_only_diff").uncheck().run()
    every = frame(models, "setting").set_index("setting")
    shared = every[every.index.str.startswith("vocabulary.")]
    assert {"vocabulary.vocab_size", "vocabulary.added_tokens"} <= set(shared.index)
    assert (shared != "").all().all() and (shared.iloc[:, 0] == shared.iloc[:, 1]).all(), shared
    scores = frame(models, "task")
    assert len(scores) == 1 and scores.iloc[0, 2] is not None

    models.selectbox(key="models_eval_model").set_value("bundled").run()
    models.number_input(key="models_eval_seeds").set_value(1)
    models.button(key="models_eval_launch").click().run()
    assert any(s.startswith("Evaluation queued as run") for s in texts(models.success))
    with sessions.begin() as session:
        queued = store.rows(session, Run, kind=RunKind.evaluation, limit=100)[0]
        assert queued.params["model"] == "bundled" and queued.params["seeds"] == 1
    assert Job.fetch(queued.job_id, connection=redis, serializer=SERIALIZER).origin == "gpu"

    evaluation.delete_task(sessions, finished_experiment["task"])  # the experiment stays readable without it
    at = open_page("experiments")
    assert set(frame(at, "state")["state"]) == {"task deleted"}


def test_the_runs_page_shows_an_evaluations_scores_and_dev_curves(sessions, finished_experiment):
    from test_app_training import open_page as open_runs

    with sessions.begin() as session:
        run = store.rows(session, Run, kind=RunKind.evaluation, limit=100)[-1]
    at = open_runs("runs", run=run.id)
    assert metric(at, "Test macro_f1 (selects)") is not None
    assert any("dev macro_f1" in (c.proto.spec or "") for c in plotly_charts(at))


def test_experiment_launch_checks_and_queues(sessions, redis, tmp_path):
    at = open_page("experiments")
    assert any("An experiment needs a corpus and a labelled task" in i for i in texts(at.info))
    corpora_.add_corpus(sessions, write_corpus(tmp_path / "corpus.txt"))
    evaluation.add_task(sessions, write_task_csv(tmp_path / "task.csv"), "classification")

    at = open_page("experiments")
    assert at.selectbox(key="experiments_teacher").value == "bundled"
    at.selectbox(key="experiments_student").set_value("L6-H384").run()  # the bundled teacher's own shape
    at.button(key="experiments_launch").click().run()
    assert len(at.error) == 1 and "not fewer than the teacher's" in at.error[0].value
    with sessions.begin() as session:
        assert store.rows(session, Run, kind=RunKind.experiment, limit=100) == []
    at.selectbox(key="experiments_student").set_value("auto").run()
    at.number_input(key="experiments_seeds").set_value(1).run()
    assert any("a student per strategy) × 1 seed on task" in c for c in texts(at.caption)), texts(at.caption)
    at.button(key="experiments_launch").click().run()
    assert not at.error, texts(at.error)
    with sessions.begin() as session:
        experiment = store.rows(session, Run, kind=RunKind.experiment, limit=100)[0]
        children = store.children(session, experiment.id)
    assert experiment.params["finetune"]["seeds"] == 1
    assert Counter(c.kind for c in children) == {RunKind.analysis: 1, RunKind.expansion: 1, RunKind.adaptation: 2,
                                                 RunKind.distillation: 3, RunKind.evaluation: 6, RunKind.benchmark: 1}
    assert all(Job.exists(c.job_id, connection=redis) for c in children)


def test_the_demo_button_builds_the_sample_and_queues_an_experiment(sessions, redis):
    at = AppTest.from_file(str(MAIN), default_timeout=300).run()
    at.button(key="home_demo").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert any(s.startswith("Demo experiment ") for s in texts(at.success))
    with sessions.begin() as session:
        corpora, tasks = store.rows(session, Corpus), store.rows(session, Task)
        experiment = store.rows(session, Run, kind=RunKind.experiment, limit=100)[0]
    assert corpora[0].name.startswith("demo") and tasks[0].type == "classification" and len(tasks[0].labels) == 4
    assert tasks[0].sizes == {"train": 720, "dev": 120, "test": 360}  # a test split wide enough for intervals
    assert experiment.params["teacher"] == "bundled" and len(experiment.params["members"]) == 6
    assert experiment.params["finetune"]["seeds"] == 2


def tree(node, parent=None):
    """(element or block, the block holding it) for everything under node."""
    for child in getattr(node, "children", {}).values():
        yield child, node
        yield from tree(child, child)


def test_every_page_leaves_missing_values_blank_and_shows_whole_dates(sessions, finished_experiment):
    vocabulary = open_page("vocabulary")
    assert pd.isna(frame(vocabulary, "gain")["gain"].iloc[0]), "the base vocabulary gains nothing"
    for page in ("corpora", "vocabulary", "tasks", "experiments", "models"):
        at = open_page(page)
        for table in at.dataframe:
            columns = list(table.value.columns)
            assert table.proto.HasField("placeholder") and table.proto.placeholder == "", f"{page} {columns}: 'None'"
            config = json.loads(table.proto.columns)
            if "created" in columns:
                assert config["created"]["type_config"] == {"type": "datetime", "format": "YYYY-MM-DD HH:mm"}
                assert config["created"]["width"] >= 150, f"{page}: the date is cut"
            sizes = [c for name, c in config.items() if "size" in (name, c.get("label"))]
            assert all(c["type_config"]["format"] == "%.1f MB" for c in sizes), f"{page}: {sizes}"  # one way

    corpora = open_page("corpora")
    corpora.button(key="corpora_delete").click().run()
    assert any("its stored text and its 1 vocabulary analysis?" in w for w in texts(corpora.warning))


def test_overview_counts_and_link_labels_are_as_wide_as_they_are(sessions):
    at = AppTest.from_file(str(MAIN), default_timeout=120).run()
    assert not at.exception, at.exception
    held = [(e, block) for e, block in tree(at.main) if isinstance(e, (Metric, PageLink))]
    assert len(held) == 6 + 7
    for element, block in held:
        flex = block.proto.flex_container
        assert not isinstance(block, Column) and flex.direction == flex.HORIZONTAL and flex.wrap, element


def test_the_adaptation_form_has_no_empty_column(sessions, tmp_path):
    corpora_.add_corpus(sessions, write_corpus(tmp_path / "corpus.txt"))
    at = open_page("train")
    at.selectbox(key="train_mode").set_value("adaptation").run()
    assert not at.exception, at.exception
    blocks = [list(getattr(block, "children", {}).values()) for block, _ in tree(at.main)]
    rows = [[[getattr(w, "label", None) for w in c.children.values()] for c in columns]
            for columns in blocks if columns and all(isinstance(c, Column) for c in columns)]
    (row,) = [r for r in rows if ["Adaptation steps"] in r]
    assert row == [["Adaptation steps"], ["Adaptation lr"], ["Batch size"], ["Sequence length"]]


def _fraction(axis, value: float) -> float:
    """Where a value sits on an axis, as a fraction of the plot's height."""
    low, high = axis.range
    return ((math.log10(value) if axis.type == "log" else value) - low) / (high - low)


@pytest.mark.parametrize("gains, threshold", [([0.30, 0.05, 0.008, 0.004], 0.01), ([0.4, 0.35, 0.3, 0.25], 0.05)])
def test_the_curve_chart_keeps_the_gain_labels_off_the_curve(gains, threshold):
    from test_app import _points

    from app.charts import curve_figure

    fig = curve_figure(_points(gains), threshold, 1150)
    (bars,) = [t for t in fig.data if t.type == "bar"]
    (curve,) = [t for t in fig.data if t.name == "P(D)"]
    assert (fig.layout.yaxis.type == "log") == (threshold == 0.01), "both kinds of gain axis"
    tallest = max(_fraction(fig.layout.yaxis, y) for y in bars.y)
    lowest, highest = (f(_fraction(fig.layout.yaxis2, y) for y in curve.y) for f in (min, max))
    assert tallest + 0.1 < lowest, "a label above the tallest bar stays under the lowest P(D) marker"
    assert highest < 0.9, "room above the highest marker for the pick's label"
    lines = [s for s in fig.layout.shapes if s.type == "line" and s.yref == "y domain"]
    assert len(lines) == 2 and all(s.y0 > tallest + 0.05 for s in lines), "the pick and chosen lines miss the labels"
    assert all(tallest + 0.05 < _fraction(fig.layout.yaxis2, t) for t in fig.layout.yaxis2.tickvals)


def test_the_score_chart_keeps_labels_inside_and_apart():
    from app.charts import tradeoff_figure

    rows = [{"label": "adapt-and-distill", "score": 0.80, "score_std": 0.01, "latency_ms_p50": 120, "parameters": 22},
            {"label": "adapt-then-distill", "score": 0.801, "score_std": 0.01, "latency_ms_p50": 125, "parameters": 22},
            {"label": "base teacher", "score": 0.85, "score_std": 0.02, "latency_ms_p50": 490, "parameters": 110}]
    fig = tradeoff_figure(rows, "f1")
    (points,) = [t for t in fig.data if t.name == "models"]
    assert list(points.text) == [r["label"] for r in rows], "every bubble is labelled"
    assert list(points.textposition)[:2] != ["top center", "top center"], "the two close labels do not share a side"
    assert points.cliponaxis is False
    low, high = fig.layout.xaxis.range
    assert low < math.log10(120) - 0.05 and high > math.log10(490) + 0.05, "room for a label at either end"
    for score in (0.80, 0.85):
        assert 0.15 < _fraction(fig.layout.yaxis, score) < 0.85, "room for a label above and below"


def _boxes_apart(places, xs, ys, radii):
    from app.placement import PLOT_PX, _overlap

    boxes = [box for _, box in places]
    bubbles = [(x * PLOT_PX[0] - r, y * PLOT_PX[1] - r, x * PLOT_PX[0] + r, y * PLOT_PX[1] + r)
               for x, y, r in zip(xs, ys, radii)]
    for i, box in enumerate(boxes):
        assert all(_overlap(box, other) == 0 for j, other in enumerate(boxes) if j != i), (i, places)
        assert all(_overlap(box, bubble) == 0 for j, bubble in enumerate(bubbles) if j != i), (i, places)
        assert box[0] >= 0 and box[1] >= 0 and box[2] <= PLOT_PX[0] and box[3] <= PLOT_PX[1], (i, box)


def test_labels_of_crowded_bubbles_do_not_overlap():
    """A demo's six models: three students within a few ms and points of each other, two teachers
    on top of each other. Every label finds a place that meets no other label and no other bubble."""
    from app.placement import bubble_radius, label_places

    xs = [0.12, 0.14, 0.16, 0.13, 0.86, 0.88]
    ys = [0.42, 0.45, 0.40, 0.47, 0.80, 0.78]
    texts = ["run:12", "run:14", "run:15 ⚠", "run:9", "run:4", "bundled"]
    radii = [bubble_radius(p, 110) for p in (22, 22, 22, 22, 110, 110)]
    places = label_places(xs, ys, texts, radii)
    _boxes_apart(places, xs, ys, radii)
    assert len({place for place, _ in places[:4]}) == 4, "the four close students take four sides"


def test_the_models_chart_names_each_model_in_its_legend():
    from app.charts import tradeoff_figure

    rows = [{"label": f"run:{i}", "name": f"run:{i} · a student L{i}-H192 of the adapted teacher (run:2)",
             "score": 0.8 + i / 100, "latency_ms_p50": 10 + i, "parameters": 22} for i in range(3, 7)]
    fig = tradeoff_figure(rows, "f1")
    named = [t for t in fig.data if t.name != "Pareto front"]
    assert [t.name for t in named] == [r["name"] for r in rows] and all(t.showlegend is not False for t in named)
    assert [t.text[0] for t in named] == [r["label"] for r in rows]


def test_the_models_page_exports_a_model_to_onnx_for_serving(sessions, home):
    from conftest import build_tiny_bert

    from worker.catalogue import ensure_model

    tiny = build_tiny_bert(home / "models" / "tiny")
    with sessions.begin() as session:
        ensure_model(session, str(tiny))
    at = open_page("models")
    at.selectbox(key="models_selected").set_value(str(tiny)).run()
    at.selectbox(key="models_onnx_precision").set_value("int8").run()
    at.button(key="models_onnx_export").click().run()
    assert not at.exception and not at.error, at.error
    folder = home / "exports" / "tiny-onnx-int8"
    assert (folder / "model.onnx").is_file() and (folder / "vocab.txt").is_file()
    assert any(c.startswith(f":material/check: int8 export in `{folder}`") for c in texts(at.caption))
    assert at.get("download_button") and any(b.proto.label == "Download the ONNX export"
                                             for b in at.get("download_button"))
    made = (folder / "model.onnx").stat().st_mtime_ns
    at.button(key="models_onnx_export").click().run()  # again: the export made before, not a second one
    assert (folder / "model.onnx").stat().st_mtime_ns == made and not at.error
