"""The commands that judge models: `evaluate`, `bench`, `experiment`, `experiments` and `demo`. Their
--json output is an interface: the key names stay."""

from __future__ import annotations

import sys

from app.cli.common import (Bars, add_queue_options, command, execute_runs, fmt, mean_std, megabytes, open_sessions,
                            print_result, run_dict, short_float)
from core.checks import DEVICE_HELP, PRECISIONS
from core.configs import AdaptConfig, TrainConfig, VocabConfig
from core.judge.settings import BENCH_DEFAULTS, MIN_LATENCY_REPEATS, TASK_TYPES, FinetuneConfig, finetune_lr
from core.formatting import count, parameters, points_difference, score_interval, speedup, table_number
from core.model_io import BUNDLED
from worker.demo import DEMO_MINUTES
from db.models import Run

# the defaults the help shows
FINETUNE, TRAIN, ADAPT, VOCAB, BENCH = FinetuneConfig(), TrainConfig(), AdaptConfig(), VocabConfig(), BENCH_DEFAULTS


# --- evaluate -------------------------------------------------------------------------------------

FINETUNE_ARGS = ("seeds", "epochs", "patience", "lr", "batch_size", "max_length", "metric", "scheme", "device")


def _finetune_params(args) -> dict:
    params = {k: getattr(args, k) for k in FINETUNE_ARGS if getattr(args, k, None) is not None}
    if getattr(args, "exclude_label", None):
        params["exclude_labels"] = list(args.exclude_label)
    if getattr(args, "onnx", None):
        params["onnx"] = [p.strip() for p in args.onnx.split(",") if p.strip()]
    if getattr(args, "keep", False):
        params["keep"] = True
    if getattr(args, "finetune_seed", None) is not None:
        params["seed"] = args.finetune_seed
    return params


def short_float_score(value) -> str:
    return "—" if value is None else f"{value:.4f}"


def _evaluation_table(data: dict) -> str:
    metrics = data["metrics"]
    names = [k for k, v in metrics.items() if isinstance(v, float) and not k.endswith("_std")]
    lines = [f"evaluation run {data['run_id']}: {data['model']} on task {data['task_id']} "
             f"({count(data['seeds'], 'seed')}, selected by dev {data['metric']})"]
    intervals = metrics.get("ci95") or {}
    lines += [f"  {name:<18} {mean_std(metrics[name], metrics.get(name + '_std')):<18}"
              + (f" 95% interval {score_interval(intervals[name])}" if name in intervals else "") for name in names]
    for precision, scored in (data.get("onnx") or {}).items():  # the same fine-tuned models, served by ONNX
        lines.append(f"  exported to ONNX {precision}: {data['metric']} "
                     f"{mean_std(scored.get(data['metric']), scored.get(data['metric'] + '_std'))} "
                     f"(PyTorch {short_float_score(metrics.get(data['metric']))})")
    if data.get("kept_model"):
        lines.append(f"  kept: {data['kept_model']['name']} (seed {data['kept_model']['seed']}, the best dev "
                     f"{data['metric']}); serve it: adapt-distill models export-onnx {data['kept_model']['spec']}")
    for seed in data["epochs"]:
        lines.append(f"  seed {seed['seed']}: best dev epoch {seed['best_epoch']} of {seed['epochs_run']}"
                     + ("" if seed["stopped_early"] or seed["best_epoch"] < seed["epochs_run"]
                        else "  (still improving at the last epoch: add --epochs)"))
    return "\n".join(lines)


def cmd_evaluate(args) -> None:
    from worker.evaluation import add_task, create_evaluation, evaluation_dict

    sessions = open_sessions()
    if (args.task is None) == (args.train is None):
        raise_config("give --task ID, or --train FILE (with --task-type) to add the task first")
    task_id = args.task
    if task_id is None:
        if not args.task_type:
            raise_config("--train needs --task-type classification or ner")
        task, _ = add_task(sessions, args.train, args.task_type, args.dev, args.test)
        task_id = task.id
    run = create_evaluation(sessions, args.model, task_id, _finetune_params(args))
    execute_runs(args, [run])
    if args.queue and not args.wait:
        print_result(args, {"run_id": run.id, "status": "queued"}, f"evaluation queued as run {run.id}")
        return
    with sessions.begin() as session:
        data = evaluation_dict(session, run.id)
    print_result(args, data, _evaluation_table(data))
    _warn_contamination(args, data["contamination"])


