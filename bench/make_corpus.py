"""Generate a synthetic "domain" corpus: one document per line, deterministic by seed.

    python bench/make_corpus.py bench/data/domain100.txt --mb 100 --seed 0

Word types are built from syllables (plus a few domain-like suffixes and accented vowels), so
most are out of the bert-base vocabulary; they are drawn with a Zipf-Mandelbrot law behind a
head of common English function words. Text has sentence-initial capitals, proper nouns and
acronyms, commas and full stops, parentheses, hyphenated compounds (some with Greek letters),
numbers, and lines of 5-400 words. Everything is vectorized per chunk, so 100 MB takes a few
seconds."""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

FUNCTION_WORDS = (
    "the of and in to a is for with that by was on are as were from at be this which or an "
    "these we not it but has have been also than can may more between both after into during their "
    "other all two using its our one such however when high most only"
).split()

ONSETS = ["", "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
          "ch", "th", "ph", "st", "tr", "pr", "cl", "gr", "qu", "x", "y", "sk", "br"]
NUCLEI = ["a", "e", "i", "o", "u", "y", "ae", "ou", "io", "ea", "é", "ü", "ø", "à", "ï"]
NUCLEUS_WEIGHTS = [10, 10, 9, 9, 6, 3, 2, 2, 2, 2, 1.2, 0.6, 0.4, 0.4, 0.3]
CODAS = ["", "", "", "", "", "", "", "", "", "n", "r", "s", "l", "m", "x", "t", "nd", "st", "ph", "c", "k"]
SUFFIXES = ["ase", "ine", "itis", "ogen", "oma", "ide", "ate", "ol", "yl", "ic", "ation", "ement",
            "osis", "ology", "ium", "ectomy"]
GREEK = ["α", "β", "γ", "δ", "κ", "μ", "ω"]

CHUNK_TOKENS = 1_000_000


def make_types(rng: np.random.Generator, n_types: int) -> list[str]:
    """Distinct word types in rank order: function words first, then syllable words."""
    n = int(n_types * 1.3) + 1000  # some collide; dedupe below
    syllables = rng.choice([1, 2, 3, 4, 5], size=n, p=[0.18, 0.40, 0.28, 0.11, 0.03])
    onset = rng.integers(0, len(ONSETS), size=(n, 5))
    p = np.asarray(NUCLEUS_WEIGHTS) / sum(NUCLEUS_WEIGHTS)
    nucleus = rng.choice(len(NUCLEI), size=(n, 5), p=p)
    coda = rng.integers(0, len(CODAS), size=(n, 5))
    suffix = np.where(rng.random(n) < 0.25, rng.integers(0, len(SUFFIXES), size=n), -1)
    style = rng.random(n)  # < 0.05 proper noun, < 0.065 acronym (short words), else lowercase
    seen = set(FUNCTION_WORDS)
    types = list(FUNCTION_WORDS)
    for i in range(n):
        k = syllables[i]
        word = "".join(ONSETS[onset[i, j]] + NUCLEI[nucleus[i, j]] + CODAS[coda[i, j]] for j in range(k))
        if suffix[i] >= 0:
            word += SUFFIXES[suffix[i]]
        if style[i] < 0.05:
            word = word.capitalize()
        elif style[i] < 0.065 and len(word) <= 5:
            word = word.upper()
        if word not in seen:
            seen.add(word)
            types.append(word)
            if len(types) >= n_types:
                break
    return types


def make_numbers(rng: np.random.Generator, n: int = 20000) -> np.ndarray:
    kind = rng.integers(0, 5, size=n)
    a = rng.integers(0, 1000, size=n)
    b = rng.integers(0, 100, size=n)
    out = []
    for k, x, y in zip(kind.tolist(), a.tolist(), b.tolist()):
        if k == 0:
            out.append(str(x))
        elif k == 1:
            out.append(f"{x}.{y}")
        elif k == 2:
            out.append(f"{y}.{x % 10}%")
        elif k == 3:
            out.append(str(1900 + x % 125))
        else:
            out.append(f"{y}-{y + x % 50}")
    return np.asarray(out, dtype=object)


