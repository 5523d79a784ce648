"""A sample domain corpus and labelled task, built on this machine from the docstrings of the
installed Python packages: real technical English, nothing downloaded and nothing copied into
the repository. The task is "which package is this docstring from?" (a docstring's summary,
with the package's own name removed); the corpus is the other docstrings, one per line.

Packages are read with `ast`, never imported: importing runs their code."""

from __future__ import annotations

import ast
import csv
import importlib.util
import os
import random
import re
import sysconfig
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from core.errors import ConfigError, CorpusError
from core.judge.contamination import TextIndex

# Preference order for the task's labels; the first installed ones with enough docstrings win.
DEMO_PACKAGES = ("numpy", "pandas", "torch", "sqlalchemy", "transformers", "streamlit", "plotly", "scipy", "sklearn",
                 "tokenizers", "rq", "redis")
# Names that spell a label out as well as the package's own: removed from its examples.
ALIASES = {"numpy": ("np",), "pandas": ("pd",), "sklearn": ("sk", "scikit-learn"), "streamlit": ("st",),
           "sqlalchemy": ("sa",), "torch": ("pytorch",)}
MIN_DOCSTRING_CHARS = 40
MIN_EXAMPLE_CHARS = 20
MAX_EXAMPLE_WORDS = 64
POOL_FACTOR = 2  # examples are sampled from this many times examples_per_label candidates

_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
# Control characters left after whitespace is collapsed (a "\x00" escape in a docstring is a
# real NUL): the corpus reader rejects such text as binary.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f]")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class DemoData:
    corpus_path: Path
    task_path: Path
    labels: list[str]
    corpus_documents: int
    task_examples: int


# --- finding and reading docstrings -----------------------------------------------------------

def site_packages_names() -> list[str]:
    """Every top-level package or module in the purelib/platlib site-packages folders."""
    paths = sysconfig.get_paths()
    names = set()
    for root in {paths["purelib"], paths["platlib"]}:
        if not os.path.isdir(root):
            continue
        for entry in os.listdir(root):
            path = Path(root) / entry
            name = entry[:-3] if entry.endswith(".py") and path.is_file() else entry
            # dunder names are installer artefacts (__pycache__, editable-install finders)
            if name.isidentifier() and not name.startswith("__") and (path.is_dir() or name != entry):
                names.add(name)
    return sorted(names)


def package_files(name: str) -> list[Path]:
    """The .py files of an installed top-level package (or its one file), sorted; found with
    importlib.util.find_spec, which locates a top-level package without importing it."""
    if "." in name:
        raise ValueError(f"'{name}' is not a top-level package name (finding a submodule imports its parent)")
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations:
        files: set[Path] = set()
        for location in spec.submodule_search_locations:
            files.update(path for path in Path(location).rglob("*.py") if path.is_file())
        return sorted(files)
    if spec.origin and spec.origin.endswith(".py") and os.path.isfile(spec.origin):
        return [Path(spec.origin)]
    return []


def file_docstrings(path: Path) -> list[str]:
    """Module, class and function docstrings of a .py file in source order, cleaned with
    inspect.cleandoc; [] when the file cannot be read, decoded or parsed."""
    try:
        with warnings.catch_warnings():  # invalid escape sequences in other people's code
            warnings.simplefilter("ignore")
            tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError, MemoryError, OSError):
        return []
    docstrings = []
    stack: list[ast.AST] = [tree]
    while stack:  # iterative: generated files nest deeper than the recursion limit
        node = stack.pop()
        if isinstance(node, _DOCUMENTED):
            docstring = ast.get_docstring(node, clean=True)
            if docstring:
                docstrings.append(docstring)
        # Expressions hold no def or class (lambdas have no docstring): skip them, it is faster.
        stack.extend(reversed([child for child in ast.iter_child_nodes(node) if not isinstance(child, ast.expr)]))
    return docstrings


def one_line(docstring: str) -> str | None:
    """The docstring with whitespace collapsed, or None if it is not plain UTF-8 text."""
    text = " ".join(docstring.split())
    if _CONTROL.search(text):
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape
        return None
    return text


