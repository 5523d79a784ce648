"""Vocabulary: start an analysis, follow it, read the occurrence-probability curve, move the pick
with the threshold, compare tokenizations at any size, and write the expanded model."""

from pathlib import Path

import streamlit as st

from app import charts, connections, tokenization, ui
from app.connections import sessions
from app.data import corpora as corpora_data
from app.data import vocabulary as vocabulary_data
from app.data.common import ACTIVE
from core.configs import VocabConfig
from core.formatting import count, table_value, tokens_per_word
from core.model_io import BUNDLED
from db.models import RunKind

FLASH, EXPAND_FLASH = "vocab_flash", "vocab_expand_flash"

sm = sessions()
st.title("Vocabulary")
st.caption("How many domain tokens are worth adding? P(D), the mean log-probability of a document, rises as "
           "tokens learnt from the corpus are added; the pick is the first size whose gain falls to the threshold.")


@st.fragment(run_every=2)
def live_progress(analysis_id: int) -> None:
    """Refreshes itself while the page is open; on a plain rerun it is simply drawn once."""
    view = vocabulary_data.analysis_view(sm, analysis_id)
    if view["status"] not in ACTIVE:
        st.rerun()  # the whole page: results or the error replace the progress bar
    progress = ui.fraction(view["progress"])
    st.progress(progress, text=f"Analysis {analysis_id} {ui.status_text(view)} ({progress:.0%})")
    if view["status"] == "queued":
        ui.worker_warning(RunKind.analysis)


def expansion_line(run: dict) -> None:
    size = f"{run['vocab_size']:,} tokens" if run["vocab_size"] else "?"
    if run["status"] == "succeeded":
        st.success(f"Run {run['run_id']} · {size} · written to `{run['output_dir']}`", icon=":material/check:")
        st.page_link("views/train.py", label="Train with this model", icon=":material/model_training:",
                     query_params={"teacher": f"run:{run['run_id']}"})
        if run["note"]:
            st.caption(f"Note: {run['note']}.")
    elif run["status"] == "failed":
        st.error(f"Run {run['run_id']} · {size} · failed: {run['error']}")
    elif run["status"] in ACTIVE:
        progress = ui.fraction(run["progress"])
        st.progress(progress, text=f"Run {run['run_id']} · {size} · {ui.status_text(run)}")
    else:
        st.warning(f"Run {run['run_id']} · {size} · {run['status']}")


@st.fragment(run_every=2)
def live_expansions(analysis_run_id: int) -> None:
    runs = vocabulary_data.list_expansions(sm, analysis_run_id)
    for run in runs:
        expansion_line(run)
    if not any(r["status"] in ACTIVE for r in runs):
        st.rerun()
    if any(r["status"] == "queued" for r in runs):
        ui.worker_warning(RunKind.expansion)


def pick_section(view: dict) -> tuple[dict, float]:
    """The threshold control and what it picks: (picked point, threshold)."""
    aid, points = view["id"], view["points"]
    key = f"vocab_threshold_{aid}"  # in percent, like every gain the page shows
    st.session_state.setdefault(key, view["threshold"] * 100)
    cols = st.columns([1.3, 1, 1, 1, 1])
    threshold = cols[0].number_input(
        "Threshold (relative gain, %)", min_value=0.01, max_value=99.99, step=0.5, format="%.2f", key=key,
        help="Pick the first size whose gain is this many percent or less. Moves the pick along the stored "
             "curve; nothing is recomputed.") / 100
    picked, reached = charts.pick_point(points, threshold)
    gain = picked["relative_gain"]
    cols[1].metric("Picked size", f"{picked['vocab_size']:,}")
    cols[2].metric("Added tokens", f"+{picked['added_tokens']:,}")
    cols[3].metric("Gain at pick", "n/a" if gain is None else f"{gain:.2%}")
    cols[4].metric("Tokens per word", tokens_per_word(picked['tokens_per_word']),
                   delta=f"{picked['tokens_per_word'] - points[0]['tokens_per_word']:+.3f} vs base",
                   delta_color="inverse")
    if reached:
        st.caption(f"Picked by the paper's rule: the first size whose gain is {threshold:.2%} or less "
                   f"(gains compared as shown, to 0.01%).")
    else:
        least = min((p for p in points if p["relative_gain"] is not None), key=lambda p: p["relative_gain"],
                    default=None)
        smallest = f" (the smallest is {least['relative_gain']:.2%}, at {least['vocab_size']:,})" if least else ""
        st.warning(f"No candidate gains {threshold:.2%} or less{smallest}: the largest one is picked. "
                   f"A larger maximum may find the knee.", icon=":material/trending_up:")
    for note in view["analysis_notes"]:
        st.caption(f"Note: {note}.")
    return picked, threshold