def _warn_contamination(args, found: dict | None) -> None:
    """A line on stderr per corpus and split holding task text (the --json output has the counts)."""
    from core.judge.contamination import warning_lines

    if not args.json:
        for line in warning_lines(found):
            print(f"warning: {line}", file=sys.stderr)


def raise_config(message: str) -> None:
    from core.errors import ConfigError

    raise ConfigError(message)


# --- bench ----------------------------------------------------------------------------------------

def _bench_table(rows: list[dict]) -> str:
    if not rows:
        return "no results"
    first = rows[0]
    batch = first["batch_size"]
    lines = [f"{'model':<40} {'params':>8} {'size':>10} {'p50 ms':>8} {'p95 ms':>8} {'IQR ms':>8} "
             f"{f'seq/s @{batch}':>10} {'x batch 1':>9} {f'x batch {batch}':>10}"]
    for r in rows:
        iqr = r.get("latency_ms_iqr")
        lines.append(f"{r['model'][:40]:<40} {parameters(r['params']):>8} {megabytes(r['size_bytes']):>10} "
                     f"{r['latency_ms_p50']:>8.2f} {r['latency_ms_p95']:>8.2f} "
                     f"{'—' if iqr is None else f'{iqr:.2f}':>8} {r['throughput_per_s']:>10.1f} "
                     f"{speedup(r['speedup_vs_first']):>9} {speedup(r['throughput_speedup_vs_first']):>10}"
                     + ("  NOISY" if r.get("noisy") else ""))
    threads = first.get("threads")
    lines.append(f"device {first['device']}, sequence length {first['seq_len']}"
                 + (f", {count(threads, 'torch thread')}, {first['latency_repeats']} batch-1 and "
                    f"{first['throughput_repeats']} batch-{batch} forwards per model interleaved after "
                    f"{first['warmup']} warm-up, torch {first['torch_version']} on {first['cpu_model']}, "
                    f"load average {fmt(first['load_before'], 3)} -> {fmt(first['load_after'], 3)}"
                    if threads is not None else ", threads not recorded"))
    lines.append("params: of the encoder that is timed; size: the folder on disk; IQR: p75 - p25 of the batch-1 "
                 "latencies; speed-ups against the first model")
    reasons = list(dict.fromkeys(r["noisy_reason"] for r in rows if r.get("noisy")))
    if len(reasons) == 1 and all(r.get("noisy") for r in rows):
        lines.append(f"NOISY: {reasons[0]}: measure again on a quieter machine")
    else:
        lines += [f"NOISY {r['model']}: {r['noisy_reason']}" for r in rows if r.get("noisy")]
    return "\n".join(lines)


def cmd_bench(args) -> None:
    from db import store
    from worker.evaluation import create_benchmark

    sessions = open_sessions()
    params = {"device": args.device, "seq_len": args.seq_len, "batch_size": args.batch_size,
              "latency_repeats": args.repeats, "threads": args.threads}
    run = create_benchmark(sessions, args.model, params, args.corpus)
    execute_runs(args, [run])
    if args.queue and not args.wait:
        print_result(args, {"run_id": run.id, "status": "queued"}, f"benchmark queued as run {run.id}")
        return
    with sessions.begin() as session:
        result = store.get(session, Run, run.id).params.get("result") or {"models": []}
    print_result(args, {"run_id": run.id, **result}, _bench_table(result["models"]))


# --- experiments ----------------------------------------------------------------------------------

