"""Task text in a corpus: the check itself (core.judge.contamination: exact normalized lines and shared
13-word spans), the corpora behind a model, and the warning an evaluation and an experiment give
when a model was trained on a corpus that holds the task's test examples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from conftest import build_tiny_bert, write_corpus, write_task_csv

from core.errors import Cancelled
from core.judge.contamination import (
    NGRAM,
    TextIndex,
    example_text,
    find_in_corpus,
    ngrams,
    normalize,
    warning_lines,
    words,
)
from db.models import Run

SENTENCE = ("the lens equation maps every point of the source plane onto the image plane of a thin gravitational "
            "lens with an einstein radius")  # 23 words


def span(start: int, length: int) -> str:
    return " ".join(SENTENCE.split()[start:start + length])


def test_normalization_ignores_case_whitespace_punctuation_and_compatibility_forms():
    assert words("  The  LENS-equation,\tmaps (every) point!  ") == ["the", "lens", "equation", "maps", "every", "point"]
    assert normalize("ﬁnite Ｆｏｏ ½") == normalize("finite foo 1/2")  # NFKC: ligature, full width, fraction
    assert list(ngrams(["a", "b", "c", "d"], 3)) == [("a", "b", "c"), ("b", "c", "d")]
    assert list(ngrams(["a", "b"], 3)) == []


def test_an_exact_line_is_found_after_normalization():
    texts = {"test": ["The quick brown fox jumps over the lazy dog", "A text that is nowhere in the corpus"]}
    corpus = ["something else entirely", "  THE quick, brown fox -- jumps over the LAZY dog!!  "]
    result = find_in_corpus(corpus, texts)
    assert result.splits["test"].exact == 1 and result.splits["test"].found == 1
    assert result.splits["test"].short == 2  # under 13 words: the whole-line check only
    # a short text inside a longer line is not a whole line, and spans under 13 words are not looked for
    inside = find_in_corpus(["I said the quick brown fox jumps over the lazy dog yesterday"], texts)
    assert inside.splits["test"].found == 0


def test_a_shared_13_word_span_is_found_and_a_12_word_one_is_not():
    text = SENTENCE.upper().replace(" ", ",  ")
    found = find_in_corpus([f"Before it: {span(5, NGRAM)}. And after it, more words."], {"dev": [text]})
    assert (found.splits["dev"].ngram, found.splits["dev"].exact, found.splits["dev"].short) == (1, 0, 0)
    missed = find_in_corpus([f"Before it: {span(5, NGRAM - 1)}. And after it, more words.", span(0, NGRAM - 1),
                             span(NGRAM - 1, 10)], {"dev": [text]})
    assert missed.splits["dev"].found == 0


def test_a_clean_corpus_gives_zero_and_shares_are_per_split():
    texts = {"dev": [SENTENCE, "alpha beta gamma", "one two three four"],
             "test": [span(0, 15), "delta epsilon", "zeta eta theta", "iota kappa"],
             "empty": []}
    clean = find_in_corpus(["nothing of the task is here", "nor here, in this line of text"], texts)
    assert not clean.found
    assert {name: (s.found, s.share) for name, s in clean.splits.items()} == \
        {"dev": (0, 0.0), "test": (0, 0.0), "empty": (0, 0.0)}
    # both dev and test hold the sentence's first 13 words; "Alpha  BETA gamma" is a dev line
    dirty = find_in_corpus([f"quoted: {span(0, NGRAM)} (1998)", "Alpha  BETA gamma.", "iota"], texts)
    assert dirty.documents == 3
    dev, test = dirty.splits["dev"], dirty.splits["test"]
    assert (dev.examples, dev.exact, dev.ngram, dev.found, dev.short) == (3, 1, 1, 2, 2)
    assert dev.share == pytest.approx(2 / 3)
    assert (test.examples, test.found, test.share) == (4, 1, 0.25)  # "iota" alone is not "iota kappa"
    data = dirty.to_dict()
    assert data["checked"] and data["n"] == NGRAM and "13 consecutive normalized words" in data["method"]
    assert json.loads(json.dumps(data))["splits"]["test"]["found"] == 1


def test_texts_sharing_an_ngram_are_all_marked_and_pairs_and_tokens_are_joined():
    index = TextIndex([f"first {SENTENCE}", f"{SENTENCE} second", "unrelated words only"])
    exact, shared = index.match(words(f"x {span(3, NGRAM)} y"))
    assert exact == [] and shared == {0, 1}
    assert index.touches("Unrelated words, only.") and not index.touches("unrelated words")
    pair = SimpleNamespace(text="is it raining", text_pair="it is wet outside", label="yes")
    tagged = SimpleNamespace(tokens=("Aspirin", "inhibits", "COX-1"), tags=("B-CHEM", "O", "B-GENE"))
    assert example_text(pair) == "is it raining it is wet outside"
    assert example_text(SimpleNamespace(text="alone", text_pair=None, label="no")) == "alone"
    assert example_text(tagged) == "Aspirin inhibits COX-1"


def test_progress_is_reported_and_a_cancel_stops_the_scan():
    lines = [f"line number {i}" for i in range(25_000)]
    seen = []
    find_in_corpus(lines, {"test": ["line number 3"]}, total_chars=sum(len(x) + 1 for x in lines),
                   progress=lambda stage, f: seen.append(f))
    assert seen[0] < seen[-2] < 1.0 and seen[-1] == 1.0
    with pytest.raises(Cancelled):
        find_in_corpus(lines, {"test": ["line number 3"]}, cancel=lambda: True)


def test_warning_lines_name_the_share_the_counts_and_the_corpus():
    found = {"split": {"examples": 200, "exact": 3, "ngram": 5, "found": 7, "short": 20, "share": 0.035}}
    result = {"checked": True, "n": 13, "documents": 10, "splits": {"dev": dict(found["split"], found=0, share=0.0),
                                                                      "test": found["split"]}}
    assert warning_lines({"2": result, "5": {"checked": False, "reason": "not checked yet"}}) == [
        "3.5% of the task's test examples (7 of 200) occur in corpus 2 (exact line or a shared 13-word span): "
        "the scores on it may be inflated"]
    assert warning_lines(None) == [] and warning_lines({}) == []


# --- the worker: corpora behind a model, evaluations and experiments --------------------------------


@pytest.fixture
def cli(home):
    env = {**os.environ, "ADAPT_DISTILL_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("DATABASE_URL", None)

    def run(*args):
        result = subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=env,
                                timeout=600)
        assert result.returncode == 0, result.stderr
        return result

    return run


def leaky_corpus(path, texts: list[str]):
    """A generated corpus with the texts among its lines, written differently (case, spacing, punctuation)."""
    write_corpus(path, documents=400)
    variants = [texts[0], texts[1].upper() + " !", "  " + texts[2].replace(" ", " ,  ") + "."]
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in variants))
    return path


def test_an_evaluation_finds_test_text_in_the_adaptation_corpus_and_the_cli_warns(sessions, cli, tmp_path):
    from core.judge.tasks import load_task
    from db import store
    from db.models import RunKind
    from worker import contamination, corpora, evaluation, training
    from worker.lifecycle import execute_run

    task, _ = evaluation.add_task(sessions, write_task_csv(tmp_path / "t.csv"), "classification")
    test_texts = [x.text for x in load_task(task.path).splits["test"]]
    corpus, _ = corpora.add_corpus(sessions, leaky_corpus(tmp_path / "c.txt", test_texts[:3]))
    teacher = build_tiny_bert(tmp_path / "tiny")
    adapted = training.create_adaptation(sessions, corpus.id, str(teacher), {"steps": 2, "seq_len": 32,
                                                                             "batch_size": 4, "eval_every": 2})
    execute_run(sessions, adapted.id)

    result = cli("evaluate", "--model", f"run:{adapted.id}", "--task", str(task.id), "--seeds", "1", "--epochs", "1",
                 "--max-length", "32")
    warning = (f"warning: 12.5% of the task's test examples (3 of 24) occur in corpus {corpus.id} (exact line or a "
               f"shared 13-word span): the scores on it may be inflated")
    assert result.stderr.splitlines() == [warning], result.stderr
    with sessions.begin() as session:
        (run,) = store.rows(session, Run, kind=RunKind.evaluation, limit=100)
        data = evaluation.evaluation_dict(session, run.id)  # what `evaluate --json` prints
    found = data["contamination"][str(corpus.id)]
    assert found["splits"]["test"] == {"examples": 24, "exact": 3, "ngram": 0, "found": 3, "short": 24,
                                       "share": 0.125}
    assert found["splits"]["dev"]["found"] == 0 and set(found["splits"]) == {"dev", "test"}
    assert data["metrics"]["seeds"] == 1  # the scores are there as before

    # kept next to the task: a second check of the same corpus content reads it, not the corpus
    assert contamination.cache_file(task.path, corpus.sha256).is_file()
    again = contamination.check(tmp_path / "no-such-corpus.txt", corpus.sha256, None, task.path)
    assert again == found
    with sessions.begin() as session:
        assert contamination.lineage_corpora(session, str(teacher)) == []  # a folder: no corpus behind it


def test_an_experiment_shows_the_check_of_its_corpus_and_every_corpus_behind_its_models(sessions, redis, cli,
                                                                                      tmp_path):
    from core.configs import VocabConfig
    from core.judge.tasks import load_task
    from db import store
    from worker import contamination, corpora, evaluation, vocabulary
    from worker.experiments import create_experiment, experiment_view

    task, _ = evaluation.add_task(sessions, write_task_csv(tmp_path / "t.csv"), "classification")
    test_texts = [x.text for x in load_task(task.path).splits["test"]]
    corpus, _ = corpora.add_corpus(sessions, leaky_corpus(tmp_path / "c.txt", test_texts[:3]))
    other, _ = corpora.add_corpus(sessions, write_corpus(tmp_path / "other.txt", documents=300, seed=1))
    teacher = build_tiny_bert(tmp_path / "teacher", words=["the", "of", "and", "in", "with", "was"])
    analysis, _ = vocabulary.create_analysis(sessions, other.id, str(teacher), VocabConfig(step=20, max_added=40))
    expansion = vocabulary.create_expansion(sessions, analysis.id, vocabulary.PICK)
    small = {"steps": 2, "seq_len": 32, "batch_size": 4, "eval_every": 2}
    runs = create_experiment(sessions, corpus.id, task.id, f"run:{expansion.id}", adapt=small, distill=small,
                             finetune={"seeds": 1, "epochs": 1, "max_length": 32}, name="leaky")
    experiment_id = runs[0].id
    with sessions.begin() as session:
        members = {m["role"]: m["model"] for m in store.get(session, Run, experiment_id).params["members"]}
        assert contamination.lineage_corpora(session, members["base teacher"]) == []
        assert contamination.lineage_corpora(session, members["general student"]) == [corpus.id]
        # adapted from the expansion (the other corpus's analysis), and distilled into the adapted student
        assert contamination.lineage_corpora(session, members["adapt-and-distill"]) == sorted([corpus.id, other.id])
        view = experiment_view(session, experiment_id)
    assert view["contamination"] == {str(corpus.id): contamination.NOT_CHECKED}  # never scanned on a page render
    assert cli("experiments", "show", str(experiment_id)).stderr == ""

    contamination.check(corpus.path, corpus.sha256, corpus.bytes, task.path)  # what its evaluations do first
    with sessions.begin() as session:
        view = experiment_view(session, experiment_id)
    assert view["contamination"][str(corpus.id)]["splits"]["test"]["found"] == 3
    shown = cli("experiments", "show", str(experiment_id))
    assert shown.stdout.startswith(f"experiment {experiment_id} · leaky")
    assert shown.stderr.splitlines() == [
        f"warning: 12.5% of the task's test examples (3 of 24) occur in corpus {corpus.id} (exact line or a shared "
        f"13-word span): the scores on it may be inflated"]
    assert json.loads(cli("experiments", "show", str(experiment_id), "--json").stdout)["contamination"] == \
        view["contamination"]

    from test_app_judging import open_page

    page = open_page("experiments")
    assert page.selectbox(key="experiments_selected").value == experiment_id
    assert [w.value for w in page.warning] == [
        f"12.5% of the task's test examples (3 of 24) occur in corpus {corpus.id} (exact line or a shared 13-word "
        f"span): the scores on it may be inflated"]
