"""Labelled tasks for fine-tuning: sentence classification from CSV, TSV or JSONL (each optionally
.gz) and token classification (NER) from CoNLL-style files. `ingest_task` validates the files,
carves a seeded dev/test split out of train when they are not given, and stores the normalized
splits under a content hash, like corpora."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import re
import shutil
import sys
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path

from core.corpus import normalize_document, open_lines
from core.errors import CorpusError, TaskError

TASK_TYPES = ("classification", "ner")
SPLITS = ("train", "dev", "test")
TABLE_FORMATS = ("csv", "tsv", "jsonl")
_CONLL_SUFFIXES = ("conll", "bio", "iob", "txt")
_PREFIXES = ("B", "I", "E", "S", "L", "U")
_TAG = re.compile(r"(?:O|[BIESLU]-\S+)")
_MIN_TO_SPLIT = 3  # a label (or a task's sentences) with fewer examples stays whole in train


@dataclass(frozen=True)
class Example:  # one classification example
    text: str
    label: str
    text_pair: str | None = None


@dataclass(frozen=True)
class TaggedSentence:  # one token-classification sentence, a tag per token
    tokens: tuple[str, ...]
    tags: tuple[str, ...]


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


@dataclass(frozen=True)
class IngestedTask:
    sha256: str
    path: Path
    stats: TaskStats


def _check_type(type: str) -> None:
    if type not in TASK_TYPES:
        raise TaskError(f"unknown task type '{type}': use classification or ner")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """open_lines with its errors as TaskError, and a missing file said plainly."""
    if not path.is_file():
        raise TaskError(f"{path.name} does not exist ({path}): check the file name")
    try:
        yield from open_lines(path)
    except CorpusError as exc:
        raise TaskError(str(exc)) from None


def _table_format(path: Path, format: str | None) -> str:
    if format:
        format = format.lower().lstrip(".")
        if format not in TABLE_FORMATS:
            raise TaskError(f"unknown format '{format}' for a classification task: use csv, tsv or jsonl")
        return format
    name = path.name.lower().removesuffix(".gz")
    suffix = name.rsplit(".", 1)[-1] if "." in name else ""
    if suffix in TABLE_FORMATS:
        return suffix
    if suffix in _CONLL_SUFFIXES:
        raise TaskError(f"{path.name} is not CSV/TSV/JSONL: a classification task needs text and label columns "
                        f"(CoNLL files are for ner tasks)")
    raise TaskError(f"cannot tell the format of {path.name}: name it .csv, .tsv or .jsonl (optionally .gz) "
                    f"or pass the format")


def _example(name: str, number: int, text: object, label: object, pair: object, has_pair: bool) -> Example:
    """A validated, normalized example of line `number`; JSON 1 and CSV "1" give the same label."""
    if not all(v is None or isinstance(v, str) for v in (text, pair)) or isinstance(label, (dict, list)):
        raise TaskError(f"{name}: line {number}: the text must be a string and the label a string or a number: "
                        f"fix the line")
    values = [normalize_document("" if v is None else str(v)) for v in (text, label, pair)]
    for value, what in zip(values, ("text", "label", "text pair") if has_pair else ("text", "label")):
        if not value:
            raise TaskError(f"{name}: line {number} has an empty {what}: fill it in or drop the line")
    try:
        "".join(values).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON \ud800 escape would fail when stored
        raise TaskError(f"{name}: line {number} has an escape that is not valid Unicode: fix the text") from None
    return Example(values[0], values[1], values[2] if has_pair else None)


def _read_table(path: Path, delimiter: str, fields: tuple[str, str, str]) -> tuple[list[Example], bool]:
    text_field, pair_field, label_field = fields
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with closing(_lines(path)) as lines:
        reader = csv.reader((line for _, line in lines), delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return [], False
        for field, what in ((text_field, "text"), (label_field, "label")):
            if field not in header:
                raise TaskError(f"{path.name}: no column '{field}' (columns: {', '.join(header)}): "
                                f"pass the {what} column's name")
        has_pair = pair_field in header
        columns = [header.index(f) for f in (text_field, label_field, pair_field if has_pair else text_field)]
        examples = []
        while True:
            number = reader.line_num + 1  # where the row starts; a quoted field may span lines
            try:
                row = next(reader, None)
            except csv.Error as exc:
                raise TaskError(f"{path.name}: line {number} is not valid {delimiter == ',' and 'CSV' or 'TSV'} "
                                f"({exc}): fix the quoting") from None
            if row is None:
                return examples, has_pair
            if not any(cell.strip() for cell in row):
                continue  # a blank line
            text, label, pair = (row[c] if c < len(row) else "" for c in columns)
            examples.append(_example(path.name, number, text, label, pair, has_pair))


def _read_jsonl(path: Path, fields: tuple[str, str, str]) -> tuple[list[Example], bool]:
    text_field, pair_field, label_field = fields
    examples: list[Example] = []
    has_pair, first = False, 0
    with closing(_lines(path)) as lines:
        for number, line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaskError(f"{path.name}: line {number} is not valid JSON ({exc.msg}): "
                                f"one JSON object per line") from None
            if not isinstance(record, dict):
                raise TaskError(f"{path.name}: line {number} is a {type(record).__name__}, not a JSON object: "
                                f"one object per line")
            for field, what in ((text_field, "text"), (label_field, "label")):
                if field not in record:
                    raise TaskError(f"{path.name}: line {number} has no field '{field}' "
                                    f"(it has: {', '.join(record)}): pass the {what} field's name")
            pair = record.get(pair_field)
            if not first:
                has_pair, first = pair is not None, number
            elif (pair is not None) != has_pair:
                which = ("has no", "does") if has_pair else ("has a", "does not")
                raise TaskError(f"{path.name}: line {number} {which[0]} '{pair_field}' but line {first} {which[1]}: "
                                f"give every line a '{pair_field}' or none")
            examples.append(_example(path.name, number, record[text_field], record[label_field], pair, has_pair))
    return examples, has_pair


def read_classification(path: str | Path, format: str | None = None, text_field: str = "text",
                        pair_field: str = "text_pair", label_field: str = "label") -> tuple[list[Example], bool]:
    """Examples of a CSV/TSV/JSONL file (optionally .gz; format from the name or explicit: csv, tsv,
    jsonl) and whether it has the pair column."""
    path = Path(path)
    fields = (text_field, pair_field, label_field)
    fmt = _table_format(path, format)
    if fmt == "jsonl":
        return _read_jsonl(path, fields)
    return _read_table(path, "," if fmt == "csv" else "\t", fields)


def read_conll(path: str | Path) -> list[TaggedSentence]:
    """CoNLL-style: a token per line, token in the first column and tag in the last (split on tabs
    when the line has one, else on whitespace), middle columns ignored, a blank line between
    sentences, -DOCSTART- lines skipped."""
    path = Path(path)
    if path.name.lower().removesuffix(".gz").rsplit(".", 1)[-1] in ("csv", "json", "jsonl"):
        raise TaskError(f"{path.name} is not CoNLL: a ner task needs a token and its tag per line "
                        f"(CSV/JSONL files are for classification tasks)")
    sentences: list[TaggedSentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    with closing(_lines(path)) as lines:
        for number, line in lines:
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("-DOCSTART-"):
                if tokens:
                    sentences.append(TaggedSentence(tuple(tokens), tuple(tags)))
                tokens, tags = [], []
                continue
            columns = [normalize_document(c) for c in line.split("\t")] if "\t" in line else line.split()
            if len(columns) < 2 or not columns[-1] or not columns[0]:
                raise TaskError(f"{path.name}: line {number} has no tag column "
                                f"(token and tag per line, separated by whitespace or a tab)")
            if not _TAG.fullmatch(columns[-1]):
                raise TaskError(f"{path.name}: line {number} has the tag '{columns[-1]}', which is not O or "
                                f"B-/I-/E-/S-/L-/U- and a type: fix the tag")
            tokens.append(columns[0])
            tags.append(columns[-1])
    if tokens:
        sentences.append(TaggedSentence(tuple(tokens), tuple(tags)))
    return sentences


def load_files(type: str, train: str | Path, dev: str | Path | None = None, test: str | Path | None = None,
               format: str | None = None, text_field: str = "text", pair_field: str = "text_pair",
               label_field: str = "label") -> dict[str, list]:
    """The examples of each given file, by split; every file of a task must be of one format."""
    _check_type(type)
    paths = {s: Path(p) for s, p in (("train", train), ("dev", dev), ("test", test)) if p is not None}
    if type == "ner":
        return {split: read_conll(path) for split, path in paths.items()}
    formats = {split: _table_format(path, format) for split, path in paths.items()}
    for split, fmt in formats.items():
        if fmt != formats["train"]:
            raise TaskError(f"{paths[split].name} is {fmt.upper()} but {paths['train'].name} is "
                            f"{formats['train'].upper()}: give every file of a task in one format")
    return {split: read_classification(path, formats[split], text_field, pair_field, label_field)[0]
            for split, path in paths.items()}


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
    _check_type(type)
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
        if prefix not in _PREFIXES or not kind:
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
                test: str | Path | None = None, format: str | None = None, text_field: str = "text",
                pair_field: str = "text_pair", label_field: str = "label", seed: int = 0,
                dev_fraction: float = 0.1, test_fraction: float = 0.1) -> IngestedTask:
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
        if not final.exists():
            try:
                os.replace(tmp, final)
            except OSError:
                if not final.exists():  # not a concurrent ingest of the same content
                    raise
        shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    stored = json.loads((final / "task.json").read_text(encoding="utf-8"))  # the first ingest's origin wins
    return IngestedTask(sha256=sha, path=final, stats=TaskStats(**stored))


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
