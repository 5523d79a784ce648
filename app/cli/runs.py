"""`runs list | cancel | resume`."""

from __future__ import annotations

from app.cli.common import (Bars, add_queue_options, command, open_sessions, print_result, run_dict, train_runs,
                            wait_run)
from db.models import Run

LIST_LIMIT = 50  # newest runs `runs list` shows


def cmd_runs_list(args) -> None:
    from db import store
    from worker.naming import run_subject
    from worker.progress import active_steps, parent_progress, stage_note
    from worker.run_state import find_dead_runs

    sessions = open_sessions()
    find_dead_runs(sessions)
    with sessions.begin() as session:
        runs = list(store.rows(session, Run, limit=args.limit))
        steps = active_steps(session, runs)
        rows = [run_dict(r) | {"stage": r.stage, "parent_id": r.parent_id, "subject": run_subject(r),
                               "progress": parent_progress(r, steps[r.id])[0] if r.id in steps else r.progress}
                for r in runs]
    lines = [f"{'id':>4} {'kind':<13} {'status':<10} {'progress':>8}  stage"]
    lines += [(f"{r['run_id']:>4} {r['kind']:<13} {r['status']:<10} {r['progress']:>8.0%}  "
               + " · ".join(part for part in (stage_note(r['status'], r['stage']), r["subject"]) if part)).rstrip()
              for r in rows]
    print_result(args, {"runs": rows}, "\n".join(lines))


def cmd_runs_cancel(args) -> None:
    from worker.queueing.queues import connect, redis_url
    from worker.run_state import request_cancel

    sessions = open_sessions()
    if redis_url():
        from worker.queueing.submit import cancel

        cancel(sessions, connect(), args.id)
    else:
        request_cancel(sessions, args.id)
    print_result(args, {"run_id": args.id, "status": "cancelled"}, f"run {args.id} cancelled")


def cmd_runs_resume(args) -> None:
    from db import store
    from worker import run_state, training

    sessions = open_sessions()
    if args.processes is not None:
        training.set_processes(sessions, args.id, args.processes)
    if args.queue:
        from worker.queueing.queues import connect
        from worker.queueing.submit import resume

        run = resume(sessions, connect(), args.id)
        if args.wait:
            wait_run(sessions, run.id, Bars(not args.json))
    else:
        train_runs(args, run_state.prepare_resume(sessions, args.id))
        return
    with sessions.begin() as session:
        print_result(args, {"runs": [run_dict(store.get(session, Run, args.id))]}, f"run {args.id} queued to resume")


def add_commands(sub) -> None:
    """runs list, cancel and resume."""
    runs = sub.add_parser("runs", help="list, cancel and resume runs").add_subparsers(dest="action", required=True)
    p = command(runs, "list", cmd_runs_list, "list runs (and mark those whose worker died)")
    p.add_argument("--limit", type=int, default=LIST_LIMIT, help="newest runs to list")
    p = command(runs, "cancel", cmd_runs_cancel, "cancel a queued or running run")
    p.add_argument("id", type=int, help="the id `list` shows")
    p = command(runs, "resume", cmd_runs_resume, "resume a cancelled, failed or abandoned training run")
    p.add_argument("id", type=int, help="the id `list` shows")
    p.add_argument("--gpus", dest="processes", type=int,
                   help="continue with this many data-parallel processes (the checkpoint does not depend on it)")
    add_queue_options(p, queue_help="resume on a worker instead of inline")