def experiment_table(view: dict) -> str:
    rows = view["rows"]
    metric = rows[0]["metric"] if rows else "score"
    lines = [f"experiment {view['experiment_id']} · {view['name']} · {view['status']}"
             + (f" · {view['stage']}" if view["status"] == "running" else ""),
             f"{'model':<22} {metric + ' (mean ± std)':>22} {'95% interval':>18} {'vs base':>22} {'params':>8} "
             f"{'size':>10} {'p50 ms':>8} {'seq/s':>8} {'speed-up':>9}"]
    for r in rows:
        score = mean_std(r["score"], r["score_std"]) if r["score"] is not None else r["evaluation_status"]
        score += "" if r["converged"] is not False else " *"
        speed = speedup(r["speedup"]) + (" noisy" if r.get("noisy") else "")
        lines.append(f"{r['role']:<22} {score:>22} {score_interval(r['score_ci95']) or '—':>18} "
                     f"{points_difference(r['difference'], r['difference_ci95']) or '—':>22} "
                     f"{parameters(r['parameters']):>8} {megabytes(r['size_bytes']):>10} "
                     f"{table_number('latency', r['latency_ms_p50']):>8} "
                     f"{table_number('throughput', r['throughput_per_s']):>8} {speed:>9}")
    seeds = sorted({r["seeds"] for r in rows if r["seeds"]})
    lines.append("score: test, mean over " + (" or ".join(count(n, "seed") for n in seeds) or "the seeds")
                 + "; 95% interval over 1,000 bootstrap resamples of the test examples and seeds; vs base: the difference "
                   "from the base teacher in points on the same examples and seeds")
    if any(r["converged"] is False for r in rows):
        lines.append("*: still improving at its last fine-tuning epoch (raise --epochs)")
    contexts = sorted({r["speed_context"] for r in rows if r.get("speed_context")})
    lines.append("speed-up: p50 latency at batch 1 against the adapted teacher"
                 + (f", measured in {' and '.join(contexts)}" if contexts else "")
                 + ("; noisy: other work changed the load, or p95 over 3x p50 (benchmark again)"
                    if any(r.get("noisy") for r in rows) else ""))
    lines += [f"{v[0].upper()}{v[1:]}." for v in (r.get("verdict") for r in rows) if v]
    lines += [line for line in (view.get("summary"), view.get("seed_note") and view["seed_note"] + ".") if line]
    if view.get("baseline"):
        b = view["baseline"]
        lines.append(f"floor: always answering '{b['label']}' scores {metric} {b['score']:.4f} "
                     f"on the {b['test_examples']:,} test examples")
    return "\n".join(lines)


def _strategies(text: str | None) -> tuple[str, ...]:
    from core.configs import STRATEGIES

    return tuple(s.strip() for s in text.split(",") if s.strip()) if text else STRATEGIES


def cmd_experiment(args) -> None:
    from worker.experiments import create_experiment, parse_budget

    adapt_steps, distill_steps = parse_budget(args.budget)
    common = {k: getattr(args, k) for k in ("batch_size", "seq_len", "device", "precision", "seed")
              if getattr(args, k, None) is not None}
    adapt = {**common, **({"steps": args.adapt_steps or adapt_steps} if args.adapt_steps or adapt_steps else {})}
    distill = {**common, **({"steps": args.distill_steps or distill_steps}
                            if args.distill_steps or distill_steps else {})}
    student = {k: getattr(args, k) for k in ("student", "layers", "hidden", "heads", "intermediate")
               if getattr(args, k, None) is not None}
    if args.allow_larger_student:
        student["allow_larger_student"] = True
    vocab = {k: v for k, v in (("step", args.vocab_step), ("max_added", args.vocab_max_added),
                               ("threshold", args.threshold)) if v is not None}
    expand = int(args.expand) if str(args.expand).isdigit() else args.expand
    finetune = _finetune_params(args)
    finetune.pop("batch_size", None)  # --batch-size is the training batch here; fine-tuning keeps its own
    sessions = open_sessions()
    runs = create_experiment(sessions, args.corpus, args.task, args.teacher, _strategies(args.strategies), student,
                             args.student_init, adapt, distill, finetune, {"device": args.device} if args.device else {},
                             expand, vocab, args.name)
    _run_experiment(args, sessions, runs)


def _run_experiment(args, sessions, runs) -> None:
    from worker.experiments import experiment_view

    failures = execute_runs(args, runs, keep_going=True)
    experiment_id = runs[0].id
    if args.queue and not args.wait:
        with sessions.begin() as session:
            data = {"experiment_id": experiment_id, "runs": [run_dict(r) for r in runs[1:]]}
        print_result(args, data, f"experiment {experiment_id} queued: {len(runs) - 1} runs "
                                 f"(adapt-distill experiments show {experiment_id} follows it)")
        return
    with sessions.begin() as session:
        view = experiment_view(session, experiment_id)
    view["failures"] = failures
    print_result(args, view, experiment_table(view) + "".join(f"\nfailed: {f}" for f in failures))
    _warn_contamination(args, view["contamination"])


def cmd_experiments_list(args) -> None:
    from worker.experiments import list_experiments

    with open_sessions().begin() as session:
        rows = list_experiments(session)
    lines = [f"{r['experiment_id']:>4} {r['status']:<10} {r['progress']:>5.0%}  {r['name']}" for r in rows]
    print_result(args, {"experiments": rows}, "\n".join(lines) if lines else "no experiments yet")


