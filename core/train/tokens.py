"""Tokenize once: a corpus's token stream for one tokenizer, written to disk once and memory-mapped
by every run that needs it.

The stream is every document's token ids followed by [SEP], back to back, as uint16 when the
vocabulary fits (else uint32), in `<corpus sha256>-<tokenizer key>.tokens` with a small JSON beside
it. It is written under a temporary name and renamed when complete, so a crash mid-build leaves
nothing a later run could mistake for a cache. `Blocks` reads fixed-length training blocks
([CLS] + body + [SEP]) straight from the mapped file, so a run's memory does not grow with its
corpus: only the blocks of a batch are ever read.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.errors import Cancelled, ConfigError

SUFFIX = ".tokens"
Progress = Callable[[str, float], None]
STAGE = "tokenizing"
STALE_AFTER_S = 600  # an unfinished build untouched this long was killed


def tokenizer_key(tokenizer) -> str:
    """A short hash of what decides the ids of a text: the tokenizer's vocabulary, normalizer and
    pre-tokenizer (its full serialized form, special tokens as plain text) and its [SEP] id."""
    from core.model_io import plain_text_backend

    spec = plain_text_backend(tokenizer).to_str()
    return hashlib.sha256(f"{spec}\0{tokenizer.sep_token_id}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TokenStream:
    """A tokenized corpus on disk."""

    path: Path
    dtype: str
    tokens: int
    documents: int
    corpus_sha256: str
    tokenizer_key: str

    def array(self) -> np.ndarray:
        """The stream, memory-mapped read-only (nothing is read until it is indexed)."""
        if self.tokens == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.tokens,))

    @property
    def bytes(self) -> int:
        return self.tokens * np.dtype(self.dtype).itemsize


def _meta_path(path: Path) -> Path:
    return path.with_suffix(".json")


def stream_path(folder: Path, corpus_sha256: str, key: str) -> Path:
    return Path(folder) / f"{corpus_sha256}-{key}{SUFFIX}"


def open_stream(path: Path) -> TokenStream | None:
    """The stream at `path` when its build completed (its JSON is written last), else None."""
    meta = _meta_path(path)
    if not (path.is_file() and meta.is_file()):
        return None
    data = json.loads(meta.read_text(encoding="utf-8"))
    stream = TokenStream(path=path, **{k: data[k] for k in ("dtype", "tokens", "documents", "corpus_sha256",
                                                             "tokenizer_key")})
    if path.stat().st_size != stream.bytes:
        return None  # truncated: rebuilt
    return stream


def stream_dtype(vocab_size: int) -> type:
    """uint16 when every id fits (vocabularies up to 65,536 tokens), else uint32."""
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32


def build_stream(documents: Iterable[str], tokenizer, path: Path, corpus_sha256: str,
                 total_documents: int | None = None, progress: Progress | None = None,
                 cancel: Callable[[], bool] | None = None, batch: int = 2000) -> TokenStream:
    """Tokenize `documents` into `path`, in batches (the fast tokenizer spreads each batch over the
    machine's cores), reporting the share of `total_documents` done."""
    from core.model_io import plain_text_backend

    dtype = stream_dtype(plain_text_backend(tokenizer).get_vocab_size(with_added_tokens=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".tmp-{path.stem}-*"):  # left by a build that was killed (SIGKILL)
        try:
            if time.time() - stale.stat().st_mtime > STALE_AFTER_S:  # a live build writes every batch
                stale.unlink()
        except FileNotFoundError:
            pass
    tmp = path.with_name(f".tmp-{path.stem}-{uuid.uuid4().hex[:8]}")
    tokens = count = 0
    try:
        with open(tmp, "wb") as out:
            for pieces in encoded_batches(documents, tokenizer, batch, cancel):
                for ids in pieces:
                    out.write(ids.astype(dtype).tobytes())
                    tokens += len(ids)
                count += len(pieces)
                if progress is not None:
                    progress(STAGE, min(count / total_documents, 0.999) if total_documents else 0.0)
        stream = TokenStream(path, np.dtype(dtype).name, tokens, count, corpus_sha256, tokenizer_key(tokenizer))
        meta = {k: v for k, v in asdict(stream).items() if k != "path"}
        meta_tmp = tmp.with_suffix(".json")
        meta_tmp.write_text(json.dumps(meta), encoding="utf-8")
        os.replace(tmp, path)
        os.replace(meta_tmp, _meta_path(path))  # last: its presence says the stream is complete
    except BaseException:
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".json").unlink(missing_ok=True)
        raise
    if progress is not None:
        progress(STAGE, 1.0)
    return stream


def cached_stream(folder: Path, corpus_sha256: str, documents: Callable[[], Iterable[str]], tokenizer,
                  total_documents: int | None = None, progress: Progress | None = None,
                  cancel: Callable[[], bool] | None = None) -> tuple[TokenStream, bool]:
    """(stream, built): the corpus's stream for this tokenizer from `folder`, built first when absent."""
    path = stream_path(folder, corpus_sha256, tokenizer_key(tokenizer))
    found = open_stream(path)
    if found is not None:
        return found, False
    return build_stream(documents(), tokenizer, path, corpus_sha256, total_documents, progress, cancel), True


def list_streams(folder: Path, corpus_sha256: str | None = None) -> list[TokenStream]:
    """The complete streams in `folder` (of one corpus when given)."""
    pattern = f"{corpus_sha256 or '*'}-*{SUFFIX}"
    return [s for s in (open_stream(p) for p in sorted(Path(folder).glob(pattern))) if s is not None]


def delete_streams(folder: Path, corpus_sha256: str) -> int:
    """Remove a corpus's streams (and any unfinished build of them); the bytes freed."""
    freed = 0
    for path in list(Path(folder).glob(f"{corpus_sha256}-*")) + list(Path(folder).glob(f".tmp-{corpus_sha256}-*")):
        freed += path.stat().st_size
        path.unlink(missing_ok=True)
    return freed


class Blocks:
    """Training blocks over a token stream: block i is [CLS] + stream[i*body:(i+1)*body] + [SEP]
    (body = block_size - 2); the tail that does not fill a block is dropped. Indexing with an int
    array or a slice returns those blocks as an int32 array, read from the stream on demand."""

    def __init__(self, stream: np.ndarray, block_size: int, cls: int, sep: int, start: int = 0,
                 stop: int | None = None):
        if block_size < 8:
            raise ConfigError(f"sequence length must be at least 8, got {block_size}")
        self.stream, self.block_size, self.cls, self.sep = stream, block_size, cls, sep
        self.body = block_size - 2
        total = len(stream) // self.body
        self.start, self.stop = start, total if stop is None else stop

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), self.block_size

    def range(self, start: int, stop: int) -> "Blocks":
        """Blocks start..stop of these, as a view."""
        return Blocks(self.stream, self.block_size, self.cls, self.sep, self.start + start, self.start + stop)

    def __getitem__(self, index) -> np.ndarray:
        single = False
        if isinstance(index, slice):
            rows = np.arange(*index.indices(len(self)), dtype=np.int64)
        else:
            rows = np.asarray(index, dtype=np.int64)
            single = rows.ndim == 0
            rows = rows.reshape(-1)
            rows = np.where(rows < 0, rows + len(self), rows)
            if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
                raise IndexError(f"block index out of range (0 to {len(self) - 1})")
        rows = rows + self.start
        out = np.empty((len(rows), self.block_size), dtype=np.int32)
        out[:, 0], out[:, -1] = self.cls, self.sep
        if isinstance(index, slice) and index.step in (None, 1) and len(rows):  # one contiguous read
            first = int(rows[0]) * self.body
            out[:, 1:-1] = self.stream[first:first + len(rows) * self.body].reshape(len(rows), self.body)
        else:
            for i, row in enumerate(rows):
                out[i, 1:-1] = self.stream[int(row) * self.body:(int(row) + 1) * self.body]
        return out[0] if single else out

    def __array__(self, dtype=None, copy=None):
        array = self[:]
        return array if dtype is None else array.astype(dtype)


