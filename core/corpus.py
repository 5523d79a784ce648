"""Reading corpora: .txt (a document per line), .jsonl, .csv and .tsv, each optionally
gzip-compressed, streamed so that memory does not grow with the file. `ingest` writes
the normalized text (one document per line, whitespace collapsed) under a content hash."""

from __future__ import annotations

import array
import csv
import gzip
import hashlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Generic, TypeVar

from core.errors import CorpusError

FORMATS = ("txt", "jsonl", "csv", "tsv")
MIN_DOCUMENT_CHARS = 5  # a document is a line with at least 5 characters (the paper's rule)
MIN_DOCUMENTS = 10
_SNIFF_BYTES = 8192
_PROGRESS_BYTES = 16 << 20

Progress = Callable[[int, int], None]  # (done, total) in source bytes


@dataclass(frozen=True)
class CorpusStats:
    bytes: int  # normalized text as stored
    source_bytes: int
    documents: int
    words: int
    distinct_words: int
    duplicate_documents: int
    mean_length: float  # characters per document

    def to_dict(self) -> dict:
        return asdict(self)


S = TypeVar("S")


@dataclass(frozen=True)
class Stored(Generic[S]):
    """What ingesting wrote under its content hash: the hash, where it lies, its stats, and the
    format it was read from (a corpus's; a task's files may have several)."""

    sha256: str
    path: Path
    stats: S
    format: str | None = None


def place(tmp: Path, final: Path) -> None:
    """Move a finished file or folder into its content-hash name, unless the same content is there
    already (another ingest of it got there first): then the new copy is dropped."""
    if not final.exists():
        try:
            os.replace(tmp, final)
            return
        except OSError:
            if not final.exists():  # not a concurrent ingest of the same content
                raise
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


def detect_format(path: str | Path, format: str | None = None) -> tuple[str, bool]:
    """(format, gzipped) from an explicit format or the file name."""
    name = Path(path).name.lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    if format:
        format = format.lower().lstrip(".")
        if format not in FORMATS:
            raise CorpusError(f"unknown format '{format}': use one of {', '.join(FORMATS)}")
        return format, gz
    suffix = name.rsplit(".", 1)[-1] if "." in name else ""
    if suffix in FORMATS:
        return suffix, gz
    if suffix in ("text", ""):
        return "txt", gz
    raise CorpusError(
        f"cannot tell the format of '{Path(path).name}': name it .txt, .jsonl, .csv or .tsv "
        f"(optionally .gz) or pass --format"
    )


class _Source:
    """A byte stream over a plain or gzip file that knows how far through the file it is."""

    def __init__(self, path: Path, gz: bool):
        self.raw = open(path, "rb")
        self.total = os.fstat(self.raw.fileno()).st_size
        self.stream = gzip.GzipFile(fileobj=self.raw) if gz else self.raw
        self.name = path.name

    def position(self) -> int:
        return self.raw.tell()

    def close(self) -> None:
        self.stream.close()
        self.raw.close()

    def lines(self) -> Iterator[tuple[int, str]]:
        """(line number, decoded text) with clear errors for binary or non-UTF-8 input."""
        try:
            head = self.stream.peek(_SNIFF_BYTES)[:_SNIFF_BYTES] if hasattr(self.stream, "peek") else b""
        except (OSError, EOFError) as exc:
            raise CorpusError(f"{self.name} is not a valid gzip file ({exc}): re-compress it or drop the .gz") from None
        for mark, encoding in _UNICODE_MARKS:
            if head.startswith(mark):
                raise CorpusError(f"{self.name} is {encoding} (it starts with a {encoding} byte-order mark): re-save it "
                                  f"as UTF-8")
        if b"\x00" in head:
            raise CorpusError(f"{self.name} looks binary (it contains NUL bytes): upload plain text, JSONL, CSV or TSV")
        number = 0
        try:
            for number, raw in enumerate(self.stream, start=1):
                if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                if b"\x00" in raw:
                    raise CorpusError(f"{self.name} looks binary (NUL byte on line {number}): upload plain text, JSONL, CSV or TSV")
                try:
                    yield number, raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise CorpusError(
                        f"{self.name}: line {number} is not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}): "
                        f"re-save the file as UTF-8"
                    ) from None
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise CorpusError(f"{self.name} is not a valid gzip file ({exc}): re-compress it or drop the .gz") from None


# Byte-order marks of the encodings that are not UTF-8, longest first (UTF-32 LE starts like UTF-16 LE).
_UNICODE_MARKS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
                  (b"\xfe\xff", "UTF-16"))


