"""The dashboard through Streamlit's AppTest: every page, driven by its widgets, against a real
SQLite store, a real Redis and real analyses of generated corpora. Nothing is mocked."""

from __future__ import annotations

import gzip
import json
import random
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from streamlit.testing.v1 import AppTest

from core.configs import VocabConfig
from core.errors import ConfigError
from core.vocab.curve import CurvePoint, pick
from db import store
from db.models import Corpus, CurvePointRow, Run, RunKind, RunStatus, VocabAnalysis
from worker import corpora, lifecycle, vocabulary

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "app" / "main.py"

PREFIXES = ["neuro", "cardio", "hepato", "nephro", "osteo", "gastro", "dermato", "hemato", "immuno", "onco",
            "myelo", "angio", "broncho", "cyto", "endo", "fibro", "glyco", "histo", "lipo", "lympho", "myo",
            "patho", "pneumo", "thrombo", "vaso"]
ROOTS = ["blast", "cyt", "gen", "kin", "lys", "morph", "path", "phag", "plas", "spor", "troph", "tox", "zym",
         "derm", "stat", "cardi", "gastr", "hepat", "lip", "nephr", "oste", "pneum", "thromb", "vascul", "myel"]
SUFFIXES = ["oma", "itis", "osis", "ase", "ic", "ine", "ide", "emia", "ectomy", "ology", "opathy", "ocyte",
            "ogenic", "oid", "al", "uria", "algia", "ostomy", "plasty"]
COMMON = ("the of and in patients with was were to a for by is treated showed after before increased reduced "
          "levels cells tumor response therapy dose group study clinical results significant associated").split()


def domain_corpus(documents: int = 3000, words: int = 3000, seed: int = 0) -> str:
    """Biomedical-looking text: Zipf-distributed compound terms among common words, a document a line.
    Rich enough that a WordPiece trainer finds thousands of tokens the base vocabulary lacks."""
    rng = random.Random(seed)
    lexicon: set[str] = set()
    while len(lexicon) < words:
        term = rng.choice(PREFIXES) + rng.choice(ROOTS) + rng.choice(SUFFIXES)
        lexicon.add(rng.choice(PREFIXES) + term if rng.random() < 0.3 else term)
    terms = sorted(lexicon)
    rng.shuffle(terms)
    weights = [1 / (i + 1) ** 1.05 for i in range(len(terms))]
    lines = []
    for _ in range(documents):
        tokens = [rng.choice(COMMON) if rng.random() < 0.45 else rng.choices(terms, weights)[0]
                  for _ in range(rng.randint(10, 24))]
        lines.append(" ".join(tokens).capitalize() + ".")
    return "\n".join(lines) + "\n"


def open_page(page: str | None = None) -> AppTest:
    """The app from its entry point (as `streamlit run app/main.py`), switched to a page."""
    at = AppTest.from_file(str(MAIN), default_timeout=120).run()
    assert not at.exception, at.exception
    if page:
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, at.exception
    return at


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def chips(html: str) -> list[tuple[str, int]]:
    """(token, id) pairs from the tokenization chips."""
    return [(token, int(i)) for i, token in re.findall(r'title="id (\d+)"[^>]*>([^<]*)</span>', html)]


