"""Reading a task's files: sentence classification from CSV, TSV or JSONL (each optionally .gz) and
token classification from CoNLL-style files."""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from core.corpus import normalize_document, open_lines
from core.errors import CorpusError, TaskError
from core.judge.settings import TASK_TYPES

TABLE_FORMATS = ("csv", "tsv", "jsonl")
_CONLL_SUFFIXES = ("conll", "bio", "iob", "txt")
PREFIXES = ("B", "I", "E", "S", "L", "U")
_TAG = re.compile(r"(?:O|[BIESLU]-\S+)")


def check_type(type: str) -> None:
    if type not in TASK_TYPES:
        raise TaskError(f"unknown task type '{type}': use classification or ner")


@dataclass(frozen=True)
class Example:  # one classification example
    text: str
    label: str
    text_pair: str | None = None


@dataclass(frozen=True)
class TaggedSentence:  # one token-classification sentence, a tag per token
    tokens: tuple[str, ...]
    tags: tuple[str, ...]


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
    check_type(type)
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