def curve_section(points: list[dict], picked: dict, threshold: float, chosen: int) -> None:
    st.plotly_chart(charts.curve_figure(points, threshold, chosen), key="vocab_curve", config={"displaylogo": False})
    st.dataframe(
        [{"vocab size": p["vocab_size"], "added": p["added_tokens"], "log P(D)": p["log_occurrence"],
          "gain": p["relative_gain"], "tokens/word": p["tokens_per_word"], "split share": p["split_word_share"],
          "embedding params": table_value("parameters", p["embedding_params"]), "pick": "★" if p["vocab_size"] == picked["vocab_size"] else ""}
         for p in points],
        hide_index=True, width="stretch", placeholder="", key="vocab_points",
        column_config={
            "vocab size": st.column_config.NumberColumn(format="localized"),
            "added": st.column_config.NumberColumn(format="localized"),
            "log P(D)": st.column_config.NumberColumn(format="%.4f"),
            "gain": st.column_config.NumberColumn(format="percent", help="(P_prev - P_now) / P_prev"),
            "tokens/word": ui.number_column("tokens_per_word"),
            "split share": st.column_config.NumberColumn(format="percent",
                                                         help="word occurrences split into 2+ pieces"),
            "embedding params": ui.number_column("parameters", help="parameters the embeddings gain"),
        },
    )


