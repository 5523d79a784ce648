"""The dashboard's door, called by app/main.py before any page runs. With an [auth] section in the
Streamlit secrets it is Streamlit's own OIDC login (st.login, st.user); else, with
ADAPT_DISTILL_PASSWORD_HASH set, a password, remembered in a signed session cookie so that a
reload does not ask again; with neither, there is no door (the command line then keeps the
dashboard on this machine unless told otherwise). A login needs the pages served through
app/server.py (app/door.py: no uploads before login, the cookie set by the server, HttpOnly)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path

import streamlit as st

from app import access, door
from core.errors import ConfigError
from db import settings

COOKIE = door.COOKIE
THROTTLE = access.Throttle()  # one per process: per client address, and for all of them together
_REVOKED: set[str] = set()  # cookies logged out of; a stolen copy of one is refused until a restart


def require_login() -> None:
    """Return when the visitor is logged in (or no login is configured); else show the login and stop."""
    auth = _oidc_section()
    password = os.environ.get(access.PASSWORD_ENV, "").strip()
    if (auth is not None or password) and not door.mounted:
        st.title("adapt-distill")
        st.error("A login is configured, so the dashboard must be started with `adapt-distill dashboard` (or `up`, "
                 "or docker-compose), which serves app/server.py: it keeps uploads shut until login and sets the "
                 "session cookie from the server. Nothing is served from app/main.py alone.", icon=":material/lock:")
        st.stop()
    if auth is not None:
        _oidc(auth)
    elif password:
        _password(password)


def session_id() -> str:
    """This browser session's id (the one Streamlit's upload URLs carry)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx else ""


def client_address() -> str:
    """The visitor's address for the password brake: the connection's, or with
    ADAPT_DISTILL_TRUSTED_PROXY=1 (behind a reverse proxy that sets it) the last address of
    X-Forwarded-For, the one the proxy saw."""
    if os.environ.get(access.TRUSTED_PROXY_ENV, "").strip() == "1":
        forwarded = [part.strip() for part in (st.context.headers.get("X-Forwarded-For") or "").split(",")]
        if forwarded and forwarded[-1]:
            return forwarded[-1]
    address = st.context.ip_address
    return address if isinstance(address, str) and address else "this machine"  # None on localhost


def _oidc_section() -> Mapping | None:
    """The [auth] section of the secrets; a page is never shown when the secrets cannot be read (the
    login they hold is unknown, and that is not the same as no login)."""
    try:
        access.oidc_configured(access.secrets_files(Path(__file__).parent))  # every file it may read, checked
        auth = st.secrets.get("auth") if st.secrets.load_if_toml_exists() else None
    except Exception as exc:
        st.title("adapt-distill")
        st.error(str(exc) if isinstance(exc, ConfigError) else
                 f"the login settings cannot be read ({type(exc).__name__}: {exc}): fix the secrets file. "
                 f"Nothing is served while it is unreadable", icon=":material/lock:")
        st.stop()
    return auth if isinstance(auth, Mapping) else None


def _oidc(auth: Mapping) -> None:
    if st.user.get("is_logged_in"):
        door.open_session(session_id())
        with st.sidebar:
            st.caption(f":material/person: {st.user.get('email') or st.user.get('name') or 'logged in'}")
            st.button("Log out", key="auth_logout", icon=":material/logout:", on_click=_oidc_logout)
        return
    st.title("adapt-distill")
    if importlib.util.find_spec("authlib") is None:
        st.error("The secrets have an [auth] section, but OIDC login needs Authlib: pip install 'Authlib>=1.3.2'")
        st.stop()
    named = [name for name, value in auth.items() if isinstance(value, Mapping) and "client_id" in value]
    for provider in named or [None]:
        st.button(f"Log in with {provider}" if provider else "Log in", key=f"auth_login_{provider}", type="primary",
                  icon=":material/login:", on_click=st.login, args=(provider,) if provider else ())
    st.stop()


def _oidc_logout() -> None:
    door.close_session(session_id())
    st.logout()


def _password(line: str) -> None:
    state = st.session_state
    try:
        access.parse_hash(line)
        key = access.session_key(access.server_secret(settings.home()), line)
        lifetime = access.session_lifetime()
    except ConfigError as exc:
        st.error(str(exc), icon=":material/lock:")
        st.stop()
    token = state.get("auth_token")
    if token is None and not state.get("auth_logged_out"):
        token = st.context.cookies.get(COOKIE)
    if token and token not in _REVOKED and access.check_session(key, token):
        state.auth_token = token
        door.open_session(session_id())
        with st.sidebar:
            if state.pop("auth_new_cookie", False):
                _set_cookie(door.issue_ticket(token, lifetime))
            if st.button("Log out", key="auth_logout", icon=":material/logout:"):
                _REVOKED.add(token)
                door.close_session(session_id())
                state.pop("auth_token", None)
                state.auth_logged_out = True  # this session's first request carried the cookie: ignore it
                st.rerun()
        return
    door.close_session(session_id())
    state.pop("auth_token", None)
    _login_form(line, key, lifetime)
    st.stop()


def _login_form(line: str, key: bytes, lifetime: float) -> None:
    state = st.session_state
    if state.get("auth_logged_out"):
        _set_cookie(None)
    st.title("adapt-distill")
    with st.form("auth_login", clear_on_submit=True, width=420):
        password = st.text_input("Password", type="password", key="auth_password", autocomplete="current-password")
        submitted = st.form_submit_button("Log in", type="primary", icon=":material/login:")
    if not submitted:
        return
    address = client_address()
    wait = THROTTLE.begin(address, time.monotonic())
    if wait:
        st.error(f"Too many wrong passwords: try again in {math.ceil(wait)} s.", icon=":material/lock:")
        return
    right = False
    try:
        right = access.verify_password(password, line)
    finally:
        THROTTLE.end(address, right, time.monotonic())
    if right:
        state.auth_token = access.sign_session(key, lifetime)
        state.auth_new_cookie = True
        state.pop("auth_logged_out", None)
        st.rerun()
    st.error("Wrong password.", icon=":material/lock:")


def _set_cookie(ticket: str | None) -> None:
    """The server sets the cookie (HttpOnly: no page script can read it): the page trades a one-time
    ticket for it, or with None asks for it to be dropped (app/door.py)."""
    route, body = (door.SESSION_ROUTE, ticket) if ticket else (door.LOGOUT_ROUTE, "")
    st.html(f"<script>fetch({json.dumps(route)}, {{method: 'POST', body: {json.dumps(body)}, "
            f"credentials: 'same-origin'}});</script>", unsafe_allow_javascript=True)
