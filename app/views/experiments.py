"""Experiment: the paper's table on your own data. One launch runs the base teacher, the expanded and
adapted teacher and a student by each strategy with the same budget, fine-tunes every model on
the task with several seeds and benchmarks them side by side; the result is one table and one
chart of score against latency. Experiments stay: reopen, re-run and compare them."""

import streamlit as st

from app import budget, charts, connections, ui
from app.connections import sessions
from app.data import corpora as corpora_data
from app.data import experiments as experiments_data
from app.data import tasks as tasks_data
from app.data import train as train_data
from app.data.common import ACTIVE, duration
from core.checks import SEQUENCE_TOKENS
from core.configs import PRESETS, STRATEGIES
from core.formatting import count, points_difference, score_interval, seeds_spread, table_value
from core.judge.contamination import warning_lines

FLASH = "experiments_flash"
STRATEGY_HELP = {"adapt-then-distill": "adapt the teacher, then distil it into a fresh student",
                 "distill-then-adapt": "distil a general student, then adapt it",
                 "adapt-and-distill": "adapt the teacher and the general student, then distil one into the other"}

sm = sessions()
st.title("Experiment")
st.caption("The paper's comparison on your corpus and task: is the adapted teacher better than the general one, and "
           "how much of that does each strategy's student keep while being smaller and faster?")
ui.show_flash(FLASH)


def launch_form() -> None:
    corpora = {c["id"]: c for c in corpora_data.list_corpora(sm)}
    tasks = {t["task_id"]: t for t in tasks_data.list_tasks(sm)}
    if not corpora or not tasks:
        st.info("An experiment needs a corpus and a labelled task: add them on the Corpora and Tasks pages, or try "
                "the demo on the Overview page.", icon=":material/science:")
        return
    d = experiments_data.EXPERIMENT_DEFAULTS
    cols = st.columns(2)
    corpus_id = cols[0].selectbox("Corpus", list(corpora), key="experiments_corpus",
                                  format_func=lambda i: f"{i} · {corpora[i]['name']}")
    task_id = cols[1].selectbox("Task", list(tasks), key="experiments_task",
                                format_func=lambda i: f"{i} · {tasks[i]['name']} ({tasks[i]['type']})")
    teachers = [m for m in train_data.model_choices(sm) if m["kind"] in ("bundled", "expansion")]
    labels = {m["spec"]: m["label"] for m in teachers}
    teacher = st.selectbox("Teacher", list(labels), key="experiments_teacher", format_func=labels.get,
                                help="The general model. Its vocabulary is expanded at the analysis's pick first "
                                     "(an expansion chosen here is used as it is).")
    budget.planner("experiments", teacher, "experiments_student")
    strategies = st.multiselect("Strategies", list(STRATEGIES), default=d["strategies"], key="experiments_strategies",
                                format_func=lambda s: f"{s}: {STRATEGY_HELP[s]}")
    cols = st.columns([2, 1, 1, 1])  # the shape's box wide enough for its whole label
    student = cols[0].selectbox("Student shape", budget.offered(["auto", *PRESETS]), key="experiments_student",
                                format_func=lambda p: "half the teacher (default)" if p == "auto"
                                else f"{p} · {PRESETS[p][2]} heads" if p in PRESETS else f"{p} · the budget's pick")
    adapt_steps = cols[1].number_input("Adaptation steps", 1, 10_000_000, d["adapt_steps"], step=100,
                                       key="experiments_adapt_steps", help="Each adaptation gets these steps.")
    distill_steps = cols[2].number_input("Distillation steps", 1, 10_000_000, d["distill_steps"], step=100,
                                         key="experiments_distill_steps", help="Each distillation gets these steps.")
    seeds = cols[3].number_input("Fine-tuning seeds", 1, 20, d["seeds"], key="experiments_seeds")
    cols = st.columns(4)
    batch = cols[0].number_input("Batch size", 1, 4096, d["batch_size"], key="experiments_batch")
    seq_len = cols[1].number_input("Sequence length", *SEQUENCE_TOKENS, d["seq_len"], step=32, key="experiments_seq_len")
    epochs = cols[2].number_input("Most fine-tuning epochs", 1, 100, d["epochs"], key="experiments_epochs",
                                  help="Early stopping on dev usually ends a seed sooner.")
    name = cols[3].text_input("Name", key="experiments_name", placeholder="optional")
    general = bool({"distill-then-adapt", "adapt-and-distill"} & set(strategies))
    st.caption(f"Fine-tunes {count(2 + general + len(strategies), 'model')} (the base and the adapted teacher, "
               + ("the general student, " if general else "") + f"a student per strategy) × "
               f"{count(int(seeds), 'seed')} on task {task_id}, then benchmarks them together.")
    if st.button("Launch experiment", key="experiments_launch", type="primary", icon=":material/science:",
                 disabled=not strategies):
        with ui.reported():
            experiment_id = experiments_data.start_experiment(sm, connections.redis(), {
                "corpus_id": corpus_id, "task_id": task_id, "teacher": teacher, "strategies": strategies,
                "student": student, "adapt_steps": adapt_steps, "distill_steps": distill_steps, "seeds": seeds,
                "batch_size": batch, "seq_len": seq_len, "epochs": epochs, "name": name})
            ui.flash(FLASH, "success", f"Experiment {experiment_id} queued.")
            st.session_state.experiments_selected = experiment_id
            st.rerun()


