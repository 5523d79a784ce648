"""Vocabulary analysis: train a domain WordPiece vocabulary, rank the tokens the base vocabulary
lacks (the incremental vocabulary) so that every prefix is a good vocabulary for its size, and
score the nested candidates with the corpus occurrence probability:

    p(t) = count(t) / total tokens,  log P(s) = sum_t log p(t),  P(D) = mean_s log P(s).

Because WordPiece tokenizes word by word, sum_s log P(s) = sum_t count(t) log p(t), and the
token counts are sums over word types weighted by frequency: one counting pass over the
corpus, then each candidate (and each round of the ranking) only tokenizes distinct words."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
from tokenizers import Tokenizer, models, trainers

from core.errors import Cancelled, ConfigError, CorpusError

Progress = Callable[[str, float], None]  # (stage, fraction of that stage done)
CancelCheck = Callable[[], bool]

_BATCH_DOCS = 2000
_ENCODE_CHUNK = 20000


@dataclass(frozen=True)
class VocabConfig:
    """How the incremental vocabulary is searched (defaults from the AdaLM paper)."""

    step: int = 10_000
    """Tokens added from one candidate to the next."""
    max_added: int = 40_000
    """Largest number of tokens added to the base vocabulary."""
    threshold: float = 0.01
    """Pick the first candidate whose relative gain in P(D) is at most this."""
    min_frequency: int = 2
    """A word must occur this often for the trainer to learn merges from it."""

    def __post_init__(self):
        if self.step < 1:
            raise ConfigError(f"step must be a positive number of tokens, got {self.step}")
        if self.max_added < self.step:
            raise ConfigError(f"max-added ({self.max_added}) must be at least step ({self.step})")
        if not 0 < self.threshold < 1:
            raise ConfigError(f"threshold must be between 0 and 1 (0.01 is 1%), got {self.threshold}")
        if self.min_frequency < 1:
            raise ConfigError(f"min-frequency must be at least 1, got {self.min_frequency}")


@dataclass
class WordCounts:
    """Frequencies of the pre-tokenized word types of a corpus."""

    words: list[str]
    freqs: np.ndarray  # (n_words,) int64
    documents: int

    @property
    def occurrences(self) -> int:
        return int(self.freqs.sum())


@dataclass(frozen=True)
class CurvePoint:
    vocab_size: int
    added_tokens: int
    log_occurrence: float  # P(D): mean over documents of log P(s)
    relative_gain: float | None  # (P_prev - P_now) / P_prev; None for the base vocabulary
    tokens_per_word: float
    split_word_share: float  # share of word occurrences split into 2+ pieces
    embedding_params: int  # parameters the embedding matrix gains

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AnalysisResult:
    base_vocab_size: int
    incremental_tokens: list[str]
    points: list[CurvePoint]  # points[0] is the base vocabulary
    picked: CurvePoint
    threshold_reached: bool
    documents: int
    word_types: int
    notes: list[str] = field(default_factory=list)


def _check(cancel: CancelCheck | None) -> None:
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
        _check(cancel)
        if progress and total_chars:
            progress("counting words", min(chars / total_chars, 1.0))

    for document in documents:
        batch.append(document)
        documents_seen += 1
        chars += len(document) + 1
        if len(batch) >= _BATCH_DOCS:
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


def _wordpiece(vocab: list[str], settings: dict) -> Tokenizer:
    return Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, **settings))


def score_vocab(vocab: list[str], counts: WordCounts, settings: dict) -> tuple[float, float, float]:
    """(P(D), tokens per word, split-word share) of a vocabulary over counted words."""
    tokenizer = _wordpiece(vocab, settings)
    words = counts.words
    chunks = [words[i : i + _ENCODE_CHUNK] for i in range(0, len(words), _ENCODE_CHUNK)]
    encodings = tokenizer.encode_batch(chunks, is_pretokenized=True, add_special_tokens=False)
    ids = np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encodings])
    word_index = np.concatenate(
        [np.asarray(e.word_ids, dtype=np.int64) + i * _ENCODE_CHUNK for i, e in enumerate(encodings)]
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
"""The domain WordPiece is trained for this many times max_added new tokens; the ranking then
keeps the best max_added of them."""


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
        _check(cancel)
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
        chunks = [word_ids[i:i + _ENCODE_CHUNK] for i in range(0, len(word_ids), _ENCODE_CHUNK)]
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


def pick(points: list[CurvePoint], threshold: float) -> tuple[CurvePoint, bool]:
    """The paper's rule: the first candidate whose relative gain is <= threshold (kept).
    If none is, the largest candidate, and False."""
    for point in points[1:]:
        if point.relative_gain is not None and point.relative_gain <= threshold:
            return point, True
    return points[-1], False


def relative_gain(previous: float, current: float) -> float:
    return (previous - current) / previous


def occurrence_curve(
    base_vocab: list[str],
    incremental: list[str],
    counts: WordCounts,
    settings: dict,
    config: VocabConfig,
    hidden_size: int,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
) -> list[CurvePoint]:
    """Score the base vocabulary and each nested candidate."""
    sizes = [0] + candidate_sizes(len(incremental), config)
    points: list[CurvePoint] = []
    for i, added in enumerate(sizes):
        _check(cancel)
        log_occ, per_word, split = score_vocab(base_vocab + incremental[:added], counts, settings)
        gain = relative_gain(points[-1].log_occurrence, log_occ) if points else None
        points.append(
            CurvePoint(len(base_vocab) + added, added, log_occ, gain, per_word, split, added * hidden_size)
        )
        if progress:
            progress("scoring candidates", (i + 1) / len(sizes))
    return points


def analyze(
    documents: Callable[[], Iterable[str]],
    base_tokenizer,
    config: VocabConfig,
    hidden_size: int,
    total_chars: int | None = None,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
) -> AnalysisResult:
    """The whole analysis. `documents` is called for each pass (counting, training)."""
    normalizer, pre_tokenizer, settings, base_vocab = backend_parts(base_tokenizer)
    counts = count_words(documents(), normalizer, pre_tokenizer, total_chars, progress, cancel)
    if counts.documents == 0 or not counts.words:
        raise CorpusError("the corpus has no documents of 5+ characters")
    specials = [t for t in base_tokenizer.all_special_tokens if t in set(base_vocab)]
    incremental, _ = incremental_vocabulary(documents, counts, normalizer, pre_tokenizer, settings, base_vocab,
                                            specials, config, progress, cancel)
    notes = []
    if not incremental:
        raise CorpusError(
            "the domain vocabulary adds no token to the base vocabulary: the corpus is too small or too "
            "close to the base model's domain"
        )
    if len(incremental) < config.max_added:
        notes.append(
            f"the corpus yields only {len(incremental)} new tokens (asked for up to {config.max_added}); "
            f"a larger corpus gives more"
        )
    points = occurrence_curve(base_vocab, incremental, counts, settings, config, hidden_size, progress, cancel)
    picked, reached = pick(points, config.threshold)
    return AnalysisResult(
        len(base_vocab), incremental, points, picked, reached, counts.documents, len(counts.words), notes
    )
