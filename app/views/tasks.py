"""Tasks: labelled data to judge models on. Upload train (and dev and test, or have them split off
train), see the labels counted per split, delete."""

import streamlit as st

from app import ui
from app.connections import sessions
from app.data import tasks as tasks_data

FLASH = "tasks_flash"
SPLIT_COUNTS = {split: st.column_config.NumberColumn(format="localized") for split in ("train", "dev", "test")}
TYPES = {"classification": "Sequence classification: CSV, TSV or JSONL with text, label (and text_pair)",
         "ner": "Token classification (NER): CoNLL, a token and its tag per line, a blank line between sentences"}

sm = sessions()
st.title("Tasks")
st.caption("A labelled task is how a model is judged: each model is fine-tuned on train with several seeds, the best "
           "dev epoch is kept, and it is scored on test. Relation classification is sequence classification with "
           "the entity markers inside the text.")


def added(task: dict, created: bool) -> str:
    sizes = ", ".join(f"{split} {n:,}" for split, n in task["sizes"].items())
    return (f"Added task {task['task_id']} '{task['name']}': " if created else
            f"This content already exists as task {task['task_id']} '{task['name']}': ") + sizes + "."


with st.container(border=True):
    st.subheader("Add a task", anchor=False)
    type_ = st.radio("Type", list(TYPES), key="tasks_type", format_func=TYPES.get)
    left, middle, right = st.columns(3)
    name = left.text_input("Name", key="tasks_name", placeholder="the train file's name")
    if type_ == "classification":
        text_field = middle.text_input("Text column", "text", key="tasks_text_field")
        label_field = right.text_input("Label column", "label", key="tasks_label_field")
        pair_field = left.text_input("Second text column (optional)", "text_pair", key="tasks_pair_field",
                                     help="Used when the files have it: sentence pairs, question and passage...")
    else:
        text_field, label_field, pair_field = "text", "label", "text_pair"
    with st.expander("Dev and test split", icon=":material/call_split:"):
        cols = st.columns(3)
        seed = cols[0].number_input("Split seed", 0, 2**31 - 1, 0, key="tasks_seed")
        dev_fraction = cols[1].number_input("Dev share of train", 0.01, 0.5, 0.1, step=0.05, key="tasks_dev_fraction")
        test_fraction = cols[2].number_input("Test share of train", 0.01, 0.5, 0.1, step=0.05,
                                             key="tasks_test_fraction")
        st.caption("Used only for a split whose file you do not give: it is carved out of train, stratified by label "
                   "(labels with fewer than 3 examples stay in train), the same for the same seed.")
    st.session_state.setdefault("tasks_round", 0)
    round_ = st.session_state.tasks_round
    files = st.columns(3)
    train = files[0].file_uploader("Train file", type=tasks_data.TASK_UPLOAD_TYPES, key=f"tasks_train_{round_}")
    dev = files[1].file_uploader("Dev file (optional)", type=tasks_data.TASK_UPLOAD_TYPES, key=f"tasks_dev_{round_}")
    test = files[2].file_uploader("Test file (optional)", type=tasks_data.TASK_UPLOAD_TYPES, key=f"tasks_test_{round_}")
    if st.button("Add task", key="tasks_add", type="primary", icon=":material/add:", disabled=train is None):
        task = ui.store_upload(FLASH, train.name, lambda: tasks_data.add_task_upload(
            sm, type_, (train.name, train), (dev.name, dev) if dev else None, (test.name, test) if test else None,
            name, text_field, pair_field, label_field, seed, dev_fraction, test_fraction), added)
        if task is not None:
            st.session_state.tasks_selected = task["task_id"]
            st.session_state.tasks_round += 1  # empties the uploaders: Streamlit drops the bytes it holds
        st.rerun()
    ui.show_flash(FLASH)

tasks = tasks_data.list_tasks(sm)
st.subheader("Stored tasks", anchor=False)
if not tasks:
    st.info("No task yet: add one above, or try the demo on the Overview page.", icon=":material/label:")
    st.stop()
st.dataframe([{"id": t["task_id"], "name": t["name"], "type": t["type"],
               "labels": len(t["labels"]) if t["type"] == "classification" else len(t["label_counts"]["train"]),
               **t["sizes"], "created": (t["created"] or "")[:16].replace("T", " ") or None} for t in tasks],
             hide_index=True, width="stretch", placeholder="", key="tasks_table",
             column_config={"id": st.column_config.NumberColumn(format="%d", width="small"),
                            "labels": st.column_config.NumberColumn("labels / entity types", format="%d"),
                            **SPLIT_COUNTS, "created": ui.CREATED})

by_id = {t["task_id"]: t for t in tasks}
chosen = ui.choose("Task", by_id, "tasks_selected", lambda i: f"{i} · {by_id[i]['name']}")
task = by_id[chosen]
st.caption(" · ".join(f"{split}: {how}" for split, how in task["origin"].items()))
st.markdown("**Entities per type**" if task["type"] == "ner" else "**Examples per label**")
st.dataframe(tasks_data.label_table(task), hide_index=True, width="stretch", placeholder="", key="tasks_labels",
             column_config=SPLIT_COUNTS)
if st.button(f"Delete task {chosen}", key="tasks_delete", icon=":material/delete:",
             help="Deletes the stored task files and the evaluations on it."):
    with ui.reported():
        tasks_data.delete_task(sm, chosen)
        ui.flash(FLASH, "success", f"Deleted task {chosen} '{task['name']}'.")
        st.rerun()
