"""The occurrence curve: the nested candidates (base vocabulary plus a prefix of the ranked
incremental vocabulary, core.vocab.ranking) scored with the corpus occurrence probability:

    p(t) = count(t) / total tokens,  log P(s) = sum_t log p(t),  P(D) = mean_s log P(s).

Because WordPiece tokenizes word by word, sum_s log P(s) = sum_t count(t) log p(t), and the
token counts are sums over word types weighted by frequency: one counting pass over the
corpus, then each candidate (and each round of the ranking) only tokenizes distinct words."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from core.errors import CorpusError
from core.vocab.counting import CancelCheck, Progress, WordCounts, backend_parts, check_cancel, count_words
from core.configs import VocabConfig
from core.vocab.ranking import candidate_sizes, incremental_vocabulary, score_vocab


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
"""The domain WordPiece is trained for this many times max_added new tokens; the ranking then
keeps the best max_added of them."""


GAIN_DIGITS = 4
"""Gains are compared with the threshold at 0.01 % (four decimals of the fraction): the resolution
the page and the CLI show them at, so a gain shown as 1.00% meets a 1.00% threshold."""


def pick(points: list[CurvePoint], threshold: float) -> tuple[CurvePoint, bool]:
    """The paper's rule: the first candidate whose relative gain is <= threshold (kept), both
    rounded to GAIN_DIGITS. If none is, the largest candidate, and False."""
    for point in points[1:]:
        if point.relative_gain is not None and round(point.relative_gain, GAIN_DIGITS) <= round(threshold, GAIN_DIGITS):
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
        check_cancel(cancel)
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
