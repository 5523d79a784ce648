"""Corpora: upload (stored and ingested at once) or import a large file of the server's import
folder on a worker, list with stats, preview, delete."""

import streamlit as st

from app import connections, ui
from app.connections import sessions
from app.data import corpora as corpora_data
from app.data.common import ACTIVE
from core.corpus import FORMATS
from core.formatting import count, table_value
from db import settings
from db.models import RunKind

FLASH, IMPORT_FLASH = "corpora_flash", "corpora_import_flash"
AUTO = "from the file name"

sm = sessions()
st.title("Corpora")
st.caption("Domain text the vocabulary is learnt from: one document per line (.txt), or a text field of "
           ".jsonl, .csv or .tsv, optionally gzip-compressed.")

# --- upload: written to storage and ingested as soon as it arrives -----------------------------

def added(corpus: dict, created: bool) -> str:
    if not created:
        return f"This content already exists as corpus {corpus['id']} '{corpus['name']}'."
    return (f"Added corpus {corpus['id']} '{corpus['name']}': {count(corpus['documents'], 'document')}, "
            f"{ui.human_bytes(corpus['bytes'])}.")


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
    upload = st.file_uploader("Corpus file", type=corpora_data.UPLOAD_TYPES,
                              key=f"corpora_upload_{st.session_state.corpora_upload_round}")
    st.caption(f"Uploads up to {corpora_data.upload_limit_mb():,} MB; larger files: put them in the import folder "
               f"({settings.IMPORT_DIR_ENV}).")
    if upload is not None:
        corpus = ui.store_upload(FLASH, upload.name, lambda: corpora_data.add_upload(
            sm, upload.name, upload, name, None if format == AUTO else format, text_field), added)
        if corpus is not None:
            st.session_state.corpora_selected = corpus["id"]
        st.session_state.corpora_upload_round += 1
        st.rerun()
    ui.show_flash(FLASH)

# --- import: a file of the server's import folder, read by a worker ----------------------------

def import_line(run: dict) -> None:
    what = f"{run['file']} (run {run['run_id']})"
    corpus = run["corpus"]
    if run["status"] == "succeeded" and corpus is not None:
        if run["created"]:
            st.success(f"Imported {what} as corpus {corpus['id']} '{corpus['name']}': "
                       f"{count(corpus['documents'], 'document')}, {ui.human_bytes(corpus['bytes'])}.",
                       icon=":material/check:")
        else:
            st.info(f"Imported {what}: this content already exists as corpus {corpus['id']} '{corpus['name']}'.")
    elif run["status"] == "succeeded":
        st.caption(f"Imported {what} as corpus {run['corpus_id']}, deleted since.")
    elif run["status"] == "failed":
        st.error(f"Import of {what} failed: {run['error']}")
    elif run["status"] in ACTIVE:
        progress = ui.fraction(run["progress"])
        size = f" of {ui.human_bytes(run['source_bytes'])}" if run["source_bytes"] is not None else ""
        st.progress(progress, text=f"Importing {what}: {ui.status_text(run)} ({progress:.0%}{size})")
    else:
        st.warning(f"Import of {what} {run['status']}: {run['error'] or 'no message'}")


def import_lines(runs: list[dict]) -> None:
    for run in runs:
        import_line(run)
    if any(r["status"] == "queued" for r in runs):
        ui.worker_warning(RunKind.corpus_import)


@st.fragment(run_every=2)
def live_imports() -> None:
    """Refreshes itself while an import is under way; on a plain rerun it is simply drawn once."""
    runs = corpora_data.list_imports(sm)
    import_lines(runs)
    if not any(r["status"] in ACTIVE for r in runs):
        st.rerun()  # the whole page: the new corpus joins the list


imports = corpora_data.list_imports(sm)
active = {r["run_id"] for r in imports if r["status"] in ACTIVE}
ended = st.session_state.get("corpora_imports_active", set()) - active
if ended:  # an import followed here has finished: its corpus is the one to show
    made = [r["corpus_id"] for r in imports if r["run_id"] in ended and r["status"] == "succeeded" and r["corpus"]]
    if made:
        st.session_state.corpora_selected = made[0]
st.session_state.corpora_imports_active = active

folder = settings.import_dir()
with st.container(border=True):
    st.subheader("Import a large file from the server", anchor=False)
    if folder is None:
        st.caption(f"For files larger than the upload limit: set {settings.IMPORT_DIR_ENV} to a folder on the "
                   f"server (for the dashboard and the workers), copy the file there and import it here.")
    else:
        st.caption(f"A worker reads the file from the import folder `{folder}` ({settings.IMPORT_DIR_ENV}) in "
                   f"the background: it never passes through the browser.")
        with ui.reported():
            files, truncated = corpora_data.importable_files()
            if not files:
                st.info("The import folder is empty: copy a corpus file (.txt, .jsonl, .csv or .tsv, optionally "
                        ".gz) into it, then reload this page.", icon=":material/folder_open:")
            else:
                sizes = {f["name"]: f["size"] for f in files}
                cols = st.columns([3, 2, 1, 1])
                chosen_file = cols[0].selectbox("File", list(sizes), key="corpora_import_file",
                                                format_func=lambda n: f"{n} · {ui.human_bytes(sizes[n])}")
                import_name = cols[1].text_input("Name", key="corpora_import_name", placeholder="the file name",
                                                 help="How the corpus is listed; defaults to the file name.")
                import_format = cols[2].selectbox("Format", [AUTO, *FORMATS], key="corpora_import_format")
                import_field = cols[3].text_input("Text field / column", value="text", key="corpora_import_field")
                if truncated:
                    st.caption(f"Only the first {len(files):,} files are listed: use subfolders or fewer files.")
                if st.button("Import", key="corpora_import", type="primary", icon=":material/move_to_inbox:"):
                    with ui.reported():
                        run_id, reused = corpora_data.start_import(
                            sm, connections.redis(), chosen_file, import_name,
                            None if import_format == AUTO else import_format, import_field)
                        ui.flash(IMPORT_FLASH, "info" if reused else "success",
                                 f"{chosen_file} is already being imported (run {run_id})." if reused else
                                 f"Import of {chosen_file} queued as run {run_id}.")
                        st.rerun()
    ui.show_flash(IMPORT_FLASH)
    if active:
        live_imports()
    else:
        import_lines(imports)

