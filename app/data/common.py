"""What several pages' data share: how times and sizes read, a run as a plain dict, the model
folders the dashboard may read, uploads stored for a moment, and queueing runs."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from db import settings
from db.models import Run
from worker import progress

# A sessionmaker is cached (st.cache_data's hash_funcs) by the database it talks to.
BY_DATABASE = {sessionmaker: lambda sessions: str(sessions.kw["bind"].url)}
ACTIVE = tuple(status.value for status in progress.ACTIVE)  # queued, running


def when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else ""


def compact_count(n: int | None) -> str:
    """'6.3K', '22.7M', '1.2B' parameters; '?' when unknown."""
    if n is None:
        return "?"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:,.1f}{unit}"
    return f"{n:,}"


def duration(seconds: float | None) -> str:
    """'45 s', '12 min', '3 h 05 min', '2 d 4 h'; '' when unknown."""
    if seconds is None:
        return ""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def run_dict(run: Run) -> dict:
    """A run as the Overview, Corpora and Vocabulary pages list it."""
    params = run.params or {}
    return {
        "run_id": run.id, "kind": run.kind.value, "status": run.status.value, "stage": run.stage,
        "progress": run.progress, "error": run.error, "params": params,
        "vocab_size": params.get("vocab_size"), "output_dir": run.output_dir or params.get("output_dir"),
        "note": params.get("note"), "created": when(run.created_at), "finished": when(run.finished_at),
    }


def check_readable(*specs: str | None) -> None:
    """Refuse a model folder typed in the dashboard outside the data folder, the bundled model and
    ADAPT_DISTILL_MODEL_DIRS (the command line reads any folder: its user is on the machine)."""
    from worker.specs import ModelSpec

    for spec in specs:
        if spec and spec.strip():
            ModelSpec.parse(spec).check_root(settings.home(), settings.model_dirs())


def queue_runs(sessions: sessionmaker[Session], connection: Redis, create: Callable[[], list[Run]]) -> list[Run]:
    """Create runs with `create` and queue their jobs (a pipeline's steps wait on each other). Redis
    is asked first: no run row is written that no worker would ever see."""
    from worker.queueing.submit import submit_runs

    connection.ping()
    runs = create()
    submit_runs(sessions, connection, runs)
    return runs


# --- uploads: copied to storage, read by the ingesting code, then removed ------------------------

def uploads_dir() -> Path:
    return settings.home() / "uploads"


def _safe_name(filename: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename).name).strip("._")
    return name or "upload.txt"


def write_upload(folder: Path, filename: str, content: bytes | BinaryIO) -> Path:
    """An upload copied into folder under its own (sanitised) name: the name carries the format
    (.csv.gz), and the copy is what the readers stream."""
    path = folder / _safe_name(filename)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        if isinstance(content, bytes):
            out.write(content)
        else:
            content.seek(0)
            shutil.copyfileobj(content, out, 1 << 20)
    return path


@contextmanager
def upload_folder() -> Iterator[Path]:
    """A fresh folder under the uploads folder for the block's copies, removed after it."""
    folder = uploads_dir() / uuid.uuid4().hex
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
