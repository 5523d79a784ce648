"""The dashboard's door, called by app/main.py before any page runs. With an [auth] section in the
Streamlit secrets it is Streamlit's own OIDC login (st.login, st.user); else, with
ADAPT_DISTILL_PASSWORD_HASH set, a password, remembered in a signed session cookie so that a
reload does not ask again; with neither, there is no door (the command line then keeps the
dashboard on this machine unless told otherwise)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path

import streamlit as st

from app import access
from db import settings
from core.errors import ConfigError

COOKIE = "adapt_distill_session"
THROTTLE = access.Throttle()  # one per process: every browser session shares the brake
_REVOKED: set[str] = set()  # cookies logged out of; a stolen copy of one is refused until a restart


def require_login() -> None:
    """Return when the visitor is logged in (or no login is configured); else show the login and stop."""
    auth = _oidc_section()
    if auth is not None:
        _oidc(auth)
    elif os.environ.get(access.PASSWORD_ENV, "").strip():
        _password(os.environ[access.PASSWORD_ENV].strip())


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
        with st.sidebar:
            st.caption(f":material/person: {st.user.get('email') or st.user.get('name') or 'logged in'}")
            st.button("Log out", key="auth_logout", icon=":material/logout:", on_click=st.logout)
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
        with st.sidebar:
            if state.pop("auth_new_cookie", False):
                _set_cookie(token, lifetime)
            if st.button("Log out", key="auth_logout", icon=":material/logout:"):
                _REVOKED.add(token)
                state.pop("auth_token", None)
                state.auth_logged_out = True  # this session's first request carried the cookie: ignore it
                st.rerun()
        return
    state.pop("auth_token", None)
    _login_form(line, key, lifetime)
    st.stop()


def _login_form(line: str, key: bytes, lifetime: float) -> None:
    state = st.session_state
    if state.get("auth_logged_out"):
        _set_cookie("", 0)
    st.title("adapt-distill")
    with st.form("auth_login", clear_on_submit=True, width=420):
        password = st.text_input("Password", type="password", key="auth_password", autocomplete="current-password")
        submitted = st.form_submit_button("Log in", type="primary", icon=":material/login:")
    if not submitted:
        return
    wait = THROTTLE.wait(time.monotonic())
    if wait:
        st.error(f"Too many wrong passwords: try again in {math.ceil(wait)} s.", icon=":material/lock:")
    elif access.verify_password(password, line):
        THROTTLE.succeeded()
        state.auth_token = access.sign_session(key, lifetime)
        state.auth_new_cookie = True
        state.pop("auth_logged_out", None)
        st.rerun()
    else:
        THROTTLE.failed(time.monotonic())
        st.error("Wrong password.", icon=":material/lock:")


def _set_cookie(value: str, lifetime: float) -> None:
    """Streamlit cannot set a cookie, so the page does: a script in st.html runs in the app's own
    document (not an iframe). SameSite=Strict, and Secure when the page came over HTTPS."""
    cookie = f"{COOKIE}={value}; Max-Age={int(lifetime)}; Path=/; SameSite=Strict"
    st.html(f"<script>document.cookie = {json.dumps(cookie)} + "
            f"(location.protocol === 'https:' ? '; Secure' : '');</script>", unsafe_allow_javascript=True)
