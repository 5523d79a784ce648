"""`adapt-distill`: the command-line face over the same worker and core functions as the
dashboard. Long work shows progress bars on a terminal; `--json` prints one JSON object.
This module builds the parser from the groups of commands and holds the entry point, `main`."""

from __future__ import annotations

import argparse
import json
import os
import sys

from redis.exceptions import RedisError

from app.cli import corpus, judging, models, planning, runs, serving, tasks, training, vocab
from app.cli.common import HelpFormatter
from core.errors import user_error

__all__ = ["DESCRIPTION", "HelpFormatter", "build_parser", "main"]  # HelpFormatter: every subcommand's, from common

DESCRIPTION = ("Build a small, fast model that knows your domain: add a corpus, analyse and expand the vocabulary, "
               "adapt and distil, and judge the models; the dashboard (`adapt-distill up`) runs the same jobs.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adapt-distill", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    # the order here is the order `adapt-distill --help` lists the commands in
    serving.add_commands(sub)
    corpus.add_commands(sub)
    vocab.add_commands(sub)
    training.add_commands(sub)
    runs.add_commands(sub)
    tasks.add_commands(sub)
    judging.add_commands(sub)
    planning.add_commands(sub)
    models.add_commands(sub)
    judging.add_demo_command(sub)
    return parser


def fail(args, exc: Exception) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": str(exc)}))
    print(f"error: {exc}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except RedisError as exc:  # a Redis that is down or hangs: one line, not a traceback
        from worker.queueing.queues import unreachable

        return fail(args, unreachable(exc))
    except BrokenPipeError:  # `... --json | head`: the reader has gone, and that is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 141
    except Exception as exc:
        exc = user_error(exc)  # a full disk is the user's to fix too
        if exc is None:
            raise
        return fail(args, exc)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
