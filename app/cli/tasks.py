"""`task add | list | delete`: the labelled tasks models are judged on."""

from __future__ import annotations

from app.cli.common import command, open_sessions, print_result
from core.judge.settings import TASK_FILE_DEFAULTS, TASK_TYPES
from db.models import Task

TASK = TASK_FILE_DEFAULTS


def _label_count(t: dict) -> int:
    """Labels of a classification task; entity tags (O left out) of an NER task."""
    return len(t["labels"]) if t["type"] == "classification" else len([x for x in t["labels"] if x != "O"])


def _task_line(t: dict) -> str:
    sizes = " · ".join(f"{split} {n:,}" for split, n in t["sizes"].items())
    kind = f"{_label_count(t)} {'labels' if t['type'] == 'classification' else 'tags'}"
    return f"task {t['task_id']} '{t['name']}' ({t['type']}, {kind}): {sizes}"


def cmd_task_add(args) -> None:
    from worker.evaluation import add_task, task_dict

    task, created = add_task(open_sessions(), args.path, args.type, args.dev, args.test, args.name, args.format,
                             args.text_field, args.pair_field, args.label_field, args.seed, args.dev_fraction,
                             args.test_fraction)
    data = {**task_dict(task), "created": created}
    counts = "\n".join(f"  {split}: " + ", ".join(f"{label} {n:,}" for label, n in labels.items())
                       for split, labels in data["label_counts"].items())
    origin = "; ".join(f"{split} {how}" for split, how in data["origin"].items())
    print_result(args, data, ("added " if created else "already present (same content) as ") + _task_line(data)
                 + f"\n  ({origin})\n{counts}")


def cmd_task_list(args) -> None:
    from db import store
    from worker.evaluation import task_dict

    with open_sessions().begin() as session:
        rows = [task_dict(t) for t in store.rows(session, Task)]
    lines = [f"{'id':>4}  {'type':<14}  {'labels':>6}  {'train':>8}  {'dev':>7}  {'test':>7}  name"]
    lines += [f"{t['task_id']:>4}  {t['type']:<14}  {_label_count(t):>6}  {t['sizes'].get('train', 0):>8,}  "
              f"{t['sizes'].get('dev', 0):>7,}  {t['sizes'].get('test', 0):>7,}  {t['name']}" for t in rows]
    print_result(args, {"tasks": rows}, "\n".join(lines) if rows else
                 "no tasks yet: adapt-distill task add FILE --type classification|ner")


def cmd_task_delete(args) -> None:
    from worker.evaluation import delete_task

    delete_task(open_sessions(), args.id)
    print_result(args, {"deleted": args.id}, f"deleted task {args.id}")


def add_commands(sub) -> None:
    """task add, list and delete."""
    task = sub.add_parser("task", help="add, list and delete labelled tasks").add_subparsers(dest="action",
                                                                                           required=True)
    p = command(task, "add", cmd_task_add, "add a labelled task: CSV/TSV/JSONL (text, label, optional text_pair) "
                                           "for classification, CoNLL for ner")
    p.add_argument("path", help="the train file (or the only file: dev and test are split off it)")
    p.add_argument("--type", required=True, choices=TASK_TYPES,
                   help="classification (a label per text) or ner (a tag per word, CoNLL)")
    # argparse %-formats the help: a percent sign is written %%
    p.add_argument("--dev", help=f"dev file (default: a seeded, stratified {TASK['dev_fraction']:.0%}% of train)")
    p.add_argument("--test", help=f"test file (default: a seeded, stratified {TASK['test_fraction']:.0%}% of train)")
    p.add_argument("--name", help="a display name (default: the file name)")
    p.add_argument("--format", choices=["csv", "tsv", "jsonl"], help="override the format the name implies")
    p.add_argument("--text-field", default=TASK["text_field"],
                   help=f"column or field with the text (default {TASK['text_field']})")
    p.add_argument("--pair-field", default=TASK["pair_field"],
                   help=f"column or field with a second text (default {TASK['pair_field']})")
    p.add_argument("--label-field", default=TASK["label_field"],
                   help=f"column or field with the label (default {TASK['label_field']})")
    p.add_argument("--seed", type=int, default=TASK["seed"], help=f"seed of the dev/test split (default {TASK['seed']})")
    p.add_argument("--dev-fraction", type=float, default=TASK["dev_fraction"],
                   help=f"share of train split off as dev (default {TASK['dev_fraction']:g})")
    p.add_argument("--test-fraction", type=float, default=TASK["test_fraction"],
                   help=f"share of train split off as test (default {TASK['test_fraction']:g})")
    command(task, "list", cmd_task_list, "list tasks")
    p = command(task, "delete", cmd_task_delete, "delete a task, its files and its evaluations")
    p.add_argument("id", type=int, help="the id `list` shows")
