"""The Tasks page's reads and writes: labelled tasks as plain dicts, uploads stored then ingested."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from sqlalchemy.orm import Session, sessionmaker

from app.data.common import upload_folder, write_upload
from db import store
from worker import evaluation
from db.models import Task

TASK_UPLOAD_TYPES = ["csv", "tsv", "jsonl", "gz", "conll", "txt", "bio", "iob"]


def add_task_upload(sessions: sessionmaker[Session], type: str, train: tuple[str, bytes | BinaryIO],
                    dev: tuple[str, bytes | BinaryIO] | None = None, test: tuple[str, bytes | BinaryIO] | None = None,
                    name: str | None = None, text_field: str = "text", pair_field: str = "text_pair",
                    label_field: str = "label", seed: int = 0, dev_fraction: float = 0.1,
                    test_fraction: float = 0.1) -> tuple[dict, bool]:
    """Write the uploaded files to storage, store the task, and remove the copies: (task, created)."""
    with upload_folder() as folder:
        paths = {split: write_upload(folder / split, *upload) if upload else None
                 for split, upload in (("train", train), ("dev", dev), ("test", test))}
        task, created = evaluation.add_task(sessions, paths["train"], type, paths["dev"], paths["test"],
                                            (name or "").strip() or Path(train[0]).name, None,
                                            text_field.strip() or "text", pair_field.strip() or "text_pair",
                                            label_field.strip() or "label", int(seed), float(dev_fraction),
                                            float(test_fraction))
    return evaluation.task_dict(task), created


def list_tasks(sessions: sessionmaker[Session]) -> list[dict]:
    """All tasks, newest first; read fresh (one small query), like the corpora."""
    with sessions.begin() as session:
        return [evaluation.task_dict(t) for t in store.rows(session, Task)]


def delete_task(sessions: sessionmaker[Session], task_id: int) -> None:
    evaluation.delete_task(sessions, task_id)


def label_table(task: dict) -> list[dict]:
    """A row per label with its count in each split."""
    labels = list(task["label_counts"].get("train", {}))
    return [{"label": label, **{split: counts.get(label, 0) for split, counts in task["label_counts"].items()}}
            for label in labels]
