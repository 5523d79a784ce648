"""Workers on several machines (README, "Workers on several machines"), simulated on one: two
`adapt-distill worker` processes that share nothing but one Redis, one PostgreSQL and one data
folder. Each "machine" has its own working directory, HOME, TMPDIR and Hugging Face caches and its
own umask. Run as root (as in CI), the data folder belongs to a group (setgid, so what anyone writes
there belongs to the group), other accounts of that group and outside it try to read the models,
and each machine runs as an account of its own in that group whenever another account can run the
project's Python (not when the interpreter lies in a folder only root may enter; then as root).

  machine "cpu": serves the cpu queue, umask 002 (the group may read and write)
  machine "gpu": serves the gpu queue, umask 007 (the group may read and write, nobody else anything)

The test process is the third machine, the one the dashboard and the submitting user run on (umask
002): it adds a corpus and a base model to the shared folder and submits a chain as the product
does (analysis -> expansion at the pick -> adaptation of the expanded model), then checks who ran
what, where the outputs went, their permissions (transformers writes model.safetensors 0600; with
accounts of their own, the gpu machine's account loads the expansion the cpu machine's account
wrote), the shared token cache, and what the dashboard shows.

The database is a schema of its own in TEST_DATABASE_URL's database (search_path in the URL), so a
test run sharing that database is not disturbed and does not disturb this one.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from conftest import build_tiny_bert, stop_process, wait_for_run, write_corpus

from core.configs import VocabConfig
from db import store
from db.models import Run, RunStatus

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "app" / "main.py"
GROUP = 43100  # the group that owns the data folder (numeric ids: no /etc/passwd entry is needed)
ACCOUNTS = {"cpu": 43101, "gpu": 43102}
READER, OUTSIDER, OUTSIDERS = 43103, 43104, 43199  # a member of the group; someone of another group
UMASKS = {"cpu": 0o002, "gpu": 0o007}
SUBMITTER_UMASK = 0o002


@pytest.fixture
def postgres_url():
    """A migrated, empty schema of its own in TEST_DATABASE_URL's database; dropped afterwards."""
    from sqlalchemy import create_engine, text

    from db.migrate import upgrade
    from db.session import get_engine

    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        if os.environ.get("CI"):
            pytest.fail("TEST_DATABASE_URL must be set in CI so the PostgreSQL tests run")
        pytest.skip("workers on several machines share a PostgreSQL: set TEST_DATABASE_URL (.ci/run sets it)")
    schema = f"machines_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    try:
        upgrade(url)
        yield url
    finally:
        get_engine(url).dispose()
        with admin.connect() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def place():
    """A folder for the shared data folder and the machines, outside pytest's tmp_path (whose parents
    only root may enter), removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="adapt-distill-machines-"))
    root.chmod(0o711)  # others may pass through, not list
    yield root
    shutil.rmtree(root, ignore_errors=True)


def separate_accounts(place: Path) -> bool:
    """Whether the machines can run as accounts of their own: root can switch users, and another user
    can run this project's Python (the interpreter and the checkout are readable to others)."""
    if os.geteuid() != 0:
        return False
    try:
        probe = subprocess.run([sys.executable, "-c", "import app.cli.parser"], user=ACCOUNTS["gpu"], group=GROUP,
                               extra_groups=[], cwd=place, env={"PATH": os.environ["PATH"], "HOME": str(place)},
                               capture_output=True, text=True, timeout=120)
    except OSError:  # the interpreter lies in a folder only its owner may enter
        return False
    return probe.returncode == 0