def compare_section(view: dict, corpus_id: int, available: int) -> int:
    """The size chooser and the base and expanded tokenizations side by side; the chosen size."""
    base = view["base_vocab_size"]
    st.subheader("Try a size", anchor=False)
    left, right = st.columns([1, 3])
    size = left.number_input(
        "Vocabulary size", min_value=base + 1, max_value=base + available, step=max(1, view["step"] // 10),
        key=f"vocab_size_{view['id']}",
        help=f"Defaults to the pick; any size from {base + 1:,} to {base + available:,}.")
    left.caption(f"base {base:,} + {count(size - base, 'new token')}")
    text_key = f"vocab_text_{corpus_id}"
    if text_key not in st.session_state:  # start from the corpus's own text
        with ui.reported():
            st.session_state[text_key] = " ".join(corpora_data.corpus_preview(sm, corpus_id, 3))[:400]
    text = right.text_area("Text to tokenize", key=text_key, height=100)
    with ui.reported():
        base_tok = tokenization.base_tokenizer(view["base_model"])
        expanded_tok = tokenization.expanded_tokenizer(view["base_model"], view["tokens_path"], size - base)
        unk = base_tok.token_to_id(getattr(base_tok.model, "unk_token", "[UNK]"))
        before, after = tokenization.tokenize(base_tok, text), tokenization.tokenize(expanded_tok, text)
        change = f" ({(len(after) - len(before)) / len(before):+.0%})" if before else ""
        base_col, expanded_col = st.columns(2)
        with base_col:
            st.markdown(f"**Base** ({base:,} tokens): **{len(before):,}** tokens")
            st.markdown(tokenization.chips_html(before, base, unk), unsafe_allow_html=True)
        with expanded_col:
            st.markdown(f"**Expanded** ({size:,} tokens): **{len(after):,}** tokens{change}, "
                        f":orange-background[new tokens] highlighted")
            st.markdown(tokenization.chips_html(after, base, unk), unsafe_allow_html=True)
    return size


def expansion_section(view: dict, size: int) -> None:
    st.subheader("Expanded model", anchor=False)
    st.caption("Writes the base model with the new tokens appended; each new embedding is the mean of the "
               "base embeddings of the pieces the base tokenizer splits it into. Runs on a worker.")
    if st.button(f"Create expanded model at {size:,} tokens", key="vocab_expand", type="primary",
                 icon=":material/library_add:"):
        with ui.reported():
            run_id, reused = vocabulary_data.start_expansion(sm, connections.redis(), view["id"], size)
            ui.flash(EXPAND_FLASH, "info", f"Run {run_id} already makes this model at {size:,} tokens: reused, "
                     f"nothing copied (it is run:{run_id} on the Train page)." if reused else
                     f"Expansion queued as run {run_id}.")
            st.rerun()
    ui.show_flash(EXPAND_FLASH)
    runs = vocabulary_data.list_expansions(sm, view["run_id"])
    if any(r["status"] in ACTIVE for r in runs):
        live_expansions(view["run_id"])
    else:
        for run in runs:
            expansion_line(run)


def results(view: dict, corpus_id: int) -> None:
    """A finished analysis: threshold and pick, curve and points, tokenizations, expansion."""
    tokens = vocabulary_data.incremental_tokens(view)
    picked, threshold = pick_section(view)
    # The chosen size follows the pick whenever the pick moves; in between the user may change it.
    size_key, pick_key = f"vocab_size_{view['id']}", f"vocab_size_pick_{view['id']}"
    if st.session_state.get(pick_key) != picked["vocab_size"] or size_key not in st.session_state:
        st.session_state[size_key] = st.session_state[pick_key] = picked["vocab_size"]
    curve_section(view["points"], picked, threshold, st.session_state[size_key])
    size = compare_section(view, corpus_id, len(tokens))
    expansion_section(view, size)


# --- choose a corpus and an analysis ------------------------------------------------------------
by_id = ui.corpora_or_stop(corpora_data.list_corpora(sm))
top = st.columns(2)
corpus_id = ui.choose("Corpus", by_id, "vocab_corpus",
                      lambda i: f"{i} · {by_id[i]['name']} ({count(by_id[i]['documents'], 'document')})", top[0])

analyses = vocabulary_data.list_analyses(sm, corpus_id)
# No status in the labels: a browser keeps an option's first label while its value stays chosen, so
# "running" would stay in the box after the analysis finished; the progress bar or the results say it.
short = {a["id"]: Path(a["base_model"]).name if Path(a["base_model"]).is_absolute() else a["base_model"]
         for a in analyses}  # a folder by its name: the whole label shows in half the page
labels = {a["id"]: f"{a['id']} · {short[a['id']]} · step {a['step']:,} · max {a['max_added']:,}" for a in analyses}
if "vocab_pending" in st.session_state:  # set by "Start analysis" on the previous run
    st.session_state.vocab_analysis = st.session_state.pop("vocab_pending")
if st.session_state.get("vocab_analysis") not in labels:
    st.session_state.vocab_analysis = analyses[0]["id"] if analyses else None
analysis_id = top[1].selectbox("Analysis", list(labels), key="vocab_analysis", format_func=labels.get,
                               placeholder="none yet", disabled=not analyses)

with st.expander("New analysis", expanded=not analyses, icon=":material/add_chart:"):
    with st.form("vocab_new", border=False):
        cols, vocab = st.columns(5), VocabConfig()
        base = cols[0].text_input("Base model", value=BUNDLED, key="vocab_base",
                                  help="'bundled' (all-MiniLM-L6-v2), a model folder under the data folder or "
                                       "ADAPT_DISTILL_MODEL_DIRS, or a hub id (when ADAPT_DISTILL_ALLOW_HUB=1).")
        step = cols[1].number_input("Step", min_value=1, value=vocab.step, step=1_000, key="vocab_step",
                                    help="Tokens added from one candidate to the next (paper: 10,000).")
        max_added = cols[2].number_input("Maximum added", min_value=1, value=vocab.max_added, step=1_000,
                                         key="vocab_max", help="Most tokens to add.")
        threshold = cols[3].number_input("Threshold (%)", min_value=0.01, max_value=99.99,
                                         value=vocab.threshold * 100, step=0.5,
                                         format="%.2f", key="vocab_new_threshold",
                                         help="Pick the first candidate gaining this many percent or less "
                                              "(the paper: 1%).") / 100
        min_frequency = cols[4].number_input("Minimum frequency", min_value=1, value=vocab.min_frequency,
                                             key="vocab_min_frequency",
                                             help="Least frequency of a word the trainer learns from.")
        started = st.form_submit_button("Start analysis", type="primary", icon=":material/play_arrow:")
    if started:
        with ui.reported():
            new_id, reused = vocabulary_data.start_analysis(sm, connections.redis(), corpus_id, base, step,
                                                            max_added, threshold, min_frequency)
            st.session_state.vocab_pending = new_id
            st.session_state[f"vocab_threshold_{new_id}"] = threshold * 100
            ui.flash(FLASH, "info" if reused else "success",
                     f"An identical analysis ({new_id}) is already done or under way: showing it. The threshold "
                     f"only moves the pick, so nothing is recomputed." if reused else f"Analysis {new_id} queued.")
            st.rerun()
ui.show_flash(FLASH)

if analysis_id is None:
    st.info("No analysis of this corpus yet: set the options above and start one.", icon=":material/insights:")
    st.stop()

with ui.reported():
    view = vocabulary_data.analysis_view(sm, analysis_id)
    if view["status"] in ACTIVE:
        live_progress(analysis_id)
    elif view["status"] == "failed":
        st.error(f"Analysis {analysis_id} failed: {view['error']}")
    elif view["status"] == "cancelled":
        st.warning(f"Analysis {analysis_id} was cancelled.")
    else:
        results(view, corpus_id)
