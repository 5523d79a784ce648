"""Runs: every run with its status and progress, live while any is queued or running; one run's
loss curves, results, settings, lineage and log, with cancel, resume and run again."""

import json

import streamlit as st

from app import budget, charts, connections, ui
from app.connections import sessions
from app.data import runs as runs_data
from app.data.common import ACTIVE
from core.formatting import parameters, score_interval, seeds_spread, speedup
from db.models import RunKind
from worker.queueing.queues import redis_url

FLASH = "runs_flash"
PAGE = 15  # rows a page of the table shows, all of them visible without scrolling the table
ROW_PX = 35  # the height of a table row (and of its header) in Streamlit's data grid
RESUMABLE = ("cancelled", "failed", "abandoned")

sm = sessions()
st.title("Runs")
st.caption("Corpus imports, vocabulary analyses, expansions, adaptations, distillations and pipelines, newest first. "
           "A run whose worker stopped answering is marked abandoned; resume continues it from its last checkpoint.")


def runs_table(runs: list[dict], key: str = "runs_table") -> None:
    """The runs as a table that fits a 1280 px wide window without cutting a cell (runs_data.table_rows)."""
    st.dataframe(runs_data.table_rows(runs), hide_index=True, width="stretch", key=key, placeholder="",
                 height=ROW_PX * (len(runs) + 1) + 3,  # every row of the page in view, none behind a scroll
                 column_config={
                     "id": st.column_config.NumberColumn("id", format="%d", width=runs_data.COLUMN_PX["id"]),
                     "run": st.column_config.TextColumn("run", width=runs_data.COLUMN_PX["run"],
                                                        help="what the run makes or judges"),
                     "status": st.column_config.TextColumn("status", width=runs_data.COLUMN_PX["status"]),
                     "progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=100,
                                                                 format="%.0f%%",
                                                                 width=runs_data.COLUMN_PX["progress"]),
                     "done": st.column_config.TextColumn("done", width=runs_data.COLUMN_PX["done"],
                                                         help="steps done of all (an evaluation's: over all seeds)"),
                     "ETA": st.column_config.TextColumn("ETA", width=runs_data.COLUMN_PX["ETA"],
                                                        help="time left; ~ marks a first guess"),
                     "created": st.column_config.TextColumn("created", width=runs_data.COLUMN_PX["created"]),
                 })


def filters() -> tuple[list[str], list[str]]:
    """The kinds and statuses the table shows (none chosen: all)."""
    left, right = st.columns(2)
    chosen_kinds = left.multiselect("Kinds", runs_data.KIND_NAMES, key="runs_kinds", placeholder="all kinds")
    chosen_statuses = right.multiselect("Statuses", runs_data.STATUS_NAMES, key="runs_statuses",
                                        placeholder="all statuses")
    return chosen_kinds, chosen_statuses


