"""The dashboard's login: password hashes, signed session cookies, the brake on wrong passwords,
and the door itself through AppTest (the cookie surviving a reload is in test_browser.py)."""

from __future__ import annotations

import importlib.util
import re
import stat

import pytest
from streamlit.testing.v1 import AppTest
from test_app import MAIN

from app import access, auth, door
from core.errors import ConfigError

PASSWORD = "correct horse battery"
FAST = {"n": 16, "r": 8, "p": 1}  # the real cost (2**15) takes 0.1-0.3 s a try; the format is the same


# --- password hashes -----------------------------------------------------------------------------

def test_hash_line_format_and_verification():
    line = access.hash_password(PASSWORD, **FAST)
    assert re.fullmatch(r"scrypt:16:8:1:[A-Za-z0-9_-]{22}:[A-Za-z0-9_-]{43}", line), line
    assert access.verify_password(PASSWORD, line)
    assert not access.verify_password(PASSWORD + " ", line) and not access.verify_password("", line)
    assert access.hash_password(PASSWORD, **FAST) != line, "every hash has its own salt"

    default = access.hash_password(PASSWORD)
    assert default.startswith(f"scrypt:{2**15}:8:1:") and access.verify_password(PASSWORD, default)

    kind, n, r, p, salt, key = line.split(":")
    flipped = key[:-2] + ("A" if key[-2] != "A" else "B") + key[-1]
    assert not access.verify_password(PASSWORD, ":".join([kind, n, r, p, salt, flipped]))
    other_salt = access.hash_password(PASSWORD, **FAST).split(":")[4]
    assert not access.verify_password(PASSWORD, ":".join([kind, n, r, p, other_salt, key]))


@pytest.mark.parametrize("line", ["", "hunter2", "bcrypt:16:8:1:c2FsdHNhbHQ:a2V5a2V5a2V5a2V5a2V5aw",
                                  "scrypt:15:8:1:c2FsdHNhbHQ:a2V5a2V5a2V5a2V5a2V5aw",  # N not a power of two
                                  "scrypt:16:8:1:c2FsdA:a2V5a2V5a2V5a2V5a2V5aw",  # salt too short
                                  "scrypt:16:8:1:c2FsdHNhbHQ",  # fields missing
                                  "scrypt:16:x:1:c2FsdHNhbHQ:a2V5a2V5a2V5a2V5a2V5aw"])
def test_a_malformed_hash_says_how_to_make_one(line):
    with pytest.raises(ConfigError, match=r"^ADAPT_DISTILL_PASSWORD_HASH is not a password hash .*hash-password"):
        access.verify_password(PASSWORD, line)


def test_short_passwords_are_refused():
    with pytest.raises(ConfigError, match="too short"):
        access.hash_password("1234567", **FAST)


# --- session cookies ----------------------------------------------------------------------------

@pytest.mark.tried('a session cookie is forged, tampered with or expired')
def test_session_cookie_signing_expiry_and_tampering():
    key = access.session_key(b"s" * 32, access.hash_password(PASSWORD, **FAST))
    token = access.sign_session(key, 3600, now=1_000_000)
    assert access.check_session(key, token, now=1_000_000)
    assert access.check_session(key, token, now=1_003_599)
    assert not access.check_session(key, token, now=1_003_600), "expired"

    version, expires, nonce, mac = token.split(".")
    later = ".".join([version, str(int(expires) + 10**6), nonce, mac])
    assert not access.check_session(key, later, now=1_000_000), "a longer life is not for the taking"
    assert not access.check_session(key, ".".join([version, expires, nonce + "x", mac]), now=1_000_000)
    assert not access.check_session(key, ".".join([version, expires, nonce, mac[:-1]]), now=1_000_000)
    assert not access.check_session(key, ".".join(["v2", expires, nonce, mac]), now=1_000_000)
    for junk in (None, "", "v1", "v1...", "v1.²³.n.m", "é" * 40, token + ".x"):
        assert not access.check_session(key, junk, now=1_000_000)

    assert not access.check_session(access.session_key(b"t" * 32, "x"), token, now=1_000_000), "another secret"
    new_password = access.session_key(b"s" * 32, access.hash_password(PASSWORD, **FAST))
    assert not access.check_session(new_password, token, now=1_000_000), "a new password ends every session"
    assert access.sign_session(key, 60) != access.sign_session(key, 60)


def test_the_server_secret_is_made_once_and_readable_by_its_owner_only(tmp_path):
    secret = access.server_secret(tmp_path, environ={})
    file = tmp_path / access.SECRET_FILE
    assert len(secret) == 32 and file.read_bytes() == secret
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert access.server_secret(tmp_path, environ={}) == secret
    assert [p.name for p in tmp_path.iterdir()] == [access.SECRET_FILE], "no temporary file left"
    assert access.server_secret(tmp_path, environ={access.SECRET_ENV: "from the environment"}) == \
        b"from the environment"