# --- list ---------------------------------------------------------------------------------------
corpora = corpora_data.list_corpora(sm)
st.subheader("Stored corpora", anchor=False)
if not corpora:
    st.info("No corpus yet: upload one above.", icon=":material/upload_file:")
    st.stop()

st.dataframe(
    [{**{k: c[k] for k in ("id", "name", "documents", "bytes", "words", "distinct_words", "duplicates",
                          "mean_length", "format", "created")}, "bytes": table_value("size", c["bytes"])}
     for c in corpora],
    hide_index=True, width="stretch", placeholder="", key="corpora_table",
    column_config={
        "id": st.column_config.NumberColumn("id", format="%d", width="small"),
        "name": st.column_config.TextColumn("name", width="medium"),
        "documents": st.column_config.NumberColumn("documents", format="localized"),
        "bytes": ui.number_column("size", "size"),
        "words": st.column_config.NumberColumn("words", format="localized"),
        "distinct_words": st.column_config.NumberColumn("distinct words", format="localized"),
        "duplicates": st.column_config.NumberColumn("duplicate docs", format="localized"),
        "mean_length": st.column_config.NumberColumn("mean length (chars)", format="%.1f"),
        "created": ui.CREATED,
    },
)

# --- one corpus: preview and delete -------------------------------------------------------------
by_id = {c["id"]: c for c in corpora}
chosen = ui.choose("Corpus", by_id, "corpora_selected", lambda i: f"{i} · {by_id[i]['name']}")
corpus = by_id[chosen]

preview_tab, tokens_tab, delete_tab = st.tabs([":material/visibility: Preview", ":material/data_array: Tokenized",
                                               ":material/delete: Delete"])
with preview_tab:
    with ui.reported():
        lines = corpora_data.corpus_preview(sm, corpus["id"])
        st.caption(f"The first {len(lines):,} of {count(corpus['documents'], 'document')} as stored "
                   f"(whitespace collapsed), from {corpus['source_name']}.")
        st.dataframe({"document": lines}, width="stretch", placeholder="", key="corpora_preview")

with tokens_tab:
    streams = corpora_data.token_caches(sm, corpus["id"])
    if not streams:
        st.caption("Not tokenized yet: the first training run on this corpus tokenizes it once per tokenizer and "
                   "every later run maps that stream.")
    else:
        st.caption(f"{count(len(streams), 'token stream')}, {ui.human_bytes(sum(c['bytes'] for c in streams))} "
                   f"in the data folder's token cache; runs read them memory-mapped instead of tokenizing again.")
        st.dataframe([{"tokenizer": c["tokenizer"], "tokens": c["tokens"], "ids": c["dtype"],
                       "size": table_value("size", c["bytes"])}
                      for c in streams], hide_index=True, placeholder="", key="corpora_tokens",
                     column_config={"tokens": st.column_config.NumberColumn(format="localized"),
                                    "size": ui.number_column("size")})
        if st.button("Drop the token streams", key="corpora_drop_tokens", icon=":material/delete_sweep:",
                     help="The next training run on this corpus tokenizes it again."):
            with ui.reported():
                freed = corpora_data.drop_token_caches(sm, corpus["id"])
                ui.flash(FLASH, "success", f"Dropped the token streams of corpus {corpus['id']} "
                                           f"({ui.human_bytes(freed)} freed).")
                st.rerun()

with delete_tab:
    confirming = st.session_state.get("corpora_confirm_delete") == corpus["id"]
    if not confirming:
        if st.button(f"Delete corpus {corpus['id']}…", key="corpora_delete", icon=":material/delete:"):
            st.session_state.corpora_confirm_delete = corpus["id"]
            st.rerun()
    else:
        analyses = corpora_data.count_analyses(sm, corpus["id"])
        st.warning(f"Delete corpus {corpus['id']} '{corpus['name']}', its stored text and its "
                   f"{count(analyses, 'vocabulary analysis', 'vocabulary analyses')}? This cannot be undone (a "
                   f"corpus that models were built from is kept).")
        yes, no = st.columns(2)
        if yes.button("Yes, delete", key="corpora_delete_yes", type="primary"):
            with ui.reported(lambda message: ui.flash(FLASH, "error", message)):  # shown after the rerun
                corpora_data.delete_corpus(sm, corpus["id"])
                ui.flash(FLASH, "success", f"Deleted corpus {corpus['id']} '{corpus['name']}'.")
            st.session_state.pop("corpora_confirm_delete", None)
            st.rerun()
        if no.button("Cancel", key="corpora_delete_no"):
            st.session_state.pop("corpora_confirm_delete", None)
            st.rerun()