def machine(place: Path, name: str, accounts: bool, shared: Path, database_url: str, redis_url: str) -> dict:
    """A machine's own folders and environment (nothing inherited from this process)."""
    folder = place / name
    for sub in ("home", "tmp", "work", "cache/huggingface"):
        (folder / sub).mkdir(parents=True)
    if accounts:
        for path in [folder, *folder.rglob("*")]:
            os.chown(path, ACCOUNTS[name], GROUP)
    folder.chmod(0o700)
    env = {
        "PATH": os.environ["PATH"], "LANG": "C.UTF-8", "HOME": str(folder / "home"), "USER": f"adapt-{name}",
        "LOGNAME": f"adapt-{name}", "TMPDIR": str(folder / "tmp"), "XDG_CACHE_HOME": str(folder / "cache"),
        "HF_HOME": str(folder / "cache" / "huggingface"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        # the three settings every machine shares
        "REDIS_URL": redis_url, "DATABASE_URL": database_url, "ADAPT_DISTILL_HOME": str(shared),
    }
    return {"name": name, "folder": folder, "env": env, "account": ACCOUNTS[name] if accounts else os.getuid(),
            "umask": UMASKS[name], "accounts": accounts}


def start_worker(spec: dict, queues: str) -> subprocess.Popen:
    """`adapt-distill worker --queues QUEUES` on a machine: its umask set by a wrapper, as a service
    unit or a login shell would."""
    command = ["sh", "-c", f'umask {spec["umask"]:03o} && exec "$@"', "sh",
               sys.executable, "-m", "app.cli", "worker", "--queues", queues]
    account = {"user": spec["account"], "group": GROUP, "extra_groups": []} if spec["accounts"] else {}
    return subprocess.Popen(command, cwd=spec["folder"] / "work", env=spec["env"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **account)


def wait_for(sessions, run_id: int, workers: dict, timeout: float = 240):
    return wait_for_run(sessions, run_id, timeout, alive=workers)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def can_read(path: Path, user: int, group: int) -> bool:
    """Whether another account (no supplementary groups) can read a file."""
    result = subprocess.run(["cat", str(path)], user=user, group=group, extra_groups=[],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30)
    return result.returncode == 0


@pytest.mark.tried("two machines (own accounts of one group, homes, temp and cache folders, umasks) run a chain "
                   "through one Redis, one PostgreSQL and one shared data folder")
def test_workers_on_two_machines_share_redis_postgres_and_the_data_folder(postgres_url, redis, redis_url, place,
                                                                          tmp_path, monkeypatch):
    from rq import Worker
    from streamlit.testing.v1 import AppTest

    from core.model_io import load_tokenizer
    from core.train.tokens import list_streams, tokenizer_key
    from db import settings
    from db.session import get_sessionmaker
    from worker import corpora, training, vocabulary
    from worker.queueing.submit import submit_runs
    from worker.vocabulary import submit_analysis

    rooted, accounts = os.geteuid() == 0, separate_accounts(place)
    shared = place / "shared"
    shared.mkdir()
    if rooted:
        os.chown(shared, -1, GROUP)
    shared.chmod(0o2770)  # the group's, and what is made in it is the group's too
    machines = {name: machine(place, name, accounts, shared, postgres_url, redis_url) for name in ("cpu", "gpu")}
    for name, value in (("ADAPT_DISTILL_HOME", str(shared)), ("DATABASE_URL", postgres_url),
                        ("REDIS_URL", redis_url)):
        monkeypatch.setenv(name, value)  # the dashboard's machine: the same three settings
    sessions = get_sessionmaker(postgres_url)

    workers = {}
    try:
        previous_umask = os.umask(SUBMITTER_UMASK)
        try:
            workers = {"cpu": start_worker(machines["cpu"], "cpu"), "gpu": start_worker(machines["gpu"], "gpu")}
            # What the user puts in the shared folder: a corpus (copied in by adapt-distill) and a base
            # model (transformers writes model.safetensors 0600: one copied in by hand needs chmod -R g+rX).
            base = build_tiny_bert(shared / "models" / "base")
            subprocess.run(["chmod", "-R", "g+rX", str(base)], check=True)
            corpus, _ = corpora.add_corpus(sessions, write_corpus(tmp_path / "domain.txt"))

            deadline = time.monotonic() + 120
            while len(registered := {tuple(w.queue_names()): w.name for w in Worker.all(connection=redis)}) < 2:
                for name, process in workers.items():
                    assert process.poll() is None, f"the {name} worker exited ({process.returncode}): its log is below"
                assert time.monotonic() < deadline, f"the workers did not register: {registered}"
                time.sleep(0.2)
            names = {"cpu": registered[("cpu",)], "gpu": registered[("gpu",)]}

            # The chain as the product submits it: each run waits for the one it needs.
            analysis, _ = submit_analysis(sessions, redis, corpus.id, str(base), VocabConfig(step=20, max_added=40))
            expansion = vocabulary.create_expansion(sessions, analysis.id, vocabulary.PICK)
            adaptation = training.create_adaptation(
                sessions, corpus.id, f"run:{expansion.id}",
                {"steps": 4, "seq_len": 32, "batch_size": 4, "device": "cpu", "head_warmup": 0},
                depends_on=[expansion])
            submit_runs(sessions, redis, [expansion, adaptation])
        finally:
            os.umask(previous_umask)

        runs = {kind: wait_for(sessions, run_id, workers)
                for kind, run_id in (("analysis", analysis.run_id), ("expansion", expansion.id),
                                     ("adaptation", adaptation.id))}
        for kind, run in runs.items():
            assert run.status == RunStatus.succeeded, f"{kind}: {run.error}"

        # --- who ran what: the cpu machine the analysis and expansion, the gpu machine the adaptation
        assert (runs["analysis"].queue, runs["expansion"].queue, runs["adaptation"].queue) == ("cpu", "cpu", "gpu")
        assert runs["analysis"].worker == runs["expansion"].worker == names["cpu"]
        assert runs["adaptation"].worker == names["gpu"]

        # --- the outputs are in the shared folder, with the permissions each machine's umask allows
        expanded, adapted = Path(runs["expansion"].output_dir), Path(runs["adaptation"].output_dir)
        for folder in (expanded, adapted):
            assert folder.is_relative_to(shared) and (folder / "model.safetensors").is_file(), folder
        with sessions.begin() as session:
            artifacts = [a.path for r in runs.values() for a in store.get(session, Run, r.id).artifacts]
        assert artifacts and all(Path(p).is_relative_to(shared) for p in artifacts), artifacts
        for folder, spec in ((expanded, machines["cpu"]), (adapted, machines["gpu"])):
            files = [p for p in folder.rglob("*") if p.is_file()]
            assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in files}
            expected = 0o666 & ~spec["umask"]
            assert {p.name: oct(mode(p)) for p in files} == {p.name: oct(expected) for p in files}, spec["name"]
            for path in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
                assert mode(path) & 0o050 == 0o050, f"{path} must let the group in ({oct(mode(path))})"
            if rooted:  # the group's, through the setgid data folder, whoever wrote them
                assert {p.stat().st_gid for p in files} == {GROUP}
            if accounts:
                assert {p.stat().st_uid for p in files} == {spec["account"]}
        weights = adapted / "model.safetensors"
        assert mode(weights) & 0o040 and not mode(weights) & 0o007  # the group reads it; others nothing
        if rooted:  # the same, tried by other accounts: one of the group, one not
            assert can_read(weights, READER, GROUP)
            assert not can_read(weights, OUTSIDER, OUTSIDERS)
            assert can_read(expanded / "model.safetensors", READER, GROUP)

        # --- the token stream the adaptation trained from was written to the shared cache, once
        key = tokenizer_key(load_tokenizer(adapted))
        streams = [s for s in list_streams(shared / "cache" / "tokens", corpus.sha256) if s.tokenizer_key == key]
        assert len(streams) == 1 and streams[0].tokens > 0, list_streams(shared / "cache" / "tokens")
        assert settings.token_cache_dir() == shared / "cache" / "tokens"
        assert mode(streams[0].path) & 0o040
        if accounts:
            assert streams[0].path.stat().st_uid == ACCOUNTS["gpu"]  # tokenized on the machine that trained

        # --- the dashboard, on a third machine with the same three settings, shows both workers and
        # the runs, and the model the gpu machine made
        at = AppTest.from_file(str(MAIN), default_timeout=120).run()
        assert not at.exception, at.exception
        assert any("2 workers: cpu, gpu queues; no GPU" in c.value for c in at.sidebar.caption), \
            [c.value for c in at.sidebar.caption]
        at.switch_page("views/runs.py").run()
        assert not at.exception and not at.error, at.exception or at.error
        table = at.dataframe[0].value
        shown = dict(zip(table["id"], table["status"]))
        assert shown == {r.id: "succeeded" for r in runs.values()}, shown
        at.selectbox(key="runs_selected").set_value(adaptation.id).run()
        captions = " ".join(c.value for c in at.caption)
        assert "queue: `gpu`" in captions and f"worker: `{names['gpu']}`" in captions, captions
        assert f"`{adapted}`" in captions
        assert at.code and at.code[0].value.splitlines()[-1].startswith("step 4/4"), "the run's log is readable"

        at.switch_page("views/models.py").run()
        assert not at.exception and not at.error, at.exception or at.error
        listed = at.dataframe[0].value
        assert any(str(m).startswith(f"run:{adaptation.id} · adapted") for m in listed["model"]), list(listed["model"])
        at.selectbox(key="models_selected").set_value(f"run:{adaptation.id}").run()
        assert not at.exception and not at.error
        captions = " ".join(c.value for c in at.caption)
        assert f"`{adapted}`" in captions and "tokens per word" in captions, captions
        assert at.get("download_button"), "the adapted model can be downloaded from the dashboard"
    finally:
        logs = {name: stop_process(process) for name, process in workers.items()}
        print(f"machines as accounts of their own: {accounts}; shared folder owned by group {GROUP}: {rooted}")
        for name, out in logs.items():  # shown when the test fails (or with -s)
            print(f"--- {name} worker ---\n{out}")
    for name, process in workers.items():
        assert process.returncode == 0, f"the {name} worker did not stop cleanly:\n{logs[name]}"
    assert f"run-{analysis.run_id}" in logs["cpu"] and f"run-{adaptation.id}" in logs["gpu"]
    assert f"run-{adaptation.id}" not in logs["cpu"] and f"run-{analysis.run_id}" not in logs["gpu"]
