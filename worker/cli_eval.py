"""The commands that judge models: `task`, `evaluate`, `bench`, `experiment`, `experiments`,
`models` and `demo`. Their --json output is an interface: the key names stay."""

from __future__ import annotations

import sys

from core.configs import DEVICE_HELP
from core.formatting import count, points_difference, score_interval
from worker.demo import DEMO_MINUTES
from worker.cli import Bars, _print, _run_dict, _sessions, command, execute_runs


def _fmt(value, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def _mean_std(mean, std) -> str:
    return "—" if mean is None else f"{mean:.4f}" + (f" ± {std:.4f}" if std else "")


def _mb(size) -> str:
    return "—" if size is None else f"{size / 1e6:,.1f} MB"


def _count(n) -> str:
    return "—" if n is None else f"{n / 1e6:,.1f}M" if n >= 1e6 else f"{n:,}"


# --- tasks ----------------------------------------------------------------------------------------

def _task_line(t: dict) -> str:
    sizes = " · ".join(f"{split} {n:,}" for split, n in t["sizes"].items())
    kind = f"{len(t['labels'])} labels" if t["type"] == "classification" else \
        f"{len([x for x in t['labels'] if x != 'O'])} tags"
    return f"task {t['task_id']} '{t['name']}' ({t['type']}, {kind}): {sizes}"


def cmd_task_add(args) -> None:
    from worker.evaluation import add_task, task_dict

    task, created = add_task(_sessions(), args.path, args.type, args.dev, args.test, args.name, args.format,
                             args.text_field, args.pair_field, args.label_field, args.seed, args.dev_fraction,
                             args.test_fraction)
    data = {**task_dict(task), "created": created}
    counts = "\n".join(f"  {split}: " + ", ".join(f"{label} {n:,}" for label, n in labels.items())
                       for split, labels in data["label_counts"].items())
    origin = "; ".join(f"{split} {how}" for split, how in data["origin"].items())
    _print(args, data, ("added " if created else "already present (same content) as ") + _task_line(data)
           + f"\n  ({origin})\n{counts}")


def cmd_task_list(args) -> None:
    from db import store
    from worker.evaluation import task_dict

    with _sessions().begin() as session:
        rows = [task_dict(t) for t in store.list_tasks(session)]
    _print(args, {"tasks": rows}, "\n".join(_task_line(t) for t in rows) if rows else
           "no tasks yet: adapt-distill task add FILE --type classification|ner")


def cmd_task_delete(args) -> None:
    from worker.evaluation import delete_task

    delete_task(_sessions(), args.id)
    _print(args, {"deleted": args.id}, f"deleted task {args.id}")


# --- evaluate -------------------------------------------------------------------------------------

FINETUNE_ARGS = ("seeds", "epochs", "patience", "lr", "batch_size", "max_length", "metric", "scheme", "device")


def _finetune_params(args) -> dict:
    params = {k: getattr(args, k) for k in FINETUNE_ARGS if getattr(args, k, None) is not None}
    if getattr(args, "exclude_label", None):
        params["exclude_labels"] = list(args.exclude_label)
    if getattr(args, "finetune_seed", None) is not None:
        params["seed"] = args.finetune_seed
    return params


def _evaluation_table(data: dict) -> str:
    metrics = data["metrics"]
    names = [k for k, v in metrics.items() if isinstance(v, float) and not k.endswith("_std")]
    lines = [f"evaluation run {data['run_id']}: {data['model']} on task {data['task_id']} "
             f"({count(data['seeds'], 'seed')}, selected by dev {data['metric']})"]
    intervals = metrics.get("ci95") or {}
    lines += [f"  {name:<18} {_mean_std(metrics[name], metrics.get(name + '_std')):<18}"
              + (f" 95% interval {score_interval(intervals[name])}" if name in intervals else "") for name in names]
    for seed in data["epochs"]:
        lines.append(f"  seed {seed['seed']}: best dev epoch {seed['best_epoch']} of {seed['epochs_run']}"
                     + ("" if seed["stopped_early"] or seed["best_epoch"] < seed["epochs_run"]
                        else "  (still improving at the last epoch: add --epochs)"))
    return "\n".join(lines)


def cmd_evaluate(args) -> None:
    from worker.evaluation import add_task, create_evaluation, evaluation_dict

    sessions = _sessions()
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
        _print(args, {"run_id": run.id, "status": "queued"}, f"evaluation queued as run {run.id}")
        return
    with sessions.begin() as session:
        data = evaluation_dict(session, run.id)
    _print(args, data, _evaluation_table(data))
    _warn_contamination(args, data["contamination"])


def _warn_contamination(args, found: dict | None) -> None:
    """A line on stderr per corpus and split holding task text (the --json output has the counts)."""
    import sys

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
        lines.append(f"{r['model'][:40]:<40} {_count(r['params']):>8} {_mb(r['size_bytes']):>10} "
                     f"{r['latency_ms_p50']:>8.2f} {r['latency_ms_p95']:>8.2f} "
                     f"{'—' if iqr is None else f'{iqr:.2f}':>8} {r['throughput_per_s']:>10.1f} "
                     f"{r['speedup_vs_first']:>8.2f}x {r['throughput_speedup_vs_first']:>9.2f}x"
                     + ("  NOISY" if r.get("noisy") else ""))
    threads = first.get("threads")
    lines.append(f"device {first['device']}, sequence length {first['seq_len']}"
                 + (f", {count(threads, 'torch thread')}, {first['latency_repeats']} batch-1 and "
                    f"{first['throughput_repeats']} batch-{batch} forwards per model interleaved after "
                    f"{first['warmup']} warm-up, torch {first['torch_version']} on {first['cpu_model']}, "
                    f"load average {_fmt(first['load_before'], 3)} -> {_fmt(first['load_after'], 3)}"
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

    sessions = _sessions()
    params = {"device": args.device, "seq_len": args.seq_len, "batch_size": args.batch_size,
              "latency_repeats": args.repeats, "threads": args.threads}
    run = create_benchmark(sessions, args.model, params, args.corpus)
    execute_runs(args, [run])
    if args.queue and not args.wait:
        _print(args, {"run_id": run.id, "status": "queued"}, f"benchmark queued as run {run.id}")
        return
    with sessions.begin() as session:
        result = store.get_run(session, run.id).params.get("result") or {"models": []}
    _print(args, {"run_id": run.id, **result}, _bench_table(result["models"]))


# --- experiments ----------------------------------------------------------------------------------

def experiment_table(view: dict) -> str:
    rows = view["rows"]
    metric = rows[0]["metric"] if rows else "score"
    lines = [f"experiment {view['experiment_id']} · {view['name']} · {view['status']}"
             + (f" · {view['stage']}" if view["status"] == "running" else ""),
             f"{'model':<22} {metric + ' (mean ± std)':>22} {'95% interval':>18} {'vs base':>22} {'params':>8} "
             f"{'size':>10} {'p50 ms':>8} {'seq/s':>8} {'speed-up':>9}"]
    for r in rows:
        score = _mean_std(r["score"], r["score_std"]) if r["score"] is not None else r["evaluation_status"]
        score += "" if r["converged"] is not False else " *"
        speed = (f"{r['speedup']:.2f}x" if r["speedup"] else "—") + (" noisy" if r.get("noisy") else "")
        lines.append(f"{r['role']:<22} {score:>22} {score_interval(r['score_ci95']) or '—':>18} "
                     f"{points_difference(r['difference'], r['difference_ci95']) or '—':>22} "
                     f"{_count(r['parameters']):>8} {_mb(r['size_bytes']):>10} "
                     f"{_fmt(r['latency_ms_p50']):>8} {_fmt(r['throughput_per_s']):>8} {speed:>9}")
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
    sessions = _sessions()
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
            data = {"experiment_id": experiment_id, "runs": [_run_dict(r) for r in runs[1:]]}
        _print(args, data, f"experiment {experiment_id} queued: {len(runs) - 1} runs "
                           f"(adapt-distill experiments show {experiment_id} follows it)")
        return
    with sessions.begin() as session:
        view = experiment_view(session, experiment_id)
    view["failures"] = failures
    _print(args, view, experiment_table(view) + "".join(f"\nfailed: {f}" for f in failures))
    _warn_contamination(args, view["contamination"])


def cmd_experiments_list(args) -> None:
    from worker.experiments import list_experiments

    with _sessions().begin() as session:
        rows = list_experiments(session)
    lines = [f"{r['experiment_id']:>4} {r['status']:<10} {r['progress']:>5.0%}  {r['name']}" for r in rows]
    _print(args, {"experiments": rows}, "\n".join(lines) if lines else "no experiments yet")


def cmd_experiments_show(args) -> None:
    from worker.experiments import experiment_view

    with _sessions().begin() as session:
        view = experiment_view(session, args.id)
    _print(args, view, experiment_table(view))
    _warn_contamination(args, view["contamination"])


def cmd_experiments_rerun(args) -> None:
    from worker.experiments import rerun

    sessions = _sessions()
    _run_experiment(args, sessions, rerun(sessions, args.id))


# --- models ---------------------------------------------------------------------------------------

def _model_line(m: dict) -> str:
    best = max((s for s in m["scores"] if s["mean"] is not None), key=lambda s: s["mean"], default=None)
    score = f"  {best['metric']} {best['mean']:.4f} on {best['task']}" if best else ""
    speed = f"  {m['speed']['latency_ms_p50']:.1f} ms ({m['speed']['context']}" \
        + (", noisy)" if m["speed"].get("noisy") else ")") if m["speed"] else ""
    return f"{m['model_id']:>4} {m['spec'][:28]:<28} {_count(m['parameters']):>8} {_mb(m['size_bytes']):>10}  " \
           f"{m['name'][:50]}{score}{speed}"


def cmd_models_list(args) -> None:
    from worker.evaluation import models_table

    rows = models_table(_sessions())
    _print(args, {"models": rows}, "\n".join(_model_line(m) for m in rows))


def cmd_models_show(args) -> None:
    from worker.models import ensure_model, lineage, model_summary

    with _sessions().begin() as session:
        record = ensure_model(session, args.model)
        data = {**model_summary(session, record), "lineage": lineage(session, record)}
    lines = [_model_line(data), "lineage: " + " <- ".join(
        f"{step['name']}" + (f" (corpus {step['corpus_id']})" if step.get("corpus_id") else "")
        for step in data["lineage"])]
    lines += [f"  {s['task']}: {s['metric']} {_mean_std(s['mean'], s['std'])} ({s['seeds']} seeds, run "
              f"{s['evaluation_run']})" for s in data["scores"]]
    if data["speed"]:
        lines.append(f"  speed ({data['speed']['context']}): p50 {data['speed']['latency_ms_p50']:.2f} ms, "
                     f"{data['speed']['throughput_per_s']:.1f} sequences/s"
                     + (f"  NOISY: {data['speed']['noisy_reason']}" if data["speed"].get("noisy") else ""))
    if data["intrinsic"]:
        i = data["intrinsic"]
        lines.append(f"  on {i['context']}: {i['tokens_per_word']:.3f} tokens/word, {i['unknown_rate']:.3%} unknown"
                     + (f", perplexity {i['perplexity']:.4g}" if i.get("perplexity") else ""))
    _print(args, data, "\n".join(lines))


def cmd_models_export(args) -> None:
    from worker.models import export_zip

    path = export_zip(_sessions(), args.model, args.out)
    _print(args, {"model": args.model, "zip": str(path), "bytes": path.stat().st_size},
           f"wrote {path} ({_mb(path.stat().st_size)})")


def cmd_models_card(args) -> None:
    from worker.models import write_card

    path = write_card(_sessions(), args.model)
    _print(args, {"model": args.model, "card": str(path)}, f"wrote {path}")


# --- demo -----------------------------------------------------------------------------------------

def cmd_demo(args) -> None:
    from worker.demo import create_demo

    sessions = _sessions()
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
    p.add_argument("--seeds", type=int, help="fine-tunings with different seeds (default 3)")
    p.add_argument("--epochs", type=int, help="most epochs per seed; early stopping on dev ends sooner (default 10)")
    p.add_argument("--patience", type=int, help="epochs without a better dev score before a seed stops (default 2)")
    p.add_argument("--lr", type=float, help="fine-tuning learning rate (default: by model width, 1e-4 for 384 "
                                            "hidden)")
    if own_batch:
        p.add_argument("--batch-size", type=int, help="examples per step (default 16)")
    p.add_argument("--max-length", type=int, help="tokens per example, longer ones are truncated (default 128)")
    p.add_argument("--metric", help="dev metric that picks the best epoch (default: macro_f1; micro_f1 with "
                                    "--exclude-label; entity_f1 for ner)")
    p.add_argument("--exclude-label", action="append", metavar="LABEL",
                   help="leave a label out of micro- and macro-F1 (ChemProt style); repeat for more")
    p.add_argument("--scheme", help="ner tag scheme for strict entity matching: IOB1, IOB2, IOE1, IOE2, IOBES, "
                                    "BILOU (default: conlleval rules)")


def register(sub) -> None:
    """Add the commands to the top-level parser's subcommands."""
    task = sub.add_parser("task", help="add, list and delete labelled tasks").add_subparsers(dest="action",
                                                                                           required=True)
    p = command(task, "add", cmd_task_add, "add a labelled task: CSV/TSV/JSONL (text, label, optional text_pair) "
                                           "for classification, CoNLL for ner")
    p.add_argument("path", help="the train file (or the only file: dev and test are split off it)")
    p.add_argument("--type", required=True, choices=["classification", "ner"],
                   help="classification (a label per text) or ner (a tag per word, CoNLL)")
    p.add_argument("--dev", help="dev file (default: a seeded, stratified 10%% of train)")
    p.add_argument("--test", help="test file (default: a seeded, stratified 10%% of train)")
    p.add_argument("--name", help="a display name (default: the file name)")
    p.add_argument("--format", choices=["csv", "tsv", "jsonl"], help="override the format the name implies")
    p.add_argument("--text-field", default="text", help="column or field with the text (default text)")
    p.add_argument("--pair-field", default="text_pair", help="column or field with a second text (default text_pair)")
    p.add_argument("--label-field", default="label", help="column or field with the label (default label)")
    p.add_argument("--seed", type=int, default=0, help="seed of the dev/test split (default 0)")
    p.add_argument("--dev-fraction", type=float, default=0.1, help="share of train split off as dev (default 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.1, help="share of train split off as test (default 0.1)")
    command(task, "list", cmd_task_list, "list tasks")
    p = command(task, "delete", cmd_task_delete, "delete a task, its files and its evaluations")
    p.add_argument("id", type=int, help="the id `list` shows")

    p = command(sub, "evaluate", cmd_evaluate, "fine-tune a model on a labelled task with several seeds and score "
                                               "the best dev epoch on test")
    p.add_argument("--model", required=True, help="bundled, run:ID, a model folder or a hub id")
    p.add_argument("--task", type=int, help="task id (adapt-distill task list)")
    p.add_argument("--train", help="a task file to add first (instead of --task)")
    p.add_argument("--dev", help="with --train: the dev file")
    p.add_argument("--test", help="with --train: the test file")
    p.add_argument("--task-type", choices=["classification", "ner"], help="with --train: the task's type")
    _finetune_options(p)
    p.add_argument("--finetune-seed", type=int, help="the first seed (default 0)")
    p.add_argument("--device", help=f"{DEVICE_HELP} (default auto)")
    p.add_argument("--queue", action="store_true", help="run on a worker (gpu queue) instead of inline")
    p.add_argument("--wait", action="store_true", help="with --queue: wait for the result")

    p = command(sub, "bench", cmd_bench, "measure latency (batch 1) and throughput of models side by side")
    p.add_argument("--model", action="append", required=True,
                   help="a model (bundled, run:ID, a folder); repeat to compare; the first is the reference")
    p.add_argument("--corpus", type=int, help="also measure tokens per word, unknown rate and perplexity on it")
    p.add_argument("--device", default="auto", help=f"{DEVICE_HELP} (default auto)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (default 128)")
    p.add_argument("--batch-size", type=int, default=32, help="batch for throughput (default 32)")
    p.add_argument("--repeats", type=int, default=30, help="timed batch-1 forwards per model, at least 30 (default 30)")
    # None: worker.evaluation.BENCH_DEFAULTS decides (not imported here: it would slow every command's start)
    p.add_argument("--threads", type=int, help="torch threads pinned for the whole measurement (default one: "
                                               "batch-1 latency as one serving worker sees it)")
    p.add_argument("--queue", action="store_true", help="run on a worker (gpu queue) instead of inline")
    p.add_argument("--wait", action="store_true", help="with --queue: wait for the result")

    p = command(sub, "experiment", cmd_experiment, "the paper's comparison on your data: base and adapted teacher "
                                                   "and a student by each strategy, fine-tuned and benchmarked")
    p.add_argument("--corpus", type=int, required=True, help="corpus id (adapt-distill corpus list)")
    p.add_argument("--task", type=int, required=True, help="task id (adapt-distill task list)")
    p.add_argument("--teacher", default="bundled", help="the general teacher: bundled, a folder, a hub id, or run:ID "
                                                        "(an expansion is used as the expanded teacher)")
    p.add_argument("--student", help="student shape: a preset or L<layers>-H<hidden> (default: half the teacher)")
    for name in ("layers", "hidden", "heads", "intermediate"):
        p.add_argument(f"--{name}", type=int, help=f"student {name} (overrides the shape)")
    p.add_argument("--allow-larger-student", action="store_true", help="allow a student not smaller than the teacher")
    p.add_argument("--student-init", help="a small pretrained student with the teacher's base vocabulary (default: "
                                          "one distilled from the teacher on the corpus)")
    p.add_argument("--strategies", help="comma-separated: adapt-then-distill, distill-then-adapt, adapt-and-distill "
                                        "(default all three)")
    p.add_argument("--budget", help="steps of each adaptation and distillation: N, or A,D (default 1000)")
    p.add_argument("--adapt-steps", type=int, help="steps of each adaptation (overrides --budget)")
    p.add_argument("--distill-steps", type=int, help="steps of each distillation (overrides --budget)")
    p.add_argument("--batch-size", type=int, help="training batch size (default 32)")
    p.add_argument("--seq-len", type=int, help="training sequence length (default 128)")
    p.add_argument("--seed", type=int, help="training seed (default 0)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], help="training precision (default auto)")
    p.add_argument("--expand", default="pick", help="pick (the analysis's pick, default), none, or a number of tokens")
    p.add_argument("--vocab-step", type=int, help="tokens per vocabulary candidate (default 10000)")
    p.add_argument("--vocab-max-added", type=int, help="most tokens to add (default 40000)")
    p.add_argument("--threshold", type=float, help="the pick's gain threshold (default 0.01)")
    p.add_argument("--name", help="a name for the experiment")
    _finetune_options(p, own_batch=False)
    p.add_argument("--device", help=f"{DEVICE_HELP} for every run (default auto)")
    p.add_argument("--queue", action="store_true", help="run on workers instead of inline")
    p.add_argument("--wait", action="store_true", help="with --queue: wait for every run")

    experiments = sub.add_parser("experiments", help="list, show and rerun experiments").add_subparsers(
        dest="action", required=True)
    command(experiments, "list", cmd_experiments_list, "list experiments")
    p = command(experiments, "show", cmd_experiments_show, "an experiment's table")
    p.add_argument("id", type=int, help="the id `list` shows")
    p = command(experiments, "rerun", cmd_experiments_rerun, "run an experiment again with the same settings")
    p.add_argument("id", type=int, help="the id `list` shows")
    p.add_argument("--queue", action="store_true", help="run on workers instead of inline")
    p.add_argument("--wait", action="store_true", help="with --queue: wait for every run")

    models = sub.add_parser("models", help="list, show and export models").add_subparsers(dest="action", required=True)
    command(models, "list", cmd_models_list, "every model with its size, best score and speed")
    p = command(models, "show", cmd_models_show, "a model's lineage, scores, speed and measures")
    p.add_argument("model", help="a model id, bundled, run:ID or a folder")
    p = command(models, "export", cmd_models_export, "write a model as a zip with its model card")
    p.add_argument("model", help="a model id, run:ID or a folder")
    p.add_argument("--out", help="the zip file or a folder for it (default: ADAPT_DISTILL_HOME/exports)")
    p = command(models, "card", cmd_models_card, "(re)write the model card README.md in a model's folder")
    p.add_argument("model", help="a model id or run:ID")

    p = command(sub, "demo", cmd_demo, "add a sample corpus and task built from the docstrings of installed "
                                       f"packages and run a small experiment on them (about {DEMO_MINUTES} minutes "
                                       "on a quiet 2-core CPU)")
    p.add_argument("--queue", action="store_true", help="run on workers instead of inline")
    p.add_argument("--wait", action="store_true", help="with --queue: wait for every run")
