"""What the dashboard's login needs from the web server, that a page script cannot do itself:

- an upload gate: while a login is configured, Streamlit's upload endpoint
  (`PUT /_stcore/upload_file/<session>/<file>`) takes files only for a browser session that has
  logged in; any other upload is refused before its body is read;
- the session cookie set by the server, HttpOnly (page scripts cannot read it): after the right
  password the page trades a one-time ticket for it (`POST /_adapt/session`), and logging out
  clears it (`POST /_adapt/logout`).

app/server.py mounts both on Streamlit's own server (st.App); app/auth.py opens and closes sessions
and issues the tickets. One dashboard process holds the state, as it holds the browser sessions."""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections import OrderedDict
from pathlib import Path

from app import access

COOKIE = "adapt_distill_session"
SESSION_ROUTE, LOGOUT_ROUTE = "/_adapt/session", "/_adapt/logout"
UPLOAD_PATH = "/_stcore/upload_file/"
TICKET_SECONDS = 60
MOST_SESSIONS = 10_000  # logged-in browser sessions remembered (the oldest is forgotten first)

_lock = threading.Lock()
_open: OrderedDict[str, float] = OrderedDict()  # Streamlit session id -> when it logged in
_tickets: dict[str, tuple[str, float, float]] = {}  # ticket -> (cookie value, lifetime, expires)
mounted = False
"""Whether this process serves the pages through app/server.py (the gate and the cookie routes)."""


def open_session(session_id: str) -> None:
    with _lock:
        _open[session_id] = time.time()
        _open.move_to_end(session_id)
        while len(_open) > MOST_SESSIONS:
            _open.popitem(last=False)


def close_session(session_id: str) -> None:
    with _lock:
        _open.pop(session_id, None)


def is_open(session_id: str) -> bool:
    with _lock:
        return session_id in _open


def login_configured() -> bool:
    """Whether the dashboard has a login; True as well when the login settings cannot be read (a
    door that cannot be read stays shut)."""
    if os.environ.get(access.PASSWORD_ENV, "").strip():
        return True
    try:
        return access.oidc_configured(access.secrets_files(Path(__file__).parent))
    except Exception:  # noqa: BLE001  (unreadable secrets: the page says why; uploads stay shut)
        return True


def issue_ticket(cookie: str, lifetime: float) -> str:
    """A one-time ticket the page trades for the cookie within TICKET_SECONDS."""
    ticket = secrets.token_urlsafe(24)
    now = time.time()
    with _lock:
        for old in [t for t, (_, _, expires) in _tickets.items() if expires < now]:
            del _tickets[old]
        _tickets[ticket] = (cookie, lifetime, now + TICKET_SECONDS)
    return ticket


def redeem(ticket: str) -> tuple[str, float] | None:
    with _lock:
        entry = _tickets.pop(ticket, None)
    if entry is None or entry[2] < time.time():
        return None
    return entry[0], entry[1]


def cookie_header(value: str, lifetime: float, secure: bool) -> str:
    return (f"{COOKIE}={value}; Max-Age={int(lifetime)}; Path=/; SameSite=Strict; HttpOnly"
            + ("; Secure" if secure else ""))


def _secure(scope) -> bool:
    headers = dict(scope.get("headers") or [])
    return scope.get("scheme") == "https" or headers.get(b"x-forwarded-proto", b"").decode().lower() == "https"


async def _reply(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store"),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


async def _body(receive, most: int = 4096) -> bytes:
    data = b""
    while True:
        message = await receive()
        data += message.get("body", b"")
        if len(data) > most or not message.get("more_body"):
            return data[:most]


class Door:
    """ASGI middleware in front of Streamlit: the upload gate and the two cookie routes."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        if path == SESSION_ROUTE and method == "POST":
            ticket = (await _body(receive)).decode(errors="replace").strip()
            redeemed = redeem(ticket)
            if redeemed is None:
                return await _reply(send, 403, b"no such ticket: log in again")
            header = cookie_header(redeemed[0], redeemed[1], _secure(scope))
            return await _reply(send, 204, b"", [(b"set-cookie", header.encode())])
        if path == LOGOUT_ROUTE and method == "POST":
            return await _reply(send, 204, b"", [(b"set-cookie", cookie_header("", 0, _secure(scope)).encode())])
        if UPLOAD_PATH in path and method in ("PUT", "POST"):
            session_id = path.split(UPLOAD_PATH, 1)[1].split("/", 1)[0]
            if login_configured() and not is_open(session_id):
                return await _reply(send, 401, b"log in before uploading")
        return await self.app(scope, receive, send)
