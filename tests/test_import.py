"""Big corpora: the server-side import folder (ADAPT_DISTILL_IMPORT_DIR) read by a real worker
process, the path checks that keep it to that folder, and the browser upload limit. Nothing is
mocked."""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import stop_process, wait_for_run, write_corpus
from rq.job import Job
from streamlit.testing.v1 import AppTest

from core.errors import ConfigError, CorpusError
from core.formatting import human_bytes
from db import store
from db.models import Corpus, Run, RunKind, RunStatus
from worker import corpora, lifecycle
from worker.imports import list_importable, resolve_import
from worker.queueing.queues import SERIALIZER

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "app" / "main.py"


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(MAIN), default_timeout=120).run()
    assert not at.exception, at.exception
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, at.exception
    return at


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def wait_for(sessions, run_id: int, timeout: float = 120):
    return wait_for_run(sessions, run_id, timeout)


@pytest.fixture
def import_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "import"
    folder.mkdir()
    monkeypatch.setenv("ADAPT_DISTILL_IMPORT_DIR", str(folder))
    return folder


# --- the path checks ------------------------------------------------------------------------------

def test_only_files_inside_the_import_folder_resolve(tmp_path):
    folder = tmp_path / "import"
    (folder / "sub").mkdir(parents=True)
    inside = write_corpus(folder / "notes.txt", documents=20)
    nested = write_corpus(folder / "sub" / "more.txt", documents=20, seed=1)
    outside = write_corpus(tmp_path / "secret.txt", documents=20, seed=2)
    (folder / "link-inside.txt").symlink_to(inside)
    (folder / "link-outside.txt").symlink_to(outside)
    (folder / "escape").symlink_to(tmp_path)  # a folder link that leads out

    assert resolve_import(folder, "notes.txt") == inside.resolve()
    assert resolve_import(folder, " sub/more.txt ") == nested.resolve()
    assert resolve_import(folder, "sub/../notes.txt") == inside.resolve()
    assert resolve_import(folder, "link-inside.txt") == inside.resolve()
    for name in ("../secret.txt", "sub/../../secret.txt", str(outside), "link-outside.txt", "escape/secret.txt"):
        with pytest.raises(ConfigError, match="is outside the import folder") as refused:
            resolve_import(folder, name)
        assert "\n" not in str(refused.value) and "put the file inside that folder" in str(refused.value)
    with pytest.raises(CorpusError, match="'sub' is a folder: choose a file inside it"):
        resolve_import(folder, "sub")
    with pytest.raises(CorpusError, match="is a folder"):
        resolve_import(folder, ".")
    with pytest.raises(CorpusError, match="no file 'gone.txt' in the import folder: copy it there first"):
        resolve_import(folder, "gone.txt")
    os.mkfifo(folder / "pipe.txt")
    with pytest.raises(CorpusError, match="'pipe.txt' is not a regular file"):
        resolve_import(folder, "pipe.txt")
    (folder / "loop.txt").symlink_to(folder / "loop.txt")
    with pytest.raises(CorpusError):
        resolve_import(folder, "loop.txt")
    with pytest.raises(ConfigError, match="choose a file of the import folder"):
        resolve_import(folder, "  ")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_import(tmp_path / "nowhere", "notes.txt")
    with pytest.raises(ConfigError, match="is not a folder"):
        resolve_import(inside, "notes.txt")

    # The folder itself may be reached through a link; what matters is where files end up.
    (tmp_path / "import-link").symlink_to(folder)
    assert resolve_import(tmp_path / "import-link", "notes.txt") == inside.resolve()
    with pytest.raises(ConfigError, match="is outside the import folder"):
        resolve_import(tmp_path / "import-link", "../secret.txt")