def _docstrings(files: Sequence[Path]) -> Iterator[tuple[str, str]]:
    """(one-line text, cleaned docstring) of the files, long enough and without exact repeats."""
    seen: set[str] = set()
    for path in files:
        for docstring in file_docstrings(path):
            text = one_line(docstring)
            if text and len(text) >= MIN_DOCSTRING_CHARS and text not in seen:
                seen.add(text)
                yield text, docstring


def collect_docstrings(packages: Sequence[str] | None = None,
                       limit_per_package: int | None = None) -> dict[str, list[str]]:
    """Top-level package name -> its docstrings (module, class, function and method) of at
    least 40 characters, one line each, in sorted-file source order without exact repeats.
    packages=None reads every package in site-packages; packages that are not installed are
    left out."""
    names = site_packages_names() if packages is None else list(packages)
    result = {}
    for name in names:
        files = package_files(name)
        if not files:
            continue
        texts = []
        for text, _ in _docstrings(files):
            if limit_per_package is not None and len(texts) >= limit_per_package:
                break
            texts.append(text)
        result[name] = texts
    return result


# --- the task ----------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _name_pattern(package: str) -> re.Pattern:
    names = sorted({package, *ALIASES.get(package, ())}, key=len, reverse=True)
    # "np.array" -> "array": a qualifying dot goes with the name.
    return re.compile(r"\b(?:" + "|".join(map(re.escape, names)) + r")\b(?:\.(?=\w))?", re.IGNORECASE)


def example_text(docstring: str, package: str) -> str | None:
    """The task example of a cleaned docstring: its first paragraph without the package's name
    or aliases (whole words, any case), at most 64 words; None if under 20 characters."""
    first = _PARAGRAPH_BREAK.split(docstring.strip(), maxsplit=1)[0]
    words = _name_pattern(package).sub(" ", first).split()[:MAX_EXAMPLE_WORDS]
    text = one_line(" ".join(words))
    return text if text and len(text) >= MIN_EXAMPLE_CHARS else None


def _example_pool(package: str, seed: int, size: int, taken: set[str]) -> list[str]:
    """Up to `size` distinct examples of a package, from its files in a seeded order (reading
    stops once there are enough); texts already taken by another label are skipped."""
    files = package_files(package)
    random.Random(f"{seed}:{package}").shuffle(files)
    pool: dict[str, None] = {}
    for _, docstring in _docstrings(files):
        text = example_text(docstring, package)
        if text and text not in taken and text not in pool:
            pool[text] = None
            if len(pool) >= size:
                break
    return list(pool)


def _choose_labels(labels: int, examples_per_label: int, seed: int,
                   progress: Callable[[float], None] = lambda fraction: None) -> dict[str, list[str]]:
    """label -> candidate examples, for the first `labels` demo packages that have enough."""
    chosen: dict[str, list[str]] = {}
    found: list[str] = []
    taken: set[str] = set()
    size = POOL_FACTOR * examples_per_label
    for package in DEMO_PACKAGES:
        if len(chosen) == labels:
            break
        progress(len(chosen) / labels)
        pool = _example_pool(package, seed, size, taken)
        if not pool:
            continue
        found.append(f"{package} ({len(pool)}{'+' if len(pool) >= size else ''})")
        if len(pool) >= examples_per_label:
            chosen[package] = pool
            taken.update(pool)
    if len(chosen) < 2:
        raise CorpusError(
            f"the demo task needs 2 installed packages with {examples_per_label} usable docstrings each; found "
            f"{', '.join(found) or 'none of them'}: install more of {', '.join(DEMO_PACKAGES)} or ask for fewer "
            f"examples per label"
        )
    return chosen


def _write_task(path: Path, rows: list[tuple[str, str]]) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    os.replace(partial, path)


# --- the corpus --------------------------------------------------------------------------------

