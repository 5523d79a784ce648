""""A student for a latency budget", on the Train and Experiment pages: type the budget, measure the
teacher's student shapes on a worker (a plan run), see them as a chart and take the pick."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import streamlit as st

from app import charts, connections, ui
from app.connections import sessions
from app.data import planning as planning_data
from app.data.common import ACTIVE
from app.placement import label_places
from core.formatting import latency_ms, parameters, speedup
from core.judge.plan import PERCENTILES

PICKED = "planned_shapes"  # session state: the shapes plans picked, offered beside the presets


MEETS, MISSES, TEACHER = "#2ca02c", "#bbbbbb", "#1f5fbf"


def plan_figure(plan: dict) -> go.Figure:
    """A plan's measured shapes: latency at the budget's percentile against parameters, those within
    the budget green, the budget a dashed line, the pick and the teacher labelled."""
    pct, budget = plan["percentile"], plan["budget_ms"]
    candidates = plan["candidates"]
    fig = go.Figure()
    for meets, color, name in ((True, MEETS, "within the budget"), (False, MISSES, "over it")):
        shown = [c for c in candidates if c["meets"] == meets]
        fig.add_trace(go.Scatter(
            x=[c["layer_parameters"] / 1e6 for c in shown], y=[c["latency_ms"] for c in shown], mode="markers",
            name=name,
            marker=dict(color=color, size=9, line=dict(color="white", width=1)), text=[c["shape"] for c in shown],
            hovertemplate=f"%{{text}}<br>%{{x:.2f}}M parameters in its layers<br>p{pct} %{{y:.2f}} ms<extra></extra>"))
    marked = [(plan["teacher"], TEACHER, "teacher")] + ([(plan["pick"], charts.PICK, "pick")] if plan["pick"] else [])
    points = [*candidates, *(shape for shape, _, _ in marked)]
    widest = max(p["layer_parameters"] / 1e6 for p in points) * 1.08 or 1.0
    latencies = [p["latency_ms"] for p in points] + [budget]  # the budget's line within the axis too
    low, high = math.log10(min(latencies)) - 0.15, math.log10(max(latencies)) + 0.15  # room for labels
    places = label_places([p["layer_parameters"] / 1e6 / widest for p in points],
                          [(math.log10(p["latency_ms"]) - low) / (high - low) for p in points],
                          [""] * len(candidates) + [f"{role} {shape['shape']}" for shape, _, role in marked],
                          [4.5] * len(candidates) + [6.5] * len(marked))[len(candidates):]
    for (shape, color, role), (place, _) in zip(marked, places):
        fig.add_trace(go.Scatter(
            x=[shape["layer_parameters"] / 1e6], y=[shape["latency_ms"]], mode="markers+text", name=role,
            text=[f"{role} {shape['shape']}"], textposition=place, cliponaxis=False,
            marker=dict(color=color, size=13, symbol="diamond", line=dict(color="white", width=1)),
            hovertemplate=f"%{{text}}<br>%{{x:.2f}}M parameters in its layers<br>p{pct} %{{y:.2f}} ms<extra></extra>"))
    fig.add_hline(y=budget, line=dict(color=charts.PICK, dash="dash", width=1))
    # On a log axis an annotation's y is the exponent (add_hline's own annotation takes the value and
    # stretched the axis to 10^budget)
    fig.add_annotation(x=1, xref="paper", xanchor="right", y=math.log10(budget), yref="y", yanchor="top",
                       text=f"budget {budget:g} ms", showarrow=False, font=dict(color=charts.PICK))
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=30, b=10), plot_bgcolor="white",
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))
    fig.update_xaxes(title_text="parameters in the layers, embeddings left out (M)", showgrid=False,
                     range=[0, widest])
    ticks = [m * 10.0 ** e for e in range(math.floor(low), math.ceil(high) + 1) for m in (1, 2, 5)]
    fig.update_yaxes(title_text=f"p{pct} latency at batch 1 (ms, log scale)", type="log", showgrid=True,
                     gridcolor="#eee", range=[low, high], tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])
    return fig


def planned_shapes() -> list[str]:
    """The shapes plans picked in this session ('L1-H224'), newest first."""
    return list(st.session_state.get(PICKED, []))


def take(shape: str, key: str) -> None:
    """Offer the pick as a shape and choose it in the select box `key`."""
    st.session_state[PICKED] = [shape, *[s for s in planned_shapes() if s != shape]]
    st.session_state[key] = shape


def planner(prefix: str, teacher: str, shape_key: str) -> None:
    """The expander: settings, a Measure button that queues a plan run, its progress, its chart and
    a button taking the pick into the select box `shape_key`."""
    # A toggle, not an expander: the Experiment page's form is inside one, and expanders do not nest.
    if not st.toggle("A student for a latency budget", key=f"{prefix}_plan_open",
                     help="Measure which student shape answers within a latency budget, and use it."):
        return
    with st.container(border=True):
        st.caption("Times student shapes of this teacher's family (its head size and FFN ratio, random weights: "
                   "speed does not depend on them) on the worker that would serve them, like a benchmark, and "
                   "picks the largest within the budget.")
        cols = st.columns(5)
        budget = cols[0].number_input("Budget (ms)", 0.1, 60_000.0, 10.0, step=1.0, key=f"{prefix}_plan_budget",
                                      help="Latency of one sequence (batch 1).")
        percentile = cols[1].selectbox("Percentile", PERCENTILES, index=PERCENTILES.index(95),
                                       key=f"{prefix}_plan_percentile", format_func=lambda p: f"p{p}")
        threads = cols[2].number_input("Threads", 1, 256, 1, key=f"{prefix}_plan_threads",
                                       help="torch threads, as one serving worker gets")
        seq_len = cols[3].number_input("Sequence length", 8, 8192, 128, step=32, key=f"{prefix}_plan_seq_len")
        queue = cols[4].selectbox("Measured on", planning_data.QUEUES, key=f"{prefix}_plan_queue",
                                  format_func=lambda q: f"{q} workers",
                                  help="The queue whose workers would serve the student: they time the shapes.")
        if st.button("Measure", key=f"{prefix}_plan_measure", icon=":material/speed:", disabled=not teacher):
            with ui.reported():
                st.session_state[f"{prefix}_plan_run"] = planning_data.start_plan(
                    sessions(), connections.redis(), teacher, budget, percentile, int(threads), int(seq_len), queue)
        run_id = st.session_state.get(f"{prefix}_plan_run")
        if run_id is not None:
            plan_view(run_id, shape_key, prefix)


def plan_view(run_id: int, shape_key: str, prefix: str) -> None:
    state = planning_data.plan_state(sessions(), run_id)
    if state["status"] in ACTIVE:
        live_plan(run_id, shape_key, prefix)
        return
    if state["status"] != "succeeded":
        st.error(f"Plan run {run_id} {state['status']}: {state['error'] or 'see the Runs page'}",
                 icon=":material/error:")
        return
    show_plan(state["result"], shape_key, prefix)


@st.fragment(run_every=2)
def live_plan(run_id: int, shape_key: str, prefix: str) -> None:
    state = planning_data.plan_state(sessions(), run_id)
    if state["status"] in ACTIVE:
        st.progress(ui.fraction(state["progress"]), text=f"Plan run {run_id} · {state['status']}"
                    + (f": {state['stage']}" if state["stage"] and state["stage"] != state["status"] else ""))
    else:
        st.rerun()


def show_plan(plan: dict, shape_key: str | None, prefix: str) -> None:
    """The plan's chart and pick; with shape_key, a button taking the pick into that select box."""
    st.plotly_chart(plan_figure(plan), key=f"{prefix}_plan_chart", config={"displaylogo": False})
    pick, teacher, pct = plan["pick"], plan["teacher"], plan["percentile"]
    setting = plan["setting"]
    where = (f"Measured on {setting['device']} ({setting['cpu_model']}), {setting['threads']} thread(s), "
             f"sequence length {setting['seq_len']}, {setting['repeats']} forwards per shape.")
    if pick is None:
        st.warning(f"No shape of this teacher's family answers within {latency_ms(plan['budget_ms'])} at p{pct}: "
                   f"raise the budget, shorten the sequences or give it more threads. {where}",
                   icon=":material/timer_off:")
        return
    st.caption(f"The pick: {pick['shape']} ({parameters(pick['parameters'])} parameters, "
               f"{parameters(pick['layer_parameters'])} in its layers), p{pct} "
               f"{latency_ms(pick['latency_ms'])} within {latency_ms(plan['budget_ms'])}; the teacher's p{pct} is "
               f"{latency_ms(teacher['latency_ms'])}, {speedup(teacher['latency_ms'] / pick['latency_ms'])} the "
               f"pick's. {where}")
    if shape_key is not None:
        st.button(f"Use {pick['shape']}", key=f"{prefix}_plan_take", icon=":material/check:", on_click=take,
                  args=(pick["shape"], shape_key))
    else:
        st.caption(f"Distil it with `--student {pick['shape']}`, or choose it on the Train page's **A student for a "
                   f"latency budget**.")


def offered(options: list[str]) -> list[str]:
    """The shape options with the plans' picks after them (once each)."""
    return options + [s for s in planned_shapes() if s not in options]

