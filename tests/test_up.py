"""`adapt-distill up` on a machine with no Redis configured: embedded Valkey, a worker and the
dashboard come up, and Ctrl-C stops all of them."""

import os
import signal
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from worker.queueing.embedded import free_port

pytestmark = pytest.mark.integration


def test_up_starts_everything_and_ctrl_c_stops_it(tmp_path):
    port = free_port()
    env = {**os.environ, "ADAPT_DISTILL_HOME": str(tmp_path / "home")}
    for key in ("REDIS_URL", "DATABASE_URL"):
        env.pop(key, None)
    up = subprocess.Popen([sys.executable, "-m", "app.cli", "up", "--port", str(port)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert up.poll() is None, up.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the dashboard did not answer within 90 s"
            time.sleep(0.5)
        children = psutil.Process(up.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        assert "valkey-server" in names and "app.cli worker" in names and "streamlit" in names
        assert (tmp_path / "home" / "adapt-distill.db").is_file()
        up.send_signal(signal.SIGINT)
        assert up.wait(40) == 0
        gone, alive = psutil.wait_procs(children, timeout=20)
        assert alive == []
    finally:
        if up.poll() is None:
            up.kill()


@pytest.mark.tried('`adapt-distill up` is killed with SIGKILL')
def test_nothing_up_started_outlives_it_even_on_sigkill(tmp_path):
    import tempfile

    port = free_port()
    env = {**os.environ, "ADAPT_DISTILL_HOME": str(tmp_path / "home")}
    for key in ("REDIS_URL", "DATABASE_URL"):
        env.pop(key, None)
    before = set(os.listdir(tempfile.gettempdir()))
    up = subprocess.Popen([sys.executable, "-m", "app.cli", "up", "--port", str(port)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert up.poll() is None and time.monotonic() < deadline
            children = psutil.Process(up.pid).children(recursive=True)
            names = " ".join(" ".join(c.cmdline()) for c in children)
            if all(name in names for name in ("valkey-server", "app.cli worker", "streamlit")):
                break
            time.sleep(0.5)
        valkey = next(c for c in children if "valkey-server" in " ".join(c.cmdline()))
        import redis as redis_client

        valkey_port = int(valkey.cmdline()[0].rsplit(":", 1)[1])  # valkey shows "binary host:port" as its title
        with pytest.raises(redis_client.exceptions.AuthenticationError):  # no one else can queue jobs on it
            redis_client.Redis(port=valkey_port).ping()
        up.kill()
        up.wait(10)
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert alive == [], [" ".join(p.cmdline()) for p in alive]
        assert "password-protected" in up.stdout.read()
        assert not {n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("adapt-distill")}
    finally:
        if up.poll() is None:
            up.kill()
