"""Integration: a real Redis and a real `adapt-distill worker` process."""

import os
import shutil
import subprocess
import sys
import time

import pytest
from conftest import stop_process
from rq.job import Job

from core.configs import VocabConfig
from db import store
from db.models import Run, RunStatus, VocabAnalysis
from worker import corpora, vocabulary
from worker.queueing.queues import SERIALIZER
from worker.vocabulary import submit_analysis, submit_expansion

pytestmark = pytest.mark.integration


@pytest.fixture
def worker_process(home, redis, redis_url):
    env = {**os.environ, "ADAPT_DISTILL_HOME": str(home), "REDIS_URL": redis_url, "HF_HUB_OFFLINE": "1"}
    env.pop("DATABASE_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--queues", "cpu,gpu"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield process
    out = stop_process(process)
    if os.environ.get("SHOW_WORKER_LOG"):
        print(out)


def wait_for(sessions, run_id, timeout=180):
    deadline = time.monotonic() + timeout
    seen_running = False
    while time.monotonic() < deadline:
        with sessions.begin() as session:
            run = store.get(session, Run, run_id)
            seen_running |= run.status == RunStatus.running
            if run.status.finished:
                return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish within {timeout}s")


def test_corpus_to_curve_to_expanded_model_through_a_real_worker(sessions, redis, worker_process, corpus_file,
                                                                   tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    corpus, created = corpora.add_corpus(sessions, corpus_file)
    assert created
    analysis, reused = submit_analysis(sessions, redis, corpus.id, "bundled", VocabConfig(step=100, max_added=300))
    assert not reused
    run = wait_for(sessions, analysis.run_id)
    assert run.status == RunStatus.succeeded, run.error
    job = Job.fetch(run.job_id, connection=redis, serializer=SERIALIZER)
    deadline = time.monotonic() + 20  # the run is recorded before RQ marks the job finished
    while job.get_status() != "finished" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.get_status() == "finished"
    assert job.meta["progress"] == 1.0 and job.meta["stage"] == "scoring candidates"
    with sessions.begin() as session:
        stored = store.get(session, VocabAnalysis, analysis.id)
        summary = vocabulary.analysis_summary(stored)
        assert [p["added_tokens"] for p in summary["points"]] == [0, 100, 200, 300]
        assert summary["picked_vocab_size"] in [p["vocab_size"] for p in summary["points"][1:]]
        assert [a.kind for a in stored.run.artifacts] == ["incremental_vocab"]
        tokens = vocabulary.read_tokens(stored)

    run_id, _ = submit_expansion(sessions, redis, analysis.id, 30522 + 200, tmp_path / "expanded")
    run = wait_for(sessions, run_id)
    assert run.status == RunStatus.succeeded, run.error
    assert run.output_dir == str(tmp_path / "expanded")
    tokenizer = AutoTokenizer.from_pretrained(run.output_dir)
    model = AutoModelForMaskedLM.from_pretrained(run.output_dir)
    assert len(tokenizer) == model.get_input_embeddings().weight.shape[0] == 30722
    assert tokenizer.convert_tokens_to_ids(tokens[199]) == 30721
    with sessions.begin() as session:
        artifact = store.get(session, Run, run_id).artifacts[0]
        assert artifact.kind == "model" and artifact.bytes > 1_000_000 and len(artifact.sha256) == 64
    # asked again for that size (the Vocabulary page's button): the run that made it is reused
    assert submit_expansion(sessions, redis, analysis.id, 30522 + 200) == (run_id, True)
    shutil.rmtree(run.output_dir)  # its model is gone: a new one is made
    again, reused = submit_expansion(sessions, redis, analysis.id, 30522 + 200)
    assert again != run_id and not reused


def test_an_identical_analysis_is_reused_not_queued_again(sessions, redis, worker_process, corpus_file):
    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    config = VocabConfig(step=100, max_added=200)
    first, _ = submit_analysis(sessions, redis, corpus.id, "bundled", config)
    assert wait_for(sessions, first.run_id).status == RunStatus.succeeded
    again, reused = submit_analysis(sessions, redis, corpus.id, "bundled", VocabConfig(step=100, max_added=200,
                                                                                          threshold=0.5))
    assert reused and again.id == first.id
    other, reused = submit_analysis(sessions, redis, corpus.id, "bundled", VocabConfig(step=50, max_added=200))
    assert not reused and other.id != first.id
    with sessions.begin() as session:
        assert len(store.rows(session, Run, limit=100)) == 2


def test_a_failure_is_stored_with_a_readable_message(sessions, redis, worker_process, corpus_file):
    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    analysis, _ = vocabulary.create_analysis(sessions, corpus.id, "bundled", VocabConfig(step=100, max_added=200))
    os.remove(corpus.path)  # the stored text disappears before the worker gets to it
    from worker.queueing.submit import enqueue

    enqueue(sessions, analysis.run_id, redis)
    run = wait_for(sessions, analysis.run_id)
    assert run.status == RunStatus.failed
    assert run.error.startswith("the corpus file") and run.error.endswith("is gone: add the corpus again")
    job = Job.fetch(run.job_id, connection=redis, serializer=SERIALIZER)
    deadline = time.monotonic() + 20  # the run is recorded before RQ moves the job to its failed registry
    while job.get_status() != "failed" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.get_status() == "failed"


def test_a_queued_run_whose_job_was_lost_is_queued_again(sessions, redis, corpus_file):
    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    config = VocabConfig(step=100, max_added=200)
    first, _ = submit_analysis(sessions, redis, corpus.id, "bundled", config)
    redis.flushdb()  # Redis restarted before any worker took the job
    second, reused = submit_analysis(sessions, redis, corpus.id, "bundled", config)
    assert not reused and second.id != first.id
    assert Job.exists(f"run-{second.run_id}", connection=redis)
    with sessions.begin() as session:
        lost = store.get(session, Run, first.run_id)
        assert lost.status == RunStatus.failed and "lost" in lost.error


def test_queueing_without_redis_fails_the_run_with_a_clear_message(sessions, corpus_file):
    from redis import Redis

    from core.errors import ConfigError

    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    nowhere = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    with pytest.raises(ConfigError, match="is Redis running"):
        submit_analysis(sessions, nowhere, corpus.id, "bundled", VocabConfig(step=100, max_added=200))
    with sessions.begin() as session:
        (run,) = store.rows(session, Run, limit=100)
        assert run.status == RunStatus.failed and "is Redis running" in run.error


@pytest.mark.tried('someone with Redis access queues os.system and a callback')
def test_a_worker_runs_only_the_projects_own_jobs(sessions, redis, worker_process, tmp_path):
    """Anyone who can write to Redis can queue a job; RQ would import and call what it names."""
    from rq import Queue

    import worker.jobs as queued_before
    from worker.queueing.jobs import run_job
    from worker.queueing.queues import JOB_FUNCTIONS, RUN_JOB

    # the function every run is queued under, and the names of runs queued before it, all run_job
    assert f"{run_job.__module__}.{run_job.__qualname__}" == RUN_JOB and RUN_JOB in JOB_FUNCTIONS
    assert all(getattr(queued_before, name.rsplit(".", 1)[1]) is run_job
               for name in JOB_FUNCTIONS if name.startswith("worker.jobs."))
    marker = tmp_path / "pwned"
    queue = Queue("cpu", connection=redis, serializer=SERIALIZER)  # a plain RQ client, as an intruder has
    evil = queue.enqueue("os.system", f"touch {marker}")
    callback = queue.enqueue("worker.jobs.analysis_job", 10_000_000,
                             on_failure=__import__("rq").Callback("os.abort"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and {evil.get_status(refresh=True), callback.get_status(refresh=True)} != \
            {"failed"}:
        time.sleep(0.2)
    assert evil.get_status() == "failed" and callback.get_status() == "failed"
    assert not marker.exists()
    assert "not an adapt-distill job" in evil.latest_result().exc_string
    assert "adapt-distill jobs have none" in callback.latest_result().exc_string
    assert worker_process.poll() is None  # the worker is still serving


@pytest.mark.tried('Redis is flushed while runs are queued, then a worker starts')
def test_runs_lost_from_redis_are_queued_again_and_finish_once(sessions, redis, redis_url, home, corpus_file):
    """The store is the truth: after a FLUSHALL, a starting worker queues the lost runs again, and
    `runs resume` takes a run stuck in the queued state."""
    from datetime import timedelta

    from db.models import utcnow
    from worker.queueing.submit import lost_runs, resume

    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    first, _ = submit_analysis(sessions, redis, corpus.id, "bundled", VocabConfig(step=100, max_added=200))
    second, _ = submit_analysis(sessions, redis, corpus.id, "bundled", VocabConfig(step=100, max_added=300))
    redis.flushdb()  # Redis loses every job; the store still says queued
    with sessions.begin() as session:
        for analysis in (first, second):
            store.get(session, Run, analysis.run_id).created_at = utcnow() - timedelta(minutes=5)
    assert lost_runs(sessions, redis) == [first.run_id, second.run_id]
    assert resume(sessions, redis, second.run_id).status == RunStatus.queued  # a stuck queued run resumes
    assert lost_runs(sessions, redis) == [first.run_id]
    env = {**os.environ, "ADAPT_DISTILL_HOME": str(home), "REDIS_URL": redis_url, "HF_HUB_OFFLINE": "1"}
    env.pop("DATABASE_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--queues", "cpu", "--burst"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert f"queued again 1 run(s) the store holds as queued but Redis had lost: {first.run_id}" in out
    for analysis in (first, second):
        run = wait_for(sessions, analysis.run_id, timeout=60)
        assert run.status == RunStatus.succeeded, run.error
    assert lost_runs(sessions, redis, older_than=0) == []
