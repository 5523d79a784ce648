"""Small pieces the pages share: the one place errors become messages, one-shot messages that
survive a rerun, and number formatting."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager

import streamlit as st

from core.errors import user_error
from core.formatting import TABLE_FORMATS
from core.formatting import human_bytes  # noqa: F401  (the pages' size format)
from worker.progress import stage_note  # noqa: F401  (one rule for the dashboard and the CLI)

REDIS_DOWN = "cannot reach Redis at REDIS_URL ({error}): start everything with `adapt-distill up`, or fix REDIS_URL"
# Wide enough for the whole "2026-11-29 21:01".
CREATED = st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm", width=150)


def number_column(kind: str, label: str | None = None, **kwargs):
    """A table column of one kind of number (core.formatting.TABLE_FORMATS), shown as the pages and
    the command line write it elsewhere; its values go through formatting.table_value first."""
    return st.column_config.NumberColumn(label, format=TABLE_FORMATS[kind][0], **kwargs)


def error_message(exc: BaseException) -> str | None:
    """The one line a user sees for an error they can act on; None for a bug."""
    from redis.exceptions import RedisError

    known = user_error(exc)
    if known is not None:
        return str(known)
    if isinstance(exc, RedisError):
        return REDIS_DOWN.format(error=exc)
    return None


@contextmanager
def reported(show: Callable[[str], None] | None = None) -> Iterator[None]:
    """Run the block; a user-fixable error becomes one line, no traceback, and ends the block: an
    st.error, or what `show` does with the message."""
    try:
        yield
    except Exception as exc:
        message = error_message(exc)
        if message is None:
            raise
        if show is None:
            st.error(message, icon=":material/error:")
        else:
            show(message)


def flash(key: str, kind: str, text: str) -> None:
    """Keep a message to show once on the next run (after st.rerun)."""
    st.session_state[key] = (kind, text)


def show_flash(key: str) -> None:
    kind, text = st.session_state.pop(key, (None, None))
    if kind:
        getattr(st, kind)(text)


def store_upload(flash_key: str, filename: str, store: Callable[[], tuple[dict, bool]],
                 told: Callable[[dict, bool], str]) -> dict | None:
    """Store an upload with `store` (-> (row, created)) under a spinner, and keep what happened as
    the next run's message: success when the row was created, info when its content was already
    stored (`told(row, created)` says it), or the error a user can act on. The row, None after an error."""
    row = None
    with reported(lambda message: flash(flash_key, "error", message)):
        with st.spinner(f"Reading {filename}…"):
            row, created = store()
        flash(flash_key, "success" if created else "info", told(row, created))
    return row


def fraction(progress: float | None) -> float:
    """A run's progress as st.progress takes it: from 0 to 1 (None: 0)."""
    return min(max(float(progress or 0.0), 0.0), 1.0)


def choose(label: str, by_id: dict, key: str, format_func: Callable[[Hashable], str], where=st) -> Hashable:
    """A selectbox of by_id's keys (in `where`: st, a column...) whose choice the session keeps
    under `key`, the first one until the user picks another (or the kept one is gone)."""
    if st.session_state.get(key) not in by_id:
        st.session_state[key] = next(iter(by_id))
    return where.selectbox(label, list(by_id), key=key, format_func=format_func)


def status_badge(status: str) -> str:
    color = {"succeeded": "green", "failed": "red", "running": "blue", "queued": "gray",
             "cancelled": "orange", "abandoned": "violet"}.get(status, "gray")
    return f":{color}-badge[{status}]"


def status_text(run: dict) -> str:
    """'running: scoring candidates', or just 'queued' when the stage says nothing more."""
    note = stage_note(run["status"], run["stage"])
    return f"{run['status']}: {note}" if note else run["status"]


def corpora_or_stop(corpora: list[dict]) -> dict[int, dict]:
    """Corpora by id, newest first; stops the page with a pointer to the Corpora page when there is none."""
    if not corpora:
        st.info("No corpus yet: add one first.", icon=":material/upload_file:")
        st.page_link("views/corpora.py", label="Go to Corpora", icon=":material/library_books:")
        st.stop()
    return {c["id"]: c for c in corpora}


def worker_warning(kind) -> None:
    """Say so when no worker serves the queue a queued run of this kind (a RunKind) waits on."""
    from app import connections
    from worker.kinds import KINDS

    health = connections.queue_health()
    queue = KINDS[kind].queue
    if health["reachable"] and not health["workers"].get(queue):
        st.warning(f"No worker serves the '{queue}' queue, so this waits: start one with "
                   f"`adapt-distill worker --queues {queue}` (or `adapt-distill up`).", icon=":material/hourglass:")