def test_the_listing_shows_the_files_inside_by_name_with_sizes(tmp_path):
    folder = tmp_path / "import"
    (folder / "b-sub").mkdir(parents=True)
    (folder / ".partial").mkdir()
    write_corpus(folder / "c.jsonl", documents=5)
    write_corpus(folder / "a.txt", documents=5, seed=1)
    write_corpus(folder / "b-sub" / "d.csv", documents=5, seed=2)
    write_corpus(folder / ".copying.txt", documents=5)
    write_corpus(folder / ".partial" / "e.txt", documents=5)
    write_corpus(tmp_path / "secret.txt", documents=5)
    (folder / "to-secret.txt").symlink_to(tmp_path / "secret.txt")
    (folder / "to-a.txt").symlink_to(folder / "a.txt")
    (folder / "dangling.txt").symlink_to(folder / "missing.txt")
    (folder / "escape").symlink_to(tmp_path)

    files, truncated = list_importable(folder)
    assert not truncated
    assert [f.name for f in files] == ["a.txt", "b-sub/d.csv", "c.jsonl", "to-a.txt"]
    sizes = {f.name: f.size for f in files}
    assert sizes["a.txt"] == sizes["to-a.txt"] == (folder / "a.txt").stat().st_size
    assert sizes["b-sub/d.csv"] == (folder / "b-sub" / "d.csv").stat().st_size
    assert all(resolve_import(folder, f.name) for f in files), "every listed name imports"

    few, truncated = list_importable(folder, limit=2)
    assert truncated and len(few) == 2
    with pytest.raises(ConfigError, match="does not exist"):
        list_importable(tmp_path / "nowhere")


# --- the upload limit -------------------------------------------------------------------------------

def test_the_upload_limit_comes_from_the_environment(monkeypatch, home):
    from app.cli.serving import dashboard_command

    def limit() -> str:
        command = dashboard_command(8501)
        return command[command.index("--server.maxUploadSize") + 1]

    monkeypatch.delenv("ADAPT_DISTILL_UPLOAD_MB", raising=False)
    assert limit() == "200"  # Streamlit's own default
    monkeypatch.setenv("ADAPT_DISTILL_UPLOAD_MB", "1024")
    assert limit() == "1024"
    for bad in ("lots", "0", "-5", "1.5"):
        monkeypatch.setenv("ADAPT_DISTILL_UPLOAD_MB", bad)
        with pytest.raises(ConfigError, match="must be a whole number of megabytes"):
            dashboard_command(8501)

    # The command line refuses a bad value in one line, before starting anything.
    env = {**os.environ, "ADAPT_DISTILL_HOME": str(home), "ADAPT_DISTILL_UPLOAD_MB": "lots"}
    env.pop("DATABASE_URL", None)
    result = subprocess.run([sys.executable, "-m", "app.cli", "dashboard", "--port", "8599"], env=env,
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: ADAPT_DISTILL_UPLOAD_MB=lots must be a whole number of megabytes, at least 1 (default 200); put "
        "larger files in the import folder (ADAPT_DISTILL_IMPORT_DIR)"]


def test_the_corpora_page_states_the_upload_limit_the_server_enforces(sessions, monkeypatch):
    from streamlit import config

    monkeypatch.delenv("ADAPT_DISTILL_IMPORT_DIR", raising=False)
    before = config.get_option("server.maxUploadSize")
    try:
        config.set_option("server.maxUploadSize", 7)  # what `--server.maxUploadSize 7` sets
        at = open_page("corpora")
        assert "Uploads up to 7 MB; larger files: put them in the import folder (ADAPT_DISTILL_IMPORT_DIR)." \
            in texts(at.caption)
        assert at.file_uploader[0].proto.max_upload_size_mb == 7
    finally:
        config.set_option("server.maxUploadSize", before)
    # Without an import folder the page says how to get one, and offers no import.
    assert any(c.startswith("For files larger than the upload limit: set ADAPT_DISTILL_IMPORT_DIR")
               for c in texts(at.caption))
    assert not [b for b in at.button if b.key == "corpora_import"]


# --- importing on a worker --------------------------------------------------------------------------

@pytest.fixture
def cpu_worker(home, redis, redis_url, import_dir):
    """A real `adapt-distill worker --queues cpu` process, started when the test calls it."""
    started = []

    def start():
        env = {**os.environ, "ADAPT_DISTILL_HOME": str(home), "REDIS_URL": redis_url, "HF_HUB_OFFLINE": "1",
               "ADAPT_DISTILL_IMPORT_DIR": str(import_dir)}
        env.pop("DATABASE_URL", None)
        started.append(subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--queues", "cpu"], env=env,
                                        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))

    yield start
    for process in started:
        out = stop_process(process)
        if os.environ.get("SHOW_WORKER_LOG"):
            print(out)


