"""Overview: what exists, what is running, where to go next."""

import streamlit as st

from app import data, ui
from app.connections import sessions
from core import settings

sm = sessions()
st.title("adapt-distill")
st.markdown(
    "Grow a general BERT's vocabulary for your domain, adapt it, and distil it into a small fast model "
    "(Adapt-and-Distill, Yao et al. 2021). **1.** Add a domain corpus. **2.** Find how many domain tokens "
    "are worth adding from the corpus occurrence-probability curve, and write the expanded model. **3.** Adapt "
    "it to the corpus and distil it into a small student, then watch, cancel or resume the runs."
)

summary = data.overview(sm)
analyses = summary["runs"].get("analysis", {})
expansions = summary["runs"].get("expansion", {})
cols = st.columns(4)
cols[0].metric("Corpora", summary["corpora"])
cols[1].metric("Vocabulary analyses", sum(analyses.values()), help=", ".join(f"{n} {s}" for s, n in analyses.items()))
cols[2].metric("Expanded models", expansions.get("succeeded", 0))
cols[3].metric("Queued or running", summary["active"])

links = st.columns(4)
links[0].page_link("views/corpora.py", label="Corpora: upload, inspect, delete", icon=":material/library_books:")
links[1].page_link("views/vocabulary.py", label="Vocabulary: curve, pick, expand", icon=":material/insights:")
links[2].page_link("views/train.py", label="Train: adapt and distil", icon=":material/model_training:")
links[3].page_link("views/runs.py", label="Runs: watch, cancel, resume", icon=":material/monitoring:")

st.caption(f":material/folder: Data folder (ADAPT_DISTILL_HOME): `{settings.home()}`")

st.subheader("Recent runs", anchor=False)
if not summary["recent"]:
    st.caption("Nothing has run yet.")
for run in summary["recent"]:
    detail = run["error"] if run["status"] == "failed" else run["stage"]
    size = f" · {run['vocab_size']:,} tokens" if run["vocab_size"] else ""
    st.markdown(f"{ui.status_badge(run['status'])} run {run['run_id']} · {run['kind']}{size} · "
                f"{run['created']} · {detail}")
