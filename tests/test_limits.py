"""Numbers beyond reason are refused when a run is created, in one line, with nothing recorded; what
a run may ask for is bounded by the memory of the machines that would run it (core.memory's
estimate against a worker's advertised memory, and against what the device has free when the job
starts). Real CLI processes, a real Redis and a real worker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from conftest import stop_process, wait_for_run, write_task_csv

from core import memory
from core.checks import SHAPE_BOUNDS, check_config_dimensions
from core.configs import AdaptConfig, DistillConfig, TrainConfig, VocabConfig
from core.errors import ConfigError
from core.judge.settings import FinetuneConfig
from core.model_io import bundled_path
from db.models import RunStatus
from worker.specs import folder_shape

HUGE = str(10**20)


@pytest.fixture
def cli(home, redis, redis_url, corpus_file, tmp_path):
    """The console script in a home with corpus 1 and task 1, queuing on the test Redis."""
    env = {**os.environ, "ADAPT_DISTILL_HOME": str(home), "REDIS_URL": redis_url, "HF_HUB_OFFLINE": "1"}
    env.pop("DATABASE_URL", None)

    def run(*args: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True,
                              env={**env, **(extra_env or {})}, timeout=300)

    assert run("corpus", "add", str(corpus_file), "--name", "c").returncode == 0
    task = write_task_csv(tmp_path / "task.csv")
    assert run("task", "add", str(task), "--type", "classification", "--name", "t").returncode == 0
    run.env = env
    return run


def runs_recorded(cli) -> list:
    return json.loads(cli("runs", "list", "--json").stdout)["runs"]


BEYOND_REASON = [
    # (what is asked, the command, what the one line must name)
    ("--max-added 10^20", ["vocab", "analyze", "--corpus", "1", "--max-added", HUGE, "--queue"], "max-added"),
    ("--min-frequency 10^20", ["vocab", "analyze", "--corpus", "1", "--min-frequency", HUGE, "--queue"],
     "min-frequency"),
    ("--step 10^20", ["vocab", "analyze", "--corpus", "1", "--step", HUGE, "--queue"], "step"),
    ("--steps 10^20", ["adapt", "--corpus", "1", "--steps", HUGE, "--queue"], "steps"),
    ("distill --steps 10^20", ["distill", "--corpus", "1", "--steps", HUGE, "--queue"], "steps"),
    ("--relation-heads 0", ["distill", "--corpus", "1", "--relation-heads", "0", "--queue"], "relation-heads"),
    ("--relation-heads -2", ["distill", "--corpus", "1", "--relation-heads", "-2", "--queue"], "relation-heads"),
    ("--relation-heads 7 (divides neither width)", ["distill", "--corpus", "1", "--relation-heads", "7", "--queue"],
     "relation-heads 7 must divide"),
    ("--lr 1e308", ["adapt", "--corpus", "1", "--lr", "1e308", "--queue"], "lr must be"),
    ("--epochs 1e300", ["adapt", "--corpus", "1", "--epochs", "1e300", "--queue"], "epochs"),
    ("--seed 10^20", ["adapt", "--corpus", "1", "--seed", HUGE, "--queue"], "seed"),
    ("--batch-size 10^9", ["adapt", "--corpus", "1", "--batch-size", str(10**9), "--queue"], "batch-size"),
    ("--grad-accum 10^9", ["adapt", "--corpus", "1", "--grad-accum", str(10**9), "--queue"], "grad-accum"),
    ("--layers 10^6", ["distill", "--corpus", "1", "--layers", str(10**6), "--queue"], "layers"),
    ("a student of 100 x 8192 (1.5 TB of weights and optimizer state)",
     ["distill", "--corpus", "1", "--layers", "100", "--hidden", "8192", "--heads", "64", "--intermediate", "32768",
      "--allow-larger-student", "--queue"], "before its first sequence"),
    ("bench --seq-len 100000", ["bench", "--model", "bundled", "--seq-len", "100000", "--queue"], "seq-len"),
    ("bench --seq-len 1024 on a 512-position model", ["bench", "--model", "bundled", "--seq-len", "1024", "--queue"],
     "512 positions"),
    ("bench --batch-size 60000", ["bench", "--model", "bundled", "--batch-size", "60000", "--queue"],
     "batch size of"),
    ("bench --repeats 10^9", ["bench", "--model", "bundled", "--repeats", str(10**9), "--queue"], "latency-repeats"),
    ("evaluate --exclude-label of every label",
     ["evaluate", "--model", "bundled", "--task", "1", "--exclude-label", "alpha", "--exclude-label", "beta", "--exclude-label", "gamma",
      "--queue"],
     "leaves no label"),
    ("evaluate --batch-size 60000", ["evaluate", "--model", "bundled", "--task", "1", "--batch-size", "60000",
                                     "--queue"], "batch size of"),
    ("pipeline --batch-size 4096", ["pipeline", "--corpus", "1", "--strategy", "adapt-then-distill", "--batch-size",
                                    "4096", "--queue"], "pipeline's adaptation needs"),
]


@pytest.mark.integration
@pytest.mark.tried("numbers beyond reason on the command line: 10^20 steps, tokens and frequencies, relation heads "
                   "0 and -2, lr 1e308, a batch of 10^9, 10^6 layers, every label excluded, seq-len 100000")
def test_numbers_beyond_reason_are_one_line_and_record_nothing(cli):
    tried = {}
    for what, command, named in BEYOND_REASON:
        result = cli(*command)
        lines = result.stderr.strip().splitlines()
        tried[what] = (result.returncode, lines)
        assert result.returncode != 0, f"{what} was accepted: {result.stdout}"
        assert "Traceback" not in result.stderr and len(lines) == 1, f"{what}: {result.stderr}"
        assert lines[0].startswith("error: ") and named in lines[0], f"{what}: {lines[0]}"
    assert runs_recorded(cli) == []


@pytest.mark.integration
@pytest.mark.tried("a model folder whose config.json asks for 10^9 positions, given as teacher, model and benchmark")
def test_a_config_beyond_reason_is_refused_before_anything_loads(cli, tmp_path):
    folder = tmp_path / "huge"
    shutil.copytree(bundled_path(), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 10**9}))
    for command in (["adapt", "--corpus", "1", "--teacher", str(folder), "--queue"],
                    ["distill", "--corpus", "1", "--teacher", str(folder), "--queue"],
                    ["bench", "--model", str(folder), "--queue"],
                    ["evaluate", "--model", str(folder), "--task", "1", "--queue"]):
        result = cli(*command)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        assert "max_position_embeddings = 1,000,000,000" in result.stderr and len(result.stderr.splitlines()) == 1
    assert runs_recorded(cli) == []


@pytest.mark.integration
@pytest.mark.tried("a run larger than the memory its workers advertise (a worker held to 2 GiB), queued and "
                   "started on a worker that has less free than when it was queued")
def test_a_run_is_bounded_by_the_memory_of_the_workers_that_would_run_it(cli, sessions):
    from worker.queueing.queues import connect
    from worker.queueing.serve import worker_devices

    small = {**cli.env, "ADAPT_DISTILL_MEMORY_GIB": "2"}
    worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--queues", "gpu"], env=small,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not worker_devices(connect(cli.env["REDIS_URL"]), "gpu") and time.monotonic() < deadline:
            time.sleep(0.2)
        advertised = list(worker_devices(connect(cli.env["REDIS_URL"]), "gpu").values())
        assert advertised and advertised[0]["memory"] == 2 * 2**30
        # the bundled model's weights and AdamW state and the runtime are ~1.1 GiB; at batch 32 it needs ~2.5 GiB
        refused = cli("adapt", "--corpus", "1", "--steps", "2", "--batch-size", "32", "--device", "cpu", "--queue")
        assert refused.returncode != 0 and len(refused.stderr.splitlines()) == 1, refused.stderr
        assert "the largest worker serving the gpu queue has (2.0 GiB)" in refused.stderr
        fits = memory.adaptation(folder_shape(bundled_path()), AdaptConfig(train=TrainConfig(batch_size=1)))
        assert fits.total < 2 * 2**30  # so the refusal above was the batch, not the model
        assert runs_recorded(cli) == []
    finally:
        stop_process(worker)
    # Queued while no worker is live (checked against this machine), then started on the small worker:
    # the job refuses before loading anything, and the run says why.
    queued = cli("adapt", "--corpus", "1", "--steps", "2", "--batch-size", "32", "--device", "cpu", "--queue",
                 "--json")
    assert queued.returncode == 0, queued.stderr
    run_id = json.loads(queued.stdout)["runs"][0]["run_id"]
    worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--queues", "gpu"], env=small,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        run = wait_for_run(sessions, run_id, 180)
    finally:
        stop_process(worker)
    assert run.status == RunStatus.failed
    assert "this worker's machine has free" in run.error and "use a batch size of" in run.error, run.error
    assert "Traceback" not in run.error


def test_every_bound_is_the_configs_own():
    """The configs refuse at the bound plus one and take the bound itself."""
    from core import checks

    TrainConfig(steps=checks.MOST_STEPS, batch_size=checks.MOST_BATCH, grad_accum=checks.MOST_GRAD_ACCUM,
                seed=checks.MOST_SEED, lr=checks.MOST_LR)
    for field, value in (("steps", checks.MOST_STEPS + 1), ("batch_size", checks.MOST_BATCH + 1),
                         ("grad_accum", checks.MOST_GRAD_ACCUM + 1), ("seed", checks.MOST_SEED + 1),
                         ("lr", checks.MOST_LR * 2), ("warmup", float("inf")), ("steps", True)):
        with pytest.raises(ConfigError, match=field.replace("_", "-")):
            TrainConfig(**{field: value})
    VocabConfig(step=checks.MOST_TOKENS_ADDED, max_added=checks.MOST_TOKENS_ADDED)
    with pytest.raises(ConfigError, match="max-added"):
        VocabConfig(max_added=checks.MOST_TOKENS_ADDED + 1)
    with pytest.raises(ConfigError, match="relation-heads"):
        DistillConfig(relation_heads=0)
    with pytest.raises(ConfigError, match="leaves no label"):
        FinetuneConfig(exclude_labels=("a", "b")).metric_for("classification", ["a", "b"])
    assert FinetuneConfig(exclude_labels=("a",)).metric_for("classification", ["a", "b"]) == "micro_f1"
    check_config_dimensions({"max_position_embeddings": SHAPE_BOUNDS["positions"]}, "x")
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        check_config_dimensions({"max_position_embeddings": SHAPE_BOUNDS["positions"] + 1}, "x")


def test_the_memory_estimate_grows_with_the_batch_and_names_what_fits():
    shape = folder_shape(bundled_path())
    small = memory.adaptation(shape, AdaptConfig(train=TrainConfig(batch_size=8)))
    large = memory.adaptation(shape, AdaptConfig(train=TrainConfig(batch_size=64)))
    assert large.total - small.total == 56 * small.per_sequence > 0
    capacity = small.fixed + 20 * small.per_sequence
    assert small.problem(capacity, "this machine has") is None
    problem = large.problem(capacity, "this machine has")
    assert "use a batch size of 20 or less" in problem and "gradient accumulation" in problem
    # processes split the batch: each holds its share
    split = memory.adaptation(shape, AdaptConfig(train=TrainConfig(batch_size=64, processes=4)))
    assert split.batch == 16
    assert memory.finetuning(shape, 128, 64).problem(capacity, "x").count("accumulation") == 0
