"""The incremental vocabulary: train a domain WordPiece vocabulary, then rank the tokens the base
vocabulary lacks so that every prefix is a good vocabulary for its size."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable

import numpy as np
from tokenizers import Tokenizer, models, trainers

from core.errors import Cancelled
from core.vocab.counting import ENCODE_CHUNK, CancelCheck, Progress, WordCounts, check_cancel
from core.configs import VocabConfig


def _wordpiece(vocab: list[str], settings: dict) -> Tokenizer:
    return Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, **settings))


def score_vocab(vocab: list[str], counts: WordCounts, settings: dict) -> tuple[float, float, float]:
    """(P(D), tokens per word, split-word share) of a vocabulary over counted words."""
    tokenizer = _wordpiece(vocab, settings)
    words = counts.words
    chunks = [words[i : i + ENCODE_CHUNK] for i in range(0, len(words), ENCODE_CHUNK)]
    encodings = tokenizer.encode_batch(chunks, is_pretokenized=True, add_special_tokens=False)
    ids = np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encodings])
    word_index = np.concatenate(
        [np.asarray(e.word_ids, dtype=np.int64) + i * ENCODE_CHUNK for i, e in enumerate(encodings)]
    )
    freqs = counts.freqs.astype(np.float64)
    token_counts = np.bincount(ids, weights=freqs[word_index], minlength=len(vocab))
    total = token_counts.sum()
    seen = token_counts[token_counts > 0]
    log_occurrence = float(np.sum(seen * np.log(seen / total))) / counts.documents
    pieces = np.bincount(word_index, minlength=len(words))
    occurrences = freqs.sum()
    return log_occurrence, float(total / occurrences), float(freqs[pieces >= 2].sum() / occurrences)


def literal_log_occurrence(documents: Iterable[str], vocab: list[str], normalizer, pre_tokenizer, settings) -> float:
    """P(D) by the definition: tokenize every document, average the summed log probabilities.
    Slow; the reference the fast path is tested and benchmarked against."""
    tokenizer = _wordpiece(vocab, settings)
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    per_document = [tokenizer.encode(d, add_special_tokens=False).ids for d in documents]
    counts = Counter(t for ids in per_document for t in ids)
    total = sum(counts.values())
    log_p = {t: math.log(c / total) for t, c in counts.items()}
    return math.fsum(math.fsum(log_p[t] for t in ids) for ids in per_document) / len(per_document)


def train_vocab(
    documents: Iterable[str], normalizer, pre_tokenizer, settings: dict, vocab_size: int, special_tokens: list[str],
    min_frequency: int = 2,
) -> list[str]:
    """Train a domain WordPiece vocabulary normalizing as the base does; tokens in the trainer's order.

    The trainer breaks ties between equally frequent merges by token id, and gives a continuation
    character ("##x") its id when it first meets it in a hash-ordered walk over the words, so ties
    fall differently from one process to the next. Pass every continuation character among the
    special tokens (`continuation_characters`) and their ids are fixed up front: the training is
    then the same in every process."""
    tokenizer = Tokenizer(models.WordPiece(**{**settings, "vocab": {}}))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special_tokens,
        continuing_subword_prefix=settings["continuing_subword_prefix"],
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer=trainer)
    trained = tokenizer.get_vocab()
    return sorted(trained, key=trained.get)


POOL_FACTOR = 1.5


def continuation_characters(counts: WordCounts, prefix: str) -> list[str]:
    """"##x" for every character x met inside a counted word, sorted."""
    return [prefix + c for c in sorted({c for word in counts.words for c in word[1:]})]


def train_pool(documents, normalizer, pre_tokenizer, settings, base_vocab, specials, config, cancel) -> list[str]:
    """New tokens of a domain WordPiece, POOL_FACTOR x max_added of them where the corpus has that
    many. Many trained tokens are already in the base vocabulary, so when too few are new the
    trainer runs again with a larger target."""
    wanted = math.ceil(config.max_added * POOL_FACTOR)
    target = len(base_vocab) + wanted
    for _ in range(4):
        trained = train_vocab(documents(), normalizer, pre_tokenizer, settings, target, specials,
                              config.min_frequency)
        check_cancel(cancel)
        incremental = incremental_vocab(trained, base_vocab)
        if len(incremental) >= wanted or len(trained) < target:  # enough, or the corpus is exhausted
            break
        missing = wanted - len(incremental)
        target += int(missing * (target - len(base_vocab)) / max(len(incremental), 1)) + config.step
    return incremental


def incremental_vocabulary(documents: Callable[[], Iterable[str]], counts: WordCounts, normalizer, pre_tokenizer,
                           settings: dict, base_vocab: list[str], specials: list[str], config: VocabConfig,
                           progress: Progress | None = None, cancel: CancelCheck | None = None) -> tuple[list[str], int]:
    """(the first max_added new tokens, best first; the size of the pool they were ranked from):
    a deterministic training of the pool, then `rank_incremental`."""
    if progress:
        progress("training vocabulary", 0.0)
    specials = specials + continuation_characters(counts, settings["continuing_subword_prefix"])  # deterministic
    pool = train_pool(documents, normalizer, pre_tokenizer, settings, base_vocab, specials, config, cancel)
    if progress:
        progress("ranking tokens", 0.0)
    ranked = rank_incremental(base_vocab, pool, counts, settings, config.max_added,
                              candidate_sizes(min(len(pool), config.max_added), config), cancel, progress)
    return ranked, len(pool)


def _split(token: str, alive: set[str] | dict, prefix: str, max_chars: int) -> list[str] | None:
    """The pieces the greedy longest match splits `token` into without `token` itself; None when it
    cannot be split (a character the vocabulary has nowhere else)."""
    continuation = token.startswith(prefix) and len(token) > len(prefix)
    text = token[len(prefix):] if continuation else token
    if len(text) > max_chars:
        return None
    pieces, start = [], 0
    while start < len(text):
        end = len(text)
        while end > start:
            piece = text[start:end]
            if start > 0 or continuation:
                piece = prefix + piece
            if piece != token and piece in alive:
                break
            end -= 1
        if end == start:
            return None
        pieces.append(piece)
        start = end
    return pieces


class _Segmentation:
    """The WordPiece segmentation of every counted word type with a shrinking vocabulary (base +
    the pool tokens still alive), as flat arrays (token id, word) that only the words using a
    dropped token are re-tokenized into."""

    def __init__(self, base: list[str], pool: list[str], counts: WordCounts, settings: dict):
        self.vocab = base + pool
        self.settings = settings
        self.words = counts.words
        self.freqs = counts.freqs.astype(np.float64)
        self.alive = np.ones(len(self.vocab), dtype=bool)
        self.live = {t: i for i, t in enumerate(self.vocab)}  # the alive vocabulary, token -> id
        self.ids, self.owners = self._encode(np.arange(len(self.words)))
        self._count()

    def _encode(self, word_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tokenizer = Tokenizer(models.WordPiece(self.live, **self.settings))
        chunks = [word_ids[i:i + ENCODE_CHUNK] for i in range(0, len(word_ids), ENCODE_CHUNK)]
        encodings = tokenizer.encode_batch([[self.words[w] for w in chunk.tolist()] for chunk in chunks],
                                           is_pretokenized=True, add_special_tokens=False)
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
        owners = [chunk[np.asarray(e.word_ids, dtype=np.int64)] for chunk, e in zip(chunks, encodings)]
        empty = np.zeros(0, dtype=np.int64)
        return (np.concatenate(ids) if ids else empty), (np.concatenate(owners) if owners else empty)

    def _count(self) -> None:
        self.usage = np.bincount(self.ids, weights=self.freqs[self.owners], minlength=len(self.vocab))

    def drop(self, tokens: np.ndarray) -> None:
        self.alive[tokens] = False
        for token in tokens.tolist():
            del self.live[self.vocab[token]]
        hit = ~self.alive[self.ids]
        if not hit.any():
            return
        affected = np.zeros(len(self.words), dtype=bool)
        affected[self.owners[hit]] = True
        keep = ~affected[self.owners]
        ids, owners = self._encode(np.flatnonzero(affected))
        self.ids = np.concatenate([self.ids[keep], ids])
        self.owners = np.concatenate([self.owners[keep], owners])
        self._count()


def _xlogx(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x * np.log(np.maximum(x, 1e-300)), 0.0)


def _drop_costs(counts: np.ndarray, usage: np.ndarray, splits: list[list[int] | None]) -> np.ndarray:
    """What dropping each candidate costs N x P(D) = sum_t c_t log c_t - C log C, if each of its
    occurrences became its pieces (counts move to them, the total grows). A token that cannot be
    split costs one token of the current entropy per occurrence."""
    total = counts.sum()
    entropy = -(float(_xlogx(counts).sum()) - total * math.log(total)) / total  # nats per token
    cost = usage * entropy
    owners, pieces = [], []
    for index, split in enumerate(splits):
        if split is not None:
            owners += [index] * len(split)
            pieces += split
    if not owners:
        return cost
    owners, pieces = np.asarray(owners), np.asarray(pieces)
    splittable = np.zeros(len(usage), dtype=bool)
    splittable[owners] = True
    # one row per distinct (candidate, piece): the count the piece would gain
    key = owners * (len(counts) + 1) + pieces
    unique, times = np.unique(key, return_counts=True)
    row_owner, row_piece = unique // (len(counts) + 1), unique % (len(counts) + 1)
    base = counts[row_piece]
    gained = np.zeros(len(usage))
    np.add.at(gained, row_owner, _xlogx(base + times * usage[row_owner]) - _xlogx(base))
    extra = np.bincount(owners, minlength=len(usage)) - 1  # tokens added per occurrence
    grown = total + usage * extra
    change = gained - _xlogx(usage) - (_xlogx(grown) - total * math.log(total))
    cost[splittable] = -change[splittable]
    return cost


def rank_incremental(base: list[str], pool: list[str], counts: WordCounts, settings: dict, keep: int,
                     stops: list[int] | None = None, cancel: CancelCheck | None = None,
                     progress: Progress | None = None, chunk: float = 0.05) -> list[str]:
    """The first `keep` pool tokens ranked so that each prefix is a good vocabulary for its size.

    Starting from base + pool, rounds drop the pool tokens whose loss costs P(D) the least (each
    occurrence of a token becomes the pieces it splits into without it: `_drop_costs`),
    re-segmenting only the words that used them, until none is left; the ranking is the reverse of
    the dropping order. A round drops `chunk` of the tokens alive (three times that while more
    than `keep` are, whose order does not matter) and stops exactly at each size in `stops`, so
    the first k tokens are the vocabulary the pruning reached at size k. Ties break by usage, then
    by the token's text: the same pool and counts always give the same ranking."""
    prefix = settings["continuing_subword_prefix"]
    max_chars = settings["max_input_chars_per_word"]
    seg = _Segmentation(base, pool, counts, settings)
    b = len(base)
    text_rank = np.empty(len(pool), dtype=np.int64)
    text_rank[np.argsort(np.array(pool, dtype=object), kind="stable")] = np.arange(len(pool))
    splits: list[list[int] | None] = [None] * len(pool)  # ids of each token's pieces without it
    piece_users: dict[str, list[int]] = {}  # piece -> pool tokens whose split used it (may be stale)

    def resplit(i: int) -> None:
        pieces = _split(pool[i], seg.live, prefix, max_chars)
        splits[i] = [seg.live[piece] for piece in pieces] if pieces else None
        for piece in pieces or ():
            piece_users.setdefault(piece, []).append(i)

    for i in range(len(pool)):
        resplit(i)
    stops = sorted({s for s in (stops or []) if 0 < s < len(pool)}, reverse=True)
    dropped: list[int] = []
    alive_count = len(pool)
    while alive_count > 0:
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        share = chunk if alive_count <= keep else 3 * chunk  # tokens beyond `keep` are only dropped
        target = max(alive_count - max(1, int(alive_count * share)), 0)
        while stops and stops[0] >= alive_count:
            stops.pop(0)
        if stops and target < stops[0]:
            target = stops[0]
        candidates = np.flatnonzero(seg.alive[b:])
        usage = seg.usage[b + candidates]
        cost = _drop_costs(seg.usage, usage, [splits[i] for i in candidates.tolist()])
        order = np.lexsort((text_rank[candidates], usage, cost))
        chosen = candidates[order[: alive_count - target]]
        dropped.extend(chosen.tolist())
        alive_count = target
        seg.drop(b + chosen)
        recheck = set()
        for i in chosen.tolist():
            recheck.update(piece_users.pop(pool[i], ()))
        for i in recheck:
            if seg.alive[b + i]:
                resplit(i)
        if progress:
            progress("ranking tokens", 1 - alive_count / len(pool))
    return [pool[i] for i in reversed(dropped)][:keep]


def incremental_vocab(trained: list[str], base: list[str]) -> list[str]:
    """Trained tokens absent from the base vocabulary, in the trainer's order."""
    known = set(base)
    return [t for t in trained if t not in known]


def candidate_sizes(available: int, config: VocabConfig) -> list[int]:
    """Numbers of added tokens to score: step, 2*step, ... up to max_added (or what exists)."""
    limit = min(config.max_added, available)
    sizes = list(range(config.step, limit + 1, config.step))
    if limit < config.max_added and limit > 0 and (not sizes or sizes[-1] != limit):
        sizes.append(limit)
    return sizes