def generate(path: str, target_bytes: int, seed: int = 0, n_types: int = 300_000, zipf_s: float = 1.05) -> tuple[int, int, int]:
    """Write about target_bytes (never more) to path; returns (bytes, lines, tokens)."""
    rng = np.random.default_rng(seed)
    types = make_types(rng, n_types)
    lower = np.asarray(types, dtype=object)
    capital = np.asarray([t[:1].upper() + t[1:] for t in types], dtype=object)
    ranks = np.arange(1, len(types) + 1, dtype=np.float64)
    cdf = np.cumsum(1.0 / (ranks + 2.7) ** zipf_s)
    cdf /= cdf[-1]
    numbers = make_numbers(rng)
    greek = np.asarray(GREEK, dtype=object)

    written = lines_written = tokens_written = 0
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        while written < target_bytes:
            # line lengths: log-normal around ~90 words, clipped to 5..400
            lengths = np.clip(rng.lognormal(4.3, 0.8, size=CHUNK_TOKENS // 40), 5, 400).astype(np.int64)
            lengths = lengths[: int(np.searchsorted(np.cumsum(lengths), CHUNK_TOKENS)) + 1]
            m = int(lengths.sum())
            ends = np.cumsum(lengths) - 1
            idx = np.searchsorted(cdf, rng.random(m))
            # sentence ends: line ends plus ~1 in 14 words
            stop = rng.random(m) < 1 / 14
            stop[ends] = True
            start = np.zeros(m, dtype=bool)
            start[0] = True
            start[1:] = stop[:-1]
            tokens = np.where(start, capital[idx], lower[idx])
            r = rng.random(m)
            num = r < 0.03
            tokens[num] = numbers[rng.integers(0, len(numbers), size=int(num.sum()))]
            hyphen = (r >= 0.03) & (r < 0.04)
            other = lower[np.searchsorted(cdf, rng.random(int(hyphen.sum())))]
            tokens[hyphen] = tokens[hyphen] + "-" + other
            greek_mask = (r >= 0.04) & (r < 0.043)
            tokens[greek_mask] = greek[rng.integers(0, len(greek), size=int(greek_mask.sum()))] + "-" + tokens[greek_mask]
            paren = (r >= 0.043) & (r < 0.05) & ~stop
            tokens[paren] = "(" + tokens[paren] + ")"
            comma = (rng.random(m) < 0.06) & ~stop
            tokens[comma] = tokens[comma] + ","
            marks = np.asarray([".", ".", ".", ".", ".", ".", ".", ".", "?", ";", ":", "!"], dtype=object)
            tokens[stop] = tokens[stop] + marks[rng.integers(0, len(marks), size=int(stop.sum()))]

            words = tokens.tolist()
            begin = 0
            chunk = []
            for length in lengths.tolist():
                line = " ".join(words[begin : begin + length]) + "\n"
                begin += length
                size = len(line.encode("utf-8"))
                if written + size > target_bytes:
                    written = target_bytes  # stop: the next line would overshoot
                    break
                chunk.append(line)
                written += size
                lines_written += 1
                tokens_written += length
            out.write("".join(chunk))
    return os.path.getsize(path), lines_written, tokens_written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output .txt path (one document per line)")
    parser.add_argument("--mb", type=float, default=100.0, help="size in MB (10^6 bytes), default 100")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--types", type=int, default=300_000, help="number of distinct word types (default 300000)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    size, lines, tokens = generate(args.out, int(args.mb * 1_000_000), args.seed, args.types)
    print(
        f"wrote {args.out}: {size / 1e6:.1f} MB, {lines} lines, {tokens} words "
        f"in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