def test_session_lifetime_comes_from_the_environment():
    assert access.session_lifetime({}) == 7 * 24 * 3600
    assert access.session_lifetime({access.SESSION_HOURS_ENV: "1.5"}) == 5400
    for bad in ("0", "-3", "soon", "nan", "99999"):
        with pytest.raises(ConfigError, match=access.SESSION_HOURS_ENV):
            access.session_lifetime({access.SESSION_HOURS_ENV: bad})


def test_wrong_passwords_close_the_door_for_longer_and_longer():
    brake = access.Throttle(free=3, longest=8)
    now, waits = 100.0, []
    for _ in range(7):
        assert brake.begin("a", now) == 0
        brake.end("a", False, now)
        waits.append(brake.wait("a", now))
        now += waits[-1]  # the next try comes as soon as it is heard
    assert waits == [0, 0, 1, 2, 4, 8, 8]
    assert brake.wait("a", now - 1) == 1 and brake.wait("a", now) == 0
    assert brake.begin("a", now) == 0
    brake.end("a", True, now)  # the right one opens the door: the free tries are back
    assert brake.begin("a", now) == 0
    brake.end("a", False, now)
    assert brake.wait("a", now) == 0


def test_the_brake_is_per_address_and_one_check_at_a_time():
    brake = access.Throttle(free=1, longest=60)
    assert brake.begin("stranger", 0) == 0
    assert brake.begin("stranger", 0) == 1.0, "a second try from the same address waits for the first"
    brake.end("stranger", False, 0)
    assert brake.begin("stranger", 0) == 1.0  # braked
    assert brake.begin("owner", 0) == 0, "another address is not delayed by the stranger's failures"


def test_many_failures_everywhere_brake_the_guessers_but_never_a_clean_address():
    brake = access.Throttle(free=100, most_failures=5, window=60)
    for i in range(5):  # five addresses, one wrong guess each
        assert brake.begin(f"bot{i}", 10 + i) == 0
        brake.end(f"bot{i}", False, 10 + i)
    assert brake.begin("bot0", 20) == 50  # the window is full: addresses with failures wait for room
    assert brake.begin("owner", 20) == 0, "a clean address is always heard"
    brake.end("owner", True, 20)
    assert brake.begin("bot0", 71) == 0  # the first failure left the window


@pytest.fixture
def locked(home, monkeypatch):
    monkeypatch.setenv(access.PASSWORD_ENV, access.hash_password(PASSWORD, **FAST))
    monkeypatch.setattr(auth, "THROTTLE", access.Throttle())
    monkeypatch.setattr(door, "mounted", True)  # as app/server.py serves it
    return home


def log_in(at: AppTest, password: str) -> AppTest:
    at.text_input(key="auth_password").input(password)
    return at.button(key="FormSubmitter:auth_login-Log in").click().run()


def rendered_page(at: AppTest) -> bool:
    return any(b.key == "home_demo" for b in at.button)


@pytest.mark.tried('a visitor opens dashboard pages without logging in (password login set)')
def test_pages_render_only_after_the_password(locked, sessions):
    at = AppTest.from_file(str(MAIN), default_timeout=120).run()
    assert not at.exception
    assert not rendered_page(at) and not at.sidebar.button
    assert [t.label for t in at.text_input] == ["Password"]

    log_in(at, "wrong password")
    assert not at.exception and not rendered_page(at)
    assert [e.value for e in at.error] == ["Wrong password."]

    log_in(at, PASSWORD)
    assert not at.exception and not at.error
    assert rendered_page(at)
    (script,) = at.sidebar.get("html")
    ticket = re.search(r'body: "([^"]+)"', script.proto.body)[1]  # the page trades a one-time ticket ...
    assert door.SESSION_ROUTE in script.proto.body and "v1." not in script.proto.body
    value, lifetime = door.redeem(ticket)  # ... which the server turns into the HttpOnly cookie
    assert value.startswith("v1.") and door.redeem(ticket) is None, "a ticket is good once"
    assert "HttpOnly" in door.cookie_header(value, lifetime, False)

    at.switch_page("views/corpora.py").run()
    assert not at.exception and [t.value for t in at.title] == ["Corpora"]
    assert not at.sidebar.get("html"), "the cookie is set once"

    at.button(key="auth_logout").click().run()
    assert not rendered_page(at) and [t.label for t in at.text_input] == ["Password"]
    assert door.LOGOUT_ROUTE in at.get("html")[0].proto.body, "logging out has the server drop the cookie"
    at.run()
    assert [t.label for t in at.text_input] == ["Password"], "still logged out"


