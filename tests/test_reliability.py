"""The service under the failures it will meet: Redis going away (stopped, restarted empty,
flushed), full disks, failures mid-run and submitters racing each other. Real processes
throughout: a private Valkey that the test stops and starts, `adapt-distill` workers and CLI
commands, a small tmpfs filesystem, several submitting processes."""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import build_tiny_bert, stop_process, wait_for_run, write_corpus

from core.configs import VocabConfig
from db import store
from db.models import Corpus, Run, RunStatus, VocabAnalysis
from worker import corpora, vocabulary

pytestmark = pytest.mark.integration


def wait_for(sessions, run_id: int, timeout: float = 240, until=lambda run: run.status.finished) -> Run:
    return wait_for_run(sessions, run_id, timeout, until)


def worker_env(home: Path, redis_url: str, **extra: str) -> dict:
    env = {**os.environ, "ADAPT_DISTILL_HOME": str(home), "REDIS_URL": redis_url, "HF_HUB_OFFLINE": "1", **extra}
    env.pop("DATABASE_URL", None)
    return env


def long_adaptation(sessions, corpus_id: int, teacher: Path, steps: int, checkpoint_every: int):
    """A recorded CPU adaptation long enough to be interrupted on the way (no evaluation on the way)."""
    from worker.training import create_adaptation

    return create_adaptation(sessions, corpus_id, str(teacher), {
        "steps": steps, "batch_size": 8, "seq_len": 64, "eval_every": 1000, "checkpoint_every": checkpoint_every,
        "device": "cpu", "head_warmup": 0})


def start_worker(env: dict, queues: str = "cpu,gpu") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--queues", queues], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def cli(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


# --- Redis is a queue: it can vanish ------------------------------------------------------------

STEPS = 800  # still running after the outage on a slow machine; a fast one may finish during it


@pytest.mark.tried("Redis stopped for 8 s while a training run works, then started again empty")
def test_a_redis_outage_neither_fails_a_training_run_nor_stops_the_worker(home, sessions, tmp_path, corpus_file):
    from worker.queueing.embedded import EmbeddedValkey
    from worker.queueing.submit import submit_runs
    from worker.vocabulary import submit_analysis

    valkey = EmbeddedValkey().start()
    worker = None
    try:
        from redis import Redis

        connection = Redis.from_url(valkey.url)
        worker = start_worker(worker_env(home, valkey.url, ADAPT_DISTILL_RECONCILE_S="2"))
        teacher = build_tiny_bert(tmp_path / "teacher")
        corpus, _ = corpora.add_corpus(sessions, corpus_file)
        run = long_adaptation(sessions, corpus.id, teacher, steps=STEPS, checkpoint_every=500)
        submit_runs(sessions, connection, [run])
        started = wait_for(sessions, run.id, 120, until=lambda r: r.status == RunStatus.running and (r.step or 0) > 0)
        valkey.stop()
        time.sleep(8)
        with sessions.begin() as session:
            during = store.get(session, Run, run.id)
            # it went on without Redis: still working, or (on a fast machine) already done, never failed
            assert during.status in (RunStatus.running, RunStatus.succeeded), during.error
            assert during.step > started.step, "no step was recorded while Redis was away"
        valkey.start()  # the same address, nothing in it: as after a restart without persistence
        done = wait_for(sessions, run.id, 600)
        assert done.status == RunStatus.succeeded, done.error
        assert done.step == STEPS and (Path(done.output_dir) / "model.safetensors").is_file()
        assert worker.poll() is None, "the worker quit instead of waiting for Redis"
        # the same worker serves new work once Redis is back
        analysis, _ = submit_analysis(sessions, connection, corpus.id, str(teacher), VocabConfig(step=20, max_added=40))
        after = wait_for(sessions, analysis.run_id, 120)
        assert after.status == RunStatus.succeeded, after.error
        from rq import Worker

        assert len(Worker.all(connection=connection)) == 1  # and is counted again by the dashboard
        worker.terminate()  # and still stops when asked
        assert worker.wait(30) == 0
    finally:
        out = stop_process(worker) if worker else ""
        valkey.stop()
        if os.environ.get("SHOW_WORKER_LOG"):
            print(out)


