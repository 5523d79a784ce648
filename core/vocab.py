"""Vocabulary analysis: train a domain WordPiece vocabulary, take the tokens the base
vocabulary lacks (the incremental vocabulary, in the trainer's order), and score nested
candidates with the corpus occurrence probability of DESIGN.md:

    p(t) = count(t) / total tokens,  log P(s) = sum_t log p(t),  P(D) = mean_s log P(s).

Because WordPiece tokenizes word by word, sum_s log P(s) = sum_t count(t) log p(t), and the
token counts are sums over word types weighted by frequency: one counting pass over the
corpus, then each candidate only tokenizes the distinct words once."""

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
    """Train a domain WordPiece vocabulary normalizing as the base does; tokens in the trainer's order."""
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


def _train_incremental(documents, normalizer, pre_tokenizer, settings, base_vocab, specials, config, cancel):
    """The first max_added new tokens. Many trained tokens are already in the base vocabulary, so
    when too few are new the trainer runs again with a larger target. Merges are greedy, so a
    larger target only appends to the same order: the candidates stay nested."""
    target = len(base_vocab) + config.max_added
    for _ in range(4):
        trained = train_vocab(documents(), normalizer, pre_tokenizer, settings, target, specials,
                              config.min_frequency)
        _check(cancel)
        incremental = incremental_vocab(trained, base_vocab)
        if len(incremental) >= config.max_added or len(trained) < target:  # enough, or the corpus is exhausted
            break
        missing = config.max_added - len(incremental)
        target += int(missing * (target - len(base_vocab)) / max(len(incremental), 1)) + config.step
    return incremental[: config.max_added]


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
    if progress:
        progress("training vocabulary", 0.0)
    specials = [t for t in base_tokenizer.all_special_tokens if t in set(base_vocab)]
    incremental = _train_incremental(documents, normalizer, pre_tokenizer, settings, base_vocab, specials, config,
                                     cancel)
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