def result_table(view: dict) -> None:
    rows = view["rows"]
    metric = rows[0]["metric"] if rows else "score"
    st.dataframe(
        [{"model": r["role"], "run": r["model"], metric: r["score"], "95% interval": score_interval(r["score_ci95"]),
          "seeds": seeds_spread(r["seeds"], r["score_std"]),
          "vs base teacher": points_difference(r["difference"], r["difference_ci95"]),
          "parameters": table_value("parameters", r["parameters"]), "size": table_value("size", r["size_bytes"]),
          "p50 ms": r["latency_ms_p50"],
          "seq/s": r["throughput_per_s"], "speed-up": r["speedup"], "noisy": "⚠" if r.get("noisy") else "",
          "state": r["evaluation_status"] if r["score"] is None else
          ("converged" if r["converged"] else "⚠ still improving")} for r in rows],
        hide_index=True, width="stretch", placeholder="", key="experiments_table",
        column_config={metric: st.column_config.NumberColumn(format="%.4f", help="test, mean over seeds"),
                       "95% interval": st.column_config.TextColumn(
                           help="over the test examples and seeds: 1,000 seeded bootstrap resamples of both, the "
                                "mean over the drawn seeds scored on the drawn examples"),
                       "seeds": st.column_config.TextColumn(help="fine-tuning seeds, and the standard deviation of "
                                                                 "the score over them"),
                       "vs base teacher": st.column_config.TextColumn(
                           help="the score minus the base teacher's, in points (hundredths), on the same test "
                                "examples and seeds, with its 95% interval over the same resamples"),
                       "parameters": ui.number_column("parameters"),
                       "size": ui.number_column("size"),
                       "p50 ms": ui.number_column("latency", help="latency at batch 1"),
                       "seq/s": ui.number_column("throughput", help="throughput at batch 32"),
                       "speed-up": ui.number_column("speedup", help="p50 latency against the adapted teacher"),
                       "state": st.column_config.TextColumn(
                           help="still improving: the best dev epoch of a seed was its last; more epochs could "
                                "change the score")})
    contexts = sorted({r["speed_context"] for r in rows if r.get("speed_context")})
    if contexts:
        noisy = [r["role"] for r in rows if r.get("noisy")]
        st.caption(f"Speed measured in {' and '.join(contexts)}: at least 30 batch-1 forwards per model, the models "
                   "interleaved after a warm-up, torch pinned to those threads. "
                   + (f"⚠ Noisy (other work changed the machine's load, or p95 over 3x p50): {', '.join(noisy)}; "
                      "benchmark again on a quiet machine before comparing their speed." if noisy else
                      "No measurement was flagged noisy."))
    verdicts = [r["verdict"] for r in rows if r.get("verdict")]
    if verdicts:
        st.markdown("\n".join(f"- {v[0].upper()}{v[1:]}." for v in verdicts))
    if view.get("summary"):
        st.warning(view["summary"], icon=":material/balance:")
    if view.get("seed_note"):
        st.caption(view["seed_note"][0].upper() + view["seed_note"][1:] + ".")
    if view.get("baseline"):
        b = view["baseline"]
        st.caption(f"The floor: always answering train's most common label, '{b['label']}', scores {metric} "
                   f"{b['score']:.4f} (accuracy {b['accuracy']:.4f}) on the {b['test_examples']:,} test examples.")
    figure = charts.tradeoff_figure(experiments_data.chart_rows([view]), metric)
    if figure is not None:
        st.plotly_chart(figure, key="experiments_chart", config={"displaylogo": False})