@pytest.mark.tried("runs recorded as queued but never put in Redis (lost enqueue, FLUSHALL) while a worker runs")
def test_the_reconciler_queues_lost_runs_and_each_runs_once(home, sessions, redis, redis_url, tmp_path):
    from worker.queueing.submit import enqueue

    corpus, _ = corpora.add_corpus(sessions, write_corpus(tmp_path / "c.txt", documents=300))
    teacher = build_tiny_bert(tmp_path / "teacher")
    # recorded in the store only: their enqueue was lost
    analyses = [vocabulary.create_analysis(sessions, corpus.id, str(teacher), VocabConfig(step=20, max_added=40 + 10 * i))[0]
                for i in range(3)]
    worker = start_worker(worker_env(home, redis_url, ADAPT_DISTILL_RECONCILE_S="1", ADAPT_DISTILL_LOST_AFTER_S="0"))
    try:
        done = [wait_for(sessions, a.run_id, 180) for a in analyses]
        assert [r.status for r in done] == [RunStatus.succeeded] * 3, [r.error for r in done]
        started = {r.id: r.started_at for r in done}
        # the same run queued twice (two reconcilers, or a resume racing one) still runs once
        redis.flushdb()
        enqueue(sessions, analyses[0].run_id, redis)
        time.sleep(4)
        with sessions.begin() as session:
            again = store.get(session, Run, analyses[0].run_id)
            assert again.status == RunStatus.succeeded and again.started_at == started[again.id]
    finally:
        out = stop_process(worker)
    assert "queued again" in out
    assert f"run {analyses[0].run_id} is succeeded, not queued: this job has nothing to do" in out


# --- a failure keeps the work done ---------------------------------------------------------------

@pytest.mark.tried("a training run fails mid-way (an error in its progress report)")
def test_a_failure_mid_run_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(tmp_path, corpus_file):
    from core.configs import AdaptConfig, TrainConfig
    from core.corpus import read_documents
    from core.train.adapt import adapt
    from core.train.checkpoints import latest_checkpoint

    teacher = build_tiny_bert(tmp_path / "teacher")
    config = AdaptConfig(seq_len=32, head_warmup=0,
                         train=TrainConfig(steps=8, batch_size=4, lr=1e-3, eval_every=100, checkpoint_every=100,
                                           device="cpu", log_every=1))

    def losses_of(out: Path, fail_at: int | None = None) -> dict[int, float]:
        losses: dict[int, float] = {}

        def progress(stage, fraction):
            if fail_at is not None and stage == "training" and round(fraction * 8) == fail_at:
                raise RuntimeError("the database went away")

        def metrics(step, values):
            if "loss" in values:
                losses[step] = values["loss"]

        adapt(teacher, lambda: read_documents(corpus_file), out, config, progress=progress, on_metrics=metrics)
        return losses

    whole = losses_of(tmp_path / "whole")
    with pytest.raises(RuntimeError):
        losses_of(tmp_path / "broken", fail_at=5)
    checkpoint = latest_checkpoint(tmp_path / "broken")
    assert checkpoint is not None and checkpoint.name == "step-0000005"  # no checkpoint was due before step 100
    resumed = losses_of(tmp_path / "broken")
    assert sorted(resumed) == [6, 7, 8]
    for step in resumed:
        assert resumed[step] == pytest.approx(whole[step], rel=1e-5, abs=1e-6)


