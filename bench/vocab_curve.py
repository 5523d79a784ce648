"""Benchmark the occurrence-probability curve (README, "What happens under the hood").

    python bench/vocab_curve.py bench/data/domain100.txt --step 10000 --candidates 10

Builds the incremental vocabulary twice, timed: in the trainer's order (the candidates before
the ranking) and ranked (core.vocab.incremental_vocabulary, what the analysis does now),
and reports the whole analysis time of both. Then scores the base vocabulary and `candidates`
nested ranked candidates three ways:

  (a) ours:     core.vocab.count_words (one pass) + core.vocab.score_vocab per candidate,
                i.e. what core.vocab.occurrence_curve does;
  (b) baseline: per candidate a tokenizers.Tokenizer (WordPiece + the base normalizer and
                pre-tokenizer) encode_batch-es every document, then P(D) in numpy;
  (c) literal:  core.vocab.literal_log_occurrence, timed on the first --literal-docs
                documents for one candidate and extrapolated (linearly in characters) to the
                whole corpus and every candidate.

Checks that (a) == (b) on every candidate and (a) == (c) on the subset, to 1e-9 relative.
Last, a table of P(D) at each size: the nested ranked candidate against the trainer's order and
against a separate ranked build for that size alone (skip it with --skip-per-size)."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tokenizers import Tokenizer, models  # noqa: E402

from core.configs import VocabConfig
from core.corpus import read_documents  # noqa: E402
from core.model_io import load_tokenizer  # noqa: E402
from worker.specs import ModelSpec  # noqa: E402
from core.vocab.counting import backend_parts, count_words
from core.vocab.ranking import (
    candidate_sizes,
    incremental_vocab,
    incremental_vocabulary,
    literal_log_occurrence,
    score_vocab,
    train_vocab,
)

RTOL = 1e-9
ENCODE_BATCH_DOCS = 10_000


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def baseline_log_occurrence(documents: list[str], vocab: list[str], normalizer, pre_tokenizer, settings: dict) -> float:
    """P(D) by tokenizing the whole corpus with a fast tokenizer of the candidate vocabulary."""
    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, **settings))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    id_parts, lengths = [], []
    for i in range(0, len(documents), ENCODE_BATCH_DOCS):
        encodings = tokenizer.encode_batch(documents[i : i + ENCODE_BATCH_DOCS], add_special_tokens=False)
        for e in encodings:
            ids = e.ids
            lengths.append(len(ids))
            id_parts.append(np.asarray(ids, dtype=np.int32))
    ids = np.concatenate(id_parts)
    counts = np.bincount(ids, minlength=len(vocab)).astype(np.float64)
    with np.errstate(divide="ignore"):
        log_p = np.log(counts / counts.sum())
    document_of = np.repeat(np.arange(len(documents)), lengths)
    per_document = np.bincount(document_of, weights=log_p[ids], minlength=len(documents))  # log P(s)
    return float(per_document.mean())


def ranked_vocabulary(documents, counts, normalizer, pre_tokenizer, settings, base_vocab, specials, config):
    """(ranked incremental tokens, pool size, seconds training the pool): what core.vocab.analyze does,
    with the training timed apart from the ranking (by the stages its progress reports)."""
    began, stages = time.perf_counter(), {}

    def progress(stage, _fraction):
        stages.setdefault(stage, time.perf_counter())

    ranked, pool_size = incremental_vocabulary(lambda: iter(documents), counts, normalizer, pre_tokenizer, settings,
                                               base_vocab, specials, config, progress)
    return ranked, pool_size, stages["ranking tokens"] - began


def fmt_seconds(s: float) -> str:
    return f"{s:,.1f}" if s >= 10 else f"{s:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", help="plain .txt corpus, one document per line")
    parser.add_argument("--step", type=int, default=10_000, help="tokens added per candidate (default 10000)")
    parser.add_argument("--candidates", type=int, default=10, help="number of nested candidates (default 10)")
    parser.add_argument(
        "--literal-docs", type=int, default=20_000,
        help="documents the literal definition is timed on, for one candidate (default 20000; 0 = all)",
    )
    parser.add_argument("--base", default="bundled", help="base model: 'bundled' or a local model folder")
    parser.add_argument("--min-frequency", type=int, default=2, help="trainer min_frequency (default 2)")
    parser.add_argument("--skip-baseline", action="store_true", help="do not run (b)")
    parser.add_argument("--skip-per-size", action="store_true",
                        help="do not build each candidate size separately (one training and ranking per size)")
    args = parser.parse_args(argv)

    out = print
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    import tokenizers

    t = time.perf_counter()
    documents = list(read_documents(args.corpus))
    read_s = time.perf_counter() - t
    corpus_bytes = Path(args.corpus).stat().st_size
    total_chars = sum(len(d) for d in documents)
    if not documents:
        out("no documents of 5+ characters")
        return 1

    base_tokenizer = load_tokenizer(ModelSpec.parse(args.base).path())
    normalizer, pre_tokenizer, settings, base_vocab = backend_parts(base_tokenizer)
    config = VocabConfig(step=args.step, max_added=args.step * args.candidates, min_frequency=args.min_frequency)

    out(f"corpus   {args.corpus}: {corpus_bytes / 1e6:.1f} MB, {len(documents):,} documents (read in {read_s:.1f} s)")
    out(f"machine  {usable} usable cores ({cores} total), {platform.machine()}, python {platform.python_version()}, "
        f"tokenizers {tokenizers.__version__}")
    out(f"base     {args.base}: {len(base_vocab):,} tokens")
    sys.stdout.flush()

    # --- the incremental vocabulary: the trainer's order (before) and the ranking (now) ---
    specials = [tok for tok in base_tokenizer.all_special_tokens if tok in set(base_vocab)]
    t = time.perf_counter()
    counts = count_words(documents, normalizer, pre_tokenizer)
    count_s = time.perf_counter() - t
    t = time.perf_counter()
    trained = train_vocab(documents, normalizer, pre_tokenizer, settings, len(base_vocab) + config.max_added,
                          specials, config.min_frequency)
    train_s = time.perf_counter() - t
    trainer_order = incremental_vocab(trained, base_vocab)[: config.max_added]
    t = time.perf_counter()
    incremental, pool_size, pool_s = ranked_vocabulary(documents, counts, normalizer, pre_tokenizer, settings,
                                                       base_vocab, specials, config)
    rank_s = time.perf_counter() - t - pool_s
    sizes = [0] + candidate_sizes(len(incremental), config)
    vocabs = [base_vocab + incremental[:k] for k in sizes]
    out(f"vocabulary: trainer order {train_s:.1f} s ({len(trained):,} trained tokens); ranked {pool_s + rank_s:.1f} s "
        f"(a pool of {pool_size:,} new tokens trained in {pool_s:.1f} s, ranked in {rank_s:.1f} s); scoring "
        f"{len(vocabs)} vocabularies (base + {len(vocabs) - 1} candidates: {sizes[1:]})")
    sys.stdout.flush()

    # --- (a) ours ---
    t = time.perf_counter()
    ours = []
    for vocab in vocabs:
        ours.append(score_vocab(vocab, counts, settings)[0])
    ours_s = time.perf_counter() - t + count_s
    out(f"(a) ours {ours_s:.1f} s (count_words {count_s:.1f} s: {len(counts.words):,} word types, "
        f"{counts.occurrences:,} word occurrences; scoring {ours_s - count_s:.1f} s)")
    before_s, now_s = train_s + ours_s, pool_s + rank_s + ours_s
    out(f"whole analysis (training, counting, ordering, scoring): {before_s:.1f} s with the trainer's order, "
        f"{now_s:.1f} s ranked ({now_s / before_s:.2f}x)")
    sys.stdout.flush()

    # --- (b) fast-tokenizer baseline ---
    baseline, baseline_s = [], None
    if not args.skip_baseline:
        t = time.perf_counter()
        for vocab in vocabs:
            baseline.append(baseline_log_occurrence(documents, vocab, normalizer, pre_tokenizer, settings))
            sys.stdout.flush()
        baseline_s = time.perf_counter() - t
        out(f"(b) baseline {baseline_s:.1f} s")

    # --- (c) literal definition on a subset, one candidate ---
    n_sub = len(documents) if args.literal_docs <= 0 else min(args.literal_docs, len(documents))
    subset = documents[:n_sub]
    subset_chars = sum(len(d) for d in subset)
    literal_vocab = vocabs[-1]
    t = time.perf_counter()
    literal = literal_log_occurrence(subset, literal_vocab, normalizer, pre_tokenizer, settings)
    literal_sub_s = time.perf_counter() - t
    scale = total_chars / subset_chars
    literal_s = literal_sub_s * scale * len(vocabs)
    ours_subset = score_vocab(literal_vocab, count_words(subset, normalizer, pre_tokenizer), settings)[0]
    out(f"(c) literal {literal_sub_s:.1f} s on {n_sub:,} documents ({subset_chars / total_chars:.1%} of the "
        f"characters), 1 vocabulary")

    # --- checks ---
    out("")
    out(f"{'vocab':>7} {'added':>6} {'(a) ours P(D)':>20} {'(b) baseline P(D)':>20} {'rel diff':>9}")
    worst_ab = 0.0
    for k, vocab, a, b in zip(sizes, vocabs, ours, baseline or [None] * len(vocabs)):
        d = rel(a, b) if b is not None else float("nan")
        if b is not None:
            worst_ab = max(worst_ab, d)
        out(f"{len(vocab):>7} {k:>6} {a:>20.12f} {(b if b is not None else float('nan')):>20.12f} {d:>9.1e}")
    ok_ab = baseline_s is None or worst_ab <= RTOL
    d_ac = rel(ours_subset, literal)
    ok_ac = d_ac <= RTOL
    if baseline_s is not None:
        out(f"check (a) == (b) on all {len(vocabs)} vocabularies: max rel diff {worst_ab:.1e} -> "
            f"{'OK' if ok_ab else 'FAIL'} (tolerance {RTOL:g})")
    out(f"check (a) == (c) on the first {n_sub:,} documents, {len(literal_vocab):,}-token vocabulary: "
        f"{ours_subset:.12f} vs {literal:.12f}, rel diff {d_ac:.1e} -> {'OK' if ok_ac else 'FAIL'}")

    # --- table ---
    n = len(vocabs)
    rows = [("(a) ours: count_words + score_vocab", ours_s, "measured")]
    if baseline_s is not None:
        rows.append(("(b) fast tokenizer, whole corpus", baseline_s, "measured"))
    note = (
        f"EXTRAPOLATED from {literal_sub_s:.1f} s on {n_sub:,} docs x 1 vocab"
        if n_sub < len(documents) or n > 1 else "measured"
    )
    rows.append(("(c) literal definition", literal_s, note))
    out("")
    out(f"corpus {corpus_bytes / 1e6:.1f} MB | {len(documents):,} documents | {len(counts.words):,} word types | "
        f"training and ranking {pool_s + rank_s:.1f} s (once, not in the table) | {usable} cores")
    out(f"{n} candidates scored: base vocabulary ({len(base_vocab):,}) + {n - 1} nested, step {args.step:,}; "
        f"s/candidate = seconds / {n}")
    header = f"{'method':<38} {'seconds':>10} {'s/candidate':>12} {'vs ours':>8}  note"
    out(header)
    out("-" * len(header))
    for name, seconds, note_ in rows:
        out(f"{name:<38} {fmt_seconds(seconds):>10} {fmt_seconds(seconds / n):>12} {seconds / ours_s:>7.1f}x  {note_}")

    # --- quality: P(D) of each candidate against the trainer's order and a separate build per size ---
    out("")
    out("P(D) at each size (higher is better): the nested ranked candidate, the trainer's order (the candidates "
        "before the ranking), and a separate ranked build for that size alone" +
        ("" if not args.skip_per_size else " (skipped)"))
    out("| added | ranked, nested | trainer order | vs trainer | per-size build | vs per-size |")
    out("| ---: | ---: | ---: | ---: | ---: | ---: |")
    worse = 0
    for k, p_now in zip(sizes[1:], ours[1:]):
        p_old = score_vocab(base_vocab + trainer_order[:k], counts, settings)[0]
        if args.skip_per_size:
            separate = diff = "—"
        else:
            alone = VocabConfig(step=k, max_added=k, min_frequency=args.min_frequency)
            tokens = ranked_vocabulary(documents, counts, normalizer, pre_tokenizer, settings, base_vocab, specials,
                                       alone)[0]
            p_sep = score_vocab(base_vocab + tokens, counts, settings)[0]
            worse += p_now < p_sep - 1e-9 * abs(p_sep)
            d = p_now - p_sep
            separate, diff = f"{p_sep:.3f}", f"{0.0 if abs(d) < 5e-4 else d:+.3f}"  # no "-0.000" for equal sets
        out(f"| {k:,} | {p_now:.3f} | {p_old:.3f} | {p_now - p_old:+.3f} | {separate} | {diff} |")
        sys.stdout.flush()
    if not args.skip_per_size:
        out(f"check: nested candidates at least as good as the per-size builds at {len(sizes) - 1 - worse} of "
            f"{len(sizes) - 1} sizes")
    return 0 if ok_ab and ok_ac else 1


if __name__ == "__main__":
    sys.exit(main())
