"""Data-parallel training: 2 CPU processes with gloo under torchrun, against 1 process with the same
global batch (a dropout-free model, so the two runs draw nothing differently)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import build_tiny_bert, write_corpus

from db import store
from db.models import Run, RunStatus

pytestmark = pytest.mark.integration


def dropout_free_bert(folder):
    build_tiny_bert(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def losses(sessions, run_id: int) -> dict[int, float]:
    with sessions.begin() as session:
        return {m.step: m.value for m in store.get(session, Run, run_id).metrics if m.name == "loss"}


@pytest.mark.tried("a run on 2 data-parallel processes, cancelled mid-way and resumed on 1")
def test_two_processes_follow_one_and_resume_with_another_count(home, sessions, tmp_path):
    env = {**os.environ, "ADAPT_DISTILL_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for key in ("DATABASE_URL", "REDIS_URL"):
        env.pop(key, None)

    def cli(*args, background=False):
        command = [sys.executable, "-m", "app.cli", *args]
        if background:
            return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)

    model = dropout_free_bert(tmp_path / "model")
    corpus = json.loads(cli("corpus", "add", str(write_corpus(tmp_path / "c.txt", documents=600)), "--json").stdout)
    common = ["adapt", "--corpus", str(corpus["corpus_id"]), "--model", str(model), "--batch-size", "8",
              "--seq-len", "32", "--lr", "1e-3", "--log-every", "1", "--eval-every", "1000", "--head-warmup", "0",
              "--device", "cpu", "--json"]
    one = cli(*common, "--steps", "12")
    assert one.returncode == 0, one.stderr
    single = json.loads(one.stdout)["runs"][0]
    two = cli(*common, "--steps", "12", "--gpus", "2")
    assert two.returncode == 0, two.stderr
    double = json.loads(two.stdout)["runs"][0]
    assert double["status"] == "succeeded"
    expected, got = losses(sessions, single["run_id"]), losses(sessions, double["run_id"])
    assert sorted(got) == sorted(expected) == list(range(1, 13))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=2e-4), step
    assert double["metrics"]["last_loss"] == pytest.approx(single["metrics"]["last_loss"], rel=2e-4)
    assert (home / "runs" / str(double["run_id"]) / "model" / "model.safetensors").is_file()

    # cancelled on 2 processes, resumed on 1: the same curve (a constant schedule, so that a shorter
    # uninterrupted run is the reference)
    from worker.run_state import request_cancel

    steady = [*common, "--schedule", "constant", "--warmup", "0", "--checkpoint-every", "100000"]
    third = cli(*steady, "--steps", "1500", "--gpus", "2", background=True)
    run_id = double["run_id"] + 1
    deadline = time.monotonic() + 300
    while True:
        with sessions.begin() as session:
            ids = [r.id for r in store.rows(session, Run, limit=100)]
            step = store.get(session, Run, run_id).step if run_id in ids else None
        if (step or 0) >= 3:
            break
        assert third.poll() is None and time.monotonic() < deadline, third.communicate()
        time.sleep(0.05)
    request_cancel(sessions, run_id)
    third.communicate(timeout=300)
    with sessions.begin() as session:
        run = store.get(session, Run, run_id)
        assert run.status == RunStatus.cancelled and run.step < 1500, (run.status, run.step)
    resumed = cli("runs", "resume", str(run_id), "--gpus", "1", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["runs"][0]["status"] == "succeeded"
    with sessions.begin() as session:
        run = store.get(session, Run, run_id)
        resumed_from = run.params["result"]["resumed_from"]
        assert run.params["processes"] == 1 and 3 <= resumed_from < 1500
    after = losses(sessions, run_id)
    reference = cli(*steady, "--steps", str(resumed_from + 10))  # uninterrupted, 1 process
    assert reference.returncode == 0, reference.stderr
    whole = losses(sessions, json.loads(reference.stdout)["runs"][0]["run_id"])
    for step in (resumed_from + 1, resumed_from + 10):
        assert after[step] == pytest.approx(whole[step], rel=1e-3), step
