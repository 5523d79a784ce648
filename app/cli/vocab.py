"""`vocab analyze | show | expand`: the occurrence-probability curve, its pick, and the expanded model."""

from __future__ import annotations

from app.cli.common import Bars, add_queue_options, command, open_sessions, print_result, quiet_hf, wait_run
from core.configs import VocabConfig
from core.model_io import BUNDLED
from db.models import Run, RunStatus, VocabAnalysis

VOCAB = VocabConfig()  # the defaults of the search (the AdaLM paper's)


def _run_inline(sessions, run_id: int, execute, bars: Bars) -> None:
    from worker.lifecycle import Reporter

    quiet_hf()
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
    from db import store
    from worker import vocabulary

    sessions = open_sessions()
    config = VocabConfig(step=args.step, max_added=args.max_added, threshold=args.threshold,
                         min_frequency=args.min_frequency)
    bars = Bars(not args.json)
    if args.queue:
        from worker.queueing.queues import connect
        from worker.vocabulary import submit_analysis

        analysis, reused = submit_analysis(sessions, connect(), args.corpus, args.base, config)
        if not args.wait:
            print_result(args, {"analysis_id": analysis.id, "run_id": analysis.run_id, "reused": reused,
                                "status": "queued" if not reused else analysis.run.status.value},
                         f"analysis {analysis.id} {'reused' if reused else 'queued'} (run {analysis.run_id})")
            return
        wait_run(sessions, analysis.run_id, bars)
    else:
        analysis, reused = vocabulary.create_analysis(sessions, args.corpus, args.base, config)
        if not reused:
            _run_inline(sessions, analysis.run_id, vocabulary.execute_analysis, bars)
        else:
            wait_run(sessions, analysis.run_id, bars)
    with sessions.begin() as session:
        summary = vocabulary.analysis_summary(store.get(session, VocabAnalysis, analysis.id), args.threshold)
    summary["reused"] = reused
    print_result(args, summary, _curve_table(summary))


def cmd_vocab_show(args) -> None:
    from db import store
    from worker import vocabulary

    with open_sessions().begin() as session:
        summary = vocabulary.analysis_summary(store.get(session, VocabAnalysis, args.analysis), args.threshold)
    print_result(args, summary, _curve_table(summary))


def cmd_vocab_expand(args) -> None:
    from db import store
    from worker import vocabulary

    sessions = open_sessions()
    bars = Bars(not args.json)
    reused = False
    if args.queue:
        from worker.queueing.queues import connect
        from worker.vocabulary import submit_expansion

        run_id, reused = submit_expansion(sessions, connect(), args.analysis, args.size, args.out)
        if not args.wait:
            print_result(args, {"run_id": run_id, "status": "reused" if reused else "queued"},
                         f"run {run_id} already makes this model: reused" if reused else
                         f"expansion queued as run {run_id}")
            return
        wait_run(sessions, run_id, bars)
    else:
        found = vocabulary.existing_expansion(sessions, args.analysis, args.size) if args.out is None else None
        if found is not None and found.status == RunStatus.succeeded:  # the same model, made already
            run_id = found.id
            reused = True
        else:
            run_id = vocabulary.create_expansion(sessions, args.analysis, args.size, args.out).id
            _run_inline(sessions, run_id, vocabulary.execute_expansion, bars)
    with sessions.begin() as session:
        run = store.get(session, Run, run_id)
        base_size = store.get(session, VocabAnalysis, args.analysis).base_vocab_size
        data = {"output_dir": run.output_dir, "vocab_size": run.params["vocab_size"],
                "added_tokens": run.params["vocab_size"] - base_size, "run_id": run_id, "reused": reused}
        note = run.params.get("note")
    if note:
        data["note"] = note
    print_result(args, data, f"{'reused: run ' + str(run_id) + ' made this model already; ' if reused else ''}"
                             f"expanded model: {data['output_dir']} ({data['vocab_size']:,} tokens, "
                             f"{data['added_tokens']:,} new)" + (f"\nnote: {note}" if note else ""))


def add_commands(sub) -> None:
    """vocab analyze, show and expand."""
    vocab = sub.add_parser("vocab", help="vocabulary analysis and expansion").add_subparsers(dest="action", required=True)
    p = command(vocab, "analyze", cmd_vocab_analyze, "compute the occurrence-probability curve and pick a size")
    p.add_argument("--corpus", type=int, required=True, help="corpus id (adapt-distill corpus list)")
    p.add_argument("--base", default=BUNDLED, help="base model: a folder, a hub id, or 'bundled'")
    p.add_argument("--step", type=int, default=VOCAB.step, help=f"tokens added per candidate (paper: {VOCAB.step})")
    p.add_argument("--max-added", type=int, default=VOCAB.max_added, help="most tokens to add")
    p.add_argument("--threshold", type=float, default=VOCAB.threshold,
                   help=f"pick the first candidate gaining <= this ({VOCAB.threshold:g} = {VOCAB.threshold:.0%}%)")
    p.add_argument("--min-frequency", type=int, default=VOCAB.min_frequency,
                   help="least word frequency the trainer learns from")
    add_queue_options(p)
    p = command(vocab, "show", cmd_vocab_show, "print a finished analysis")
    p.add_argument("analysis", type=int, help="analysis id (adapt-distill vocab analyze prints it)")
    p.add_argument("--threshold", type=float, default=None, help="move the pick without recomputing")
    p = command(vocab, "expand", cmd_vocab_expand, "write the expanded base model at a vocabulary size")
    p.add_argument("--analysis", type=int, required=True,
                   help="analysis id (adapt-distill vocab analyze prints it)")
    p.add_argument("--size", type=int, required=True, help="total vocabulary size (base + added tokens)")
    p.add_argument("--out", help="output folder (default: under ADAPT_DISTILL_HOME/models)")
    add_queue_options(p)
