"""Is a task's text in a corpus? A model adapted or distilled on a corpus that holds the task's dev
or test examples has seen them before it is judged, and its scores may be inflated. The check is
the one the decontamination studies use (GPT-3 and after): an example is found in a corpus when
its normalized text is a whole corpus line, or when it shares a span of 13 normalized words with
a corpus line. Normalized: Unicode NFKC, lowercase, words are runs of word characters (so case,
whitespace and punctuation do not matter).

The corpus is read once, as a stream: the examples' normalized texts and hashed n-grams are
indexed first, and each corpus line is looked up against them."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass

from core.errors import Cancelled

NGRAM = 13
STAGE = "checking the corpus for task text"
METHOD = ("an example is found when its normalized text (Unicode NFKC, lowercase, words as runs of word characters) "
          "is a whole corpus line, or when it shares {n} consecutive normalized words with a corpus line; examples "
          "under {n} words get only the whole-line check")
_WORD = re.compile(r"\w+")
_REPORT_EVERY = 10_000  # corpus lines between progress reports and cancel checks

Progress = Callable[[str, float], None]  # (stage, fraction of that stage done)
CancelCheck = Callable[[], bool]


def words(text: str) -> list[str]:
    """The normalized words of a text: Unicode NFKC, lowercased, runs of word characters."""
    if not text.isascii():  # NFKC leaves ASCII as it is; skipping it is most of a corpus's lines
        text = unicodedata.normalize("NFKC", text)
    return _WORD.findall(text.lower())


def normalize(text: str) -> str:
    """A text as the exact-line check compares it: its normalized words, one space apart."""
    return " ".join(words(text))


def ngrams(words: Sequence[str], n: int = NGRAM) -> Iterator[tuple[str, ...]]:
    """Every run of n consecutive words, in order; none when there are fewer than n."""
    return zip(*(words[i:] for i in range(n)))


def example_text(example) -> str:
    """The text of a task example that is looked for: a classification example's text and text
    pair joined by a space, or a tagged sentence's tokens."""
    tokens = getattr(example, "tokens", None)
    if tokens is not None:
        return " ".join(tokens)
    return example.text if not example.text_pair else f"{example.text} {example.text_pair}"


class TextIndex:
    """The normalized texts and the n-grams of some texts, to look corpus lines up against. The
    n-grams are kept as their hashes (a 13-word tuple per n-gram would not fit a large task), and
    a hit is checked against the text's own words, so a hash collision is never a match."""

    def __init__(self, texts: Sequence[str], n: int = NGRAM):
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        self.n = n
        self.words = [words(text) for text in texts]
        self.lines: dict[str, list[int]] = {}
        self.lengths: set[int] = set()  # word counts of the texts: other lines need no join to be ruled out
        self.stride = max((len(w) for w in self.words), default=0) + 1
        self.grams: dict[int, int] = {}  # hash -> text * stride + position, or -1 when several texts have it
        self.shared: dict[int, list[int]] = {}  # hash -> every text * stride + position, for those -1
        for index, found in enumerate(self.words):
            if not found:
                continue
            self.lines.setdefault(" ".join(found), []).append(index)
            self.lengths.add(len(found))
            for position, gram in enumerate(ngrams(found, n)):
                key, place = hash(gram), index * self.stride + position
                before = self.grams.setdefault(key, place)
                if before != place:
                    if before != -1:
                        self.shared[key] = [before]
                        self.grams[key] = -1
                    self.shared[key].append(place)

    def _places(self, gram: tuple[str, ...]) -> Iterator[int]:
        """The texts that really have this n-gram."""
        key = hash(gram)
        first = self.grams.get(key)
        for place in self.shared[key] if first == -1 else () if first is None else (first,):
            index, position = divmod(place, self.stride)
            if tuple(self.words[index][position:position + self.n]) == gram:
                yield index

    def match(self, line: list[str]) -> tuple[list[int], set[int]]:
        """(texts equal to the line, texts sharing an n-gram with it), given the line's normalized words."""
        exact = self.lines.get(" ".join(line), []) if len(line) in self.lengths else []
        shared: set[int] = set()
        # isdisjoint runs in C and stops at the first hit; most lines have none
        if len(line) >= self.n and not self.grams.keys().isdisjoint(map(hash, ngrams(line, self.n))):
            for gram in ngrams(line, self.n):
                shared.update(self._places(gram))
        return exact, shared

    def touches(self, text: str) -> bool:
        """Is a text equal to one of the texts, or does it share an n-gram with one (both normalized)?"""
        exact, shared = self.match(words(text))
        return bool(exact or shared)