class _Contains:
    """Does a text contain any of a set of strings (all at least `width` characters long)?
    Exact: every string of length >= k + s - 1 has, at one of its first s offsets, a k-character
    piece that starts at a multiple of s in any text containing it, so the text is only looked
    up at every s-th position and each hit is verified."""

    def __init__(self, needles: set[str]):
        width = min(map(len, needles))
        self.k = max(1, width // 2)
        self.s = width - self.k + 1
        self.pieces: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for needle in needles:
            for offset in range(self.s):
                self.pieces[needle[offset:offset + self.k]].append((needle, offset))

    def __call__(self, text: str) -> bool:
        k, pieces = self.k, self.pieces
        for position in range(0, len(text) - k + 1, self.s):
            for needle, offset in pieces.get(text[position:position + k], ()):
                if position >= offset and text.startswith(needle, position - offset):
                    return True
        return False


def _corpus_lines(task: dict[str, str], max_bytes: int, rng: random.Random,
                  progress: Callable[[float], None] = lambda fraction: None) -> list[str]:
    """Docstrings of the installed packages, none of them a task example's source, holding a task
    text, equal to one after normalization or sharing a 13-word span with one (core.judge.contamination:
    the check evaluations make), drawn from the files in a seeded order until there are max_bytes
    of them, shuffled and cut to max_bytes. Reading stops early: parsing all of site-packages takes
    minutes."""
    files = sorted({(path, name) for name in site_packages_names() for path in package_files(name)})
    rng.shuffle(files)
    leaks = _Contains(set(task))
    overlaps = TextIndex(list(task))
    seen: set[str] = set()
    kept: list[str] = []
    size = 0
    for path, package in files:
        if size >= max_bytes:
            break
        progress(size / max_bytes)
        for docstring in file_docstrings(path):
            text = one_line(docstring)
            if not text or len(text) < MIN_DOCSTRING_CHARS or text in seen:
                continue
            seen.add(text)
            if example_text(docstring, package) in task or leaks(text) or overlaps.touches(text):
                continue
            kept.append(text)
            size += len(text.encode("utf-8")) + 1
    rng.shuffle(kept)
    lines, size = [], 0
    for text in kept:
        length = len(text.encode("utf-8")) + 1
        if size + length > max_bytes:
            break
        lines.append(text)
        size += length
    return lines


def _write_corpus(path: Path, lines: list[str]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(partial, path)


def build_demo(out_dir: Path, labels: int = 5, examples_per_label: int = 200, max_corpus_mb: float = 8.0,
               seed: int = 0, progress: Callable[[str, float], None] | None = None) -> DemoData:
    """Write out_dir/task.csv (text,label: which package a docstring summary comes from) and
    out_dir/corpus.txt (other docstrings, one per line, up to max_corpus_mb). The same seed on
    the same installed packages gives byte-identical files. `progress(stage, fraction)` hears how
    far it got (it reads thousands of source files: tens of seconds)."""
    say = progress or (lambda stage, fraction: None)
    if labels < 2:
        raise ConfigError(f"the demo task needs at least 2 labels, got {labels}")
    if examples_per_label < 1:
        raise ConfigError(f"examples per label must be at least 1, got {examples_per_label}")
    if max_corpus_mb <= 0:
        raise ConfigError(f"the corpus size must be positive, got {max_corpus_mb} MB")
    rng = random.Random(seed)
    pools = _choose_labels(labels, examples_per_label, seed,
                           lambda f: say("reading the docstrings of the task's packages", 0.4 * f))
    rows = [(text, label) for label, pool in pools.items() for text in rng.sample(pool, examples_per_label)]
    rng.shuffle(rows)  # a task file grouped by label would make naive splits one-sided
    lines = _corpus_lines(dict(rows), int(max_corpus_mb * 1_000_000), rng,
                          lambda f: say("gathering the corpus from other packages", 0.4 + 0.5 * f))
    say("writing the corpus and the task", 0.9)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task_path, corpus_path = out_dir / "task.csv", out_dir / "corpus.txt"
    _write_task(task_path, rows)
    _write_corpus(corpus_path, lines)
    return DemoData(corpus_path=corpus_path, task_path=task_path, labels=list(pools),
                    corpus_documents=len(lines), task_examples=len(rows))