def pager(total: int) -> int:
    """The page of the list shown (0 first, the newest); a page control only when there is more than one."""
    pages = max(1, -(-total // PAGE))
    if st.session_state.get("runs_page", 1) > pages:
        st.session_state.runs_page = 1
    if pages == 1:
        return 0
    left, right = st.columns([1, 3], vertical_alignment="bottom")
    page = left.number_input(f"Page (of {pages})", min_value=1, max_value=pages, step=1, key="runs_page")
    right.caption(f"{total:,} runs, {PAGE} a page, newest first.")
    return int(page) - 1


def select(run_id: int) -> None:
    """Show another run: the selectbox and the address (?run=ID) follow."""
    st.session_state.runs_selected = run_id
    st.session_state.runs_query_seen = str(run_id)
    st.query_params["run"] = str(run_id)


def link(ref: dict, key: str) -> None:
    st.button(f"run {ref['id']} · {runs_data.run_label(ref)} · {ref['status']}", key=key, on_click=select,
              args=(ref["id"],),
              type="tertiary", icon=":material/arrow_forward:")


def progress_line(view: dict) -> None:
    parts = [ui.status_text({"status": view["status"], "stage": view["stage"]})]
    if view["done"]:
        parts.append("step " + view["done"].replace(" / ", " of "))
    if view["eta"]:
        parts.append(f"ETA {view['eta']}")
    if view["latest_loss"] is not None:
        parts.append(f"loss {view['latest_loss']:.4g}")
    st.progress(view["progress"], text=f"Run {view['id']} · " + " · ".join(parts) + f" ({view['progress']:.0%})")


def curves(run_id: int) -> None:
    history = runs_data.metric_history(sm, run_id)
    loss = charts.loss_figure(history)
    if loss is None:
        st.caption("No loss recorded yet.")
        return
    st.plotly_chart(loss, key="runs_loss", config={"displaylogo": False})
    lr = charts.lr_figure(history)
    if lr is not None:
        st.plotly_chart(lr, key="runs_lr", config={"displaylogo": False})


def log_section(run_id: int) -> None:
    lines = runs_data.log_tail(run_id, 40)
    st.markdown("**Log** (the last 40 lines)")
    if lines:
        st.code("\n".join(lines), language=None)
    else:
        st.caption(f"No log yet (runs/{run_id}/run.log).")


def steps_section(view: dict) -> None:
    st.markdown("**Steps** (open one from the lineage below)")
    runs_table(view["children"], key="runs_steps")


def body(view: dict) -> None:
    """Progress, curves and log (or a pipeline's steps, or an evaluation's dev curve)."""
    run_id = view["id"]
    if view["status"] in ACTIVE:
        progress_line(view)
    if view["kind"] in runs_data.PARENTS:
        steps_section(view)
    elif view["kind"] in runs_data.TRAINABLE:
        curves(run_id)
        log_section(run_id)
    elif view["kind"] == RunKind.evaluation.value:
        metric = view["params"].get("metric") or runs_data.evaluation_metric(sm, run_id)
        curve = charts.dev_curves_figure(runs_data.metric_history(sm, run_id), metric) if metric else None
        if curve is not None:
            st.plotly_chart(curve, key="runs_dev_curve", config={"displaylogo": False})
        else:
            st.caption("No epoch has finished yet.")
        log_section(run_id)


def evaluation_results(result: dict) -> None:
    test, metric = result["test"], result["metric"]
    names = [k for k, v in test.items() if isinstance(v, float) and not k.endswith("_std")]
    intervals = test.get("ci95") or {}
    cols = st.columns(max(1, len(names)))
    for col, name in zip(cols, names):
        col.metric(f"Test {name}" + (" (selects)" if name == metric else ""), f"{test[name]:.4f}",
                   delta=seeds_spread(test.get("seeds"), test.get(f"{name}_std")) or None,
                   delta_color="off", delta_arrow="off",
                   help=f"95% interval over the test examples and seeds: {score_interval(intervals[name])}"
                   if name in intervals else None)
    if intervals:
        st.caption(f"95% interval of the {metric}: {score_interval(intervals.get(metric))}, over 1,000 seeded "
                   f"bootstrap resamples of the test examples and the seeds.")
    st.caption(f"Learning rate {result['lr']:.1e}; " + ("every seed reached its best dev epoch before the last."
                                                        if result.get("converged") else
                                                        "a seed was still improving at its last epoch: more epochs "
                                                        "may score higher."))


def benchmark_results(result: dict) -> None:
    """The models side by side as the Models page shows speed: sizes in MB, speed-ups as '4.6x'."""
    st.dataframe(runs_data.benchmark_rows(result), hide_index=True, width="stretch", key="runs_bench",
                 placeholder="", column_config={
                     "parameters": ui.number_column("parameters", help="the encoder's, what is timed"),
                     "size": ui.number_column("size", help="the model folder on disk"),
                     "p50 ms": ui.number_column("latency", help="latency at batch 1"),
                     "p95 ms": ui.number_column("latency"),
                     "seq/s": ui.number_column("throughput", help="throughput at the batch size"),
                     "speed-up": ui.number_column("speedup", help="p50 latency of the first model over this one's"),
                 })
    if result.get("context"):
        st.caption(f"Measured in {result['context']}, side by side; the Models page compares them with the other "
                   f"models measured the same way.")


def results(view: dict) -> None:
    result = view["result"]
    if not result:
        return
    if view["kind"] == RunKind.evaluation.value:
        evaluation_results(result)
        return
    if view["kind"] == RunKind.benchmark.value:
        benchmark_results(result)
        return
    if view["kind"] == RunKind.plan.value:
        budget.show_plan(result, None, f"runs_{view['id']}")
        return
    cols = st.columns(4)

    def change(label: str, before: float | None, after: float | None, help: str) -> None:
        if after is None or not cols:
            return
        delta = f"{after - before:+.3g} from {before:.4g}" if before is not None else None
        cols.pop(0).metric(label, f"{after:.4g}", delta=delta, delta_color="inverse", help=help)

    change("Training loss", result.get("first_loss"), result.get("last_loss"), "first and last logged step")
    change("Held-out MLM loss", result.get("heldout_loss_before"), result.get("heldout_loss"),
           "on the held-out blocks, before and after training")
    change("Held-out relation loss", result.get("heldout_relation_loss_before"), result.get("heldout_relation_loss"),
           "the MiniLM loss on the held-out blocks, before and after training")
    if result.get("tokens_per_second"):
        cols.pop(0).metric("Training tokens/s", f"{result['tokens_per_second']:,.0f}",
                           help="Tokens of the training blocks processed per second of training (batch x sequence "
                                "length x steps / seconds), held-out evaluations and checkpoints included; the "
                                "setup before the first step (loading, tokenizing) is not.")
    if result.get("student_parameters") and cols:
        teacher = result.get("teacher_parameters")
        ratio = teacher / result["student_parameters"] if teacher else None
        cols.pop(0).metric("Student parameters", parameters(result["student_parameters"]),
                           delta=f"{speedup(ratio)} smaller than the teacher" if ratio else None,
                           delta_color="off", delta_arrow="off")
    timing = result.get("timing") or {}
    if timing.get("step_s"):
        parts = [f"{timing['step_s']:.3g} s per step"]
        for name, key, noun in (("evaluation_s", "evaluations", "held-out evaluation"),
                                ("checkpoint_s", "checkpoints", "checkpoint")):
            if timing.get(name):
                parts.append(f"{timing[name]:.3g} s per {noun} ({timing[key]:,})")
        st.caption("Measured in the last attempt, as the ETA counts them: " + ", ".join(parts) + ".")
    st.caption(f":material/folder: Model written to `{result.get('output_dir') or view['output_dir']}`")
    if result.get("mlm_head_started_untrained") or result.get("mlm_head_was_fresh"):  # the latter: older runs
        warm = result.get("head_warmup_steps")
        st.caption("The model had no trained MLM head: " + (f"the new head trained alone for {warm:,} steps, the "
                   "encoder frozen, before the run." if warm else "a new one trained with the encoder."))
    if result.get("mlm_head_trained") is False:
        st.caption("The student's MLM head was not trained (MLM weight 0): fine-tune it on a task, or distil with "
                   "an MLM weight before using it to fill masks.")
    if result.get("resumed_from"):
        st.caption(f"Resumed from step {result['resumed_from']:,}.")


def lineage(view: dict) -> None:
    rid = view["id"]
    if view["corpus"]:
        corpus = view["corpus"]
        st.markdown(f"Corpus {corpus['id']} · {corpus['name']} ({corpus['words']:,} words)")
    for item in view["inputs"]:
        if item["run"]:
            st.markdown(f"{item['role'].capitalize()}: `{item['spec']}`")
            link(item["run"], f"runs_input_{rid}_{item['role']}")
        else:
            st.markdown(f"{item['role'].capitalize()}: `{item['spec']}`")
    groups = [("Part of", [view["parent"]] if view["parent"] else []), ("Waits on", view["depends_on"]),
              ("Feeds", view["dependents"]), ("Steps", view["children"])]
    for title, refs in groups:
        if refs:
            st.markdown(f"**{title}**")
            for ref in refs:
                link(ref, f"runs_{title.replace(' ', '_').lower()}_{ref['id']}")
    if not (view["corpus"] or view["inputs"] or any(refs for _, refs in groups)):
        st.caption("This run has no recorded inputs or related runs.")


def actions(view: dict) -> None:
    rid, status, kind = view["id"], view["status"], view["kind"]
    shown = [status in ACTIVE, kind in runs_data.RESUMABLE_KINDS and status in RESUMABLE,
             (kind in runs_data.TRAINABLE or kind == RunKind.pipeline.value) and status not in ACTIVE]
    if not any(shown):
        return
    row = st.container(horizontal=True)
    cancel, resume, again = (row if s else None for s in shown)
    if cancel and cancel.button("Cancel", key="runs_cancel", icon=":material/stop_circle:"):
        with ui.reported(), st.spinner(f"Stopping run {rid}: a running job saves a checkpoint first…"):
            runs_data.cancel_run(sm, connections.redis() if redis_url() else None, rid)
            ui.flash(FLASH, "info", f"Run {rid} cancelled."
                     + (" Resume continues it from its last checkpoint." if kind in runs_data.RESUMABLE_KINDS else ""))
            st.rerun()
    if resume and resume.button("Resume", key="runs_resume", icon=":material/play_arrow:"):
        with ui.reported():
            runs_data.resume_run(sm, connections.redis(), rid)
            ui.flash(FLASH, "success", f"Run {rid} queued to resume from its last checkpoint.")
            st.rerun()
    if again and again.button("Run again", key="runs_again", icon=":material/replay:"):
        with ui.reported():
            new = runs_data.run_again(sm, connections.redis(), rid)
            ui.flash(FLASH, "success", f"Run {rid} again with the same settings: queued "
                     + ", ".join(f"run {r['run_id']} ({r['kind']})" for r in new) + ".")
            st.query_params["run"] = str(new[0]["run_id"])  # selected on the rerun
            st.rerun()


def choose() -> int | None:
    """The run to show: ?run=ID from a link or a typed address, else the last choice, else the newest."""
    wanted = st.query_params.get("run")
    if wanted and wanted != st.session_state.get("runs_query_seen"):
        st.session_state.runs_query_seen = wanted
        if wanted.isdigit():
            st.session_state.runs_selected = int(wanted)
    return st.session_state.get("runs_selected")


def header(view: dict) -> None:
    st.subheader(f"Run {view['id']} · {runs_data.run_label(view)}", anchor=False)
    note = ui.stage_note(view["status"], view["stage"])
    attempt = f" · attempt {view['attempt']}" if view["attempt"] > 1 else ""
    st.markdown(f"{ui.status_badge(view['status'])}" + (f" {note}" if note else "") + f" · created {view['created']}"
                + (f" · started {view['started']}" if view["started"] else "")
                + (f" · finished {view['finished']}" if view["finished"] else "") + attempt)
    if view["error"] and view["status"] == "failed":
        st.error(f"Run {view['id']} failed: {view['error']}")
    elif view["error"] and view["status"] in ("cancelled", "abandoned"):
        st.warning(f"Run {view['id']} {view['status']}: {view['error']}")


def page() -> bool:
    """The whole page from one read of the store; whether a run is still queued or running."""
    if not runs_data.any_run(sm):
        st.info("Nothing has run yet.", icon=":material/hourglass_empty:")
        st.page_link("views/train.py", label="Start a training run", icon=":material/model_training:")
        return False
    chosen_kinds, chosen_statuses = filters()
    page_number = st.session_state.get("runs_page", 1) - 1
    snapshot = runs_data.runs_page(sm, PAGE, choose(), chosen_kinds, chosen_statuses, page_number)
    if not snapshot["runs"] and page_number:  # the filters left fewer pages
        st.session_state.runs_page, page_number = 1, 0
        snapshot = runs_data.runs_page(sm, PAGE, choose(), chosen_kinds, chosen_statuses, 0)
    runs, view = snapshot["runs"], snapshot["view"]
    if runs:
        runs_table(runs)
    else:
        st.caption("No run of these kinds and statuses.")
    pager(snapshot["total"])
    if view is None:  # a link to a run that does not exist (any more): say so, show the newest
        st.error(f"no run with id {st.session_state.runs_selected}", icon=":material/error:")
        st.session_state.runs_selected = None
        view = runs_data.runs_page(sm, PAGE, None)["view"]
    # No status in the labels: a browser keeps an option's first label while its value stays chosen.
    labels = {r["id"]: f"{r['id']} · {runs_data.run_label(r)} · {r['created']}" for r in runs}
    labels.setdefault(view["id"], f"{view['id']} · {runs_data.run_label(view)} · {view['created']}")  # not listed
    st.session_state.runs_selected = view["id"]
    st.selectbox("Run", list(labels), key="runs_selected", format_func=labels.get,
                 on_change=lambda: select(st.session_state.runs_selected))
    header(view)
    actions(view)
    ui.show_flash(FLASH)
    if view["status"] == "succeeded":
        results(view)
    body(view)
    settings_tab, lineage_tab = st.tabs([":material/settings: Settings", ":material/account_tree: Lineage"])
    with settings_tab:
        st.json(json.dumps(view["params"]), expanded=True)
        detail = {"queue": view["queue"], "job": view["job_id"], "worker": view["worker"], "output": view["output_dir"]}
        st.caption(" · ".join(f"{k}: `{v}`" for k, v in detail.items() if v))
    with lineage_tab:
        lineage(view)
    return snapshot["active"] or view["status"] in ACTIVE  # the whole store's, as any_active: no rerun loop


@st.fragment(run_every=2)
def live_page() -> None:
    """Refreshes itself every 2 s while something is queued or running; once nothing is, the page
    reruns once as a plain page (no refreshing)."""
    if not page():
        st.rerun()


if runs_data.any_active(sm):
    live_page()
else:
    page()