def blocks_of(stream: np.ndarray, tokenizer, block_size: int) -> Blocks:
    return Blocks(stream, block_size, tokenizer.cls_token_id, tokenizer.sep_token_id)


def encoded_batches(documents: Iterable[str], tokenizer, batch: int = 2000,
                    cancel: Callable[[], bool] | None = None) -> Iterable[list[np.ndarray]]:
    """Each batch of documents as arrays of ids + [SEP] (int32), encoded by the fast tokenizer in one
    call (which spreads a batch over the machine's cores). Special-token strings are plain text."""
    from core.model_io import plain_text_backend

    backend = plain_text_backend(tokenizer)  # a "[MASK]" in the text is text, not a mask
    sep = tokenizer.sep_token_id
    buffer: list[str] = []
    for document in itertools.chain(documents, [None]):  # None: the end, flush what is left
        if document is not None:
            buffer.append(document)
        if buffer and (document is None or len(buffer) >= batch):
            yield [np.asarray(e.ids + [sep], dtype=np.int32) for e in backend.encode_batch(buffer, add_special_tokens=False)]
            buffer.clear()
            if cancel is not None and cancel():
                raise Cancelled("cancelled while tokenizing")


def token_array(documents: Iterable[str], tokenizer, batch: int = 2000,
                cancel: Callable[[], bool] | None = None) -> np.ndarray:
    """The token stream of `documents`, in memory (int32): for small texts and tests."""
    pieces = [ids for batch_ in encoded_batches(documents, tokenizer, batch, cancel) for ids in batch_]
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)


@dataclass(frozen=True)
class CachedCorpus:
    """A stored corpus whose token streams live in `folder`. Called, it reads its documents (so it
    goes wherever a documents callable goes); `corpus_blocks` takes its cached stream instead."""

    path: Path
    sha256: str
    documents: int
    folder: Path

    def __call__(self) -> Iterable[str]:
        from core.corpus import read_documents

        return read_documents(self.path)

    def token_stream(self, tokenizer, progress: Progress | None = None,
                     cancel: Callable[[], bool] | None = None) -> np.ndarray:
        stream, _ = cached_stream(self.folder, self.sha256, self, tokenizer, self.documents, progress, cancel)
        return stream.array()


def corpus_blocks(documents: Callable[[], Iterable[str]], tokenizer, block_size: int,
                  progress: Progress | None = None, cancel: Callable[[], bool] | None = None) -> Blocks:
    """The training blocks of a corpus: from its cached stream for a CachedCorpus, else tokenized here."""
    if isinstance(documents, CachedCorpus):
        stream = documents.token_stream(tokenizer, progress, cancel)
    else:
        stream = token_array(documents(), tokenizer, cancel=cancel)
    return blocks_of(stream, tokenizer, block_size)
