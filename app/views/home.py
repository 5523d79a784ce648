"""Overview: what exists, what is running, where to go next."""

import streamlit as st

from app import connections, ui
from app.connections import sessions
from app.data import experiments as experiments_data
from app.data import home as home_data
from db import settings
from db.models import RunKind
from worker.demo import DEMO_EXPERIMENT, DEMO_MINUTES

sm = sessions()
st.title("adapt-distill")
st.markdown(
    "Grow a general BERT's vocabulary for your domain, adapt it, and distil it into a small fast model "
    "(Adapt-and-Distill, Yao et al. 2021). **1.** Add a domain corpus. **2.** Find how many domain tokens "
    "are worth adding from the corpus occurrence-probability curve, and write the expanded model. **3.** Adapt "
    "it to the corpus and distil it into a small student, then watch, cancel or resume the runs. **4.** Judge the "
    "models on a labelled task: scores, size and speed side by side, the paper's three strategies compared."
)

with st.container(border=True):
    st.markdown("**No data of your own yet?** The demo builds a corpus and a labelled task on this machine from the "
                "docstrings of the installed Python packages (which package is this docstring from?) and queues a "
                "small experiment on them: all three strategies on the bundled model, each model fine-tuned with "
                f"{DEMO_EXPERIMENT['finetune']['seeds']} seeds. It took **about {DEMO_MINUTES} minutes** on a quiet "
                "2-core CPU (a GPU worker is faster; other work on the machine makes it slower).")
    if st.button("Try the demo", key="home_demo", icon=":material/play_circle:"):
        bar = st.progress(0.0, text="Building the sample corpus and task from the installed packages…")
        with ui.reported():
            experiment_id = experiments_data.start_demo(
                sm, connections.redis(), lambda stage, fraction: bar.progress(min(1.0, fraction),
                                                                              text=f"{stage[0].upper()}{stage[1:]}…"))
            ui.flash("home_flash", "success", f"Demo experiment {experiment_id} queued: follow it on the Experiment "
                                              f"page.")
            st.session_state.experiments_selected = experiment_id
            st.rerun()
    ui.show_flash("home_flash")
    if "experiments_selected" in st.session_state:
        st.page_link("views/experiments.py", label="Open the Experiment page", icon=":material/science:")

summary = home_data.overview(sm)
analyses = summary["runs"].get(RunKind.analysis.value, {})
expansions = summary["runs"].get(RunKind.expansion.value, {})
with st.container(horizontal=True, key="home_counts"):  # each label as wide as it is, wrapping
    st.metric("Corpora", f"{summary['corpora']:,}")
    st.metric("Vocabulary analyses", f"{sum(analyses.values()):,}",
              help=", ".join(f"{n:,} {s}" for s, n in analyses.items()))
    st.metric("Expanded models", f"{expansions.get('succeeded', 0):,}")
    st.metric("Tasks", f"{summary['tasks']:,}")
    st.metric("Experiments", f"{sum(summary['runs'].get(RunKind.experiment.value, {}).values()):,}")
    st.metric("Queued or running", f"{summary['active']:,}")

with st.container(horizontal=True, key="home_links"):  # each link as wide as its label, wrapping
    st.page_link("views/corpora.py", label="Corpora: upload, inspect, delete", icon=":material/library_books:")
    st.page_link("views/vocabulary.py", label="Vocabulary: curve, pick, expand", icon=":material/insights:")
    st.page_link("views/train.py", label="Train: adapt and distil", icon=":material/model_training:")
    st.page_link("views/runs.py", label="Runs: watch, cancel, resume", icon=":material/monitoring:")
    st.page_link("views/tasks.py", label="Tasks: labelled data to judge on", icon=":material/label:")
    st.page_link("views/experiments.py", label="Experiment: the paper's table", icon=":material/science:")
    st.page_link("views/models.py", label="Models: scores, size, speed", icon=":material/view_in_ar:")

st.caption(f":material/folder: Data folder (ADAPT_DISTILL_HOME): `{settings.home()}`")

st.subheader("Recent runs", anchor=False)
if not summary["recent"]:
    st.caption("Nothing has run yet.")
for run in summary["recent"]:
    detail = run["error"] if run["status"] == "failed" else run["stage"]
    size = f" · {run['vocab_size']:,} tokens" if run["vocab_size"] else ""
    st.markdown(f"{ui.status_badge(run['status'])} run {run['run_id']} · {run['kind']}{size} · "
                f"{run['created']} · {detail}")
