"""worker.demo_data: docstrings read with ast from a fake package (never imported), and the demo
task and corpus built from the packages really installed in the virtualenv."""

from __future__ import annotations

import csv
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from core.errors import CorpusError
from worker import demo_data as demo
from worker.demo_data import DEMO_PACKAGES, build_demo, collect_docstrings, example_text, site_packages_names

FAKE = "fakepkg_lensing"

INIT = '''"""The fake package computes gravitational lensing of distant quasars."""
raise SystemExit("fakepkg_lensing must never be imported")


class Lens:
    """A thin gravitational lens with an Einstein radius in arcseconds."""

    def deflect(self, x):
        """Deflection angle of a ray at impact parameter x, in arcseconds."""

    def short(self):
        """Too short to keep."""
'''

HELPERS = '''"""Helpers."""


def magnification(source):
    """Integrate the lens equation
    over the whole source plane.

    Returns the magnification map.
    """

    def inner():
        """A nested helper that is documented with enough words to be kept."""


async def fetch_catalogue():
    """Fetch the quasar catalogue asynchronously from the survey archive."""


def copy():
    """A thin gravitational lens with an Einstein radius in arcseconds."""
'''

BROKEN = '''"""This module has a syntax error and must be skipped entirely, docstring included."""
def broken(:
'''