def test_a_file_of_the_import_folder_is_imported_by_a_worker_from_the_corpora_page(sessions, home, redis,
                                                                                    import_dir, cpu_worker):
    source = write_corpus(import_dir / "pubmed.txt", documents=1500, seed=3)
    (import_dir / "big").mkdir()
    write_corpus(import_dir / "big" / "tiny.txt", documents=3)  # too small: its import fails
    lines = source.read_text(encoding="utf-8").splitlines()

    at = open_page("corpora")
    assert not at.error
    assert "No corpus yet: upload one above." in texts(at.info)
    picker = at.selectbox(key="corpora_import_file")
    assert picker.options == [f"big/tiny.txt · {(import_dir / 'big' / 'tiny.txt').stat().st_size} B",
                              f"pubmed.txt · {human_bytes(source.stat().st_size)}"]
    picker.set_value("pubmed.txt")
    at.text_input(key="corpora_import_name").input("PubMed sample")
    at.button(key="corpora_import").click().run()
    assert not at.exception and not at.error
    with sessions.begin() as session:
        (run,) = store.rows(session, Run, kind=RunKind.corpus_import, limit=100)
        run_id, job_id = run.id, run.job_id
        assert run.status == RunStatus.queued and run.queue == "cpu"
        assert run.params["file"] == "pubmed.txt" and run.params["name"] == "PubMed sample"
        assert store.rows(session, Corpus) == [], "nothing is read until a worker takes it"
    assert f"Import of pubmed.txt queued as run {run_id}." in texts(at.success)
    progress = at.get("progress")
    assert len(progress) == 1 and f"Importing pubmed.txt (run {run_id}): queued" in progress[0].proto.text
    assert any("No worker serves the 'cpu' queue" in w for w in texts(at.warning))
    assert Job.exists(job_id, connection=redis)

    at.button(key="corpora_import").click().run()  # clicked twice: the same import, not a second one
    assert f"pubmed.txt is already being imported (run {run_id})." in texts(at.info)

    cpu_worker()
    run = wait_for(sessions, run_id)
    assert run.status == RunStatus.succeeded, run.error
    job = Job.fetch(job_id, connection=redis, serializer=SERIALIZER)
    deadline = time.monotonic() + 20  # the run is recorded before RQ marks the job finished
    while job.get_status() != "finished" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.meta["stage"] == "reading the file" and job.meta["progress"] == 1.0, job.meta
    with sessions.begin() as session:
        run = store.get(session, Run, run_id)
        (corpus,) = store.rows(session, Corpus)
        assert run.params["corpus_id"] == corpus.id and run.params["created"] is True
        assert (run.progress, run.stage) == (1.0, "done") and run.heartbeat_at is not None
        assert corpus.name == "PubMed sample" and corpus.source_name == "pubmed.txt" and corpus.format == "txt"
        assert corpus.documents == len(lines) == 1500
        assert corpus.words == sum(len(line.split()) for line in lines)
        assert corpus.distinct_words == len({w for line in lines for w in line.split()})
        assert corpus.source_bytes == source.stat().st_size
        # the stored text is the file's, a document a line, under its content hash
        assert corpus.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
        assert Path(corpus.path).read_bytes() == source.read_bytes()
        assert Path(corpus.path).parent == home / "corpora"
        corpus_id, sha = corpus.id, corpus.sha256

    at.run()  # AppTest never fires run_every: a plain rerun shows the finished import and the new corpus
    assert not at.exception and not at.error
    assert any(f"Imported pubmed.txt (run {run_id}) as corpus {corpus_id} 'PubMed sample': 1,500 documents" in s
               for s in texts(at.success))
    assert not at.get("progress")
    assert list(at.dataframe[0].value["name"]) == ["PubMed sample"], "the cached list follows the import"
    assert at.selectbox(key="corpora_selected").value == corpus_id

    # The same content again, gzip-compressed: the same corpus. A file that is too small: one line.
    (import_dir / "again.txt.gz").write_bytes(gzip.compress(source.read_bytes()))
    at.run()
    at.selectbox(key="corpora_import_file").set_value("again.txt.gz")
    at.text_input(key="corpora_import_name").input("")
    at.button(key="corpora_import").click().run()
    at.selectbox(key="corpora_import_file").set_value("big/tiny.txt")
    at.button(key="corpora_import").click().run()
    assert not at.exception and not at.error
    with sessions.begin() as session:
        again_id, tiny_id = sorted(r.id for r in store.rows(session, Run, kind=RunKind.corpus_import, limit=100) if r.id != run_id)
    again, tiny = wait_for(sessions, again_id), wait_for(sessions, tiny_id)
    assert again.status == RunStatus.succeeded, again.error
    assert again.params["corpus_id"] == corpus_id and again.params["created"] is False
    assert tiny.status == RunStatus.failed
    assert tiny.error == ("tiny.txt is too small: 3 documents of 5+ characters, at least 10 are needed")
    at.run()
    assert any(f"Imported again.txt.gz (run {again_id}): this content already exists as corpus {corpus_id}" in i
               for i in texts(at.info))
    assert [e for e in texts(at.error)] == [f"Import of big/tiny.txt (run {tiny_id}) failed: {tiny.error}"]
    with sessions.begin() as session:
        assert len(store.rows(session, Corpus)) == 1
    assert [p.name for p in (home / "corpora").iterdir()] == [f"{sha}.txt"], "a failed import leaves nothing behind"


