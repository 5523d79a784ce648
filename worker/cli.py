"""`adapt-distill`: the command-line face over the same service and core functions as the
dashboard. Long work shows progress bars on a terminal; `--json` prints one JSON object."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.configs import ADAPT_LR, DEVICE_HELP, DISTILL_LR, AdaptConfig, TrainConfig
from core.errors import AdaptDistillError, ConfigError, user_error

DEFAULT_PORT = 8501


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


def _sessions():
    from db.migrate import upgrade
    from db.session import get_sessionmaker

    upgrade()
    return get_sessionmaker()


def _print(args, data: dict, human: str) -> None:
    """--json as it is (JSON escapes what it holds), else the human lines with any character a
    terminal would act on escaped: a stored name is data, never a command to the terminal."""
    from core.formatting import printable

    print(json.dumps(data) if args.json else "\n".join(printable(line) for line in human.split("\n")))


def _quiet_hf() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


# --- services ------------------------------------------------------------------------------

def cmd_migrate(args) -> None:
    _sessions()
    print("database is up to date")


def gpu_list(value: str) -> str:
    """CUDA_VISIBLE_DEVICES for --gpus: '4' is GPUs 0-3, '2,3' is those two."""
    value = value.strip()
    if value.isdigit() and "," not in value:
        return ",".join(str(i) for i in range(int(value)))
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise ConfigError(f"--gpus takes a count (4) or a list of GPU numbers (0,1), got '{value}'")
    return ",".join(parts)


def cmd_worker(args) -> None:
    from worker.queues import check_queue
    from worker.serve import serve

    sessions = _sessions()
    if args.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    if args.gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_list(args.gpus)
    serve(sessions, [check_queue(name.strip()) for name in args.queues.split(",") if name.strip()], burst=args.burst)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_host(host: str, allow_remote: bool) -> str:
    """The address the dashboard listens on. Beyond this machine (0.0.0.0, a LAN address) only with
    a login configured (ADAPT_DISTILL_PASSWORD_HASH, or OIDC in the Streamlit secrets), or when the
    user says the network is trusted with --allow-remote. A password hash that is set must be valid."""
    import app
    from app.access import login_method, secrets_files

    host = (host or "127.0.0.1").strip()
    login = login_method(os.environ, secrets_files(Path(app.__file__).parent))
    if host not in LOOPBACK and not login and not allow_remote:
        raise ConfigError(f"--host {host} would let anyone who reaches this machine use the dashboard, and no login "
                          f"is configured: set ADAPT_DISTILL_PASSWORD_HASH to the line `adapt-distill hash-password` "
                          f"prints (or an [auth] section in .streamlit/secrets.toml for OIDC), keep the default "
                          f"127.0.0.1 (reach it through an SSH tunnel), or pass --allow-remote on a network you trust")
    return host


def cmd_hash_password(args) -> None:
    """Read a password (asked twice on a terminal, else one line of stdin); print the environment line."""
    from app.access import PASSWORD_ENV, hash_password

    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise ConfigError("the two passwords differ: run it again")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    print(f"{PASSWORD_ENV}={hash_password(password)}")


def dashboard_command(port: int, host: str = "127.0.0.1") -> list[str]:
    """The streamlit command line; the largest browser upload is ADAPT_DISTILL_UPLOAD_MB (default 200;
    larger files go through the import folder, ADAPT_DISTILL_IMPORT_DIR)."""
    import app
    from db.settings import upload_mb

    main = Path(app.__file__).parent / "main.py"
    return [sys.executable, "-m", "streamlit", "run", str(main), "--server.port", str(port),
            "--server.address", host, "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "minimal",
            "--server.maxUploadSize", str(upload_mb())]


def cmd_dashboard(args) -> None:
    host = check_host(args.host, args.allow_remote)
    _sessions()
    raise SystemExit(subprocess.call(dashboard_command(args.port, host)))


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return url.replace(f":{parts.password}@", ":***@") if parts.password else url


def cmd_up(args) -> None:
    """Embedded Valkey (unless REDIS_URL is set), migrations, worker(s) and the dashboard."""
    from worker.embedded import EmbeddedValkey, die_with_parent
    from worker.queues import redis_url

    host = check_host(args.host, args.allow_remote)
    _sessions()
    env = os.environ.copy()
    valkey = None
    if not redis_url():
        valkey = EmbeddedValkey().start()
        env["REDIS_URL"] = valkey.url
    processes = [subprocess.Popen([sys.executable, "-m", "worker.cli", "worker", "--queues", args.queues], env=env,
                                  preexec_fn=die_with_parent) for _ in range(args.workers)]
    processes.append(subprocess.Popen(dashboard_command(args.port, host), env=env, preexec_fn=die_with_parent))
    print(f"adapt-distill is up: dashboard http://{'localhost' if host in LOOPBACK else host}:{args.port}  "
          f"redis {valkey.display_url if valkey else _without_password(env['REDIS_URL'])}  "
          f"data {os.environ.get('ADAPT_DISTILL_HOME') or '~/.adapt-distill'}  (Ctrl-C stops everything)",
          file=sys.stderr, flush=True)
    def stop(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    try:
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        code = next(p.returncode for p in processes if p.poll() is not None) or 1
        print("a child process stopped; shutting down", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        for p in processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in processes:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        if valkey:
            valkey.stop()
    raise SystemExit(code)


# --- corpora -------------------------------------------------------------------------------

def _corpus_dict(c) -> dict:
    return {"corpus_id": c.id, "name": c.name, "documents": c.documents, "bytes": c.bytes,
            "source_bytes": c.source_bytes, "words": c.words, "distinct_words": c.distinct_words,
            "duplicate_documents": c.duplicate_documents, "mean_length": round(c.mean_length, 2),
            "sha256": c.sha256}


def cmd_corpus_add(args) -> None:
    from worker import service

    sessions = _sessions()
    bars = Bars(not args.json)
    try:
        corpus, created = service.add_corpus(sessions, args.path, args.name, args.format, args.text_field,
                                              progress=lambda done, total: bars("reading", done / max(total, 1)))
    finally:
        bars.close()
    data = {"corpus_id": corpus.id, "documents": corpus.documents, "bytes": corpus.bytes, "created": created}
    verb = "added" if created else "already present (same content) as"
    _print(args, data, f"{verb} corpus {corpus.id} '{corpus.name}': {corpus.documents:,} documents, "
                       f"{corpus.bytes:,} bytes")


def cmd_corpus_list(args) -> None:
    from db import store

    with _sessions().begin() as session:
        rows = [_corpus_dict(c) for c in store.list_corpora(session)]
    lines = [f"{'id':>4}  {'documents':>10}  {'bytes':>12}  name"]
    lines += [f"{r['corpus_id']:>4}  {r['documents']:>10,}  {r['bytes']:>12,}  {r['name']}" for r in rows]
    _print(args, {"corpora": rows}, "\n".join(lines) if rows else "no corpora yet: adapt-distill corpus add FILE")


def cmd_corpus_delete(args) -> None:
    from worker import service

    service.delete_corpus(_sessions(), args.id)
    _print(args, {"deleted": args.id}, f"deleted corpus {args.id}")


def cmd_corpus_caches(args) -> None:
    from core.formatting import human_bytes
    from worker import service

    caches = service.token_caches(_sessions(), args.corpus)
    lines = [f"corpus {c['corpus_id']} ({c['corpus']}): tokenizer {c['tokenizer']}  {c['tokens']:,} tokens  "
             f"{c['dtype']}  {human_bytes(c['bytes'])}" for c in caches]
    _print(args, {"caches": caches}, "\n".join(lines) or "no tokenized corpus yet: the first training run makes one")


def cmd_corpus_drop_cache(args) -> None:
    from core.formatting import human_bytes
    from worker import service

    freed = service.delete_token_caches(_sessions(), args.id)
    _print(args, {"corpus_id": args.id, "freed_bytes": freed},
           f"dropped the tokenized streams of corpus {args.id} ({human_bytes(freed)} freed)")


# --- vocabulary ----------------------------------------------------------------------------

def _wait(sessions, run_id: int, bars: Bars) -> None:
    from db import store

    while True:
        with sessions.begin() as session:
            run = store.get_run(session, run_id)
            status, stage, progress, error = run.status, run.stage, run.progress, run.error
        bars(stage, progress)
        if status.finished:
            bars.close()
            if status.value != "succeeded":
                raise AdaptDistillError(f"run {run_id} {status.value}: {error or 'no message'}")
            return
        time.sleep(0.5)


def _run_inline(sessions, run_id: int, execute, bars: Bars) -> None:
    from worker.service import Reporter

    _quiet_hf()
    try:
        execute(sessions, run_id, Reporter(sessions, run_id, echo=bars))
    finally:
        bars.close()


def _curve_table(summary: dict) -> str:
    lines = [f"analysis {summary['analysis_id']} (corpus {summary['corpus_id']}, base {summary['base_model']}, "
             f"threshold {summary['threshold']:.2%})",
             f"{'vocab':>8} {'added':>7} {'log P(D)':>12} {'gain':>8} {'tok/word':>9} {'split':>7}"]
    for p in summary["points"]:
        gain = "" if p["relative_gain"] is None else f"{p['relative_gain']:.2%}"
        mark = "  <- pick" if p["vocab_size"] == summary["picked_vocab_size"] else ""
        lines.append(f"{p['vocab_size']:>8} {p['added_tokens']:>7} {p['log_occurrence']:>12.3f} {gain:>8} "
                     f"{p['tokens_per_word']:>9.3f} {p['split_word_share']:>7.1%}{mark}")
    lines += [f"note: {n}" for n in summary["notes"]]
    return "\n".join(lines)


def cmd_vocab_analyze(args) -> None:
    from core.configs import VocabConfig
    from db import store
    from worker import service

    sessions = _sessions()
    config = VocabConfig(step=args.step, max_added=args.max_added, threshold=args.threshold,
                         min_frequency=args.min_frequency)
    bars = Bars(not args.json)
    if args.queue:
        from worker.queues import connect
        from worker.submit import submit_analysis

        analysis, reused = submit_analysis(sessions, connect(), args.corpus, args.base, config)
        if not args.wait:
            _print(args, {"analysis_id": analysis.id, "run_id": analysis.run_id, "reused": reused,
                          "status": "queued" if not reused else analysis.run.status.value},
                   f"analysis {analysis.id} {'reused' if reused else 'queued'} (run {analysis.run_id})")
            return
        _wait(sessions, analysis.run_id, bars)
    else:
        analysis, reused = service.create_analysis(sessions, args.corpus, args.base, config)
        if not reused:
            _run_inline(sessions, analysis.run_id, service.execute_analysis, bars)
        else:
            _wait(sessions, analysis.run_id, bars)
    with sessions.begin() as session:
        summary = service.analysis_summary(store.get_analysis(session, analysis.id), args.threshold)
    summary["reused"] = reused
    _print(args, summary, _curve_table(summary))


def cmd_vocab_show(args) -> None:
    from db import store
    from worker import service

    with _sessions().begin() as session:
        summary = service.analysis_summary(store.get_analysis(session, args.analysis), args.threshold)
    _print(args, summary, _curve_table(summary))


def cmd_vocab_expand(args) -> None:
    from db import store
    from worker import service

    sessions = _sessions()
    bars = Bars(not args.json)
    if args.queue:
        from worker.queues import connect
        from worker.submit import submit_expansion

        run_id = submit_expansion(sessions, connect(), args.analysis, args.size, args.out)
        if not args.wait:
            _print(args, {"run_id": run_id, "status": "queued"}, f"expansion queued as run {run_id}")
            return
        _wait(sessions, run_id, bars)
    else:
        run_id = service.create_expansion(sessions, args.analysis, args.size, args.out).id
        _run_inline(sessions, run_id, service.execute_expansion, bars)
    with sessions.begin() as session:
        run = store.get_run(session, run_id)
        base_size = store.get_analysis(session, args.analysis).base_vocab_size
        data = {"output_dir": run.output_dir, "vocab_size": run.params["vocab_size"],
                "added_tokens": run.params["vocab_size"] - base_size, "run_id": run_id}
        note = run.params.get("note")
    if note:
        data["note"] = note
    _print(args, data, f"expanded model: {data['output_dir']} ({data['vocab_size']:,} tokens, "
                       f"{data['added_tokens']:,} new)" + (f"\nnote: {note}" if note else ""))


# --- training ------------------------------------------------------------------------------

TRAIN_ARGS = ("steps", "epochs", "batch_size", "grad_accum", "lr", "weight_decay", "warmup", "schedule", "seed", "eval_every",
              "checkpoint_every", "log_every", "device", "precision", "seq_len", "heldout_fraction", "processes")
ADAPT_ARGS = ("mask_probability", "whole_word", "head_warmup", "head_lr")
DISTILL_ARGS = ("student", "layers", "hidden", "heads", "intermediate", "init", "version", "teacher_layer",
                "relation_heads", "mlm_weight", "allow_larger_student")


def _params(args, names, **renamed) -> dict:
    params = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    params.update({k: getattr(args, v) for k, v in renamed.items() if getattr(args, v, None) is not None})
    return params


def _run_dict(run) -> dict:
    result = run.params.get("result") or {}
    keep = ("first_loss", "last_loss", "heldout_loss_before", "heldout_loss", "heldout_relation_loss_before",
            "heldout_relation_loss", "tokens_per_second", "steps", "student_parameters", "teacher_parameters")
    return {"run_id": run.id, "kind": run.kind.value, "status": run.status.value, "output_dir": run.output_dir,
            "error": run.error, "metrics": {k: result[k] for k in keep if result.get(k) is not None}}


PARENTS = ("pipeline", "experiment")  # runs whose work is their steps


def execute_runs(args, runs, keep_going: bool = False) -> list[str]:
    """Run inline (in order) or queue (and with --wait, wait for each). With keep_going a failed
    run does not stop the others (those waiting on it are cancelled); the failures come back."""
    from db import store

    sessions = _sessions()
    failures: list[str] = []
    if args.queue:
        from worker.queues import connect
        from worker.submit import submit_runs

        submit_runs(sessions, connect(), runs)
        if args.wait:
            for run in runs:
                if run.kind.value not in PARENTS:
                    _wait_for(sessions, run.id, Bars(not args.json), keep_going, failures)
        return failures
    from worker.jobs import execute_run

    _quiet_hf()
    for run in runs:
        if run.kind.value in PARENTS:
            continue
        with sessions.begin() as session:
            if store.get_run(session, run.id).status.finished:
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
        _wait(sessions, run_id, bars)
    except AdaptDistillError as exc:
        if not keep_going:
            raise
        failures.append(str(exc))


def _train_runs(args, runs) -> None:
    """Run inline (in order) or queue, then print the runs."""
    from db import store

    sessions = _sessions()
    execute_runs(args, runs)
    with sessions.begin() as session:
        data = {"runs": [_run_dict(store.get_run(session, r.id)) for r in runs]}
    lines = [f"run {r['run_id']} {r['kind']}: {r['status']}  {r['output_dir'] or ''}  "
             + " ".join(f"{k}={v:.4g}" for k, v in r["metrics"].items()) for r in data["runs"]]
    _print(args, data, "\n".join(lines))


def _check_device(args) -> None:
    """Refuse now, before anything is recorded, a --device the run could not get: on this machine
    (inline), or on any worker serving the gpu queue (--queue)."""
    device = getattr(args, "device", None) or "auto"
    if args.queue:
        from worker.queues import GPU, connect
        from worker.serve import check_device_served

        check_device_served(connect(), GPU, device, getattr(args, "processes", None) or 1)
    elif device not in ("auto", "cpu"):
        from core.devices import resolve_device

        resolve_device(device)
        processes = getattr(args, "processes", None) or 1
        if device.startswith("cuda") and processes > 1:
            import torch

            if torch.cuda.device_count() < processes:
                raise ConfigError(f"--gpus {processes} asked for, but this machine has {torch.cuda.device_count()} "
                                  f"GPU(s): use --gpus {max(torch.cuda.device_count(), 1)}, or --queue for a worker")


def cmd_adapt(args) -> None:
    from worker import training

    _check_device(args)
    run = training.create_adaptation(_sessions(), args.corpus, args.teacher,
                                     _params(args, TRAIN_ARGS + ADAPT_ARGS))
    _train_runs(args, [run])


def cmd_distill(args) -> None:
    from worker import training

    _check_device(args)
    run = training.create_distillation(_sessions(), args.corpus, args.teacher,
                                       _params(args, TRAIN_ARGS + DISTILL_ARGS))
    _train_runs(args, [run])


def cmd_pipeline(args) -> None:
    from worker import training

    _check_device(args)
    common = _params(args, TRAIN_ARGS)
    common.pop("steps", None)
    adapt = {**common, **_params(args, ADAPT_ARGS, steps="adapt_steps", lr="adapt_lr")}
    distill = {**common, **_params(args, DISTILL_ARGS, steps="distill_steps", lr="distill_lr")}
    runs = training.create_pipeline(_sessions(), args.strategy, args.corpus, args.teacher, adapt, distill,
                                    args.student_init)
    _train_runs(args, runs)


def cmd_runs_list(args) -> None:
    from db import store
    from worker.progress import active_steps, parent_progress, stage_note
    from worker.training import find_dead_runs

    sessions = _sessions()
    find_dead_runs(sessions)
    with sessions.begin() as session:
        runs = list(store.list_runs(session, limit=args.limit))
        steps = active_steps(session, runs)
        rows = [_run_dict(r) | {"stage": r.stage, "parent_id": r.parent_id,
                                "progress": parent_progress(r, steps[r.id])[0] if r.id in steps else r.progress}
                for r in runs]
    lines = [f"{'id':>4} {'kind':<13} {'status':<10} {'progress':>8}  stage"]
    lines += [f"{r['run_id']:>4} {r['kind']:<13} {r['status']:<10} {r['progress']:>8.0%}  "
              f"{stage_note(r['status'], r['stage'])}".rstrip() for r in rows]
    _print(args, {"runs": rows}, "\n".join(lines))


def cmd_runs_cancel(args) -> None:
    from worker.queues import connect, redis_url
    from worker.training import request_cancel

    sessions = _sessions()
    if redis_url():
        from worker.submit import cancel

        cancel(sessions, connect(), args.id)
    else:
        request_cancel(sessions, args.id)
    _print(args, {"run_id": args.id, "status": "cancelled"}, f"run {args.id} cancelled")


def cmd_runs_resume(args) -> None:
    from db import store
    from worker import training

    sessions = _sessions()
    if args.processes is not None:
        training.set_processes(sessions, args.id, args.processes)
    if args.queue:
        from worker.queues import connect
        from worker.submit import resume

        run = resume(sessions, connect(), args.id)
        if args.wait:
            _wait(sessions, run.id, Bars(not args.json))
    else:
        _train_runs(args, training.prepare_resume(sessions, args.id))
        return
    with sessions.begin() as session:
        _print(args, {"runs": [_run_dict(store.get_run(session, args.id))]}, f"run {args.id} queued to resume")


_T, _A = TrainConfig(), AdaptConfig()  # the defaults the help shows


def _training_options(p, steps: bool = True) -> None:
    if steps:
        p.add_argument("--steps", type=int, help="optimizer steps (default 1000)")
        p.add_argument("--epochs", type=float, help="passes over the corpus; sets the number of steps")
    p.add_argument("--corpus", type=int, required=True, help="corpus id (adapt-distill corpus list)")
    p.add_argument("--teacher", "--model", dest="teacher", default="bundled",
                   help="a folder, a hub id, 'bundled', or run:ID (the model a finished run made, e.g. an expansion)")
    p.add_argument("--batch-size", type=int, help=f"blocks per micro-batch (default {_T.batch_size})")
    p.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=float,
                   help=f"peak learning rate (default {ADAPT_LR:g} adapting, {DISTILL_LR:g} distilling)")
    p.add_argument("--weight-decay", type=float, help=f"AdamW weight decay (default {_T.weight_decay:g})")
    p.add_argument("--warmup", type=float, help="a fraction of the steps (< 1) or a number of steps")
    p.add_argument("--schedule", choices=["linear", "cosine", "constant"],
                   help=f"learning-rate decay after the warmup (default {_T.schedule})")
    p.add_argument("--seq-len", type=int, help="tokens per packed block (default 128)")
    p.add_argument("--heldout-fraction", type=float,
                   help=f"share of the blocks held out for evaluation, in (0, 0.5] (default {_A.heldout_fraction:g})")
    p.add_argument("--eval-every", type=int, help=f"steps between held-out losses (default {_T.eval_every})")
    p.add_argument("--checkpoint-every", type=int,
                   help=f"steps between checkpoints (default {_T.checkpoint_every})")
    p.add_argument("--log-every", type=int, help=f"steps between logged training losses (default {_T.log_every})")
    p.add_argument("--seed", type=int,
                   help=f"seed of the data order, masking and initialisation (default {_T.seed})")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"],
                   help="auto: bf16 on a GPU that has it, else fp32 (default auto)")
    p.add_argument("--gpus", dest="processes", type=int,
                   help="data-parallel processes, one per GPU, under torchrun (with --device cpu: CPU processes); "
                        "the global batch stays --batch-size x --grad-accum (default 1)")
    p.add_argument("--queue", action="store_true", help="run on a worker (gpu queue) instead of inline")
    p.add_argument("--wait", action="store_true", help="with --queue: wait for the result")


def _adapt_options(p) -> None:
    p.add_argument("--mask-probability", type=float,
                   help=f"share of the tokens masked (default {_A.mask_probability:g})")
    p.add_argument("--whole-word", action="store_true", default=None, help="whole-word masking")
    p.add_argument("--head-warmup", type=float,
                   help="a model without a trained MLM head first trains the head alone (encoder frozen) for this "
                        "fraction of the steps (< 1) or number of steps; 0 skips it (default 0.1)")
    p.add_argument("--head-lr", type=float, help="peak learning rate of the head's warm-up (default 1e-3)")


def _distill_options(p) -> None:
    p.add_argument("--student", help="preset: L6-H384, L4-H312, L3-H256 or L2-H128 (default: derived from the "
                                     "teacher, half its layers and width: L3-H192 for the bundled 6L-384H model)")
    p.add_argument("--layers", type=int, help="student layers (overrides the preset or the derived shape)")
    p.add_argument("--hidden", type=int, help="student hidden size")
    p.add_argument("--heads", type=int, help="student attention heads")
    p.add_argument("--intermediate", type=int, help="student feed-forward size")
    p.add_argument("--allow-larger-student", action="store_true", default=None,
                   help="distil into a student that is not smaller than the teacher (refused by default)")
    p.add_argument("--init", help="random, teacher (every k-th teacher layer) or a model (folder, bundled, run:ID)")
    p.add_argument("--version", choices=["v1", "v2"], help="MiniLM v2 relations (default) or v1")
    p.add_argument("--teacher-layer", type=int, help="teacher layer to distil from (default -1, the last)")
    p.add_argument("--relation-heads", type=int,
                   help="MiniLMv2 relation heads; must divide both hidden sizes (default: the teacher's heads)")
    p.add_argument("--mlm-weight", type=float, help="weight of an extra student MLM loss (default 0)")


# --- parser --------------------------------------------------------------------------------

def _host_options(p) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address the dashboard listens on (default 127.0.0.1: this machine only)")
    p.add_argument("--allow-remote", action="store_true",
                   help="listen beyond this machine although no login is configured (a trusted network only)")


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


DESCRIPTION = ("Build a small, fast model that knows your domain: add a corpus, analyse and expand the vocabulary, "
               "adapt and distil, and judge the models; the dashboard (`adapt-distill up`) runs the same jobs.")


def build_parser() -> argparse.ArgumentParser:
    from worker import cli_eval

    parser = argparse.ArgumentParser(prog="adapt-distill", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    p = command(sub, "up", cmd_up, "start an embedded Valkey (unless REDIS_URL is set), a worker and the dashboard",
                json_flag=False)
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="dashboard port")
    _host_options(p)
    p.add_argument("--queues", default="cpu,gpu", help="queues the worker serves")
    p.add_argument("--workers", type=int, default=1, help="number of worker processes")

    p = command(sub, "worker", cmd_worker, "run an RQ worker", json_flag=False)
    p.add_argument("--queues", default="cpu,gpu", help="comma-separated queues to serve, in priority order")
    p.add_argument("--gpu", type=int, default=None, help="pin this worker to one GPU (sets CUDA_VISIBLE_DEVICES)")
    p.add_argument("--gpus", default=None,
                   help="the GPUs this worker's runs may use, a count (4: GPUs 0-3) or a list (2,3); a run with "
                        "--gpus N trains on N of them, one process each (sets CUDA_VISIBLE_DEVICES)")
    p.add_argument("--burst", action="store_true", help="exit when the queues are empty")

    p = command(sub, "dashboard", cmd_dashboard, "run only the dashboard", json_flag=False)
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="dashboard port")
    _host_options(p)
    command(sub, "migrate", cmd_migrate, "create or upgrade the database schema", json_flag=False)
    command(sub, "hash-password", cmd_hash_password, "read a password and print the ADAPT_DISTILL_PASSWORD_HASH=... "
            "line that gives the dashboard a login", json_flag=False)

    corpus = sub.add_parser("corpus", help="add, list and delete corpora").add_subparsers(dest="action", required=True)
    p = command(corpus, "add", cmd_corpus_add, "add a corpus file (.txt, .jsonl, .csv, .tsv, optionally .gz)")
    p.add_argument("path", help="the corpus file")
    p.add_argument("--name", help="a display name (default: the file name)")
    p.add_argument("--format", choices=["txt", "jsonl", "csv", "tsv"], help="override the format the name implies")
    p.add_argument("--text-field", default="text", help="JSONL field or CSV/TSV column with the text")
    command(corpus, "list", cmd_corpus_list, "list corpora")
    p = command(corpus, "delete", cmd_corpus_delete, "delete a corpus, its stored text and its tokenized streams")
    p.add_argument("id", type=int, help="the id `list` shows")
    p = command(corpus, "caches", cmd_corpus_caches,
                "list the tokenized corpora (one memory-mapped stream per corpus and tokenizer) and their sizes")
    p.add_argument("--corpus", type=int, help="only this corpus")
    p = command(corpus, "drop-cache", cmd_corpus_drop_cache,
                "delete a corpus's tokenized streams (the next training run tokenizes it again)")
    p.add_argument("id", type=int, help="the id `list` shows")

    vocab = sub.add_parser("vocab", help="vocabulary analysis and expansion").add_subparsers(dest="action", required=True)
    p = command(vocab, "analyze", cmd_vocab_analyze, "compute the occurrence-probability curve and pick a size")
    p.add_argument("--corpus", type=int, required=True, help="corpus id (adapt-distill corpus list)")
    p.add_argument("--base", default="bundled", help="base model: a folder, a hub id, or 'bundled'")
    p.add_argument("--step", type=int, default=10_000, help="tokens added per candidate (paper: 10000)")
    p.add_argument("--max-added", type=int, default=40_000, help="most tokens to add")
    p.add_argument("--threshold", type=float, default=0.01, help="pick the first candidate gaining <= this (0.01 = 1%%)")
    p.add_argument("--min-frequency", type=int, default=2, help="least word frequency the trainer learns from")
    p.add_argument("--queue", action="store_true", help="run on a worker instead of inline")
    p.add_argument("--wait", action="store_true", help="with --queue: wait for the result")
    p = command(vocab, "show", cmd_vocab_show, "print a finished analysis")
    p.add_argument("analysis", type=int, help="analysis id (adapt-distill vocab analyze prints it)")
    p.add_argument("--threshold", type=float, default=None, help="move the pick without recomputing")
    p = command(vocab, "expand", cmd_vocab_expand, "write the expanded base model at a vocabulary size")
    p.add_argument("--analysis", type=int, required=True,
                   help="analysis id (adapt-distill vocab analyze prints it)")
    p.add_argument("--size", type=int, required=True, help="total vocabulary size (base + added tokens)")
    p.add_argument("--out", help="output folder (default: under ADAPT_DISTILL_HOME/models)")
    p.add_argument("--queue", action="store_true", help="run on a worker instead of inline")
    p.add_argument("--wait", action="store_true", help="with --queue: wait for the result")
    p = command(sub, "adapt", cmd_adapt, "continue masked-LM pretraining of a teacher on a corpus")
    _training_options(p)
    _adapt_options(p)
    p = command(sub, "distill", cmd_distill, "distil a teacher into a small student (MiniLM)")
    _training_options(p)
    _distill_options(p)
    p = command(sub, "pipeline", cmd_pipeline, "adapt and distil in one of the paper's three orders")
    _training_options(p, steps=False)
    _adapt_options(p)
    _distill_options(p)
    p.add_argument("--strategy", required=True, help="the paper's order of the two stages",
                   choices=["adapt-then-distill", "distill-then-adapt", "adapt-and-distill"])
    p.add_argument("--adapt-steps", type=int, help=f"steps of each adaptation (default {_T.steps})")
    p.add_argument("--distill-steps", type=int, help=f"steps of the distillation (default {_T.steps})")
    p.add_argument("--adapt-lr", type=float, help=f"peak learning rate of adaptation (default {ADAPT_LR:g})")
    p.add_argument("--distill-lr", type=float,
                   help=f"peak learning rate of distillation (default {DISTILL_LR:g})")
    p.add_argument("--student-init", help="adapt-and-distill: the small pretrained student to adapt")

    runs = sub.add_parser("runs", help="list, cancel and resume runs").add_subparsers(dest="action", required=True)
    p = command(runs, "list", cmd_runs_list, "list runs (and mark those whose worker died)")
    p.add_argument("--limit", type=int, default=50, help="newest runs to list")
    p = command(runs, "cancel", cmd_runs_cancel, "cancel a queued or running run")
    p.add_argument("id", type=int, help="the id `list` shows")
    p = command(runs, "resume", cmd_runs_resume, "resume a cancelled, failed or abandoned training run")
    p.add_argument("id", type=int, help="the id `list` shows")
    p.add_argument("--gpus", dest="processes", type=int,
                   help="continue with this many data-parallel processes (the checkpoint does not depend on it)")
    p.add_argument("--queue", action="store_true", help="resume on a worker instead of inline")
    p.add_argument("--wait", action="store_true", help="with --queue: wait for the result")
    cli_eval.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except BrokenPipeError:  # `... --json | head`: the reader has gone, and that is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 141
    except Exception as exc:
        exc = user_error(exc)  # a full disk is the user's to fix too
        if exc is None:
            raise
        if getattr(args, "json", False):
            print(json.dumps({"error": str(exc)}))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
