"""docker-compose.yml and Dockerfile, checked offline.

`docker-compose config -q` (Debian's docker-compose 1.29) validates the file against the
compose schema when the tool is installed; CI installs it (.ci/run), so there a missing
tool is a failure, not a skip. The structural checks below need no external tool and
always run: they cover what would break a deployment without breaking the schema.
"""

import os
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

# One GPU worker per GPU, GPUs 0-7: compose cannot give each replica of one service a GPU of its own.
GPU_WORKERS = ["worker-gpu", *(f"worker-gpu-{i}" for i in range(1, 8))]
APP_SERVICES = {"migrate", "dashboard", "worker-cpu", *GPU_WORKERS}
DATA_DIR = "/data"


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _env(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def _argv(service: dict) -> list[str]:
    command = service.get("command")
    assert command, "service has no command"
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def _queues(service: dict) -> list[str]:
    argv = _argv(service)
    assert argv[:2] == ["adapt-distill", "worker"], argv
    for i, arg in enumerate(argv):
        if arg == "--queues":
            return argv[i + 1].split(",")
        if arg.startswith("--queues="):
            return arg.split("=", 1)[1].split(",")
    pytest.fail(f"worker command names no queues: {argv}")


def _depends_on(service: dict) -> dict:
    deps = service.get("depends_on") or {}
    return {name: {} for name in deps} if isinstance(deps, list) else deps


def test_docker_compose_config_validates():
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("docker-compose is not installed; .ci/run should have installed it (apt-get install docker-compose)")
        pytest.skip("docker-compose not installed (apt-get install docker-compose); the YAML checks still ran")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    for extra in ([], ["--profile", "gpu"], ["--profile", "gpu8"]):
        result = subprocess.run(
            [tool, "-f", str(COMPOSE), *extra, "config", "-q"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, f"docker-compose {' '.join([*extra, 'config', '-q'])} failed:\n{result.stderr}"


def test_app_services_share_one_image_and_the_data_volume(compose, services):
    app = {name for name, svc in services.items() if "build" in svc or svc.get("image", "").startswith("adapt-distill")}
    assert app == APP_SERVICES
    builds = {yaml.safe_dump(services[name].get("build"), sort_keys=True) for name in APP_SERVICES}
    images = {services[name].get("image") for name in APP_SERVICES}
    assert len(builds) == 1 and len(images) == 1, "app services must build and tag the same image"
    build = services["migrate"]["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (ROOT / context / dockerfile).is_file()

    volumes = set()
    for name in APP_SERVICES:
        mounts = [m if isinstance(m, str) else f"{m['source']}:{m['target']}" for m in services[name].get("volumes", [])]
        data_mounts = [m.split(":")[0] for m in mounts if m.split(":")[1] == DATA_DIR]
        assert len(data_mounts) == 1, f"{name} must mount the shared volume at {DATA_DIR}"
        volumes.add(data_mounts[0])
    assert len(volumes) == 1, f"app services mount different volumes at {DATA_DIR}: {volumes}"
    assert volumes.pop() in (compose.get("volumes") or {}), "the data volume must be a declared named volume"


def test_app_services_reach_postgres_and_valkey(services):
    for name in APP_SERVICES:
        env = _env(services[name])
        assert env.get("ADAPT_DISTILL_HOME") == DATA_DIR, name
        db = urlsplit(env.get("DATABASE_URL") or "")
        assert db.scheme == "postgresql+psycopg", f"{name}: DATABASE_URL must use the psycopg 3 driver"
        assert db.hostname in services and db.hostname == "postgres", name
        redis = urlsplit(env.get("REDIS_URL") or "")
        assert redis.scheme == "redis" and redis.hostname == "valkey", name
        assert redis.hostname in services, name

    pg_env = _env(services["postgres"])
    db = urlsplit(_env(services["dashboard"])["DATABASE_URL"])
    assert (db.username, db.password, db.path.lstrip("/")) == (
        pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"], pg_env["POSTGRES_DB"])


def test_backing_services(services):
    assert services["valkey"]["image"].startswith("valkey/valkey")
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["postgres"].get("healthcheck", {}).get("test"), "postgres needs a healthcheck"


def test_startup_order(services):
    migrate_deps = _depends_on(services["migrate"])
    assert migrate_deps.get("postgres", {}).get("condition") == "service_healthy"
    assert services["migrate"].get("restart", "no") in ("no", False), "migrate runs once"
    for name in APP_SERVICES - {"migrate"}:
        deps = _depends_on(services[name])
        assert deps.get("migrate", {}).get("condition") == "service_completed_successfully", name
        assert "valkey" in deps, name


def test_commands(services):
    assert _argv(services["migrate"]) == ["adapt-distill", "migrate"]
    dashboard = _argv(services["dashboard"])
    assert dashboard[:2] == ["adapt-distill", "dashboard"] and "8501" in dashboard
    assert any(str(p).split(":")[-1].split("/")[0] == "8501" for p in services["dashboard"].get("ports", []))
    # published on the host's loopback unless configured: the dashboard has no login
    assert all(str(p).startswith("${ADAPT_DISTILL_PUBLISH:-127.0.0.1}:") for p in services["dashboard"]["ports"])
    assert _queues(services["worker-cpu"]) == ["cpu"]
    for name in GPU_WORKERS:
        gpu_queues = _queues(services[name])
        assert gpu_queues[0] == "gpu" and "cpu" in gpu_queues, name


def test_gpu_worker_reserves_a_gpu_and_is_opt_in(services):
    for name in GPU_WORKERS:
        gpu = services[name]
        assert gpu.get("profiles"), f"{name} must start only with a profile"
        devices = gpu["deploy"]["resources"]["reservations"]["devices"]
        assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), name
    for name, svc in services.items():
        if name not in GPU_WORKERS:
            assert not svc.get("profiles"), f"{name} must start without a profile"
            assert "deploy" not in svc, f"{name} must not reserve devices"


def test_one_gpu_worker_per_gpu(services):
    """`--scale worker-gpu=N` with `count: 1` would give every replica the same GPU: each GPU has a
    worker of its own, pinned by device_ids, the same worker apart from its GPU; the profile gpuN
    (gpu for one) starts the workers of GPUs 0 to N-1."""
    def apart_from_the_gpu(name: str) -> dict:
        return {k: v for k, v in services[name].items() if k not in ("deploy", "profiles")}

    pinned = {}
    for index, name in enumerate(GPU_WORKERS):
        (device,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert "count" not in device, f"{name} must name its GPU (device_ids), not a count"
        assert device.get("device_ids") == [str(index)], f"{name} must reserve GPU {index} alone"
        pinned[name] = index
        assert apart_from_the_gpu(name) == apart_from_the_gpu("worker-gpu"), f"{name} differs in more than its GPU"
    assert sorted(pinned.values()) == list(range(len(GPU_WORKERS)))
    for profile, gpus in (("gpu", 1), ("gpu2", 2), ("gpu4", 4), ("gpu8", 8)):
        started = [name for name in GPU_WORKERS if profile in services[name]["profiles"]]
        assert sorted(pinned[name] for name in started) == list(range(gpus)), profile


def test_dockerfile():
    text = DOCKERFILE.read_text()
    instructions = [line.split(None, 1) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    keywords = [parts[0].upper() for parts in instructions]
    assert instructions[0][1].startswith("python:3.11-slim")
    assert "ARG TORCH_INDEX_URL" in text and "torch==" in text
    assert "ADAPT_DISTILL_HOME=/data" in text
    user = [parts[1].strip() for parts in instructions if parts[0].upper() == "USER"]
    assert user and user[-1] not in ("root", "0"), "the image must run as a non-root user"
    assert "EXPOSE" in keywords and any(p[0].upper() == "EXPOSE" and "8501" in p[1] for p in instructions)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


@pytest.mark.tried("docker-compose stops the workers in the middle of a run")
def test_workers_get_time_to_checkpoint_when_compose_stops_them(services):
    """Docker's default 10 s would SIGKILL a worker whose job is writing its checkpoint."""
    def seconds(text: str) -> float:
        units = {"s": 1, "m": 60, "h": 3600}
        return sum(float(n) * units[u] for n, u in __import__("re").findall(r"([\d.]+)([smh])", text))

    for name in ("worker-cpu", *GPU_WORKERS):
        assert seconds(str(services[name].get("stop_grace_period", "10s"))) >= 120, name
    for name in GPU_WORKERS:  # a large model's step and checkpoint on a GPU
        assert seconds(str(services[name]["stop_grace_period"])) >= 300, name


def test_the_dashboard_and_the_workers_see_one_read_only_import_folder(services):
    """Big corpora: the dashboard lists the import folder and a worker reads the file from it, so both
    mount the same host folder at ADAPT_DISTILL_IMPORT_DIR, read-only (nothing there is written)."""
    seen = set()
    for name in ("dashboard", "worker-cpu", "worker-gpu"):
        folder = _env(services[name]).get("ADAPT_DISTILL_IMPORT_DIR")
        assert folder, f"{name} has no ADAPT_DISTILL_IMPORT_DIR"
        # SOURCE:TARGET[:MODE], the source possibly a ${VARIABLE:-default} with colons of its own
        mounts = [m.rsplit(":", 2) for m in services[name].get("volumes", []) if isinstance(m, str)]
        mounts = [m if m[-1] in ("ro", "rw") else [*m[-2:], "rw"] for m in mounts]
        mounts = [(m[-3], m[-1]) for m in mounts if m[-2] == folder]
        assert len(mounts) == 1, f"{name} mounts nothing at {folder}"
        source, mode = mounts[0]
        assert mode == "ro", f"{name} mounts the import folder writable: {source}"
        seen.add((source, folder))
    assert len(seen) == 1, f"the dashboard and the workers see different import folders: {seen}"
    assert _env(services["dashboard"]).get("ADAPT_DISTILL_UPLOAD_MB"), "the upload limit is configurable"