@dataclass(frozen=True)
class SplitOverlap:
    examples: int
    exact: int  # examples whose normalized text is a whole corpus line
    ngram: int  # examples that share at least one n-gram with a corpus line
    found: int  # examples found either way
    short: int  # examples under n words: only the whole-line check applies to them
    share: float  # found / examples (0 for an empty split)


@dataclass(frozen=True)
class Contamination:
    n: int
    documents: int  # corpus lines read
    splits: dict[str, SplitOverlap]

    @property
    def found(self) -> bool:
        return any(split.found for split in self.splits.values())

    def to_dict(self) -> dict:
        return {"checked": True, **asdict(self), "method": METHOD.format(n=self.n)}


def find_in_corpus(documents: Iterable[str], texts: Mapping[str, Sequence[str]], n: int = NGRAM,
                   total_chars: int | None = None, progress: Progress | None = None,
                   cancel: CancelCheck | None = None) -> Contamination:
    """How many of each split's texts (split -> texts) occur in the documents (a corpus line
    each), read once: as a whole normalized line, or through a shared n-gram. `total_chars`
    (about the corpus's size) only makes progress fractions."""
    names = list(texts)
    sizes = [len(texts[name]) for name in names]
    index = TextIndex([text for name in names for text in texts[name]], n)
    exact_hit = bytearray(len(index.words))
    ngram_hit = bytearray(len(index.words))
    lines = chars = 0
    for document in documents:
        lines += 1
        chars += len(document) + 1
        if lines % _REPORT_EVERY == 0:
            if cancel is not None and cancel():
                raise Cancelled("cancelled")
            if progress and total_chars:
                progress(STAGE, min(chars / total_chars, 1.0))
        exact, shared = index.match(words(document))
        for i in exact:
            exact_hit[i] = 1
        for i in shared:
            ngram_hit[i] = 1
    if progress:
        progress(STAGE, 1.0)
    splits, start = {}, 0
    for name, size in zip(names, sizes):
        span = range(start, start + size)
        found = sum(1 for i in span if exact_hit[i] or ngram_hit[i])
        splits[name] = SplitOverlap(examples=size, exact=sum(exact_hit[i] for i in span),
                                    ngram=sum(ngram_hit[i] for i in span), found=found,
                                    short=sum(1 for i in span if len(index.words[i]) < n),
                                    share=found / size if size else 0.0)
        start += size
    return Contamination(n=n, documents=lines, splits=splits)


def _share(share: float) -> str:
    return f"{share:.1%}" if share >= 0.001 else "under 0.1%"


def warning_lines(by_corpus: Mapping | None) -> list[str]:
    """One line per corpus and split in which task examples were found ({corpus id: the result's
    to_dict()}, as evaluations and experiments store it); [] when none were, or nothing was checked."""
    lines = []
    for corpus_id, result in (by_corpus or {}).items():
        if not isinstance(result, Mapping) or not result.get("checked"):
            continue
        for split, found in result.get("splits", {}).items():
            if found.get("found"):
                lines.append(f"{_share(found['share'])} of the task's {split} examples ({found['found']} of "
                             f"{found['examples']}) occur in corpus {corpus_id} (exact line or a shared "
                             f"{result['n']}-word span): the scores on it may be inflated")
    return lines