def test_an_import_outside_the_folder_or_without_one_is_refused_before_anything_is_recorded(
        sessions, redis, import_dir, tmp_path, monkeypatch):
    from app.data import corpora as corpora_data

    write_corpus(tmp_path / "secret.txt", documents=20)
    (import_dir / "link.txt").symlink_to(tmp_path / "secret.txt")
    for name in ("../secret.txt", "link.txt", str(tmp_path / "secret.txt")):
        with pytest.raises(ConfigError, match="is outside the import folder"):
            corpora_data.start_import(sessions, redis, name)
    write_corpus(import_dir / "notes.dat", documents=20)
    with pytest.raises(CorpusError, match="cannot tell the format of 'notes.dat'"):
        corpora_data.start_import(sessions, redis, "notes.dat")
    monkeypatch.delenv("ADAPT_DISTILL_IMPORT_DIR")
    with pytest.raises(ConfigError, match="ADAPT_DISTILL_IMPORT_DIR is not set where this runs"):
        corpora_data.start_import(sessions, redis, "notes.dat")
    with sessions.begin() as session:
        assert store.rows(session, Run, limit=100) == []
    assert redis.keys("rq:job:*") == []


def test_a_cancelled_import_stops_reading_and_leaves_nothing_behind(sessions, home, redis, import_dir):
    from worker.queueing.submit import resume
    from worker.run_state import request_cancel

    chunk = write_corpus(import_dir / "chunk.txt", documents=600).read_text(encoding="utf-8")
    (import_dir / "chunk.txt").unlink()
    (import_dir / "large.txt").write_text("".join(f"{n} {chunk}" for n in range(40)), encoding="utf-8")
    run, reused = corpora.create_import(sessions, "large.txt")
    assert not reused
    seen = []

    def cancel_once_reading(stage: str, fraction: float) -> None:  # what the CLI's progress bars get
        seen.append(fraction)
        if fraction > 0:
            request_cancel(sessions, run.id)  # as the Cancel button does

    # Every report is written (interval 0) and reads the run's status back, as a worker's does each second.
    corpora.execute_import(sessions, run.id, lifecycle.Reporter(sessions, run.id, interval=0,
                                                              echo=cancel_once_reading))
    assert len(seen) == 2 and seen[0] == 0.0 and 0 < seen[1] < 1, seen  # 10,000 of 24,000 documents read
    with sessions.begin() as session:
        stopped = store.get(session, Run, run.id)
        assert stopped.status == RunStatus.cancelled
        assert stopped.error == "cancelled by the user; import the file again to start over"
        assert "corpus_id" not in stopped.params
        assert store.rows(session, Corpus) == []
    assert list((home / "corpora").iterdir()) == [], "the half-written copy is removed"
    with pytest.raises(ConfigError, match="import the file again"):
        resume(sessions, redis, run.id)
