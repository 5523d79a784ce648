"""`corpus add | list | delete | caches | drop-cache`."""

from __future__ import annotations

from app.cli.common import Bars, command, open_sessions, print_result
from db.models import Corpus


def _corpus_dict(c) -> dict:
    return {"corpus_id": c.id, "name": c.name, "documents": c.documents, "bytes": c.bytes,
            "source_bytes": c.source_bytes, "words": c.words, "distinct_words": c.distinct_words,
            "duplicate_documents": c.duplicate_documents, "mean_length": round(c.mean_length, 2),
            "sha256": c.sha256}


def cmd_corpus_add(args) -> None:
    from worker import corpora

    sessions = open_sessions()
    bars = Bars(not args.json)
    try:
        corpus, created = corpora.add_corpus(sessions, args.path, args.name, args.format, args.text_field,
                                              progress=lambda done, total: bars("reading", done / max(total, 1)))
    finally:
        bars.close()
    data = {"corpus_id": corpus.id, "documents": corpus.documents, "bytes": corpus.bytes, "created": created}
    verb = "added" if created else "already present (same content) as"
    print_result(args, data, f"{verb} corpus {corpus.id} '{corpus.name}': {corpus.documents:,} documents, "
                             f"{corpus.bytes:,} bytes")


def cmd_corpus_list(args) -> None:
    from db import store

    with open_sessions().begin() as session:
        rows = [_corpus_dict(c) for c in store.rows(session, Corpus)]
    lines = [f"{'id':>4}  {'documents':>10}  {'bytes':>12}  name"]
    lines += [f"{r['corpus_id']:>4}  {r['documents']:>10,}  {r['bytes']:>12,}  {r['name']}" for r in rows]
    print_result(args, {"corpora": rows},
                 "\n".join(lines) if rows else "no corpora yet: adapt-distill corpus add FILE")


def cmd_corpus_delete(args) -> None:
    from worker import corpora

    corpora.delete_corpus(open_sessions(), args.id)
    print_result(args, {"deleted": args.id}, f"deleted corpus {args.id}")


def cmd_corpus_caches(args) -> None:
    from core.formatting import human_bytes
    from worker import corpora

    caches = corpora.token_caches(open_sessions(), args.corpus)
    lines = [f"corpus {c['corpus_id']} ({c['corpus']}): tokenizer {c['tokenizer']}  {c['tokens']:,} tokens  "
             f"{c['dtype']}  {human_bytes(c['bytes'])}" for c in caches]
    print_result(args, {"caches": caches},
                 "\n".join(lines) or "no tokenized corpus yet: the first training run makes one")


def cmd_corpus_drop_cache(args) -> None:
    from core.formatting import human_bytes
    from worker import corpora

    freed = corpora.delete_token_caches(open_sessions(), args.id)
    print_result(args, {"corpus_id": args.id, "freed_bytes": freed},
                 f"dropped the tokenized streams of corpus {args.id} ({human_bytes(freed)} freed)")


def add_commands(sub) -> None:
    """corpus add, list, delete, caches and drop-cache."""
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