@pytest.fixture
def fake_package(tmp_path, monkeypatch) -> Path:
    package = tmp_path / FAKE
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text(INIT)
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "helpers.py").write_text(HELPERS)
    (package / "broken.py").write_text(BROKEN)
    # Not UTF-8 and no coding cookie: cannot be decoded, so it is skipped.
    (package / "latin.py").write_bytes('"""Caf\xe9 docstring in Latin-1, which is not valid UTF-8 source."""\n'
                                       .encode("latin-1"))
    (tmp_path / "fake_single_module.py").write_text('"""A single-file module documented with a long enough line."""\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    return package


def test_collect_docstrings_reads_without_importing(fake_package):
    result = collect_docstrings([FAKE, "fake_single_module", "no_such_package_xyz"])
    assert FAKE not in sys.modules  # the SystemExit at the top of the package never ran
    assert result[FAKE] == [
        # __init__.py: module, class, method (the 17-character "Too short to keep." is dropped)
        "The fake package computes gravitational lensing of distant quasars.",
        "A thin gravitational lens with an Einstein radius in arcseconds.",
        "Deflection angle of a ray at impact parameter x, in arcseconds.",
        # broken.py (syntax error) and latin.py (not UTF-8) are skipped; sub/helpers.py:
        # "Helpers." is too short, the cleaned docstring is collapsed to one line, nested and
        # async functions count, and copy()'s docstring repeats Lens's exactly.
        "Integrate the lens equation over the whole source plane. Returns the magnification map.",
        "A nested helper that is documented with enough words to be kept.",
        "Fetch the quasar catalogue asynchronously from the survey archive.",
    ]
    assert result["fake_single_module"] == ["A single-file module documented with a long enough line."]
    assert "no_such_package_xyz" not in result
    assert collect_docstrings([FAKE], limit_per_package=2)[FAKE] == result[FAKE][:2]


def test_site_packages_names():
    names = site_packages_names()
    assert "numpy" in names and "torch" in names
    assert names == sorted(names)
    assert not any(name.startswith("__") or not name.isidentifier() for name in names)


def test_example_text_removes_the_label_and_keeps_the_summary():
    docstring = "Convert the input to an array with np.asarray, as NumPy does.\n\nParameters\n----------\na : x"
    assert example_text(docstring, "numpy") == "Convert the input to an array with asarray, as does."
    assert example_text("Wrap scikit-learn and sklearn estimators in a pipeline.", "sklearn") == \
        "Wrap and estimators in a pipeline."
    assert example_text("A numpy helper.\n\nA much longer second paragraph here.", "numpy") is None  # < 20 chars
    assert len(example_text(" ".join(["word"] * 100), "numpy").split()) == 64


def test_contains_finds_every_occurrence():
    contains = demo._Contains({"gravitational lensing of quasars", "Einstein radius in arcsec"})
    for prefix in range(30):  # every alignment against the stride
        assert contains("x" * prefix + "strong gravitational lensing of quasars here")
        assert contains("y" * prefix + "the Einstein radius in arcseconds")
    assert not contains("gravitational lensing of quasar")
    assert not contains("Einstein radius in arcse")


@pytest.fixture(scope="module")
def demo_builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    options = dict(labels=3, examples_per_label=30, max_corpus_mb=0.5, seed=0)
    heard: list[tuple[str, float]] = []
    first = build_demo(root / "a", **options, progress=lambda stage, fraction: heard.append((stage, fraction)))
    return first, build_demo(root / "b", **options), heard


def test_build_demo_says_how_far_it_got(demo_builds):
    *_, heard = demo_builds
    fractions = [fraction for _, fraction in heard]
    assert fractions == sorted(fractions) and 0 <= fractions[0] < 0.4 and fractions[-1] == 0.9
    assert [stage for stage in dict.fromkeys(stage for stage, _ in heard)] == [
        "reading the docstrings of the task's packages", "gathering the corpus from other packages",
        "writing the corpus and the task"]
    assert len(heard) > 10, "heard along the way, not only at the end"


def test_build_demo_task_and_corpus(demo_builds):
    data, *_ = demo_builds
    assert data.task_path.is_file() and data.corpus_path.is_file()
    assert len(data.labels) == 3
    assert data.labels == [p for p in DEMO_PACKAGES if p in data.labels]  # in preference order
    with open(data.task_path, encoding="utf-8", newline="") as source:
        rows = list(csv.DictReader(source))
    assert len(rows) == data.task_examples == 90
    assert Counter(row["label"] for row in rows) == {label: 30 for label in data.labels}
    texts = [row["text"] for row in rows]
    assert len(set(texts)) == len(texts)
    corpus = data.corpus_path.read_text(encoding="utf-8")
    lines = corpus.splitlines()
    assert len(lines) == data.corpus_documents > 100
    assert len(corpus.encode("utf-8")) <= 500_000
    assert all(len(line) >= 40 for line in lines)
    for row in rows:
        assert len(row["text"]) >= 20 and len(row["text"].split()) <= 64
        assert row["text"] not in corpus, f"task text leaked into the corpus: {row['text']!r}"
        assert not re.search(rf"\b{re.escape(row['label'])}\b", row["text"], re.IGNORECASE), row


def test_build_demo_is_deterministic(demo_builds):
    first, second, _ = demo_builds
    assert first.task_path.read_bytes() == second.task_path.read_bytes()
    assert first.corpus_path.read_bytes() == second.corpus_path.read_bytes()
    assert (first.labels, first.corpus_documents) == (second.labels, second.corpus_documents)


def test_build_demo_needs_two_packages(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_PACKAGES", ("no_such_package_xyz", "numpy"))
    with pytest.raises(CorpusError, match=r"needs 2 installed packages .* found numpy \(10\+\)"):
        build_demo(tmp_path, labels=2, examples_per_label=5)
    assert not (tmp_path / "task.csv").exists()


def test_build_demo_corpus_holds_no_task_text(demo_builds):
    """No task text (train, dev or test) in the corpus: none is a whole line after normalization,
    none shares a 13-word span with a line (the check evaluations make, core.judge.contamination)."""
    from core.judge.contamination import find_in_corpus

    data, *_ = demo_builds
    with open(data.task_path, encoding="utf-8", newline="") as source:
        texts = [row["text"] for row in csv.DictReader(source)]
    result = find_in_corpus(data.corpus_path.read_text(encoding="utf-8").splitlines(), {"task": texts})
    assert result.documents == data.corpus_documents and result.splits["task"].examples == 90
    assert (result.splits["task"].exact, result.splits["task"].ngram) == (0, 0)


def test_corpus_lines_drop_a_docstring_sharing_13_words_with_a_task_text():
    import random

    from core.judge.contamination import TextIndex, words

    size = 100_000
    before = demo._corpus_lines({"placeholder text of no docstring at all": "x"}, size, random.Random(3))
    line = next(line for line in before if len(words(line)) >= 20)
    # 13 of its words, written differently: no longer a substring, still the same span
    text = " , ".join(words(line)[2:15]).upper()
    after = demo._corpus_lines({text: "x"}, size, random.Random(3))
    assert line not in after and not any(TextIndex([text]).touches(other) for other in after)
    assert len(after) >= len(before) - 5  # only that docstring (and its near copies) is gone
