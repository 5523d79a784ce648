"""Labelled tasks for fine-tuning, sentence classification and token classification (NER), read by
core.judge.task_files. `ingest_task` validates the files,
carves a seeded dev/test split out of train when they are not given, and stores the normalized
splits under a content hash, like corpora."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from core.judge.settings import TASK_FILE_DEFAULTS
from core.corpus import Stored, place
from core.errors import TaskError
from core.judge.task_files import PREFIXES, Example, TaggedSentence, check_type, load_files

SPLITS = ("train", "dev", "test")
_MIN_TO_SPLIT = 3  # a label (or a task's sentences) with fewer examples stays whole in train


@dataclass
class TaskData:
    type: str
    labels: list[str]  # classification: sorted labels of train; ner: sorted tags of train, "O" first
    splits: dict[str, list]  # split -> list[Example] or list[TaggedSentence]
    has_pair: bool = False


@dataclass(frozen=True)
class TaskStats:
    type: str
    labels: list[str]
    sizes: dict[str, int]
    label_counts: dict[str, dict[str, int]]  # split -> label (ner: entity type -> entities) -> count
    origin: dict[str, str]  # split -> "given: <file>" or "split from train (seed S, 10%)"
    has_pair: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _seed(seed: int, label: str) -> int:
    # sha256, not hash(): str hashes change with PYTHONHASHSEED, and the split must not
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{label}".encode()).digest()[:8], "big")


def stratified_split(examples: Sequence, fraction: float, seed: int) -> tuple[list, list]:
    """(kept, taken), both in input order: round(n * fraction) of each label's n examples taken
    (at least 1, never all; none when n < 3, so rare labels stay), chosen by a generator seeded from
    (seed, label). Tagged sentences are one group, and a sentence with a tag kept would lack stays."""
    groups: dict[str, list[int]] = {}
    for index, item in enumerate(examples):
        groups.setdefault(item.label if isinstance(item, Example) else "", []).append(index)
    taken: list[int] = []
    for label in sorted(groups):
        order = groups[label][:]
        n = len(order)
        random.Random(_seed(seed, label)).shuffle(order)
        taken += order[:0 if n < _MIN_TO_SPLIT else min(n - 1, max(1, round(n * fraction)))]
    chosen = set(taken)
    if examples and isinstance(examples[0], TaggedSentence):
        # dev/test tags must all be in train; moving a sentence back only adds to train's tags
        kept_tags = {t for i, s in enumerate(examples) if i not in chosen for t in s.tags}
        for i in taken:
            if not kept_tags.issuperset(examples[i].tags):
                chosen.discard(i)
                kept_tags.update(examples[i].tags)
    return ([x for i, x in enumerate(examples) if i not in chosen],
            [x for i, x in enumerate(examples) if i in chosen])


def _labels_of(type: str, items: list) -> set[str]:
    return {x.label for x in items} if type == "classification" else {t for s in items for t in s.tags}


def _check_given(type: str, given: dict[str, list], names: dict[str, str]) -> bool:
    """Validate the given splits; whether they have a text pair."""
    if "train" not in given:
        raise TaskError("a task needs a train file: give one")
    for split, items in given.items():
        if not items:
            hint = "add examples" if split == "train" else f"add examples, or leave {split} out to split it from train"
            raise TaskError(f"{names[split]} has no examples: {hint}")
    if type == "classification" and len(found := sorted(_labels_of(type, given["train"]))) < 2:
        raise TaskError(f"{names['train']} has only the label '{found[0]}': "
                        f"a classification task needs at least 2, add examples of another")
    has_pair = type == "classification" and given["train"][0].text_pair is not None
    for split, items in given.items():
        if any((x.text_pair is not None) != has_pair for x in items if isinstance(x, Example)):
            lacks, has = (split, "train") if has_pair else ("train", split)
            raise TaskError(f"{names[lacks]} has no text pair but {names[has]} does: "
                            f"give every file the pair column or none")
    return has_pair


def _check_unseen(type: str, splits: dict[str, list], names: dict[str, str]) -> set[str]:
    """The labels (ner: tags) of train, after checking that dev and test have no others."""
    labels = _labels_of(type, splits["train"])
    for split in ("dev", "test"):
        if unseen := sorted(_labels_of(type, splits[split]) - labels):
            what = "labels" if type == "classification" else "tags"
            shown = ", ".join(unseen[:5]) + (f" and {len(unseen) - 5} more" if len(unseen) > 5 else "")
            raise TaskError(f"{names[split]} has {what} that train lacks: {shown}: "
                            f"add them to {names['train']} or drop those examples")
    return labels


def build_task(type: str, splits_given: dict[str, list], seed: int = 0, dev_fraction: float = 0.1,
               test_fraction: float = 0.1, names: dict[str, str] | None = None) -> tuple[TaskData, dict[str, str]]:
    """Missing dev/test carved out of train with a seeded split (stratified by label for
    classification, by sentence for ner), then validated; the task and each split's origin.
    `names` (split -> file name) only makes messages and origins name the files."""
    check_type(type)
    names = {s: (names or {}).get(s, s) for s in SPLITS}
    for fraction, option in ((dev_fraction, "dev_fraction"), (test_fraction, "test_fraction")):
        if not 0 < fraction < 1:
            raise TaskError(f"{option} must be between 0 and 1 (got {fraction}): pass a fraction like 0.1")
    given = {s: list(splits_given[s]) for s in SPLITS if splits_given.get(s) is not None}
    has_pair = _check_given(type, given, names)
    splits, origin = dict(given), {s: f"given: {names[s]}" for s in given}
    size = len(given["train"])
    for split, fraction in (("test", test_fraction), ("dev", dev_fraction)):  # test first, then dev
        if split in given:
            continue
        # fractions are of the original train size, also for dev carved from what test left
        splits["train"], splits[split] = stratified_split(splits["train"], fraction * size / len(splits["train"]), seed)
        if not splits[split]:
            raise TaskError(f"{names['train']} is too small to split a {split} set off it (labels with fewer than "
                            f"{_MIN_TO_SPLIT} examples stay in train): add examples or give a {split} file")
        origin[split] = f"split from train (seed {seed}, {fraction * 100:g}%)"
    labels = _check_unseen(type, splits, names)
    ordered = sorted(labels, key=lambda t: (t != "O", t)) if type == "ner" else sorted(labels)
    task = TaskData(type, ordered, {s: splits[s] for s in SPLITS}, has_pair)
    return task, {s: origin[s] for s in SPLITS}


def count_entities(tags: Sequence[str]) -> dict[str, int]:
    """Entity type -> number of entities, by the conlleval rule: an entity starts at B-, S- or U-,
    or at I-/E-/L- after O, after another type or after an entity's end (E-, L-, S-, U-); so IOB1,
    IOB2 and BIOES all count right."""
    counts: Counter[str] = Counter()
    previous_prefix, previous_type = "O", ""
    for tag in tags:
        prefix, _, kind = tag.partition("-")
        if prefix not in PREFIXES or not kind:
            prefix, kind = "O", ""  # O, or something that is not a tag
        if prefix != "O" and (prefix in ("B", "S", "U") or previous_prefix in ("O", "E", "L", "S", "U")
                              or previous_type != kind):
            counts[kind] += 1
        previous_prefix, previous_type = prefix, kind
    return dict(sorted(counts.items()))


def _stats(task: TaskData, origin: dict[str, str]) -> TaskStats:
    counts: dict[str, dict[str, int]] = {}
    for split, items in task.splits.items():
        if task.type == "classification":
            found = Counter(x.label for x in items)
            counts[split] = {label: found[label] for label in task.labels}
        else:
            found = Counter()
            for sentence in items:
                found.update(count_entities(sentence.tags))
            types = sorted({t.split("-", 1)[1] for t in task.labels if t != "O"})
            counts[split] = {kind: found[kind] for kind in types}
    sizes = {s: len(items) for s, items in task.splits.items()}
    return TaskStats(task.type, list(task.labels), sizes, counts, dict(origin), task.has_pair)


def _line(item: Example | TaggedSentence, has_pair: bool) -> dict:
    if isinstance(item, TaggedSentence):
        return {"tokens": list(item.tokens), "tags": list(item.tags)}
    return {"text": item.text, "label": item.label} | ({"text_pair": item.text_pair} if has_pair else {})


def ingest_task(type: str, train: str | Path, dest_dir: str | Path, dev: str | Path | None = None,
                test: str | Path | None = None, format: str | None = None,
                text_field: str = TASK_FILE_DEFAULTS["text_field"], pair_field: str = TASK_FILE_DEFAULTS["pair_field"],
                label_field: str = TASK_FILE_DEFAULTS["label_field"], seed: int = TASK_FILE_DEFAULTS["seed"],
                dev_fraction: float = TASK_FILE_DEFAULTS["dev_fraction"],
                test_fraction: float = TASK_FILE_DEFAULTS["test_fraction"]) -> Stored[TaskStats]:
    """Read, split and validate a task, and store it in dest_dir/<sha256>/ (train.jsonl, dev.jsonl,
    test.jsonl, task.json). Nothing is left behind on error; the same content maps to the same folder."""
    given = load_files(type, train, dev, test, format, text_field, pair_field, label_field)
    names = {s: Path(p).name for s, p in (("train", train), ("dev", dev), ("test", test)) if p is not None}
    task, origin = build_task(type, given, seed, dev_fraction, test_fraction, names=names)
    stats = _stats(task, origin)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / f".tmp-{uuid.uuid4().hex}"
    try:
        tmp.mkdir()
        # framed by split name and length so that moving a line between splits changes the hash
        digest = hashlib.sha256(f"{type}\n".encode())
        for split in SPLITS:
            data = "".join(json.dumps(_line(x, task.has_pair), ensure_ascii=False) + "\n"
                           for x in task.splits[split]).encode("utf-8")
            (tmp / f"{split}.jsonl").write_bytes(data)
            digest.update(f"{split} {len(data)}\n".encode())
            digest.update(data)
        (tmp / "task.json").write_text(json.dumps(stats.to_dict(), ensure_ascii=False, indent=2), encoding="utf-8")
        sha = digest.hexdigest()
        final = dest_dir / sha
        place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    stored = json.loads((final / "task.json").read_text(encoding="utf-8"))  # the first ingest's origin wins
    return Stored(sha256=sha, path=final, stats=TaskStats(**stored))


def load_task(folder: str | Path) -> TaskData:
    """The task stored by ingest_task in folder."""
    folder = Path(folder)
    if not (folder / "task.json").is_file():
        raise TaskError(f"{folder.name} is not a stored task (no task.json): ingest the task files again")
    meta = json.loads((folder / "task.json").read_text(encoding="utf-8"))
    splits: dict[str, list] = {}
    for split in SPLITS:
        with open(folder / f"{split}.jsonl", encoding="utf-8") as handle:
            records = [json.loads(line) for line in handle if line.strip()]
        if meta["type"] == "ner":
            splits[split] = [TaggedSentence(tuple(r["tokens"]), tuple(r["tags"])) for r in records]
        else:
            splits[split] = [Example(r["text"], r["label"], r.get("text_pair")) for r in records]
    return TaskData(meta["type"], list(meta["labels"]), splits, bool(meta["has_pair"]))