def tokenizations(at: AppTest) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(base, expanded) tokens as the comparison shows them."""
    shown = [chips(m.value) for m in at.markdown if 'title="id ' in m.value]
    assert len(shown) == 2, "expected the base and the expanded tokenization side by side"
    return shown[0], shown[1]


def curve_spec(at: AppTest) -> dict:
    charts = at.get("plotly_chart")
    assert len(charts) == 1, "expected one Plotly curve"
    return json.loads(charts[0].proto.spec)


def picked_in_chart(spec: dict) -> int:
    (trace,) = [t for t in spec["data"] if t.get("name", "").startswith("pick")]
    return trace["x"][0]


def run_queued_jobs(redis_url: str) -> None:
    """Work the cpu queue in this process until it is empty (the job functions the worker runs)."""
    from redis import Redis
    from rq import SimpleWorker

    from worker.queueing.queues import SERIALIZER, get_queue

    connection = Redis.from_url(redis_url)
    worker = SimpleWorker([get_queue("cpu", connection)], connection=connection, serializer=SERIALIZER)
    worker.work(burst=True)


# --- fixtures ----------------------------------------------------------------------------------

@pytest.fixture
def corpus_bytes() -> bytes:
    return domain_corpus(documents=400, words=600, seed=1).encode()


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """A data folder with one corpus and one finished analysis (bundled base, step 200, max 800),
    shared by the read-mostly vocabulary tests of this module."""
    from db.migrate import upgrade
    from db.session import get_sessionmaker

    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("analysed") / "home"
        patch.setenv("ADAPT_DISTILL_HOME", str(root))
        patch.delenv("DATABASE_URL", raising=False)
        upgrade()
        sessions = get_sessionmaker()
        source = root.parent / "domain.txt"
        source.write_text(domain_corpus(), encoding="utf-8")
        corpus, _ = corpora.add_corpus(sessions, source, "clinical notes")
        analysis, _ = vocabulary.create_analysis(sessions, corpus.id, "bundled",
                                              VocabConfig(step=200, max_added=800, threshold=0.01))
        vocabulary.execute_analysis(sessions, analysis.run_id, lifecycle.Reporter(sessions, analysis.run_id))
        with sessions.begin() as session:
            summary = vocabulary.analysis_summary(store.get(session, VocabAnalysis, analysis.id))
        yield SimpleNamespace(home=root, sessions=sessions, corpus_id=corpus.id, analysis_id=analysis.id,
                              run_id=analysis.run_id, summary=summary)


# --- overview ----------------------------------------------------------------------------------

def test_overview_counts_what_exists_and_says_when_redis_is_not_set(sessions, monkeypatch, tmp_path):
    monkeypatch.delenv("REDIS_URL", raising=False)
    at = open_page()
    assert at.title[0].value == "adapt-distill"
    assert metric(at, "Corpora") == "0"
    assert any("REDIS_URL is not set" in w for w in texts(at.sidebar.warning))
    assert "Nothing has run yet." in texts(at.caption)

    source = tmp_path / "notes.txt"
    source.write_text(domain_corpus(documents=50, words=80), encoding="utf-8")
    corpora.add_corpus(sessions, source)
    at.run()
    assert metric(at, "Corpora") == "1"


# --- corpora -----------------------------------------------------------------------------------

def test_upload_is_stored_listed_previewed_and_deleted(sessions, home, corpus_bytes):
    at = open_page("corpora")
    assert "No corpus yet: upload one above." in texts(at.info)

    at.text_input(key="corpora_name").input("Clinical notes")
    at.file_uploader[0].upload("notes.txt", corpus_bytes, "text/plain")
    at.run()
    assert not at.exception and not at.error
    with sessions.begin() as session:
        (corpus,) = store.rows(session, Corpus)
        corpus_id, stored_path, documents = corpus.id, Path(corpus.path), corpus.documents
    assert documents == 400
    assert any(f"Added corpus {corpus_id} 'Clinical notes': 400 documents" in s for s in texts(at.success))
    assert stored_path.is_file() and stored_path.parent == home / "corpora"
    assert list((home / "uploads").iterdir()) == [], "the upload copy must be removed after ingest"
    assert at.file_uploader[0].value is None, "the uploader is emptied so the server drops the bytes"

    table = at.dataframe[0].value
    assert list(table["name"]) == ["Clinical notes"]
    assert int(table["documents"].iloc[0]) == 400
    assert {"id", "bytes", "words", "distinct_words", "duplicates", "mean_length"} <= set(table.columns)
    preview = at.dataframe[1].value
    assert list(preview["document"])[:3] == corpus_bytes.decode().splitlines()[:3]

    # The same content again, gzip-compressed under another name: recognised, not duplicated.
    at.file_uploader[0].upload("again.txt.gz", gzip.compress(corpus_bytes), "application/gzip")
    at.run()
    assert any(f"already exists as corpus {corpus_id}" in i for i in texts(at.info))
    assert len(at.dataframe[0].value) == 1

    # The Tokenized tab lists the corpus's token streams and drops them.
    assert any("Not tokenized yet" in c for c in texts(at.caption))
    from conftest import build_tiny_bert

    from core.model_io import load_tokenizer
    from core.train.tokens import CachedCorpus
    from db import settings

    tokenizer = load_tokenizer(build_tiny_bert(home / "tiny"))
    with sessions.begin() as session:
        sha = store.get(session, Corpus, corpus_id).sha256
    stream = CachedCorpus(stored_path, sha, documents, settings.token_cache_dir()).token_stream(tokenizer)
    at.run()
    assert any("1 token stream" in c for c in texts(at.caption))
    assert int(at.dataframe[2].value["tokens"].iloc[0]) == len(stream)  # table, preview, streams
    at.button(key="corpora_drop_tokens").click().run()
    assert any(f"Dropped the token streams of corpus {corpus_id}" in s for s in texts(at.success))
    assert list(settings.token_cache_dir().iterdir()) == []

    # Delete asks first; Cancel keeps the corpus.
    at.button(key="corpora_delete").click().run()
    assert any("cannot be undone" in w for w in texts(at.warning))
    at.button(key="corpora_delete_no").click().run()
    with sessions.begin() as session:
        assert len(store.rows(session, Corpus)) == 1
    at.button(key="corpora_delete").click().run()
    at.button(key="corpora_delete_yes").click().run()
    assert not at.exception
    with sessions.begin() as session:
        assert store.rows(session, Corpus) == []
    assert not stored_path.exists()
    assert "No corpus yet: upload one above." in texts(at.info)
    assert any("Deleted corpus" in s for s in texts(at.success))


def test_upload_errors_are_one_line_and_the_text_field_is_honoured(sessions, home):
    records = "".join(json.dumps({"id": i, "body": f"document number {i} about lymphoma"}) + "\n" for i in range(20))
    at = open_page("corpora")

    at.file_uploader[0].upload("notes.jsonl", records.encode(), "application/json")
    at.run()
    assert not at.exception
    assert len(at.error) == 1
    assert "has no field 'text'" in at.error[0].value and "\n" not in at.error[0].value

    at.text_input(key="corpora_text_field").input("body")
    at.file_uploader[0].upload("notes.jsonl", records.encode(), "application/json")
    at.run()
    assert not at.error
    assert any("20 documents" in s for s in texts(at.success))

    at.file_uploader[0].upload("weights.txt", b"\x00\x01\x02binary", "text/plain")
    at.run()
    assert [e for e in texts(at.error)] == ["weights.txt looks binary (it contains NUL bytes): upload plain text, "
                                            "JSONL, CSV or TSV"]
    at.file_uploader[0].upload("tiny.txt", b"one line only\n", "text/plain")
    at.run()
    assert "too small" in at.error[0].value
    with sessions.begin() as session:
        assert len(store.rows(session, Corpus)) == 1
    assert list((home / "uploads").iterdir()) == []


def test_add_upload_keeps_the_upload_name_and_format(sessions, home):
    from app.data import corpora as corpora_data

    rows = "id,text\n" + "".join(f"{i},row {i} of the table with words\n" for i in range(15))
    corpus, created = corpora_data.add_upload(sessions, "../../evil dir/table.csv.gz", gzip.compress(rows.encode()),
                                      text_field="text")
    assert created and corpus["format"] == "csv" and corpus["documents"] == 15
    assert corpus["name"] == "table.csv.gz" and corpus["source_name"] == "table.csv.gz"
    assert list((home / "uploads").iterdir()) == []
    assert corpora_data.list_corpora(sessions)[0]["id"] == corpus["id"], "the cached list is cleared after a write"


# --- vocabulary: starting and following an analysis ---------------------------------------------

def test_start_without_redis_says_how_to_start_it(sessions, monkeypatch, tmp_path):
    monkeypatch.delenv("REDIS_URL", raising=False)
    source = tmp_path / "notes.txt"
    source.write_text(domain_corpus(documents=60, words=80), encoding="utf-8")
    corpora.add_corpus(sessions, source)
    at = open_page("vocabulary")
    assert "No analysis of this corpus yet: set the options above and start one." in texts(at.info)
    at.button[0].click().run()  # Start analysis
    assert not at.exception
    assert texts(at.error) == ["REDIS_URL is not set: start everything with `adapt-distill up`, or set REDIS_URL"]
    with sessions.begin() as session:
        assert store.rows(session, VocabAnalysis) == []


def test_bad_options_and_base_model_are_reported(sessions, home, redis, tmp_path):
    source = tmp_path / "notes.txt"
    source.write_text(domain_corpus(documents=60, words=80), encoding="utf-8")
    corpora.add_corpus(sessions, source)
    at = open_page("vocabulary")
    at.number_input(key="vocab_step").set_value(500)
    at.number_input(key="vocab_max").set_value(100)
    at.button[0].click().run()
    assert texts(at.error) == ["max-added (100) must be at least step (500)"]

    at.number_input(key="vocab_max").set_value(1000)
    at.text_input(key="vocab_base").input(str(home / "no-such-model"))
    at.button[0].click().run()
    assert len(at.error) == 1 and "no such model folder" in at.error[0].value

    at.text_input(key="vocab_base").input(str(tmp_path / "no-such-model"))  # outside the data folder
    at.button[0].click().run()
    assert len(at.error) == 1 and "is outside the folders the dashboard may read" in at.error[0].value
    with sessions.begin() as session:
        assert store.rows(session, VocabAnalysis) == []
    assert redis.keys("rq:job:*") == []


def test_started_analysis_shows_progress_then_the_curve_on_a_plain_rerun(sessions, redis, redis_url, tmp_path):
    source = tmp_path / "notes.txt"
    source.write_text(domain_corpus(documents=1500, words=1500), encoding="utf-8")
    corpus, _ = corpora.add_corpus(sessions, source)
    at = open_page("vocabulary")
    at.number_input(key="vocab_step").set_value(200)
    at.number_input(key="vocab_max").set_value(600)
    at.button[0].click().run()
    assert not at.exception and not at.error
    with sessions.begin() as session:
        (analysis,) = store.rows(session, VocabAnalysis, corpus_id=corpus.id)
        analysis_id, run_id = analysis.id, analysis.run_id
    assert f"Analysis {analysis_id} queued." in texts(at.success)
    assert at.selectbox(key="vocab_analysis").value == analysis_id
    progress = at.get("progress")
    assert len(progress) == 1 and f"Analysis {analysis_id} queued" in progress[0].proto.text
    assert any("No worker serves the 'cpu' queue" in w for w in texts(at.warning))
    assert redis.exists(f"rq:job:run-{run_id}")

    at.button[0].click().run()  # the same options again: reused, not queued twice
    assert any(f"An identical analysis ({analysis_id}) is already done or under way" in i for i in texts(at.info))
    with sessions.begin() as session:
        assert len(store.rows(session, VocabAnalysis, corpus_id=corpus.id)) == 1

    run_queued_jobs(redis_url)
    at.run()  # AppTest never fires run_every: a plain rerun must show the finished state
    assert not at.exception and not at.error
    assert not at.get("progress")
    assert picked_in_chart(curve_spec(at)) == int(metric(at, "Picked size").replace(",", ""))
    # no status in the selector: a browser would keep "running" in the box once the analysis finished
    assert at.selectbox(key="vocab_analysis").format_func(analysis_id) == f"{analysis_id} · bundled · step 200 · max 600"


def test_failed_analysis_shows_its_error(sessions, tmp_path):
    source = tmp_path / "notes.txt"
    source.write_text(domain_corpus(documents=60, words=80), encoding="utf-8")
    corpus, _ = corpora.add_corpus(sessions, source)
    analysis, _ = vocabulary.create_analysis(sessions, corpus.id, "bundled", VocabConfig(step=100, max_added=200))
    Path(corpus.path).unlink()  # the worker finds the stored text gone
    with pytest.raises(ConfigError):
        vocabulary.execute_analysis(sessions, analysis.run_id, lifecycle.Reporter(sessions, analysis.run_id))
    at = open_page("vocabulary")
    assert len(at.error) == 1
    assert at.error[0].value.startswith(f"Analysis {analysis.id} failed: the corpus file ")
    assert "is gone: add the corpus again" in at.error[0].value
    assert not at.get("plotly_chart")


# --- vocabulary: a finished analysis ---------------------------------------------------------------

def test_curve_marks_the_pick_and_the_threshold_moves_it_without_recomputing(analysed):
    points = analysed.summary["points"]
    at = open_page("vocabulary")
    assert not at.exception and not at.error
    spec = curve_spec(at)
    (line,) = [t for t in spec["data"] if t.get("name") == "P(D)"]
    assert line["x"] == [p["vocab_size"] for p in points]
    assert line["y"] == pytest.approx([p["log_occurrence"] for p in points])
    (bars,) = [t for t in spec["data"] if t.get("type") == "bar"]
    assert bars["y"] == pytest.approx([100 * p["relative_gain"] for p in points[1:]])

    first = analysed.summary["picked_vocab_size"]
    assert metric(at, "Picked size") == f"{first:,}"
    assert picked_in_chart(spec) == first
    table = at.dataframe[0].value
    assert list(table["vocab size"]) == [p["vocab_size"] for p in points]
    assert list(table.loc[table["pick"] == "★", "vocab size"]) == [first]

    with analysed.sessions.begin() as session:
        run = store.get(session, Run, analysed.run_id)
        finished_at, rows = run.finished_at, session.query(CurvePointRow).count()

    threshold = 0.5  # above every gain but the first: the second candidate is picked
    expected, reached = pick([CurvePoint(**p) for p in points], threshold)
    assert reached and expected.vocab_size != first
    at.number_input(key=f"vocab_threshold_{analysed.analysis_id}").set_value(threshold * 100).run()  # percent
    assert metric(at, "Picked size") == f"{expected.vocab_size:,}"
    assert metric(at, "Added tokens") == f"+{expected.added_tokens:,}"
    assert [c.value for c in at.caption if c.value.startswith("Picked by")] == [
        "Picked by the paper's rule: the first size whose gain is 50.00% or less (gains compared as shown, to 0.01%)."]
    assert not [w for w in at.warning if "No candidate" in w.value], "one rule picked, not none"
    assert picked_in_chart(curve_spec(at)) == expected.vocab_size
    table = at.dataframe[0].value
    assert list(table.loc[table["pick"] == "★", "vocab size"]) == [expected.vocab_size]
    with analysed.sessions.begin() as session:
        run = store.get(session, Run, analysed.run_id)
        assert (run.finished_at, session.query(CurvePointRow).count()) == (finished_at, rows), "nothing recomputed"


def test_size_follows_the_pick_and_tokenizations_are_side_by_side(analysed):
    aid, base = analysed.analysis_id, analysed.summary["base_vocab_size"]
    at = open_page("vocabulary")
    size = at.number_input(key=f"vocab_size_{aid}")
    assert size.value == analysed.summary["picked_vocab_size"]
    assert size.max == base + 800 and size.min == base + 1

    text = "Neurocytoma and hepatoblastoma patients were treated; cardiomyopathy increased."
    at.text_area(key=f"vocab_text_{analysed.corpus_id}").input(text).run()
    before, after = tokenizations(at)
    assert all(i < base for _, i in before), "the base tokenization uses base ids only"
    assert any(i >= base for _, i in after), "the expanded tokenization uses added tokens"
    assert len(after) < len(before)
    assert any(f"**{len(before)}** tokens" in m for m in texts(at.markdown))
    assert any(f"**{len(after)}** tokens" in m for m in texts(at.markdown))

    # Independently: the tokenizer core.vocab.expand writes for the model gives the same tokens.
    from core.model_io import bundled_path, load_tokenizer
    from core.vocab.expand import _expanded_tokenizer_files

    with analysed.sessions.begin() as session:
        tokens = vocabulary.read_tokens(store.get(session, VocabAnalysis, aid))
    out = analysed.home.parent / "expanded-tokenizer"
    out.mkdir(exist_ok=True)
    _expanded_tokenizer_files(bundled_path(), out, tokens[: size.value - base])
    assert load_tokenizer(out).tokenize(text) == [t for t, _ in after]

    # A smaller size uses no token beyond it; moving the threshold resets the size to the new pick.
    at.number_input(key=f"vocab_size_{aid}").set_value(base + 1).run()
    _, smallest = tokenizations(at)
    assert all(i <= base for _, i in smallest)
    spec = curve_spec(at)
    assert any(a.get("text") == f"chosen {base + 1:,}" for a in spec["layout"]["annotations"])
    at.number_input(key=f"vocab_threshold_{aid}").set_value(50).run()  # percent
    new_pick = int(metric(at, "Picked size").replace(",", ""))
    assert at.number_input(key=f"vocab_size_{aid}").value == new_pick


def test_create_expanded_model_queues_it_and_shows_where_it_is(analysed, redis, redis_url, monkeypatch):
    monkeypatch.setenv("ADAPT_DISTILL_HOME", str(analysed.home))
    aid, base = analysed.analysis_id, analysed.summary["base_vocab_size"]
    at = open_page("vocabulary")
    at.number_input(key=f"vocab_size_{aid}").set_value(base + 300).run()
    at.button(key="vocab_expand").click().run()
    assert not at.exception and not at.error
    (message,) = [i for i in texts(at.info) if "Expansion queued as run" in i]
    run_id = int(re.search(r"run (\d+)", message).group(1))
    assert any(f"Run {run_id} · {base + 300:,} tokens · queued" in p.proto.text for p in at.get("progress"))

    run_queued_jobs(redis_url)
    at.run()
    with analysed.sessions.begin() as session:
        run = store.get(session, Run, run_id)
        assert run.status == RunStatus.succeeded and run.parent_id == analysed.run_id
        output = Path(run.output_dir)
    (done,) = [s for s in texts(at.success) if f"Run {run_id}" in s]
    assert f"{base + 300:,} tokens" in done and f"`{output}`" in done
    assert json.loads((output / "config.json").read_text())["vocab_size"] == base + 300
    assert any("fresh, untrained" in c for c in texts(at.caption)), "the bundled model has no MLM head: say so"

    at.button(key="vocab_expand").click().run()  # the same size again: the model made is reused, not copied
    assert not at.error and any(f"Run {run_id} already makes this model at {base + 300:,} tokens: reused" in i
                                for i in texts(at.info))
    with analysed.sessions.begin() as session:
        assert len(store.rows(session, Run, kind=RunKind.expansion, limit=100)) == 1


# --- pure parts ----------------------------------------------------------------------------------

def _points(gains: list[float]) -> list[dict]:
    points, value = [], -100.0
    for i, gain in enumerate([None, *gains]):
        value = value if gain is None else value * (1 - gain)
        points.append({"vocab_size": 1000 + 100 * i, "added_tokens": 100 * i, "log_occurrence": value,
                       "relative_gain": gain, "tokens_per_word": 1.5 - 0.1 * i, "split_word_share": 0.3,
                       "embedding_params": 3200 * i})
    return points


def test_curve_figure_marks_pick_threshold_and_choice():
    from app.charts import curve_figure, pick_point

    points = _points([0.30, 0.05, 0.008, 0.004])
    assert pick_point(points, 0.01) == (points[3], True)
    fig = curve_figure(points, 0.01)
    pick_trace = next(t for t in fig.data if t.name.startswith("pick"))
    assert list(pick_trace.x) == [1300] and fig.layout.yaxis.type == "log"
    texts_ = [a.text for a in fig.layout.annotations]
    assert "pick 1,300 (+300)" in texts_ and not any("chosen" in t for t in texts_)
    assert [s.y0 for s in fig.layout.shapes if s.yref == "y"] == [1.0]
    assert "threshold 1.00%" in [t.name for t in fig.data]
    assert any("chosen 1,150" == t for t in (a.text for a in curve_figure(points, 0.01, 1150).layout.annotations))

    not_reached = curve_figure(points, 0.001)
    assert next(t for t in not_reached.data if t.name.startswith("pick")).name.endswith("not reached: largest)")


def test_app_modules_import_without_the_repo_root_and_without_torch(tmp_path):
    code = (f"import os, sys\n"
            f"assert {str(ROOT)!r} not in [os.path.abspath(p or '.') for p in sys.path]\n"
            f"import app.charts, app.connections, app.tokenization, app.ui\n"
            f"import app.data.corpora, app.data.experiments, app.data.home, app.data.models, app.data.runs\n"
            f"import app.data.tasks, app.data.train, app.data.vocabulary\n"
            f"heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
            f"assert not heavy, heavy\n"
            f"print(app.data.__file__)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).parent == ROOT / "app" / "data"


def test_a_loss_chart_with_one_point_shows_the_point():
    from app.charts import loss_figure, lr_figure, overlay_figure

    one = {"loss": {"step": [1], "value": [2.5]}, "lr": {"step": [1], "value": [1e-4]}}
    assert loss_figure(one).data[0].mode == "lines+markers"  # a lone point has no line to draw
    assert lr_figure(one).data[0].mode == "lines+markers"
    assert overlay_figure({"run 1": one}).data[0].mode == "lines+markers"
    many = {"loss": {"step": [1, 2, 3, 4], "value": [2.5, 2.4, 2.2, 2.1]}}
    assert loss_figure(many).data[0].mode == "lines"
