"""`plan`: the largest student shape that answers within a latency budget, measured on this machine
or on the worker that would serve it (worker.planning). Its --json output is an interface."""

from __future__ import annotations

from app.cli.common import add_queue_options, command, execute_runs, open_sessions, print_result
from core.checks import DEVICE_HELP
from core.errors import ConfigError
from core.formatting import count, latency_ms, parameters, speedup, table_number
from core.judge.settings import BENCH_DEFAULTS
from core.model_io import BUNDLED
from db.models import Run
from worker.kinds import QUEUES

BENCH = BENCH_DEFAULTS


def _plan_table(plan: dict) -> str:
    pct = plan["percentile"]
    setting = plan["setting"]
    lines = [f"{'shape':<10} {'heads':>5} {'FFN':>6} {'params':>8} {'layers':>8} {'p50 ms':>8} {f'p{pct} ms':>8}  "
             f"within"]

    def line(m: dict, note: str = "") -> str:
        return (f"{m['shape']:<10} {m['heads']:>5} {m['intermediate']:>6} {parameters(m['parameters']):>8} "
                f"{parameters(m['layer_parameters']):>8} "
                f"{table_number('latency', m['latency_ms_p50']):>8} {table_number('latency', m['latency_ms']):>8}  "
                f"{'yes' if m['meets'] else 'no'}{note}")

    pick = plan["pick"]
    shown = sorted([*plan["around"], *([pick] if pick else [])], key=lambda m: m["layer_parameters"])
    lines += [line(m, "  <- the pick" if pick and m["shape"] == pick["shape"] else "") for m in shown]
    lines.append(line(plan["teacher"], "  (the teacher)"))
    budget, teacher = latency_ms(plan["budget_ms"]), plan["teacher"]["latency_ms"]
    if pick:
        lines.append(f"pick: {pick['shape']} ({parameters(pick['parameters'])} parameters, "
                     f"{parameters(pick['layer_parameters'])} in its layers), p{pct} {latency_ms(pick['latency_ms'])} "
                     f"within {budget}; the teacher's p{pct} is {latency_ms(teacher)} "
                     f"({speedup(teacher / pick['latency_ms'])} the pick's); distil it with --student {pick['shape']}")
    else:
        lines.append(f"no shape of this teacher's family answers within {budget} at p{pct} here: raise the budget, "
                     f"shorten --seq-len or use more --threads")
    lines.append(f"measured on {setting['device']} ({setting['cpu_model']}), {count(setting['threads'], 'thread')}, "
                 f"sequence length {setting['seq_len']}, batch 1, {setting['repeats']} forwards after "
                 f"{setting['warmup']} warm-up per shape, random weights (speed does not depend on them); the pick "
                 f"has the most parameters in its layers (embeddings left out) within the budget; "
                 f"{len(plan['candidates'])} shapes in {setting['seconds']:.0f} s")
    return "\n".join(lines)


def cmd_plan(args) -> None:
    from db import store
    from worker.planning import create_plan

    sessions = open_sessions()
    if args.queue_name and not args.queue:
        raise ConfigError("--queue-name names the workers that measure: add --queue")
    run = create_plan(sessions, args.teacher, args.latency_ms, args.queue_name, percentile=args.percentile,
                      device=args.device, threads=args.threads, seq_len=args.seq_len)
    execute_runs(args, [run])
    if args.queue and not args.wait:
        print_result(args, {"run_id": run.id, "status": "queued"}, f"plan queued as run {run.id}")
        return
    with sessions.begin() as session:
        plan = store.get(session, Run, run.id).params["result"]
    print_result(args, {"run_id": run.id, **plan}, _plan_table(plan))


def add_commands(sub) -> None:
    p = command(sub, "plan", cmd_plan, "the largest student that answers within a latency budget on this machine, "
                                       "measured: shapes of the teacher's family timed like bench")
    p.add_argument("--latency-ms", type=float, required=True, help="the budget for one sequence (batch 1), in ms")
    p.add_argument("--percentile", type=int, default=95, help="the latency percentile the budget holds for (50, 90, "
                                                              "95 or 99; default 95)")
    p.add_argument("--teacher", default=BUNDLED, help="the teacher whose students are shaped: bundled, run:ID, a "
                                                      "folder (default bundled)")
    p.add_argument("--device", default=BENCH["device"], help=f"{DEVICE_HELP} (default {BENCH['device']})")
    p.add_argument("--threads", type=int, default=BENCH["threads"],
                   help=f"torch threads, as one serving worker gets (default {BENCH['threads']})")
    p.add_argument("--seq-len", type=int, default=BENCH["seq_len"],
                   help=f"tokens per sequence served (default {BENCH['seq_len']})")
    add_queue_options(p, queue_help="measure on a worker (where the student would serve) instead of here")
    p.add_argument("--queue-name", choices=QUEUES, help="with --queue: the queue whose workers would serve the "
                                                        "student (default gpu)")
