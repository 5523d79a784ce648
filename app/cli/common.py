"""What every group of commands shares: the progress bars, the database sessions, printing (human
lines or one JSON object), the `command` helper that adds a subcommand, and running or queueing
runs. Heavy imports stay inside the functions: importing the command line loads no torch."""

from __future__ import annotations

import argparse
import json
import sys
import time

from core.errors import AdaptDistillError
from core.formatting import UNKNOWN, human_bytes
from db.models import Run


class Bars:
    """tqdm bars, one per stage, on stderr; silent when stderr is not a terminal or with --json."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.bar = None
        self.stage = None

    def __call__(self, stage: str, fraction: float) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=100, desc=stage, unit="%", file=sys.stderr, leave=False,
                            bar_format="{desc:<24} {bar} {percentage:3.0f}% {elapsed}")
        self.bar.n = round(100 * fraction)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def open_sessions():
    """The database, migrated to the current schema, as a sessionmaker."""
    from db.migrate import upgrade
    from db.session import get_sessionmaker

    upgrade()
    return get_sessionmaker()


def print_result(args, data: dict, human: str) -> None:
    """--json as it is (JSON escapes what it holds), else the human lines with any character a
    terminal would act on escaped: a stored name is data, never a command to the terminal."""
    from core.formatting import printable

    print(json.dumps(data) if args.json else "\n".join(printable(line) for line in human.split("\n")))


def quiet_hf() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


# --- the parser's parts ----------------------------------------------------------------------

class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless it says it already."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.option_strings and "default" not in text and action.default not in (None, False, argparse.SUPPRESS)
                and action.nargs != 0):
            text += f" (default {action.default})"
        return text


def command(parent, name, func, help, json_flag=True):
    """A subcommand running func(args); with --json unless json_flag is False."""
    p = parent.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)
    p.set_defaults(func=func)
    if json_flag:
        p.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    return p


def add_queue_options(p, queue_help: str = "run on a worker instead of inline",
                      wait_help: str = "with --queue: wait for the result") -> None:
    """--queue (run on a worker) and --wait (for the result)."""
    p.add_argument("--queue", action="store_true", help=queue_help)
    p.add_argument("--wait", action="store_true", help=wait_help)


def short_float(value: float) -> str:
    """A one-digit number as the help writes it: 0.001 as 1e-3."""
    mantissa, exponent = f"{value:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


# --- numbers in tables -----------------------------------------------------------------------

def fmt(value, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def mean_std(mean, std) -> str:
    return "—" if mean is None else f"{mean:.4f}" + (f" ± {std:.4f}" if std else "")


def megabytes(size) -> str:
    """A model's or a corpus's size as every page shows it (core.formatting)."""
    return UNKNOWN if size is None else human_bytes(size)


# --- runs --------------------------------------------------------------------------------------

def wait_run(sessions, run_id: int, bars: Bars) -> None:
    """Follow a queued run until it finishes; an AdaptDistillError unless it succeeded."""
    from db import store

    while True:
        with sessions.begin() as session:
            run = store.get(session, Run, run_id)
            status, stage, progress, error = run.status, run.stage, run.progress, run.error
        bars(stage, progress)
        if status.finished:
            bars.close()
            if status.value != "succeeded":
                raise AdaptDistillError(f"run {run_id} {status.value}: {error or 'no message'}")
            return
        time.sleep(0.5)


def run_dict(run) -> dict:
    """A run as the CLI's --json gives it: its metrics are a training run's losses and speed, an
    evaluation's test scores (mean and std over seeds); `model` names what it trained or judged."""
    result = run.params.get("result") or {}
    keep = ("first_loss", "last_loss", "heldout_loss_before", "heldout_loss", "heldout_relation_loss_before",
            "heldout_relation_loss", "tokens_per_second", "steps", "student_parameters", "teacher_parameters")
    metrics = {k: result[k] for k in keep if result.get(k) is not None}
    if run.kind.value == "evaluation":
        metrics |= {f"test_{k}": v for k, v in (result.get("test") or {}).items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)}
    params = run.params or {}
    model = params.get("model") or params.get("teacher") or (", ".join(params["models"]) if params.get("models")
                                                              else None)
    return {"run_id": run.id, "kind": run.kind.value, "status": run.status.value, "output_dir": run.output_dir,
            "error": run.error, "model": model, "step": run.step, "total_steps": run.total_steps, "metrics": metrics}


PARENTS = ("pipeline", "experiment")  # runs whose work is their steps


def execute_runs(args, runs, keep_going: bool = False) -> list[str]:
    """Run inline (in order) or queue (and with --wait, wait for each). With keep_going a failed
    run does not stop the others (those waiting on it are cancelled); the failures come back."""
    from db import store

    sessions = open_sessions()
    failures: list[str] = []
    if args.queue:
        from worker.queueing.queues import connect
        from worker.queueing.submit import submit_runs

        submit_runs(sessions, connect(), runs)
        if args.wait:
            for run in runs:
                if run.kind.value not in PARENTS:
                    _wait_for(sessions, run.id, Bars(not args.json), keep_going, failures)
        return failures
    from worker.lifecycle import execute_run

    quiet_hf()
    for run in runs:
        if run.kind.value in PARENTS:
            continue
        with sessions.begin() as session:
            if store.get(session, Run, run.id).status.finished:
                continue  # cancelled because an earlier step failed, or reused and done
        bars = Bars(not args.json)
        try:
            execute_run(sessions, run.id, echo=bars)
        except Exception as exc:
            if not keep_going:
                raise
            failures.append(f"run {run.id} ({run.kind.value}) failed: {exc}")
        finally:
            bars.close()
    return failures


def _wait_for(sessions, run_id: int, bars: Bars, keep_going: bool, failures: list[str]) -> None:
    try:
        wait_run(sessions, run_id, bars)
    except AdaptDistillError as exc:
        if not keep_going:
            raise
        failures.append(str(exc))


def train_runs(args, runs) -> None:
    """Run inline (in order) or queue, then print the runs."""
    from db import store

    sessions = open_sessions()
    execute_runs(args, runs)
    with sessions.begin() as session:
        data = {"runs": [run_dict(store.get(session, Run, r.id)) for r in runs]}
    lines = [f"run {r['run_id']} {r['kind']}: {r['status']}  {r['output_dir'] or ''}  "
             + " ".join(f"{k}={v:.4g}" for k, v in r["metrics"].items()) for r in data["runs"]]
    print_result(args, data, "\n".join(lines))
