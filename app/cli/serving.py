"""The commands that run the service: `up`, `worker`, `dashboard`, `migrate` and `hash-password`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from app.cli.common import command, open_sessions
from core.errors import ConfigError

DEFAULT_PORT = 8501
LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEFAULT_HOST = LOOPBACK[0]  # this machine only
DEFAULT_QUEUES = "cpu,gpu"


def cmd_migrate(args) -> None:
    open_sessions()
    print("database is up to date")


def gpu_list(value: str) -> str:
    """CUDA_VISIBLE_DEVICES for --gpus: '4' is GPUs 0-3, '2,3' is those two."""
    value = value.strip()
    if value.isdigit() and "," not in value:
        return ",".join(str(i) for i in range(int(value)))
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise ConfigError(f"--gpus takes a count (4) or a list of GPU numbers (0,1), got '{value}'")
    return ",".join(parts)


def cmd_worker(args) -> None:
    from worker.queueing.queues import check_queue
    from worker.queueing.serve import serve

    sessions = open_sessions()
    if args.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    if args.gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_list(args.gpus)
    serve(sessions, [check_queue(name.strip()) for name in args.queues.split(",") if name.strip()], burst=args.burst)


def check_host(host: str, allow_remote: bool) -> str:
    """The address the dashboard listens on. Beyond this machine (0.0.0.0, a LAN address) only with
    a login configured (ADAPT_DISTILL_PASSWORD_HASH, or OIDC in the Streamlit secrets), or when the
    user says the network is trusted with --allow-remote. A password hash that is set must be valid."""
    import app
    from app.access import login_method, secrets_files

    host = (host or DEFAULT_HOST).strip()
    login = login_method(os.environ, secrets_files(Path(app.__file__).parent))
    if host not in LOOPBACK and not login and not allow_remote:
        raise ConfigError(f"--host {host} would let anyone who reaches this machine use the dashboard, and no login "
                          f"is configured: set ADAPT_DISTILL_PASSWORD_HASH to the line `adapt-distill hash-password` "
                          f"prints (or an [auth] section in .streamlit/secrets.toml for OIDC), keep the default "
                          f"{DEFAULT_HOST} (reach it through an SSH tunnel), or pass --allow-remote on a network you "
                          f"trust")
    return host


def cmd_hash_password(args) -> None:
    """Read a password (asked twice on a terminal, else one line of stdin); print the environment line."""
    from app.access import PASSWORD_ENV, hash_password

    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise ConfigError("the two passwords differ: run it again")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    print(f"{PASSWORD_ENV}={hash_password(password)}")


def dashboard_command(port: int, host: str = DEFAULT_HOST) -> list[str]:
    """The streamlit command line; the largest browser upload is ADAPT_DISTILL_UPLOAD_MB (default 200;
    larger files go through the import folder, ADAPT_DISTILL_IMPORT_DIR)."""
    import app
    from db.settings import upload_mb

    main = Path(app.__file__).parent / "server.py"
    return [sys.executable, "-m", "streamlit", "run", str(main), "--server.port", str(port),
            "--server.address", host, "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "minimal",
            "--server.maxUploadSize", str(upload_mb())]


def cmd_dashboard(args) -> None:
    host = check_host(args.host, args.allow_remote)
    open_sessions()
    raise SystemExit(subprocess.call(dashboard_command(args.port, host)))


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return url.replace(f":{parts.password}@", ":***@") if parts.password else url


def cmd_up(args) -> None:
    """Embedded Valkey (unless REDIS_URL is set), migrations, worker(s) and the dashboard."""
    from worker.queueing.embedded import EmbeddedValkey, die_with_parent
    from worker.queueing.queues import redis_url

    host = check_host(args.host, args.allow_remote)
    open_sessions()
    env = os.environ.copy()
    valkey = None
    if not redis_url():
        valkey = EmbeddedValkey().start()
        env["REDIS_URL"] = valkey.url
    processes = [subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--queues", args.queues], env=env,
                                  preexec_fn=die_with_parent) for _ in range(args.workers)]
    processes.append(subprocess.Popen(dashboard_command(args.port, host), env=env, preexec_fn=die_with_parent))
    print(f"adapt-distill is up: dashboard http://{'localhost' if host in LOOPBACK else host}:{args.port}  "
          f"redis {valkey.display_url if valkey else _without_password(env['REDIS_URL'])}  "
          f"data {os.environ.get('ADAPT_DISTILL_HOME') or '~/.adapt-distill'}  (Ctrl-C stops everything)",
          file=sys.stderr, flush=True)
    def stop(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    try:
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        code = next(p.returncode for p in processes if p.poll() is not None) or 1
        print("a child process stopped; shutting down", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        for p in processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in processes:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        if valkey:
            valkey.stop()
    raise SystemExit(code)


def _host_options(p) -> None:
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address the dashboard listens on (default {DEFAULT_HOST}: this machine only)")
    p.add_argument("--allow-remote", action="store_true",
                   help="listen beyond this machine although no login is configured (a trusted network only)")


def add_commands(sub) -> None:
    """up, worker, dashboard, migrate and hash-password."""
    p = command(sub, "up", cmd_up, "start an embedded Valkey (unless REDIS_URL is set), a worker and the dashboard",
                json_flag=False)
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="dashboard port")
    _host_options(p)
    p.add_argument("--queues", default=DEFAULT_QUEUES, help="queues the worker serves")
    p.add_argument("--workers", type=int, default=1, help="number of worker processes")

    p = command(sub, "worker", cmd_worker, "run an RQ worker", json_flag=False)
    p.add_argument("--queues", default=DEFAULT_QUEUES, help="comma-separated queues to serve, in priority order")
    p.add_argument("--gpu", type=int, default=None, help="pin this worker to one GPU (sets CUDA_VISIBLE_DEVICES)")
    p.add_argument("--gpus", default=None,
                   help="the GPUs this worker's runs may use, a count (4: GPUs 0-3) or a list (2,3); a run with "
                        "--gpus N trains on N of them, one process each (sets CUDA_VISIBLE_DEVICES)")
    p.add_argument("--burst", action="store_true", help="exit when the queues are empty")

    p = command(sub, "dashboard", cmd_dashboard, "run only the dashboard", json_flag=False)
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="dashboard port")
    _host_options(p)
    command(sub, "migrate", cmd_migrate, "create or upgrade the database schema", json_flag=False)
    command(sub, "hash-password", cmd_hash_password, "read a password and print the ADAPT_DISTILL_PASSWORD_HASH=... "
            "line that gives the dashboard a login", json_flag=False)