@pytest.mark.tried('a visitor guesses passwords again and again')
def test_repeated_wrong_passwords_are_slowed_down(locked, sessions):
    at = AppTest.from_file(str(MAIN), default_timeout=120).run()
    for _ in range(auth.THROTTLE.free):
        log_in(at, "wrong password")
    assert [e.value for e in at.error] == ["Wrong password."]
    log_in(at, PASSWORD)  # the right one, too soon: not even tried
    assert [e.value for e in at.error] == ["Too many wrong passwords: try again in 1 s."]
    assert not rendered_page(at)


def test_a_malformed_hash_is_one_line_and_no_page(home, sessions, monkeypatch):
    monkeypatch.setenv(access.PASSWORD_ENV, "hunter2")
    monkeypatch.setattr(door, "mounted", True)
    at = AppTest.from_file(str(MAIN), default_timeout=120).run()
    assert not at.exception and not rendered_page(at) and not at.text_input
    assert len(at.error) == 1 and "hash-password" in at.error[0].value


def test_an_auth_section_in_the_secrets_means_streamlit_oidc_login(home, sessions, monkeypatch):
    monkeypatch.setenv(access.PASSWORD_ENV, access.hash_password(PASSWORD, **FAST))  # OIDC wins
    monkeypatch.setattr(door, "mounted", True)
    at = AppTest.from_file(str(MAIN), default_timeout=120)
    at.secrets["auth"] = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "c" * 32,
                          "client_id": "dashboard", "client_secret": "s",
                          "server_metadata_url": "https://id.example.org/.well-known/openid-configuration"}
    at.run()
    assert not at.exception and not rendered_page(at) and not at.text_input
    if importlib.util.find_spec("authlib") is None:
        assert [e.value for e in at.error] == ["The secrets have an [auth] section, but OIDC login needs Authlib: "
                                               "pip install 'Authlib>=1.3.2'"]
    else:
        assert [b.label for b in at.button] == ["Log in"]


def test_a_login_is_never_served_without_the_door(home, sessions, monkeypatch):
    """`streamlit run app/main.py` alone has no upload gate and cannot set an HttpOnly cookie: with a
    login configured it serves nothing but the way to start it properly."""
    monkeypatch.setenv(access.PASSWORD_ENV, access.hash_password(PASSWORD, **FAST))
    at = AppTest.from_file(str(MAIN), default_timeout=120).run()
    assert not at.exception and not rendered_page(at) and not at.text_input
    assert len(at.error) == 1 and "adapt-distill dashboard" in at.error[0].value


def test_without_a_login_configured_there_is_no_door(home, sessions):
    at = AppTest.from_file(str(MAIN), default_timeout=120).run()
    assert not at.exception and rendered_page(at) and not at.text_input


VALID_AUTH = ('[auth]\nredirect_uri = "http://localhost:8501/oauth2callback"\ncookie_secret = "' + "c" * 32 + '"\n'
              'client_id = "dashboard"\nclient_secret = "s"\n'
              'server_metadata_url = "https://id.example.org/.well-known/openid-configuration"\n')


@pytest.mark.tried('a valid [auth] secrets file beside a malformed ~/.streamlit/secrets.toml, dashboard on 0.0.0.0')
def test_unreadable_login_settings_refuse_to_start_and_to_render(home, sessions, tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    from app.cli.serving import check_host

    user, work = tmp_path / "user", tmp_path / "work"
    for folder in (user / ".streamlit", work / ".streamlit"):
        folder.mkdir(parents=True)
    (user / ".streamlit" / "secrets.toml").write_text('[auth\nredirect_uri = "', encoding="utf-8")
    (work / ".streamlit" / "secrets.toml").write_text(VALID_AUTH, encoding="utf-8")
    monkeypatch.setenv("HOME", str(user))
    monkeypatch.chdir(work)

    for host in ("0.0.0.0", "127.0.0.1"):
        with pytest.raises(ConfigError, match=r"^the login settings cannot be read: .*secrets.toml"):
            check_host(host, allow_remote=False)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-m", "app.cli", "dashboard", "--host", "0.0.0.0"], cwd=work,
                            env={**os.environ, "PYTHONPATH": root}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: the login settings cannot be read:") and str(user) in line

    at = AppTest.from_file(str(MAIN), default_timeout=120).run()
    assert not at.exception and not rendered_page(at) and not at.text_input and not at.button
    assert len(at.error) == 1 and at.error[0].value.startswith("the login settings cannot be read:")
