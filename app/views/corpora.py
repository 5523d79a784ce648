"""Corpora: upload (stored and ingested at once), list with stats, preview, delete."""

import streamlit as st

from app import data, ui
from app.connections import sessions
from core.corpus import FORMATS

FLASH = "corpora_flash"
AUTO = "from the file name"

sm = sessions()
st.title("Corpora")
st.caption("Domain text the vocabulary is learnt from: one document per line (.txt), or a text field of "
           ".jsonl, .csv or .tsv, optionally gzip-compressed.")

# --- upload: written to storage and ingested as soon as it arrives -----------------------------
with st.container(border=True):
    st.subheader("Add a corpus", anchor=False)
    left, middle, right = st.columns([2, 1, 1])
    name = left.text_input("Name", key="corpora_name", placeholder="the file name",
                           help="How the corpus is listed; defaults to the file name.")
    format = middle.selectbox("Format", [AUTO, *FORMATS], key="corpora_format",
                              help="Normally taken from the file name (.txt, .jsonl, .csv, .tsv, each optionally .gz).")
    text_field = right.text_input("Text field / column", value="text", key="corpora_text_field",
                                  help="For .jsonl: the field with the text. For .csv/.tsv: the column's header.")
    # A fresh key after each upload empties the widget, so Streamlit drops the bytes it holds.
    st.session_state.setdefault("corpora_upload_round", 0)
    upload = st.file_uploader("Corpus file", type=data.UPLOAD_TYPES,
                              key=f"corpora_upload_{st.session_state.corpora_upload_round}")
    if upload is not None:
        try:
            with st.spinner(f"Reading {upload.name}…"):
                corpus, created = data.add_upload(sm, upload.name, upload, name,
                                                  None if format == AUTO else format, text_field)
        except Exception as exc:
            message = ui.error_message(exc)
            if message is None:
                raise
            ui.flash(FLASH, "error", message)
        else:
            if created:
                ui.flash(FLASH, "success", f"Added corpus {corpus['id']} '{corpus['name']}': "
                                           f"{corpus['documents']:,} documents, {ui.human_bytes(corpus['bytes'])}.")
            else:
                ui.flash(FLASH, "info", f"This content already exists as corpus {corpus['id']} '{corpus['name']}'.")
            st.session_state.corpora_selected = corpus["id"]
        st.session_state.corpora_upload_round += 1
        st.rerun()
    ui.show_flash(FLASH)

# --- list ---------------------------------------------------------------------------------------
corpora = data.list_corpora(sm)
st.subheader("Stored corpora", anchor=False)
if not corpora:
    st.info("No corpus yet: upload one above.", icon=":material/upload_file:")
    st.stop()

st.dataframe(
    [{k: c[k] for k in ("id", "name", "documents", "bytes", "words", "distinct_words", "duplicates",
                        "mean_length", "format", "created")} for c in corpora],
    hide_index=True, width="stretch", key="corpora_table",
    column_config={
        "id": st.column_config.NumberColumn("id", format="%d", width="small"),
        "name": st.column_config.TextColumn("name", width="medium"),
        "documents": st.column_config.NumberColumn("documents", format="localized"),
        "bytes": st.column_config.NumberColumn("size", format="bytes"),
        "words": st.column_config.NumberColumn("words", format="localized"),
        "distinct_words": st.column_config.NumberColumn("distinct words", format="localized"),
        "duplicates": st.column_config.NumberColumn("duplicate docs", format="localized"),
        "mean_length": st.column_config.NumberColumn("mean length (chars)", format="%.1f"),
    },
)

# --- one corpus: preview and delete -------------------------------------------------------------
by_id = {c["id"]: c for c in corpora}
if st.session_state.get("corpora_selected") not in by_id:
    st.session_state.corpora_selected = corpora[0]["id"]
chosen = st.selectbox("Corpus", list(by_id), key="corpora_selected",
                      format_func=lambda i: f"{i} · {by_id[i]['name']}")
corpus = by_id[chosen]

preview_tab, delete_tab = st.tabs([":material/visibility: Preview", ":material/delete: Delete"])
with preview_tab:
    with ui.reported():
        lines = data.corpus_preview(sm, corpus["id"])
        st.caption(f"The first {len(lines)} of {corpus['documents']:,} documents as stored "
                   f"(whitespace collapsed), from {corpus['source_name']}.")
        st.dataframe({"document": lines}, width="stretch", key="corpora_preview")

with delete_tab:
    confirming = st.session_state.get("corpora_confirm_delete") == corpus["id"]
    if not confirming:
        if st.button(f"Delete corpus {corpus['id']}…", key="corpora_delete", icon=":material/delete:"):
            st.session_state.corpora_confirm_delete = corpus["id"]
            st.rerun()
    else:
        analyses = data.count_analyses(sm, corpus["id"])
        st.warning(f"Delete corpus {corpus['id']} '{corpus['name']}', its stored text and its {analyses} "
                   f"vocabulary analyses? Expanded models already written stay on disk. This cannot be undone.")
        yes, no = st.columns(2)
        if yes.button("Yes, delete", key="corpora_delete_yes", type="primary"):
            with ui.reported():
                data.delete_corpus(sm, corpus["id"])
                ui.flash(FLASH, "success", f"Deleted corpus {corpus['id']} '{corpus['name']}'.")
            st.session_state.pop("corpora_confirm_delete", None)
            st.rerun()
        if no.button("Cancel", key="corpora_delete_no"):
            st.session_state.pop("corpora_confirm_delete", None)
            st.rerun()
