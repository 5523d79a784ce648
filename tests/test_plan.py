"""`adapt-distill plan`: the largest student shape within a latency budget, measured on this machine
(random weights of the teacher's family, timed like `bench`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import build_tiny_bert

from core.judge.plan import candidate_widths, search_shapes


def test_the_search_finds_the_widest_shape_within_the_budget_at_each_depth():
    latency = {}  # a made-up machine: latency grows with depth and width

    def meets(layers: int, hidden: int) -> bool:
        latency[layers, hidden] = layers * hidden
        return layers * hidden <= 700

    widths = candidate_widths(768, 12)
    assert widths == [64 * k for k in range(1, 13)]
    widest = search_shapes(12, widths, meets)
    assert widest[1] == 640 and widest[2] == 320 and widest[3] == 192 and widest[10] == 64 and widest[11] is None
    assert all(widest[d] is None or (widest[d] * d <= 700 < (widest[d] + 64) * d) for d in widest)
    assert len(latency) < 12 * 12 / 2, "bisection measures a fraction of the grid"


@pytest.fixture
def plan(tmp_path):
    teacher = build_tiny_bert(tmp_path / "teacher")
    env = {**os.environ, "ADAPT_DISTILL_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    env.pop("DATABASE_URL", None)

    def run(*args, ok=True):
        result = subprocess.run([sys.executable, "-m", "app.cli", "plan", "--teacher", str(teacher), *args],
                                capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == (0 if ok else 2), result.stderr
        if not ok:
            assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
        return result
    return run


def test_a_generous_budget_picks_the_teachers_own_shape_and_a_tiny_one_none(plan):
    generous = json.loads(plan("--latency-ms", "60000", "--seq-len", "32", "--json").stdout)
    assert generous["pick"]["shape"] == "L2-H32" and generous["pick"]["meets"]
    assert generous["teacher"]["shape"] == "L2-H32" and generous["percentile"] == 95
    assert {c["shape"] for c in generous["candidates"]} == {"L1-H16", "L1-H32", "L2-H16", "L2-H32"}
    for c in generous["candidates"]:
        assert c["latency_ms_p50"] <= c["latency_ms"] and c["heads"] == c["hidden"] // 16
        assert c["intermediate"] == 2 * c["hidden"]  # the teacher's FFN ratio kept
    assert generous["setting"]["threads"] == 1 and generous["setting"]["repeats"] >= 30

    tiny = plan("--latency-ms", "0.000001", "--seq-len", "32")
    assert "no shape of this teacher's family answers within" in tiny.stdout
    assert "(the teacher)" in tiny.stdout


@pytest.mark.parametrize("args, message", [
    (["--latency-ms", "0"], "--latency-ms must be above 0"),
    (["--latency-ms", "10", "--percentile", "42"], "--percentile must be one of 50, 90, 95, 99"),
    (["--latency-ms", "10", "--seq-len", "100000"], "seq-len 100000 is longer than"),
    (["--latency-ms", "10", "--threads", "0"], "--threads must be from 1"),
    (["--latency-ms", "10", "--queue-name", "cpu"], "--queue-name names the workers that measure: add --queue"),
])
def test_bad_budgets_are_one_line(plan, args, message):
    assert message in plan(*args, ok=False).stderr


@pytest.mark.integration
def test_a_plan_runs_on_the_worker_that_would_serve_the_student(tmp_path, home, redis, redis_url):
    from conftest import stop_process

    teacher = build_tiny_bert(home / "models" / "teacher")
    env = {**os.environ, "ADAPT_DISTILL_HOME": str(home), "REDIS_URL": redis_url, "HF_HUB_OFFLINE": "1"}
    env.pop("DATABASE_URL", None)
    # a deployment whose serving workers take the cpu queue only: the plan is measured there
    worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--queues", "cpu"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        result = subprocess.run([sys.executable, "-m", "app.cli", "plan", "--teacher", str(teacher), "--latency-ms",
                                 "60000", "--seq-len", "32", "--queue", "--queue-name", "cpu", "--wait", "--json"],
                                capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        listed = json.loads(subprocess.run([sys.executable, "-m", "app.cli", "runs", "list", "--json"],
                                           capture_output=True, text=True, env=env, timeout=60).stdout)["runs"]
    finally:
        log = stop_process(worker)
    (run,) = listed
    assert run["kind"] == "plan" and run["status"] == "succeeded", log[-2000:]
    assert "plan run" in log and "Job OK" in log, log[-2000:]
    queued = json.loads(result.stdout)
    assert queued["run_id"] == run["run_id"]


@pytest.mark.parametrize("budget", [0.1, 10.0, 60_000.0])
def test_the_plan_chart_spans_its_shapes_and_its_budget(budget):
    """The log axis holds every measured shape and the budget's line (Plotly hides what falls outside
    a fixed range), and the budget's label sits at its exponent, not at 10^budget."""
    import math

    from app.budget import plan_figure

    shape = lambda name, ms, p: {"shape": name, "latency_ms": ms, "layer_parameters": p, "meets": ms <= budget}  # noqa: E731
    candidates = [shape("L1-H64", 1.2, 1e5), shape("L2-H128", 6.0, 8e5), shape("L3-H256", 30.0, 4e6)]
    plan = {"percentile": 95, "budget_ms": budget, "candidates": candidates, "teacher": shape("L6-H384", 55.0, 1.1e7),
            "pick": next((c for c in reversed(candidates) if c["meets"]), None)}
    figure = plan_figure(plan)
    low, high = figure.layout.yaxis.range
    for ms in (1.2, 55.0, budget):
        assert low < math.log10(ms) < high
    (label,) = [a for a in figure.layout.annotations if a.text == f"budget {budget:g} ms"]
    assert label.y == pytest.approx(math.log10(budget))