def runs_table(view: dict) -> None:
    st.dataframe([{"run": r["run_id"], "kind": r["kind"], "what": r["subject"], "status": r["status"],
                   "stage": r["stage"], "progress": 100 * (r["progress"] or 0), "wall time": duration(r["seconds"])}
                  for r in view["runs"]], hide_index=True, width="stretch", placeholder="", key="experiments_runs",
                 column_config={"progress": st.column_config.ProgressColumn(min_value=0, max_value=100,
                                                                            format="%.0f%%")})


def experiment_body(experiment_id: int) -> dict:
    view = experiments_data.experiment_view(sm, experiment_id)
    if view["status"] in ACTIVE:
        eta = view["eta_seconds"]
        left = (f" · about {duration(eta)} left" + (" (first guess)" if view["eta_guess"] else "")
                if eta is not None else " · time left: known once its first run finishes")
        st.progress(ui.fraction(view["progress"]),
                    text=f"Experiment {experiment_id} · {view['status']} · {view['stage']}{left}")
    elif view["error"]:
        st.warning(f"Experiment {experiment_id} {view['status']}: {view['error']}. The rows that finished are shown; "
                   f"resume the failed run on the Runs page.")
    if found := warning_lines(view.get("contamination")):  # the task's dev or test text in a corpus behind the models
        st.warning("  \n".join(found), icon=":material/content_copy:")
    result_table(view)
    with st.expander("Its runs", icon=":material/list:"):
        runs_table(view)
    return view


@st.fragment(run_every=3)
def live_body(experiment_id: int, status: str) -> None:
    view = experiment_body(experiment_id)
    if view["status"] != status:
        st.rerun()


with st.expander("New experiment", expanded=not experiments_data.list_experiments(sm), icon=":material/add:"):
    launch_form()

experiments = experiments_data.list_experiments(sm)
if not experiments:
    st.stop()
by_id = {e["experiment_id"]: e for e in experiments}
if "experiments_select_next" in st.session_state:  # set by an action below the selectbox, on the last run
    st.session_state.experiments_selected = st.session_state.pop("experiments_select_next")
chosen = ui.choose("Experiment", by_id, "experiments_selected",
                   lambda i: f"{i} · {by_id[i]['name']} · {by_id[i]['status']}")
status = by_id[chosen]["status"]
if status in ACTIVE:
    live_body(chosen, status)
else:
    experiment_body(chosen)
if status not in ACTIVE and st.button("Run again with the same settings", key="experiments_rerun",
                                     icon=":material/replay:"):
    with ui.reported():
        new = experiments_data.rerun(sm, connections.redis(), chosen)
        ui.flash(FLASH, "success", f"Experiment {new} queued with the settings of experiment {chosen}.")
        st.session_state.experiments_select_next = new
        st.rerun()

if len(experiments) > 1:
    st.subheader("Compare experiments", anchor=False)
    picked = st.multiselect("Experiments", list(by_id), default=list(by_id)[:2], key="experiments_compare",
                            format_func=lambda i: f"{i} · {by_id[i]['name']}")
    if picked:
        views = [experiments_data.experiment_view(sm, i) for i in picked]
        metric = next((r["metric"] for v in views for r in v["rows"]), "score")
        points, others = experiments_data.one_context(experiments_data.chart_rows(views))
        figure = charts.tradeoff_figure(points, metric, group_key="experiment")
        if figure is not None:
            st.plotly_chart(figure, key="experiments_compare_chart", config={"displaylogo": False})
        if others:
            st.caption("Not on this chart, as their speed was measured otherwise: " + "; ".join(others) + ".")
        st.dataframe([{"experiment": v["experiment_id"], "model": r["role"], metric: r["score"],
                       "95% interval": score_interval(r["score_ci95"]), "seeds": seeds_spread(r["seeds"], r["score_std"]),
                       "p50 ms": r["latency_ms_p50"], "parameters": r["parameters"]}
                      for v in views for r in v["rows"]], hide_index=True, width="stretch", placeholder="",
                     key="experiments_compare_table")
