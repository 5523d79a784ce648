"""Who may use the dashboard: salted password hashes, signed session cookies, a brake on wrong
passwords, and whether a login is configured at all. Standard library only; the dashboard
(app/auth.py) and the command line (`hash-password`, `--host`) share it.

A password hash is one line, `scrypt:N:r:p:salt:hash`: scrypt's cost parameters, then a 16-byte
salt and the 32-byte key in URL-safe base64 without padding. A session cookie is
`v1.<expiry, Unix seconds>.<random nonce>.<HMAC-SHA256 of what precedes>`, signed with a key
derived from the server secret and the password hash, so a new password ends every session."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ConfigError

PASSWORD_ENV = "ADAPT_DISTILL_PASSWORD_HASH"
SECRET_ENV = "ADAPT_DISTILL_SECRET"
SESSION_HOURS_ENV = "ADAPT_DISTILL_SESSION_HOURS"
TRUSTED_PROXY_ENV = "ADAPT_DISTILL_TRUSTED_PROXY"  # 1: the client address is X-Forwarded-For's last one
SECRET_FILE = "dashboard-secret"  # in the data folder, 0600, when SECRET_ENV is not set
DEFAULT_SESSION_HOURS = 7 * 24
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1  # about 32 MiB and 0.1 s per try
MIN_PASSWORD = 8


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, size: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=size,
                          maxmem=128 * r * (n + p + 2) + 2**20)


def hash_password(password: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """The line for ADAPT_DISTILL_PASSWORD_HASH: `scrypt:N:r:p:salt:hash` with a fresh random salt."""
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"the password is too short: use {MIN_PASSWORD} characters or more")
    salt = os.urandom(16)
    return f"scrypt:{n}:{r}:{p}:{_b64(salt)}:{_b64(_scrypt(password, salt, n, r, p, 32))}"


def parse_hash(line: str) -> tuple[int, int, int, bytes, bytes]:
    """(N, r, p, salt, key) of a password hash line; a ConfigError saying how to make one otherwise."""
    try:
        kind, n, r, p, salt, key = line.strip().split(":")
        n, r, p, salt, key = int(n), int(r), int(p), _unb64(salt), _unb64(key)
        valid = (kind == "scrypt" and 1 < n <= 2**20 and n & (n - 1) == 0 and 0 < r <= 32 and 0 < p <= 16
                 and len(salt) >= 8 and len(key) >= 16)
    except ValueError:  # wrong number of fields, not a number, not base64
        valid = False
    if not valid:
        raise ConfigError(f"{PASSWORD_ENV} is not a password hash (scrypt:N:r:p:salt:hash): set it to the line "
                          f"`adapt-distill hash-password` prints")
    return n, r, p, salt, key


def verify_password(password: str, line: str) -> bool:
    """Whether `password` is the one `line` was made from (constant-time comparison)."""
    n, r, p, salt, key = parse_hash(line)
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(key)), key)


def server_secret(folder: Path, environ: Mapping[str, str] = os.environ) -> bytes:
    """ADAPT_DISTILL_SECRET, else a random secret kept in `folder` (created once, readable by its owner
    only, so every dashboard process on the same data folder signs alike)."""
    value = environ.get(SECRET_ENV, "").strip()
    if value:
        return value.encode()
    path = Path(folder) / SECRET_FILE
    if not path.exists():
        tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
            handle.write(secrets.token_bytes(32))
        try:
            os.link(tmp, path)  # atomic: a concurrent process either wins or reads a complete file
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_bytes()


def session_key(secret: bytes, password_line: str) -> bytes:
    """The key that signs session cookies: the server secret bound to the password hash."""
    return hmac.new(secret, b"adapt-distill session\0" + password_line.strip().encode(), hashlib.sha256).digest()


def session_lifetime(environ: Mapping[str, str] = os.environ) -> float:
    """Seconds a session cookie lasts: ADAPT_DISTILL_SESSION_HOURS (default a week)."""
    raw = environ.get(SESSION_HOURS_ENV, "").strip()
    try:
        hours = float(raw) if raw else DEFAULT_SESSION_HOURS
    except ValueError:
        hours = float("nan")
    if not 0 < hours <= 24 * 366:
        raise ConfigError(f"{SESSION_HOURS_ENV}={raw} is not a number of hours between 0 and a year")
    return hours * 3600


def _mac(key: bytes, body: str) -> str:
    return _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())


def sign_session(key: bytes, lifetime: float, now: float | None = None) -> str:
    """A new session cookie value that expires `lifetime` seconds from `now`."""
    body = f"v1.{int((time.time() if now is None else now) + lifetime)}.{_b64(os.urandom(12))}"
    return f"{body}.{_mac(key, body)}"


def check_session(key: bytes, token: str | None, now: float | None = None) -> bool:
    """Whether a cookie value was signed with `key` and has not expired."""
    parts = (token or "").split(".")
    if len(parts) != 4 or parts[0] != "v1" or not (parts[1].isascii() and parts[1].isdigit()) or not parts[2]:
        return False
    fresh = int(parts[1]) > (time.time() if now is None else now)
    return hmac.compare_digest(parts[3].encode(), _mac(key, ".".join(parts[:3])).encode()) and fresh


@dataclass
class _Record:
    failures: int = 0
    until: float = 0.0
    busy: bool = False
    last: float = 0.0


@dataclass
class Throttle:
    """A brake on guessing passwords, per client address and for all of them together.

    Per address: the first `free` wrong passwords in a row cost nothing; from then on each one
    closes that address's door for twice as long as the one before (1 s, 2 s, 4 s, ... at most
    `longest`), and one check at a time (concurrent tries from one address wait for it). A right
    password opens that address's door again.

    Together: once `most_failures` wrong passwords came in the last `window` seconds from all
    addresses, every address with a wrong password on record waits until the window has room
    again. An address with a clean record is always heard, so strangers guessing from elsewhere
    never keep the owner out, and each new address buys an attacker one try at most."""

    free: int = 3
    longest: float = 60.0
    most_failures: int = 30
    window: float = 60.0
    remembered: int = 100_000
    _records: dict[str, _Record] = field(default_factory=dict, repr=False)
    _recent: list[float] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def wait(self, address: str, now: float) -> float:
        """Seconds before a try from `address` would be heard (0: now); reserves nothing."""
        with self._lock:
            return self._wait(self._records.get(address) or _Record(), now)

    def _wait(self, record: _Record, now: float) -> float:
        self._recent = [t for t in self._recent if t > now - self.window]
        wait = max(0.0, record.until - now)
        if record.failures and len(self._recent) >= self.most_failures:
            wait = max(wait, self._recent[len(self._recent) - self.most_failures] + self.window - now)
        return max(wait, 1.0) if record.busy else wait

    def begin(self, address: str, now: float) -> float:
        """0 when a try from `address` may be checked now (then `end` must follow), else the
        seconds to wait."""
        with self._lock:
            record = self._records.get(address)
            if record is None:
                record = self._records[address] = _Record(last=now)
                if len(self._records) > self.remembered:  # forget the quietest
                    quiet = min((r.last, a) for a, r in self._records.items() if not r.busy)[1]
                    self._records.pop(quiet, None)
            wait = self._wait(record, now)
            if wait:
                return wait
            record.busy, record.last = True, now
            return 0.0

    def end(self, address: str, right: bool, now: float) -> None:
        with self._lock:
            record = self._records.setdefault(address, _Record())
            record.busy, record.last = False, now
            if right:
                record.failures, record.until = 0, 0.0
                return
            record.failures += 1
            self._recent.append(now)
            if record.failures >= self.free:
                record.until = now + min(self.longest, 2.0 ** (record.failures - self.free))


def secrets_files(app_dir: Path) -> list[Path]:
    """Where Streamlit looks for secrets.toml by default: the user's, the working folder's and the
    dashboard script's .streamlit folders."""
    return [Path.home() / ".streamlit" / "secrets.toml", Path.cwd() / ".streamlit" / "secrets.toml",
            Path(app_dir) / ".streamlit" / "secrets.toml"]


def oidc_configured(files: Iterable[Path]) -> bool:
    """Whether a secrets file has an [auth] section (Streamlit's OIDC login: st.login). A secrets file
    that exists but cannot be read is an error: what it says about the login is unknown, and a door
    that cannot be read is not taken for no door."""
    found = False
    for file in files:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(unreadable_secrets(file, exc)) from None
        try:
            found |= isinstance(tomllib.loads(text).get("auth"), dict)
        except ValueError as exc:
            raise ConfigError(unreadable_secrets(file, exc)) from None
    return found


def unreadable_secrets(file, exc: Exception) -> str:
    return (f"the login settings cannot be read: {file} is not valid TOML or not readable ({exc}); fix or remove it. "
            f"Nothing is served while it is unreadable")


def login_method(environ: Mapping[str, str], files: Iterable[Path]) -> str | None:
    """'oidc', 'password' or None (no login). A password hash that is set must be valid."""
    if oidc_configured(files):
        return "oidc"
    line = environ.get(PASSWORD_ENV, "").strip()
    if line:
        parse_hash(line)
        return "password"
    return None
