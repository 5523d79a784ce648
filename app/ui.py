"""Small pieces the pages share: the one place errors become messages, one-shot messages that
survive a rerun, and number formatting."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from core.errors import user_error
from core.formatting import human_bytes  # noqa: F401  (the pages' size format)
from worker.progress import stage_note  # noqa: F401  (one rule for the dashboard and the CLI)

REDIS_DOWN = "cannot reach Redis at REDIS_URL ({error}): start everything with `adapt-distill up`, or fix REDIS_URL"


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
def reported() -> Iterator[None]:
    """Run the block; a user-fixable error becomes one st.error line (no traceback) and ends the block."""
    try:
        yield
    except Exception as exc:
        message = error_message(exc)
        if message is None:
            raise
        st.error(message, icon=":material/error:")


def flash(key: str, kind: str, text: str) -> None:
    """Keep a message to show once on the next run (after st.rerun)."""
    st.session_state[key] = (kind, text)


def show_flash(key: str) -> None:
    kind, text = st.session_state.pop(key, (None, None))
    if kind:
        getattr(st, kind)(text)


def status_badge(status: str) -> str:
    color = {"succeeded": "green", "failed": "red", "running": "blue", "queued": "gray",
             "cancelled": "orange", "abandoned": "violet"}.get(status, "gray")
    return f":{color}-badge[{status}]"


def status_text(run: dict) -> str:
    """'running: scoring candidates', or just 'queued' when the stage says nothing more."""
    note = stage_note(run["status"], run["stage"])
    return f"{run['status']}: {note}" if note else run["status"]


def corpora_or_stop(corpora: list[dict], state_key: str) -> dict[int, dict]:
    """Corpora by id, with the page's corpus choice defaulting to the newest; stops the page with a
    pointer to the Corpora page when there is none."""
    if not corpora:
        st.info("No corpus yet: add one first.", icon=":material/upload_file:")
        st.page_link("views/corpora.py", label="Go to Corpora", icon=":material/library_books:")
        st.stop()
    by_id = {c["id"]: c for c in corpora}
    if st.session_state.get(state_key) not in by_id:
        st.session_state[state_key] = corpora[0]["id"]
    return by_id


def worker_warning(kind) -> None:
    """Say so when no worker serves the queue a queued run of this kind (a RunKind) waits on."""
    from app import connections
    from worker.queues import QUEUE_FOR

    health = connections.queue_health()
    queue = QUEUE_FOR[kind]
    if health["reachable"] and not health["workers"].get(queue):
        st.warning(f"No worker serves the '{queue}' queue, so this waits: start one with "
                   f"`adapt-distill worker --queues {queue}` (or `adapt-distill up`).", icon=":material/hourglass:")