def cmd_experiments_show(args) -> None:
    from worker.experiments import experiment_view

    with open_sessions().begin() as session:
        view = experiment_view(session, args.id)
    print_result(args, view, experiment_table(view))
    _warn_contamination(args, view["contamination"])


def cmd_experiments_rerun(args) -> None:
    from worker.experiments import rerun

    sessions = open_sessions()
    _run_experiment(args, sessions, rerun(sessions, args.id))


# --- demo -----------------------------------------------------------------------------------------

def cmd_demo(args) -> None:
    from worker.demo import create_demo

    sessions = open_sessions()
    bars = Bars(not args.json)
    if not args.json:
        print(f"the demo took about {DEMO_MINUTES} minutes on a quiet 2-core CPU; --queue runs it on workers",
              file=sys.stderr)
    bars("building the sample corpus and task", 0.0)
    runs = create_demo(sessions)
    bars.close()
    _run_experiment(args, sessions, runs)


# --- parser ---------------------------------------------------------------------------------------

def _finetune_options(p, own_batch: bool = True) -> None:
    p.add_argument("--seeds", type=int, help=f"fine-tunings with different seeds (default {FINETUNE.seeds})")
    p.add_argument("--epochs", type=int,
                   help=f"most epochs per seed; early stopping on dev ends sooner (default {FINETUNE.epochs})")
    p.add_argument("--patience", type=int,
                   help=f"epochs without a better dev score before a seed stops (default {FINETUNE.patience})")
    p.add_argument("--lr", type=float, help="fine-tuning learning rate (default: by model width, "
                                            f"{short_float(finetune_lr(384))} for 384 hidden)")
    if own_batch:
        p.add_argument("--batch-size", type=int, help=f"examples per step (default {FINETUNE.batch_size})")
    p.add_argument("--max-length", type=int,
                   help=f"tokens per example, longer ones are truncated (default {FINETUNE.max_length})")
    p.add_argument("--metric", help="dev metric that picks the best epoch (default: macro_f1; micro_f1 with "
                                    "--exclude-label; entity_f1 for ner)")
    p.add_argument("--exclude-label", action="append", metavar="LABEL",
                   help="leave a label out of micro- and macro-F1 (ChemProt style); repeat for more")
    p.add_argument("--scheme", help="ner tag scheme for strict entity matching: IOB1, IOB2, IOE1, IOE2, IOBES, "
                                    "BILOU (default: conlleval rules)")


WORKERS = {"queue_help": "run on workers instead of inline", "wait_help": "with --queue: wait for every run"}