def open_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, decoded text) of a plain or gzip file (gzip when the name ends in .gz), line
    endings kept; raises CorpusError for binary, non-UTF-8 or broken gzip input, naming the line."""
    path = Path(path)
    source = _Source(path, path.name.lower().endswith(".gz"))
    try:
        yield from source.lines()
    finally:
        source.close()


def _txt(source: _Source, text_field: str) -> Iterator[str]:
    for _, line in source.lines():
        yield line.rstrip("\r\n")


def _jsonl(source: _Source, text_field: str) -> Iterator[str]:
    for number, line in source.lines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{source.name}: line {number} is not valid JSON ({exc.msg}): one JSON object per line") from None
        if not isinstance(record, dict) or text_field not in record:
            fields = ", ".join(map(str, record)) if isinstance(record, dict) else type(record).__name__
            raise CorpusError(
                f"{source.name}: line {number} has no field '{text_field}' (it has: {fields}): pass the text field's name"
            )
        value = record[text_field]
        if value is not None and not isinstance(value, str):
            raise CorpusError(f"{source.name}: line {number}: field '{text_field}' is not a string")
        yield value or ""


def _table(delimiter: str) -> Callable[[_Source, str], Iterator[str]]:
    def read(source: _Source, text_field: str) -> Iterator[str]:
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
        reader = csv.reader((line for _, line in source.lines()), delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return
        if text_field not in header:
            raise CorpusError(
                f"{source.name}: no column '{text_field}' (columns: {', '.join(header)}): pass the text column's name"
            )
        column = header.index(text_field)
        for row in reader:
            if len(row) > column:
                yield row[column]

    return read


_READERS = {"txt": _txt, "jsonl": _jsonl, "csv": _table(","), "tsv": _table("\t")}


def iter_documents(
    path: str | Path,
    format: str | None = None,
    text_field: str = "text",
    progress: Progress | None = None,
) -> Iterator[str]:
    """Yield the raw text of each document, streaming. Raises CorpusError on bad input."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"no such file: {path}")
    fmt, gz = detect_format(path, format)
    source = _Source(path, gz)
    reported = 0
    try:
        for count, document in enumerate(_READERS[fmt](source, text_field), start=1):
            # every 10,000 documents, or sooner when they are long: a report (and so a cancel check)
            # at least every _PROGRESS_BYTES of the file
            if progress and count % 100 == 0 and (count % 10000 == 0
                                                   or source.position() - reported >= _PROGRESS_BYTES):
                reported = source.position()
                progress(reported, source.total)
            yield document
        if progress:
            progress(source.total, source.total)
    finally:
        source.close()


def normalize_document(text: str) -> str:
    """One line per document: all whitespace (newlines included) collapsed to single spaces."""
    return " ".join(text.split())


def ingest(
    path: str | Path,
    dest_dir: str | Path,
    format: str | None = None,
    text_field: str = "text",
    progress: Progress | None = None,
) -> Stored[CorpusStats]:
    """Normalize a corpus file into dest_dir/<sha256>.txt and compute its stats.

    Nothing is left behind on error; the same content ingested twice maps to the same file."""
    path, dest_dir = Path(path), Path(dest_dir)
    fmt, _ = detect_format(path, format)
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / f".tmp-{uuid.uuid4().hex}.txt"
    digest = hashlib.sha256()
    hashes = array.array("q")
    distinct: set[str] = set()
    documents = words = chars = size = usable = 0
    try:
        with open(tmp, "wb") as out:
            for document in iter_documents(path, fmt, text_field, progress):
                text = normalize_document(document)
                if not text:
                    continue
                data = (text + "\n").encode("utf-8")
                out.write(data)
                digest.update(data)
                size += len(data)
                documents += 1
                chars += len(text)
                usable += len(text) >= MIN_DOCUMENT_CHARS
                tokens = text.split(" ")
                words += len(tokens)
                distinct.update(tokens)
                hashes.append(hash(text))
        if documents == 0:
            raise CorpusError(f"{path.name} has no text: every document is empty")
        if usable < MIN_DOCUMENTS:
            raise CorpusError(
                f"{path.name} is too small: {usable} documents of {MIN_DOCUMENT_CHARS}+ characters, "
                f"at least {MIN_DOCUMENTS} are needed"
            )
        sha = digest.hexdigest()
        final = dest_dir / f"{sha}.txt"
        place(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    stats = CorpusStats(
        bytes=size,
        source_bytes=path.stat().st_size,
        documents=documents,
        words=words,
        distinct_words=len(distinct),
        duplicate_documents=documents - len(set(hashes)),
        mean_length=chars / documents,
    )
    return Stored(sha256=sha, path=final, stats=stats, format=fmt)


def read_documents(path: str | Path, min_chars: int = MIN_DOCUMENT_CHARS) -> Iterator[str]:
    """The documents of a stored (normalized) corpus with at least min_chars characters."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if len(line) >= min_chars:
                yield line


def preview(path: str | Path, n: int = 20) -> list[str]:
    """The first n documents of a stored corpus."""
    out = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            out.append(line.rstrip("\n"))
            if len(out) >= n:
                break
    return out
