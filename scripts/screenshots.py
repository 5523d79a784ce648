"""Screenshots of every dashboard page at each of its states, so that a change that breaks a page is seen.

In a fresh temporary data folder it starts a real worker and a real dashboard (and an embedded Valkey
unless REDIS_URL is set), then walks the store through its states: empty, a corpus, a task, a vocabulary
analysis, an expansion, an adaptation running, cancelled, resumed and finished, a small pipeline, and a
tiny experiment with its evaluations and benchmark. The corpus and the task are uploaded through their pages; the runs are created with the
service and submit functions and taken by the worker, and each state is waited for on the store. Models
are tiny random BERTs (tests/conftest.py), so it runs offline on a CPU in a few minutes. After each state,
Chromium (through Playwright) opens the pages that state concerns, found in the dashboard's navigation,
and saves them full page at 1280 pixels wide as OUT/NN-page-state.png; OUT/index.md lists them.

A page that shows a Streamlit exception, a select box too narrow for its choice, a run that fails or a
process that exits stops it with one line on stderr and exit status 1; the data folder and the process
logs are then kept."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from db.models import Corpus, Run, Task, VocabAnalysis  # noqa: E402  (after the path is set)

DEFAULT_OUT = ROOT / "docs" / "screenshots"
VIEWPORT = {"width": 1280, "height": 900}
MAX_HEIGHT = 6000
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
RUN_TIMEOUT_S = 600
PAGE_TIMEOUT_MS = 90_000
SCRIPT_IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"][data-test-connection-state="CONNECTED"]'
EXCEPTION = '[data-testid="stException"]'
NAV_LINK = '[data-testid="stSidebarNavLink"]'
PROGRESS = '[data-testid="stProgress"]'
CHART = ".js-plotly-plot .main-svg"
# A select box shows its choice in an input: one whose text is wider than the box is cut.
CUT_CHOICES = """() => [...document.querySelectorAll('[data-testid="stSelectbox"]')].flatMap(box => {
  const input = box.querySelector('input'), label = box.querySelector('[data-testid="stWidgetLabel"]');
  return input && input.scrollWidth > input.clientWidth + 1 ? [[label ? label.innerText : '?', input.value]] : [];
})"""
# Settings that would point the run at someone's data, or put a login in front of the pages.
DROPPED_ENV = ("DATABASE_URL", "ADAPT_DISTILL_PASSWORD_HASH", "ADAPT_DISTILL_SECRET", "ADAPT_DISTILL_IMPORT_DIR",
               "ADAPT_DISTILL_MODEL_DIRS", "ADAPT_DISTILL_ALLOW_HUB")

PAGES = ("overview", "corpora", "vocabulary", "train", "runs", "tasks", "experiment", "models")
TRAIN = {"seq_len": 32, "batch_size": 8, "lr": 2e-3, "log_every": 5, "device": "cpu"}
VOCAB = {"step": 100, "max_added": 600, "threshold": 0.02}


class ScreenshotError(Exception):
    """What went wrong, as the one line the user sees."""


@dataclass(frozen=True)
class Shot:
    """One picture: a page (its title, lower case) in a state, at an address (`query` is formatted with
    the scenario's ids), taken once every `expect` selector is visible."""

    page: str
    state: str
    what: str
    query: str = ""
    expect: tuple[str, ...] = ()
    fresh: bool = True
    """False: the page as the state's work left it in the browser (its flash message showing)."""


@dataclass(eq=False)
class Stage:
    name: str
    shots: list[Shot]
    setup: Callable[[Scenario], None] | None = None


@dataclass(frozen=True)
class Planned:
    number: int
    shot: Shot
    stage: Stage

    @property
    def file(self) -> str:
        return f"{self.number:02d}-{self.shot.page}-{self.shot.state}.png"


# --- the work the states need ------------------------------------------------------------------------

class Scenario:
    """Creates work in the store and the queue that the worker and the dashboard share, and waits on the
    store for each state."""

    def __init__(self, home: Path, redis_url: str, alive: Callable[[], None], browser, url: str,
                 paths: dict[str, str]):
        from db.migrate import upgrade
        from db.session import get_sessionmaker
        from worker.queueing.queues import connect

        upgrade()
        self.sessions = get_sessionmaker()
        self.redis = connect(redis_url)
        self.home, self.alive, self.browser, self.url, self.paths = home, alive, browser, url, paths
        self.ids: dict[str, int] = {}
        self.inputs = home / "inputs"
        self.inputs.mkdir(parents=True, exist_ok=True)

    def wait(self, run_id: int, until: Callable, what: str, allowed=("queued", "running", "succeeded")):
        """The run once `until(run)` holds; fails on a run in a status not `allowed`, a run that succeeds
        first, a dead process or a timeout."""
        from db import store

        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            with self.sessions.begin() as session:
                run = store.get(session, Run, run_id)
                if until(run):
                    return run
                if run.status.value not in allowed:
                    raise ScreenshotError(f"run {run_id} ({run.kind.value}) {run.status.value} while waiting for "
                                          f"{what}: {run.error or 'no message'}")
                if run.status.value == "succeeded":
                    raise ScreenshotError(f"run {run_id} ({run.kind.value}) finished before {what}: give it more "
                                          f"steps")
            self.alive()
            time.sleep(0.25)
        raise ScreenshotError(f"run {run_id} did not reach {what} within {RUN_TIMEOUT_S} s")

    def succeeded(self, run_id: int, what: str):
        return self.wait(run_id, lambda r: r.status.value == "succeeded", what)

    def upload(self, page: str, file: Path, button: str | None, done: str) -> None:
        """Add a file through a page's first uploader, as a user does: the dashboard caches its lists of
        corpora and tasks for 30 s, and only its own uploads clear that cache."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        self.browser.set_viewport_size(VIEWPORT)
        self.browser.goto(f"{self.url}/{self.paths[page]}")
        settle(self.browser)
        self.browser.locator("input[type=file]").first.set_input_files(str(file))
        if button:
            self.browser.get_by_role("button", name=button).click()
        try:
            self.browser.get_by_text(done).first.wait_for(timeout=PAGE_TIMEOUT_MS)
        except PlaywrightTimeout:
            raise ScreenshotError(f"{page}: adding {file.name} did not show '{done}': "
                                  f"{exception_text(self.browser) or 'no exception shown'}") from None
        settle(self.browser)

    def newest(self, model) -> int:
        from db import store

        with self.sessions.begin() as session:
            return store.rows(session, model, limit=1)[0].id

    def corpus(self) -> None:
        from test_app import domain_corpus

        path = self.inputs / "clinical-notes.txt"
        path.write_text(domain_corpus(documents=3000, words=2000, seed=3), encoding="utf-8")
        self.upload("corpora", path, None, "Added corpus")
        self.ids["corpus"] = self.newest(Corpus)

    def task(self) -> None:
        from conftest import write_task_csv

        self.upload("tasks", write_task_csv(self.inputs / "intents.csv", n=240), "Add task", "Added task")
        self.ids["task"] = self.newest(Task)

    def analysis(self) -> None:
        from conftest import build_tiny_bert
        from test_app import COMMON
        from transformers.utils import logging as hf_logging

        from core.configs import VocabConfig
        from worker.vocabulary import submit_analysis

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        self.teacher = build_tiny_bert(self.home / "models" / "tiny-bert", words=[w for w in COMMON if len(w) > 1])
        analysis, _ = submit_analysis(self.sessions, self.redis, self.ids["corpus"], str(self.teacher),
                                      VocabConfig(**VOCAB))
        self.ids["analysis"] = analysis.id
        self.succeeded(analysis.run_id, "the end of the vocabulary analysis")

    def expansion(self) -> None:
        from db import store
        from worker import vocabulary
        from worker.vocabulary import submit_expansion

        with self.sessions.begin() as session:
            size = vocabulary.picked_size(store.get(session, VocabAnalysis, self.ids["analysis"]), None)
        self.ids["expansion"], _ = submit_expansion(self.sessions, self.redis, self.ids["analysis"], size)
        self.succeeded(self.ids["expansion"], "the end of the expansion")

    def running(self) -> None:
        from worker import training
        from worker.queueing.submit import submit_runs

        run = training.create_adaptation(self.sessions, self.ids["corpus"], f"run:{self.ids['expansion']}",
                                         {**TRAIN, "steps": 500, "eval_every": 100, "checkpoint_every": 100})
        self.ids["adaptation"] = run.id
        submit_runs(self.sessions, self.redis, [run])
        self.wait(run.id, lambda r: r.status.value == "running" and (r.step or 0) >= 30
                  and sum(m.name == "loss" for m in r.metrics) >= 6, "30 steps of training")

    def cancelled(self) -> None:
        from worker.queueing.submit import cancel

        cancel(self.sessions, self.redis, self.ids["adaptation"], grace=30)
        run = self.wait(self.ids["adaptation"], lambda r: r.status.value == "cancelled", "its cancellation",
                        allowed=("running", "cancelled"))
        self.cancelled_at = run.step or 0

    def resumed(self) -> None:
        from worker.queueing.submit import resume

        resume(self.sessions, self.redis, self.ids["adaptation"])
        self.wait(self.ids["adaptation"],
                  lambda r: r.status.value == "running" and (r.step or 0) >= self.cancelled_at + 10,
                  "10 steps after resuming", allowed=("cancelled", "queued", "running"))

    def finished(self) -> None:
        self.succeeded(self.ids["adaptation"], "the end of the resumed adaptation")

    def pipeline(self) -> None:
        from worker import training
        from worker.queueing.submit import submit_runs

        runs = training.create_pipeline(self.sessions, "adapt-then-distill", self.ids["corpus"],
                                        f"run:{self.ids['expansion']}", {**TRAIN, "steps": 40, "eval_every": 20},
                                        {**TRAIN, "steps": 60, "eval_every": 20})
        self.ids["pipeline"], self.ids["distillation"] = runs[0].id, runs[-1].id
        submit_runs(self.sessions, self.redis, runs)
        self.succeeded(runs[0].id, "the end of the pipeline")

    def experiment(self) -> None:
        from worker.experiments import create_experiment
        from worker.queueing.submit import submit_runs

        small = {**TRAIN, "steps": 20, "eval_every": 20}
        runs = create_experiment(self.sessions, self.ids["corpus"], self.ids["task"], str(self.teacher),
                                 strategies=("adapt-then-distill",), adapt=small, distill=small,
                                 finetune={"seeds": 1, "epochs": 14, "patience": 0, "lr": 1e-3, "batch_size": 16,
                                           "max_length": 32, "device": "cpu"},
                                 bench={"latency_repeats": 30, "throughput_repeats": 2, "warmup": 1, "batch_size": 4},
                                 vocab=VOCAB, name="tiny experiment")
        self.ids["experiment"] = runs[0].id
        self.ids["evaluation"] = next(r.id for r in runs if r.kind.value == "evaluation")
        self.ids["benchmark"] = next(r.id for r in runs if r.kind.value == "benchmark")
        submit_runs(self.sessions, self.redis, runs)
        self.succeeded(runs[0].id, "the end of the experiment")


def stages() -> list[Stage]:
    """The states in order, each with the work that makes it and the pictures taken in it."""
    return [
        Stage("empty", [Shot(page, "empty", "a fresh store: nothing added yet") for page in PAGES]),
        Stage("corpus", [
            Shot("corpora", "corpus", "a corpus uploaded: its figures and preview", fresh=False),
            Shot("overview", "corpus", "a corpus added"),
            Shot("vocabulary", "corpus", "a corpus, no analysis yet: the new-analysis form"),
            Shot("train", "corpus", "a corpus: the launch form with the bundled teacher"),
        ], Scenario.corpus),
        Stage("task", [
            Shot("tasks", "task", "a classification task uploaded: its labels per split", fresh=False),
            Shot("experiment", "form", "a corpus and a task: the launch form"),
        ], Scenario.task),
        Stage("analysis", [
            Shot("vocabulary", "curve", "a vocabulary analysis finished: the curve, the pick, tokenizations",
                 expect=(CHART,)),
        ], Scenario.analysis),
        Stage("expansion", [
            Shot("vocabulary", "expanded", "the expanded model written at the pick", expect=(CHART,)),
            Shot("train", "expanded", "the expanded model offered as the teacher"),
            Shot("models", "expanded", "the bundled, tiny and expanded models"),
        ], Scenario.expansion),
        Stage("running", [
            Shot("runs", "running", "an adaptation running: progress bar, live loss curve", "run={adaptation}",
                 (PROGRESS, CHART)),
            Shot("overview", "running", "a run under way"),
            Shot("models", "running", "a run under way: its model listed as to come, not as a model"),
        ], Scenario.running),
        Stage("cancelled", [
            Shot("runs", "cancelled", "the adaptation cancelled: checkpoint kept, Resume offered", "run={adaptation}",
                 ('button:has-text("Resume")',)),
        ], Scenario.cancelled),
        Stage("resumed", [
            Shot("runs", "resumed", "the adaptation resumed from its checkpoint, running again", "run={adaptation}",
                 (PROGRESS,)),
        ], Scenario.resumed),
        Stage("finished", [
            Shot("runs", "finished", "the adaptation finished: loss curves and results", "run={adaptation}",
                 (CHART, '[data-testid="stMetric"]')),
        ], Scenario.finished),
        Stage("pipeline", [
            Shot("runs", "pipeline", "an adapt-then-distill pipeline finished: its steps", "run={pipeline}"),
            Shot("runs", "distillation", "the pipeline's distillation: relation loss and student size",
                 "run={distillation}", (CHART,)),
        ], Scenario.pipeline),
        Stage("trained", [
            Shot("models", "trained", "after the runs finished: every model with its lineage"),
            Shot("train", "trained", "after the runs finished: adapted models offered as teachers"),
        ]),
        Stage("experiment", [
            Shot("experiment", "finished", "a tiny experiment finished: the paper's table", expect=(CHART,)),
            Shot("models", "experiment", "scores against latency, the Pareto front", expect=(CHART,)),
            Shot("runs", "experiment", "the experiment's steps", "run={experiment}"),
            Shot("runs", "evaluation", "an evaluation: the model it scored, its dev curve per seed, its test scores",
                 "run={evaluation}", (CHART,)),
            Shot("runs", "benchmark", "a benchmark: its models' speed in MB, ms and x", "run={benchmark}"),
            Shot("overview", "finished", "everything done"),
        ], Scenario.experiment),
    ]


def plan(walk: list[Stage]) -> list[Planned]:
    """Every shot of every stage, numbered in order."""
    shots = [(shot, stage) for stage in walk for shot in stage.shots]
    return [Planned(number, shot, stage) for number, (shot, stage) in enumerate(shots, 1)]


# --- processes --------------------------------------------------------------------------------------

class Processes:
    """The worker and the dashboard (and an embedded Valkey when REDIS_URL is unset), logging into
    home/logs; stop() ends them all."""

    def __init__(self, home: Path):
        self.logs = home / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.running: dict[str, subprocess.Popen] = {}
        self.valkey = None
        self.url = ""

    def start(self) -> str:
        """Start everything and wait until the dashboard answers and the worker is registered; the Redis URL."""
        from app.cli.serving import dashboard_command
        from worker.queueing.embedded import EmbeddedValkey, free_port

        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            self.valkey = EmbeddedValkey().start()
            redis_url = os.environ["REDIS_URL"] = self.valkey.url
        port = free_port()
        self._spawn("worker", [sys.executable, "-m", "app.cli", "worker", "--queues", "cpu,gpu"])
        self._spawn("dashboard", dashboard_command(port))
        self.url = f"http://127.0.0.1:{port}"
        self._wait_dashboard()
        self._wait_worker(redis_url)
        return redis_url

    def _spawn(self, name: str, command: list[str]) -> None:
        from worker.queueing.embedded import die_with_parent

        with open(self.logs / f"{name}.log", "w", encoding="utf-8") as log:
            self.running[name] = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL, start_new_session=True,
                                                  preexec_fn=die_with_parent)

    def alive(self) -> None:
        for name, process in self.running.items():
            if process.poll() is not None:
                raise ScreenshotError(f"the {name} exited ({process.returncode}): see {self.logs / name}.log")

    def _wait_dashboard(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.alive()
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise ScreenshotError(f"the dashboard did not answer within {timeout:.0f} s: see {self.logs}/dashboard.log")

    def _wait_worker(self, redis_url: str, timeout: float = 120) -> None:
        from rq import Worker

        from worker.queueing.queues import SERIALIZER, connect

        connection = connect(redis_url)
        pid = self.running["worker"].pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.alive()
            if any(w.pid == pid for w in Worker.all(connection=connection, serializer=SERIALIZER)):
                return
            time.sleep(0.3)
        raise ScreenshotError(f"the worker did not register within {timeout:.0f} s: see {self.logs}/worker.log")

    def stop(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.running.clear()
        if self.valkey:
            self.valkey.stop()
            self.valkey = None


# --- the browser ------------------------------------------------------------------------------------

def chromium_path() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        raise ScreenshotError(f"Chromium is not installed at {path}: run `make chromium` or set CHROMIUM")
    return path


def exception_text(page) -> str | None:
    """The first lines of the first Streamlit exception the page shows, or None."""
    found = page.locator(EXCEPTION)
    if not found.count():
        return None
    lines = [line.strip() for line in found.first.inner_text().splitlines() if line.strip()]
    return " ".join(lines[:2])[:300] or "an exception"


def settle(page) -> None:
    """Wait until the script run is over and every chart is drawn."""
    page.wait_for_selector(SCRIPT_IDLE, state="attached", timeout=PAGE_TIMEOUT_MS)
    page.wait_for_function(
        """() => [...document.querySelectorAll('.js-plotly-plot')].every(p => p.querySelector('.main-svg'))
              && !document.querySelector('[data-testid="stSpinner"]')""", timeout=PAGE_TIMEOUT_MS)
    page.wait_for_timeout(600)  # canvases (data frames) and Plotly transitions finish drawing
    page.wait_for_selector(SCRIPT_IDLE, state="attached", timeout=PAGE_TIMEOUT_MS)


def navigation(page, url: str) -> dict[str, tuple[str, str]]:
    """The dashboard's navigation: {title in lower case: (title, url path)}."""
    page.goto(url)
    page.locator(NAV_LINK).first.wait_for(timeout=PAGE_TIMEOUT_MS)
    settle(page)
    links = page.evaluate(f"() => [...document.querySelectorAll('{NAV_LINK}')].map(a => [a.innerText, a.href])")
    titles = [(text.split("\n")[-1].strip(), href) for text, href in links]  # after the icon's ligature name
    return {title.lower(): (title, urlsplit(href).path.strip("/")) for title, href in titles}


def photograph(page, url: str, path: str, planned: Planned, ids: dict, out: Path) -> None:
    """Open the page in its state, wait for it, and save it full page; fail on a Streamlit exception."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    shot = planned.shot
    where = f"{shot.page} ({shot.state})"
    query = shot.query.format(**ids)
    if shot.fresh or urlsplit(page.url).path.strip("/") != path:
        page.set_viewport_size(VIEWPORT)
        page.goto(f"{url}/{path}" + (f"?{query}" if query else ""))
    page.locator('[data-testid="stMain"] h1').first.wait_for(timeout=PAGE_TIMEOUT_MS)
    settle(page)
    for selector in shot.expect:
        if exception_text(page):
            break
        try:
            page.locator(selector).first.wait_for(state="visible", timeout=PAGE_TIMEOUT_MS)
        except PlaywrightTimeout:
            if not exception_text(page):
                raise ScreenshotError(f"{where}: the page did not show {selector} within "
                                      f"{PAGE_TIMEOUT_MS // 1000} s") from None
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], min(height, MAX_HEIGHT))})
    settle(page)
    target = out / planned.file
    page.screenshot(path=str(target))
    if problem := exception_text(page):
        raise ScreenshotError(f"{where}: the page shows an exception: {problem} (see {target})")
    if cut := cut_choices(page):
        raise ScreenshotError(f"{where}: a select box cuts its choice: " + "; ".join(f"{label!r} shows {value!r}"
                                                                                   for label, value in cut)
                              + f" (see {target})")


def cut_choices(page) -> list[tuple[str, str]]:
    """(label, choice) of each select box too narrow for the whole label of its choice."""
    return [tuple(found) for found in page.evaluate(CUT_CHOICES)]


# --- the run ----------------------------------------------------------------------------------------

def write_index(out: Path, done: list[Planned], titles: dict[str, str]) -> None:
    about = ("Made by `python scripts/screenshots.py` (`make screenshots`): the pages of the dashboard at each of "
             "their states, in a fresh data folder with tiny random BERTs, a real worker and Chromium. Full page, "
             "1280 pixels wide.")
    lines = ["# Dashboard screenshots", "", about, "", "| # | screenshot | page | state |", "| ---: | --- | --- | --- |"]
    lines += [f"| {p.number:02d} | [{p.file}]({p.file}) | {titles[p.shot.page]} | {p.shot.what} |" for p in done]
    (out / "index.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def selected(only: list[str] | None) -> set[str]:
    if not only:
        return set(PAGES)
    chosen = {part.strip().lower() for value in only for part in value.split(",") if part.strip()}
    if unknown := sorted(chosen - set(PAGES)):
        raise ScreenshotError(f"--only {', '.join(unknown)}: not a page; the pages are {', '.join(PAGES)}")
    return chosen


def run(args, say: Callable[[str], None]) -> list[Planned]:
    """Start everything, walk the stages up to the last one a selected page needs, photograph, stop."""
    walk = stages()
    todo = [p for p in plan(walk) if p.shot.page in args.pages]
    walk = walk[:walk.index(todo[-1].stage) + 1]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("[0-9][0-9]-*.png"):
        old.unlink()
    processes = Processes(args.home)
    try:
        redis_url = processes.start()
        say(f"dashboard {processes.url} and a worker are up; data folder {args.home}")
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            page = browser.new_context(viewport=VIEWPORT).new_page()
            nav = navigation(page, processes.url)
            if missing := [p for p in PAGES if p not in nav]:
                raise ScreenshotError(f"the navigation has no page {', '.join(missing)} (it lists "
                                      f"{', '.join(title for title, _ in nav.values())}): update PAGES in "
                                      f"scripts/screenshots.py")
            for extra in [title for key, (title, _) in nav.items() if key not in PAGES]:
                say(f"warning: the page {extra} has no states in scripts/screenshots.py and is not photographed")
            paths = {key: path for key, (_, path) in nav.items()}
            scenario = Scenario(args.home, redis_url, processes.alive, page, processes.url, paths)
            done: list[Planned] = []
            for stage in walk:
                started = time.monotonic()
                if stage.setup:
                    stage.setup(scenario)
                shots = [p for p in todo if p.stage is stage]
                for planned in shots:
                    processes.alive()
                    photograph(page, processes.url, paths[planned.shot.page], planned, scenario.ids, out)
                    done.append(planned)
                say(f"{stage.name}: {len(shots)} screenshot(s) in {time.monotonic() - started:.0f} s")
            browser.close()
        write_index(out, done, {key: title for key, (title, _) in nav.items()})
        return done
    finally:
        processes.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/screenshots.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.fill(
            f"Pages: {', '.join(PAGES)}. States, in order: {', '.join(s.name for s in stages())}. Needs Chromium "
            f"(make chromium) and Playwright; uses REDIS_URL when set (its queues are shared: keep other workers off "
            f"them), else an embedded Valkey; ignores DATABASE_URL.", 104))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"folder for NN-page-state.png and index.md; the NN-*.png files already there are "
                             f"removed (default {DEFAULT_OUT.relative_to(ROOT)})")
    parser.add_argument("--keep-home", action="store_true",
                        help="keep the temporary data folder (database, models, process logs) and say where it is")
    parser.add_argument("--only", action="append", metavar="PAGE",
                        help="photograph only this page (repeat, or separate with commas); only the states up to "
                             "its last one are made")
    args = parser.parse_args(argv)
    try:
        args.pages = selected(args.only)
    except ScreenshotError as exc:
        parser.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in DROPPED_ENV:
        os.environ.pop(name, None)
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    args.home = Path(tempfile.mkdtemp(prefix="adapt-distill-screenshots-"))
    os.environ["ADAPT_DISTILL_HOME"] = str(args.home)
    began = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - began:4.0f} s] {message}", file=sys.stderr, flush=True)

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupted)  # also when started in the background, where SIGINT is ignored
    signal.signal(signal.SIGTERM, interrupted)
    keep = args.keep_home
    try:
        done = run(args, say)
        say(f"{len(done)} screenshots and index.md in {args.out}")
        return 0
    except KeyboardInterrupt:
        print("screenshots: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        keep = False  # the line below says where it is
        message = str(exc) if isinstance(exc, ScreenshotError) else \
            f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
        message = " ".join(message.split())
        print(f"screenshots: error: {message} (data folder and logs kept in {args.home})", file=sys.stderr)
        args.home = None
        return 1
    finally:
        if keep:
            print(f"screenshots: data folder kept in {args.home}", file=sys.stderr)
        elif args.home:
            shutil.rmtree(args.home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