def add_commands(sub) -> None:
    """evaluate, bench, experiment and experiments (demo comes after models: add_demo_command)."""
    p = command(sub, "evaluate", cmd_evaluate, "fine-tune a model on a labelled task with several seeds and score "
                                               "the best dev epoch on test")
    p.add_argument("--model", required=True, help="bundled, run:ID, a model folder or a hub id")
    p.add_argument("--task", type=int, help="task id (adapt-distill task list)")
    p.add_argument("--train", help="a task file to add first (instead of --task)")
    p.add_argument("--dev", help="with --train: the dev file")
    p.add_argument("--test", help="with --train: the test file")
    p.add_argument("--task-type", choices=TASK_TYPES, help="with --train: the task's type")
    _finetune_options(p)
    p.add_argument("--finetune-seed", type=int, help=f"the first seed (default {FINETUNE.seed})")
    p.add_argument("--device", help=f"{DEVICE_HELP} (default {FINETUNE.device})")
    p.add_argument("--onnx", help="also score each seed's fine-tuned model exported to ONNX on test: fp32, int8 or "
                                  "fp32,int8 (what serving it costs in score; needs the onnx extra)")
    p.add_argument("--keep", action="store_true",
                   help="keep the best seed's fine-tuned model (by dev score), task head included, as a model "
                        "run:ID to export and serve (models export-onnx run:ID)")
    add_queue_options(p, queue_help="run on a worker (gpu queue) instead of inline")

    p = command(sub, "bench", cmd_bench, "measure latency (batch 1) and throughput of models side by side")
    p.add_argument("--model", action="append", required=True,
                   help="a model (bundled, run:ID, a folder); repeat to compare; the first is the reference")
    p.add_argument("--corpus", type=int, help="also measure tokens per word, unknown rate and perplexity on it")
    p.add_argument("--device", default=BENCH["device"], help=f"{DEVICE_HELP} (default {BENCH['device']})")
    p.add_argument("--seq-len", type=int, default=BENCH["seq_len"],
                   help=f"tokens per sequence (default {BENCH['seq_len']})")
    p.add_argument("--batch-size", type=int, default=BENCH["batch_size"],
                   help=f"batch for throughput (default {BENCH['batch_size']})")
    p.add_argument("--repeats", type=int, default=BENCH["latency_repeats"],
                   help=f"timed batch-1 forwards per model, at least {MIN_LATENCY_REPEATS} "
                        f"(default {BENCH['latency_repeats']})")
    # None: the benchmark takes BENCH_DEFAULTS["threads"] (worker.evaluation.create_benchmark)
    p.add_argument("--threads", type=int, help=f"torch threads pinned for the whole measurement (default "
                                               f"{BENCH['threads']}: batch-1 latency as one serving worker sees it)")
    add_queue_options(p, queue_help="run on a worker (gpu queue) instead of inline")

    p = command(sub, "experiment", cmd_experiment, "the paper's comparison on your data: base and adapted teacher "
                                                   "and a student by each strategy, fine-tuned and benchmarked")
    p.add_argument("--corpus", type=int, required=True, help="corpus id (adapt-distill corpus list)")
    p.add_argument("--task", type=int, required=True, help="task id (adapt-distill task list)")
    p.add_argument("--teacher", default=BUNDLED, help="the general teacher: bundled, a folder, a hub id, or run:ID "
                                                      "(an expansion is used as the expanded teacher)")
    p.add_argument("--student", help="student shape: a preset or L<layers>-H<hidden> (default: half the teacher)")
    for name in ("layers", "hidden", "heads", "intermediate"):
        p.add_argument(f"--{name}", type=int, help=f"student {name} (overrides the shape)")
    p.add_argument("--allow-larger-student", action="store_true", help="allow a student not smaller than the teacher")
    p.add_argument("--student-init", help="a small pretrained student with the teacher's base vocabulary (default: "
                                          "one distilled from the teacher on the corpus)")
    p.add_argument("--strategies", help="comma-separated: adapt-then-distill, distill-then-adapt, adapt-and-distill "
                                        "(default all three)")
    p.add_argument("--budget", help=f"steps of each adaptation and distillation: N, or A,D (default {TRAIN.steps})")
    p.add_argument("--adapt-steps", type=int, help="steps of each adaptation (overrides --budget)")
    p.add_argument("--distill-steps", type=int, help="steps of each distillation (overrides --budget)")
    p.add_argument("--batch-size", type=int, help=f"training batch size (default {TRAIN.batch_size})")
    p.add_argument("--seq-len", type=int, help=f"training sequence length (default {ADAPT.seq_len})")
    p.add_argument("--seed", type=int, help=f"training seed (default {TRAIN.seed})")
    p.add_argument("--precision", choices=PRECISIONS, help=f"training precision (default {TRAIN.precision})")
    p.add_argument("--expand", default="pick", help="pick (the analysis's pick, default), none, or a number of tokens")
    p.add_argument("--vocab-step", type=int, help=f"tokens per vocabulary candidate (default {VOCAB.step})")
    p.add_argument("--vocab-max-added", type=int, help=f"most tokens to add (default {VOCAB.max_added})")
    p.add_argument("--threshold", type=float, help=f"the pick's gain threshold (default {VOCAB.threshold:g})")
    p.add_argument("--name", help="a name for the experiment")
    _finetune_options(p, own_batch=False)
    p.add_argument("--device", help=f"{DEVICE_HELP} for every run (default {TRAIN.device})")
    add_queue_options(p, **WORKERS)

    experiments = sub.add_parser("experiments", help="list, show and rerun experiments").add_subparsers(
        dest="action", required=True)
    command(experiments, "list", cmd_experiments_list, "list experiments")
    p = command(experiments, "show", cmd_experiments_show, "an experiment's table")
    p.add_argument("id", type=int, help="the id `list` shows")
    p = command(experiments, "rerun", cmd_experiments_rerun, "run an experiment again with the same settings")
    p.add_argument("id", type=int, help="the id `list` shows")
    add_queue_options(p, **WORKERS)


def add_demo_command(sub) -> None:
    """demo (listed last, after models)."""
    p = command(sub, "demo", cmd_demo, "add a sample corpus and task built from the docstrings of installed "
                                       f"packages and run a small experiment on them (about {DEMO_MINUTES} minutes "
                                       "on a quiet 2-core CPU)")
    add_queue_options(p, **WORKERS)