# --- disks fill ----------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """Mount tmpfs filesystems of a given size (needs root, as in CI)."""
    mounted = []

    def mount(name: str, megabytes: int) -> Path:
        point = tmp_path / name
        point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(point)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            message = f"cannot mount a small filesystem here ({result.stderr.strip()}): the disk-full tests need root"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def fill(disk: Path, leave: int) -> Path:
    """Write a file that takes all of disk's free space but `leave` bytes. A disk the run under test
    filled already (on a slow machine it writes more before this) stays as full as it is: the
    filler is then absent, and removing it later is a no-op."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free - leave
    try:
        with open(filler, "wb") as handle:
            chunk = b"\0" * (1 << 20)
            while free > 0:
                handle.write(chunk[:min(free, len(chunk))])
                free -= len(chunk)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    return filler


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name.startswith((".tmp", "latest.tmp")))


def wide_bert(folder: Path) -> Path:
    """A BERT wide enough that one checkpoint (weights and Adam's state) is several MB."""
    from transformers import BertConfig, BertForMaskedLM

    build_tiny_bert(folder)
    vocab = (folder / "vocab.txt").read_text().split()
    config = BertConfig(vocab_size=len(vocab), hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=512, max_position_embeddings=128)
    BertForMaskedLM(config).save_pretrained(str(folder))
    return folder


def adapting_on(env: dict, home: Path, teacher: Path, corpus_file: Path) -> subprocess.Popen:
    """An inline CLI adaptation in the data folder `home`, returned once its first checkpoint is written."""
    added = json.loads(cli(env, "corpus", "add", str(corpus_file), "--json").stdout)
    command = ["adapt", "--corpus", str(added["corpus_id"]), "--model", str(teacher), "--steps", "400",
               "--batch-size", "8", "--seq-len", "64", "--checkpoint-every", "10", "--eval-every", "1000",
               "--head-warmup", "0", "--device", "cpu", "--json"]
    process = subprocess.Popen([sys.executable, "-m", "app.cli", *command], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not list((home / "runs").glob("*/model/checkpoints/latest")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    return process


@pytest.mark.tried("the disk fills while a training run writes a checkpoint")
def test_a_full_disk_fails_the_run_cleanly_and_resume_continues_from_the_last_checkpoint(
        tmp_path, small_disk, corpus_file):
    from core.train.checkpoints import latest_checkpoint
    from db.session import get_sessionmaker

    disk = small_disk("disk", 64)
    home = disk / "home"
    env = worker_env(home, "redis://unused")
    process = adapting_on(env, home, wide_bert(tmp_path / "teacher"), corpus_file)
    checkpoints = home / "runs"
    filler = fill(disk, leave=1 << 20)  # less than a checkpoint, enough for the database
    out, err = process.communicate(timeout=300)
    assert process.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no space left on device writing the checkpoint of step"), err
    assert "intact" in lines[0] and "Traceback" not in err
    run_dir = next(checkpoints.glob("*/model")).parent
    run_id = int(run_dir.name)
    assert leftovers(home) == []  # no partial checkpoint, pointer or model file
    kept = latest_checkpoint(run_dir / "model")
    assert kept is not None and (kept / "trainer.pt").is_file() and (kept / "model.safetensors").is_file()
    sessions = get_sessionmaker(f"sqlite:///{home / 'adapt-distill.db'}")
    with sessions.begin() as session:
        run = store.get(session, Run, run_id)
        assert run.status == RunStatus.failed and "no space left on device" in run.error
        step_kept = int(kept.name.split("-")[1])
        assert run.step >= step_kept
    filler.unlink()  # the user frees space and resumes
    resumed = cli(env, "runs", "resume", str(run_id), "--json")
    assert resumed.returncode == 0, resumed.stderr
    with sessions.begin() as session:
        run = store.get(session, Run, run_id)
        assert run.status == RunStatus.succeeded
        assert run.params["result"]["resumed_from"] == step_kept
    sessions.kw["bind"].dispose()


@pytest.mark.tried("the disk is full when a corpus is added, an expansion writes its model, a model is saved")
def test_a_full_disk_is_one_line_for_corpus_add_and_expand(tmp_path, small_disk, corpus_file):
    disk = small_disk("disk", 48)
    home = disk / "home"
    env = worker_env(home, "redis://unused")
    teacher = wide_bert(tmp_path / "teacher")
    added = cli(env, "corpus", "add", str(corpus_file), "--json")
    assert added.returncode == 0, added.stderr
    corpus_id = json.loads(added.stdout)["corpus_id"]
    analyzed = cli(env, "vocab", "analyze", "--corpus", str(corpus_id), "--base", str(teacher), "--step", "20",
                   "--max-added", "40", "--json")
    assert analyzed.returncode == 0, analyzed.stderr
    analysis = json.loads(analyzed.stdout)
    expand = ["vocab", "expand", "--analysis", str(analysis["analysis_id"]), "--size", str(analysis["picked_vocab_size"])]
    big = write_corpus(tmp_path / "big.txt", documents=20_000, seed=3)  # a few MB
    filler = fill(disk, leave=256 << 10)
    for args in (["corpus", "add", str(big)], expand):
        result = cli(env, *args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith("error: no space left on device"), result.stderr
        assert "free some space" in lines[0]
    assert leftovers(home) == []
    assert list((home / "corpora").iterdir()) and all(not p.name.startswith(".tmp") for p in (home / "corpora").iterdir())
    filler.unlink()
    again = cli(env, *expand, "--json")
    assert again.returncode == 0, again.stderr


# --- submitters race ---------------------------------------------------------------------------

def _submit(url: str, home: str, corpus_id: int, model: str, barrier, out) -> None:
    os.environ["ADAPT_DISTILL_HOME"] = home
    from db.session import get_sessionmaker
    from worker.specs import ModelSpec

    sessions = get_sessionmaker(url)
    with sessions.begin() as session:  # connected and warm: the eight meet at the same moment
        store.get(session, Corpus, corpus_id)
    ModelSpec.parse(model).inspect()
    barrier.wait()
    analysis, reused = vocabulary.create_analysis(sessions, corpus_id, model, VocabConfig(step=20, max_added=40))
    out.put((analysis.id, reused))


@pytest.mark.tried("8 processes submit the same analysis at the same moment (SQLite and PostgreSQL)")
def test_identical_analyses_submitted_at_once_are_one(db_url, home, tmp_path, corpus_file, monkeypatch):
    from sqlalchemy import func, select

    from db.session import get_sessionmaker

    monkeypatch.setenv("DATABASE_URL", db_url)
    sessions = get_sessionmaker(db_url)
    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    teacher = build_tiny_bert(tmp_path / "teacher")
    context = mp.get_context("spawn")
    barrier, out = context.Barrier(8), context.Queue()
    processes = [context.Process(target=_submit, args=(db_url, str(home), corpus.id, str(teacher), barrier, out))
                 for _ in range(8)]
    for p in processes:
        p.start()
    results = [out.get(timeout=120) for _ in processes]
    for p in processes:
        p.join(30)
        assert p.exitcode == 0
    assert len({analysis_id for analysis_id, _ in results}) == 1
    assert sorted(reused for _, reused in results) == [False] + [True] * 7
    with sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(VocabAnalysis)) == 1
        assert session.scalar(select(func.count()).select_from(Run)) == 1


# --- refused early ---------------------------------------------------------------------------------

@pytest.mark.tried("a model the training code cannot train (an ELECTRA checkpoint) given as teacher, model or student")
def test_a_model_of_another_architecture_is_refused_when_the_run_is_created(sessions, tmp_path, corpus_file):
    from transformers import ElectraConfig, ElectraForMaskedLM

    from core.errors import ConfigError
    from worker import training

    bert = build_tiny_bert(tmp_path / "bert")
    electra = tmp_path / "electra"
    shutil.copytree(bert, electra)
    vocab = len((bert / "vocab.txt").read_text().split())
    ElectraForMaskedLM(ElectraConfig(vocab_size=vocab, embedding_size=32, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=128)).save_pretrained(str(electra))
    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    vocabulary.create_analysis(sessions, corpus.id, str(electra), VocabConfig(step=20, max_added=40))  # it can be analysed
    student = {"layers": 1, "hidden": 16, "heads": 2, "intermediate": 32}
    for make in (lambda: training.create_adaptation(sessions, corpus.id, str(electra), {}),
                 lambda: training.create_distillation(sessions, corpus.id, str(electra), student),
                 lambda: training.create_distillation(sessions, corpus.id, str(bert), {"init": str(electra)}),
                 lambda: training.create_pipeline(sessions, "adapt-then-distill", corpus.id, str(electra), {}, student)):
        with pytest.raises(ConfigError, match="is a 'electra' model: adaptation and distillation train BERT"):
            make()
    with sessions.begin() as session:
        assert [r.kind.value for r in store.rows(session, Run, limit=100)] == ["analysis"]


@pytest.mark.tried("a run asks for a GPU that no worker (and not this machine) has")
def test_a_device_no_worker_has_is_refused_before_anything_is_recorded(home, sessions, redis, redis_url, tmp_path,
                                                                       corpus_file):
    teacher = build_tiny_bert(tmp_path / "teacher")
    env = worker_env(home, redis_url)
    corpus_id = json.loads(cli(env, "corpus", "add", str(corpus_file), "--json").stdout)["corpus_id"]
    worker = start_worker(env)
    try:
        deadline = time.monotonic() + 60
        from rq import Worker

        while not Worker.all(connection=redis):
            assert time.monotonic() < deadline, "the worker did not register"
            time.sleep(0.2)
        for extra in (["--queue"], []):  # on a worker, and inline on this machine
            for command in (["adapt"], ["distill", "--layers", "1", "--hidden", "16", "--heads", "2",
                                        "--intermediate", "32"]):
                result = cli(env, *command, "--corpus", str(corpus_id), "--model", str(teacher), "--device", "cuda",
                             *extra)
                lines = result.stderr.strip().splitlines()
                assert result.returncode == 2 and len(lines) == 1, result.stderr
                expected = "no worker serving the gpu queue can run on cuda" if extra else "no CUDA GPU is visible"
                assert expected in lines[0]
    finally:
        stop_process(worker)
    with sessions.begin() as session:
        assert store.rows(session, Run, limit=100) == []


@pytest.mark.tried("the worker is stopped (SIGTERM, as docker-compose stop does) in the middle of a training run")
def test_a_stopping_worker_checkpoints_its_run_and_another_worker_continues_it(home, sessions, redis, redis_url,
                                                                              tmp_path, corpus_file):
    from core.train.checkpoints import latest_checkpoint
    from worker.queueing.submit import submit_runs

    teacher = build_tiny_bert(tmp_path / "teacher")
    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    run = long_adaptation(sessions, corpus.id, teacher, steps=600, checkpoint_every=1000)
    submit_runs(sessions, redis, [run])
    env = worker_env(home, redis_url)
    first = start_worker(env)
    try:
        wait_for(sessions, run.id, 120, until=lambda r: r.status == RunStatus.running and (r.step or 0) >= 5)
        first.terminate()
        assert first.wait(60) == 0  # it stopped promptly, not after the run's 600 steps
    finally:
        out = stop_process(first)
    with sessions.begin() as session:
        stopped = store.get(session, Run, run.id)
        assert stopped.status == RunStatus.queued, (stopped.status, stopped.error, out)
        assert stopped.params["attempt"] == 2 and stopped.step < 600
    checkpoint = latest_checkpoint(Path(stopped.output_dir))
    assert checkpoint is not None  # none was due before step 1000: this one was written on the stop
    step = int(checkpoint.name.split("-")[1])
    second = start_worker(env)
    try:
        done = wait_for(sessions, run.id, 300)
    finally:
        stop_process(second)
    assert done.status == RunStatus.succeeded, done.error
    assert done.params["result"]["resumed_from"] == step


@pytest.mark.tried("an analysis works for seconds between two progress reports while dead workers are looked for")
def test_every_kind_of_run_beats_while_it_works(sessions, tmp_path, corpus_file, monkeypatch):
    """A vocabulary's trainer, a tokenizer pass or a slow forward may run for long without a progress
    report; the run's heartbeat goes on, so a short abandonment threshold leaves it (and the
    expansion waiting on it) alone. The work here is a pause as long as such a step."""
    import threading

    from worker import lifecycle, run_state

    monkeypatch.setenv("ADAPT_DISTILL_HEARTBEAT_S", "0.2")
    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    analysis, _ = vocabulary.create_analysis(sessions, corpus.id, str(build_tiny_bert(tmp_path / "bert")),
                                             VocabConfig(step=20, max_added=40))
    expansion = vocabulary.create_expansion(sessions, analysis.id, "pick")
    worker = threading.Thread(target=lifecycle.execute, args=(sessions, analysis.run_id, lambda run: time.sleep(3)))
    worker.start()
    time.sleep(2)  # two seconds since its last report
    dead = run_state.find_dead_runs(sessions, stale_after=1.0)
    worker.join()
    assert analysis.run_id not in dead
    with sessions.begin() as session:
        assert store.get(session, Run, analysis.run_id).status == RunStatus.succeeded
        assert store.get(session, Run, expansion.id).status == RunStatus.queued


@pytest.fixture
def hung_redis():
    """A Redis (Valkey) that accepts connections and then answers nothing: stopped with SIGSTOP."""
    import signal

    from worker.queueing.embedded import EmbeddedValkey

    valkey = EmbeddedValkey().start()
    valkey.process.send_signal(signal.SIGSTOP)
    try:
        yield valkey
    finally:
        valkey.process.send_signal(signal.SIGCONT)
        valkey.stop()


@pytest.mark.tried("Redis hangs (SIGSTOP) while the user cancels a run from the command line")
def test_a_hung_redis_is_one_line_for_the_command_line(home, sessions, tmp_path, corpus_file, hung_redis):
    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    run = long_adaptation(sessions, corpus.id, build_tiny_bert(tmp_path / "bert"), steps=10, checkpoint_every=5)
    with sessions.begin() as session:  # it was queued: the cancel asks Redis for its job
        store.get(session, Run, run.id).job_id = f"run-{run.id}"
    env = worker_env(home, hung_redis.url, ADAPT_DISTILL_REDIS_TIMEOUT_S="1")
    started = time.monotonic()
    result = cli(env, "runs", "cancel", str(run.id), timeout=60)
    assert time.monotonic() - started < 30
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: Redis at REDIS_URL did not answer in time") and "ADAPT_DISTILL_REDIS_TIMEOUT_S" in line


@pytest.mark.tried("Redis hangs (SIGSTOP) while a run reports its progress")
def test_a_hung_redis_never_holds_the_work_of_a_run(sessions, tmp_path, corpus_file, hung_redis, monkeypatch):
    """The job's meta in Redis is a copy of the progress the store has: a run reports on at full
    speed, and the store has every report, while Redis answers nothing."""
    import threading

    from rq.job import Job

    from worker import lifecycle
    from worker.queueing.queues import SERIALIZER, connect

    monkeypatch.setenv("ADAPT_DISTILL_REDIS_TIMEOUT_S", "600")  # a wait the work must never see
    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    run = long_adaptation(sessions, corpus.id, build_tiny_bert(tmp_path / "bert"), steps=10, checkpoint_every=5)
    job = Job.create("worker.queueing.jobs.run_job", args=(run.id,), id=f"run-{run.id}",
                     connection=connect(hung_redis.url), serializer=SERIALIZER)
    report = lifecycle.Reporter(sessions, run.id, job, interval=0.0)
    reports = threading.Thread(target=lambda: [report("training", i / 10) for i in range(1, 11)], daemon=True)
    reports.start()
    reports.join(20)
    assert not reports.is_alive(), "a progress report waited on Redis"
    with sessions.begin() as session:
        assert store.get(session, Run, run.id).progress == store.RUNNING_MOST  # the last report reached the store
    assert not report.meta_writer.drain(0.5)  # the copy for Redis is what waits, and only it


@pytest.mark.tried("a corpus is deleted while a model built from it exists (CLI and the Corpora page)")
def test_a_corpus_with_models_built_from_it_is_not_deleted(home, sessions, tmp_path, corpus_file):
    from test_app import open_page

    from worker import lifecycle

    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    analysis, _ = vocabulary.create_analysis(sessions, corpus.id, str(build_tiny_bert(tmp_path / "bert")),
                                             VocabConfig(step=20, max_added=40))
    lifecycle.execute_run(sessions, analysis.run_id)
    expansion = vocabulary.create_expansion(sessions, analysis.id, "pick")
    lifecycle.execute_run(sessions, expansion.id)
    env = worker_env(home, "redis://127.0.0.1:1/0")

    refused = cli(env, "corpus", "delete", str(corpus.id))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith(f"error: corpus {corpus.id} cannot be deleted: 1 model built from it (run:{expansion.id} ")

    at = open_page("corpora")
    at.button(key="corpora_delete").click().run()
    at.button(key="corpora_delete_yes").click().run()
    assert not at.exception and [e.value for e in at.error] == [line.removeprefix("error: ")]

    shown = cli(env, "models", "show", f"run:{expansion.id}", "--json")
    assert shown.returncode == 0, shown.stderr
    with sessions.begin() as session:
        assert store.get(session, Corpus, corpus.id).path == str(corpus.path) and Path(corpus.path).is_file()


@pytest.mark.tried("the disk that holds the database fills to the last byte while a training run writes a checkpoint")
def test_a_full_disk_under_the_database_still_records_the_true_cause(tmp_path, small_disk, corpus_file):
    from db.session import get_sessionmaker

    disk = small_disk("disk", 64)
    home = disk / "home"
    env = worker_env(home, "redis://unused")
    process = adapting_on(env, home, wide_bert(tmp_path / "teacher"), corpus_file)
    filler = fill(disk, leave=0)  # not a byte left, for the checkpoint or the database
    out, err = process.communicate(timeout=300)
    assert process.returncode == 2 and "Traceback" not in err, err
    run_id = int(next((home / "runs").glob("*/model")).parent.name)
    filler.unlink(missing_ok=True)
    sessions = get_sessionmaker(f"sqlite:///{home / 'adapt-distill.db'}")
    with sessions.begin() as session:
        run = store.get(session, Run, run_id)
        assert run.status == RunStatus.failed and "no space left on device" in run.error, (run.status, run.error)
    assert not list((home / "runs").glob("*/.outcome-reserve")), "the kept space is given back"
    sessions.kw["bind"].dispose()


@pytest.mark.tried("a job for a run that still waits on another is put on the queue and taken first")
def test_a_job_starts_only_when_the_store_says_its_dependencies_succeeded(home, sessions, redis, redis_url, tmp_path):
    from worker.queueing.queues import RUN_JOB, get_queue

    corpus, _ = corpora.add_corpus(sessions, write_corpus(tmp_path / "c.txt", documents=300))
    analysis, _ = vocabulary.create_analysis(sessions, corpus.id, str(build_tiny_bert(tmp_path / "bert")),
                                             VocabConfig(step=20, max_added=40))  # recorded; its job not queued yet
    expansion = vocabulary.create_expansion(sessions, analysis.id, "pick")  # waits on the analysis
    get_queue("cpu", redis).enqueue_call(RUN_JOB, args=(expansion.id,), job_id=f"stray-{expansion.id}")
    worker = start_worker(worker_env(home, redis_url, ADAPT_DISTILL_RECONCILE_S="1", ADAPT_DISTILL_LOST_AFTER_S="0"))
    try:  # the stray job is taken before the analysis (queued by the worker as it starts) has run
        done = wait_for(sessions, expansion.id, 180)
    finally:
        out = stop_process(worker)
    assert done.status == RunStatus.succeeded, (done.status, done.error, out[-2000:])
    with sessions.begin() as session:
        assert done.started_at >= store.get(session, Run, analysis.run_id).finished_at
    assert f"run {expansion.id} was started before run {analysis.run_id}" in out


@pytest.mark.tried("the worker is killed outright (SIGKILL) in the middle of a training run")
def test_a_killed_worker_leaves_no_trainer_behind(home, sessions, redis, redis_url, tmp_path, corpus_file):
    from core.train.checkpoints import latest_checkpoint
    from worker.queueing.submit import submit_runs

    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    run = long_adaptation(sessions, corpus.id, build_tiny_bert(tmp_path / "teacher"), steps=600,
                          checkpoint_every=1000)
    submit_runs(sessions, redis, [run])
    env = worker_env(home, redis_url, ADAPT_DISTILL_HEARTBEAT_S="0.5")
    first = start_worker(env)
    try:
        wait_for(sessions, run.id, 120, until=lambda r: r.status == RunStatus.running and (r.step or 0) >= 5)
        first.kill()  # no SIGTERM to pass on: the work horse is on its own
        first.wait(30)
        stopped = wait_for(sessions, run.id, 30, until=lambda r: r.status != RunStatus.running)
    finally:
        stop_process(first)
    assert stopped.status == RunStatus.queued and stopped.step < 600, (stopped.status, stopped.step)
    beat = stopped.heartbeat_at
    time.sleep(3)  # no horse beats on
    with sessions.begin() as session:
        assert store.get(session, Run, run.id).heartbeat_at == beat
    step = int(latest_checkpoint(Path(stopped.output_dir)).name.split("-")[1])  # saved as it stopped
    second = start_worker(env)
    try:
        done = wait_for(sessions, run.id, 300)
    finally:
        stop_process(second)
    assert done.status == RunStatus.succeeded and done.params["result"]["resumed_from"] == step, done.error


@pytest.mark.tried("a run taken for abandoned is resumed while its first trainer still works")
def test_a_stale_attempt_stops_itself_and_writes_nothing(home, sessions, tmp_path, corpus_file):
    """Two trainers of one run: the first (inline, here in a thread) is taken over by a second
    attempt's claim; the first stops at its next report, before any checkpoint or outcome."""
    import threading

    from core.train.checkpoints import checkpoint_dir
    from worker import lifecycle

    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    run = long_adaptation(sessions, corpus.id, build_tiny_bert(tmp_path / "teacher"), steps=600, checkpoint_every=20)
    first = threading.Thread(target=lifecycle.execute_run, args=(sessions, run.id), daemon=True)
    first.start()
    wait_for(sessions, run.id, 120, until=lambda r: (r.step or 0) >= 25)
    with sessions.begin() as session:  # what a second attempt's claim leaves in the store
        taken = store.get(session, Run, run.id)
        reached = taken.step
        taken.params = {**taken.params, "lease": "the second attempt", "attempt": 2}
        taken.stage, taken.step = "the second attempt", 0
    first.join(60)
    assert not first.is_alive(), "the first trainer went on"
    with sessions.begin() as session:
        after = store.get(session, Run, run.id)
        assert (after.status, after.stage, after.step, after.error) == (RunStatus.running, "the second attempt", 0,
                                                                          None)
    # at most the checkpoint that was being written as it was taken over (every 20 steps)
    steps = [int(p.name.split("-")[1]) for p in checkpoint_dir(Path(run.output_dir)).glob("step-*")]
    assert max(steps) <= reached + 20, (reached, steps)
    assert not (Path(run.output_dir) / "model.safetensors").exists(), "the stale attempt wrote the model"
