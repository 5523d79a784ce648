"""Counting a corpus once: word types and their frequencies, read through the base tokenizer's
normalizer and pre-tokenizer."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from core.errors import Cancelled, ConfigError

Progress = Callable[[str, float], None]  # (stage, fraction of that stage done)
CancelCheck = Callable[[], bool]

BATCH_DOCS = 2000
ENCODE_CHUNK = 20000


@dataclass
class WordCounts:
    """Frequencies of the pre-tokenized word types of a corpus."""

    words: list[str]
    freqs: np.ndarray  # (n_words,) int64
    documents: int

    @property
    def occurrences(self) -> int:
        return int(self.freqs.sum())


def check_cancel(cancel: CancelCheck | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled("cancelled")


def backend_parts(tokenizer) -> tuple:
    """(normalizer, pre_tokenizer, WordPiece settings, vocab list) of a fast BERT tokenizer."""
    backend = tokenizer.backend_tokenizer if hasattr(tokenizer, "backend_tokenizer") else tokenizer
    spec = json.loads(backend.to_str())["model"]
    if spec["type"] != "WordPiece":
        raise ConfigError(f"the base tokenizer is {spec['type']}, not WordPiece")
    vocab = sorted(spec["vocab"], key=spec["vocab"].get)
    settings = {
        "unk_token": spec.get("unk_token", "[UNK]"),
        "continuing_subword_prefix": spec.get("continuing_subword_prefix", "##"),
        "max_input_chars_per_word": spec.get("max_input_chars_per_word", 100),
    }
    return backend.normalizer, backend.pre_tokenizer, settings, vocab


def count_words(
    documents: Iterable[str],
    normalizer=None,
    pre_tokenizer=None,
    total_chars: int | None = None,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
) -> WordCounts:
    """Count word types as the base tokenizer sees them, in one pass.

    Raw text is split on spaces and tabs first (cheap, in C) and only the distinct raw words
    are normalized and pre-tokenized. This is exact because BERT normalizers act per
    character and BERT pre-tokenizers split at every space and tab."""
    raw: Counter[str] = Counter()
    documents_seen = chars = 0
    batch: list[str] = []

    def flush():
        raw.update(" ".join(batch).replace("\t", " ").split(" "))
        batch.clear()
        check_cancel(cancel)
        if progress and total_chars:
            progress("counting words", min(chars / total_chars, 1.0))

    for document in documents:
        batch.append(document)
        documents_seen += 1
        chars += len(document) + 1
        if len(batch) >= BATCH_DOCS:
            flush()
    flush()
    raw.pop("", None)
    words: Counter[str] = Counter()
    for text, freq in raw.items():
        if normalizer is not None:
            text = normalizer.normalize_str(text)
        pieces = [p for p, _ in pre_tokenizer.pre_tokenize_str(text)] if pre_tokenizer is not None else text.split()
        for piece in pieces:
            words[piece] += freq
    return WordCounts(list(words), np.fromiter(words.values(), dtype=np.int64, count=len(words)), documents_seen)
