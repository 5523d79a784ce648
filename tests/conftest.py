"""Shared fixtures: a throwaway data folder and database, a real Redis, tiny real BERTs and
generated corpora. Nothing is mocked."""

from __future__ import annotations

import os
import random
import subprocess
import uuid
from pathlib import Path

import pytest
from db.models import Run

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no model hub here; hub ids must fail fast and clearly
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for _name in ("ADAPT_DISTILL_PASSWORD_HASH", "ADAPT_DISTILL_SECRET", "ADAPT_DISTILL_ALLOW_HUB", "ADAPT_DISTILL_MODEL_DIRS"):
    os.environ.pop(_name, None)  # the tests set the login, hub and model folders they mean

SYLLABLES = ["ka", "lo", "mi", "ne", "phor", "ly", "ma", "ic", "tra", "zo", "ben", "qui", "ter", "on", "al",
             "ex", "ph", "cyto", "kine", "ase", "oma", "itis", "gen", "ur"]


def write_corpus(path: Path, documents: int = 600, seed: int = 0, vocabulary: int = 400) -> Path:
    """A learnable 'domain' corpus: Zipf-ish words made of syllables, one document per line."""
    rng = random.Random(seed)
    words = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(vocabulary)]
    weights = [1 / (i + 1) for i in range(len(words))]
    common = ["the", "of", "and", "in", "with", "patients", "was"]
    lines = []
    for _ in range(documents):
        n = rng.randint(4, 30)
        text = " ".join(rng.choices(words, weights, k=n) + rng.choices(common, k=n // 3))
        lines.append(text.capitalize() + rng.choice([".", "!", " (p < 0.05).", ""]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


MARKERS = {"alpha": "the", "beta": "with", "gamma": "was"}  # words of the tiny BERT's vocabulary


def _noise(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 4))) for _ in range(n)]


def labelled_examples(n: int = 240, seed: int = 0) -> list[tuple[str, str]]:
    """(text, label): three classes told apart by a marker word (twice) among random letter words;
    alpha is half of them, so the majority class scores a known accuracy."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = "alpha" if i % 2 == 0 else ("beta" if i % 4 == 1 else "gamma")
        words = _noise(rng, rng.randint(3, 8))
        for _ in range(2):
            words.insert(rng.randrange(len(words) + 1), MARKERS[label])
        out.append((" ".join(words), label))
    return out


def tagged_sentences(n: int = 200, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """(tokens, IOB2 tags): 'with' is a one-word LOC, 'was of' a two-word PER, the rest O."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        tokens, tags = [], []
        for _ in range(rng.randint(4, 9)):
            roll = rng.random()
            if roll < 0.15:
                tokens.append("with")
                tags.append("B-LOC")
            elif roll < 0.3:
                tokens += ["was", "of"]
                tags += ["B-PER", "I-PER"]
            else:
                tokens += _noise(rng, 1)
                tags.append("O")
        out.append((tokens, tags))
    return out


def write_task_csv(path: Path, n: int = 240, seed: int = 0) -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(labelled_examples(n, seed))
    return path


def write_conll(path: Path, n: int = 200, seed: int = 0) -> Path:
    lines = ["-DOCSTART- -X- O", ""]
    for tokens, tags in tagged_sentences(n, seed):
        lines += [f"{t} NN {g}" for t, g in zip(tokens, tags)] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def tiny_experiment(sessions, tmp_path: Path, seeds: int = 1):
    """A tiny experiment recorded (not run): a 2-layer teacher, a generated corpus and task, a few
    steps of everything. [experiment, its runs in order]."""
    from worker import corpora, evaluation
    from worker.experiments import create_experiment

    teacher = build_tiny_bert(tmp_path / "teacher", words=["the", "of", "and", "in", "with", "was"])
    corpus, _ = corpora.add_corpus(sessions, write_corpus(tmp_path / "corpus.txt", documents=400))
    task, _ = evaluation.add_task(sessions, write_task_csv(tmp_path / "task.csv", n=160), "classification")
    small = {"steps": 4, "seq_len": 32, "batch_size": 4, "eval_every": 4}
    return create_experiment(sessions, corpus.id, task.id, str(teacher), adapt=small, distill=small,
                             finetune={"seeds": seeds, "epochs": 2, "max_length": 32},
                             bench={"latency_repeats": 30, "throughput_repeats": 2, "warmup": 1, "batch_size": 4},
                             vocab={"step": 20, "max_added": 40}, name="tiny")


def stop_process(process) -> str:
    """Terminate a subprocess started with stdout=PIPE and text=True; its output."""
    if process.poll() is None:
        process.terminate()
    try:
        out, _ = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out or ""


@pytest.fixture
def corpus_file(tmp_path) -> Path:
    return write_corpus(tmp_path / "domain.txt")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh ADAPT_DISTILL_HOME with its own SQLite database, migrated."""
    from db.migrate import upgrade

    root = tmp_path / "home"
    monkeypatch.setenv("ADAPT_DISTILL_HOME", str(root))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    upgrade()
    return root


@pytest.fixture
def cli(home):
    """`adapt-distill ARGS` in a process of its own on the test's data folder; ok=False expects the
    one-line error of a user mistake (exit 2, no traceback)."""
    import sys

    env = {**os.environ, "ADAPT_DISTILL_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("DATABASE_URL", None)

    def run(*args, ok=True):
        result = subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=env,
                                timeout=600)
        if ok:
            assert result.returncode == 0, result.stderr
        else:
            assert result.returncode == 2, result.stderr
            assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
        return result

    return run


@pytest.fixture
def sessions(home):
    from db.session import get_sessionmaker

    return get_sessionmaker()


def _postgres_url() -> str | None:
    return os.environ.get("TEST_DATABASE_URL") or None


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A migrated, empty database: SQLite always, PostgreSQL when TEST_DATABASE_URL is set."""
    from sqlalchemy import create_engine, text

    from db.migrate import upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
    else:
        base = _postgres_url()
        if not base:
            if os.environ.get("CI"):
                pytest.fail("TEST_DATABASE_URL must be set in CI so the PostgreSQL tests run")
            pytest.skip("PostgreSQL tests need TEST_DATABASE_URL (.ci/run sets it)")
        engine = create_engine(base, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
        url = base
    upgrade(url)
    yield url
    from db.session import get_engine

    get_engine(url).dispose()


@pytest.fixture(scope="session")
def redis_url():
    """REDIS_URL when set (CI points it at the local server), else an embedded Valkey."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    from worker.queueing.embedded import EmbeddedValkey

    with EmbeddedValkey() as server:
        yield server.url


@pytest.fixture
def redis(redis_url, monkeypatch):
    from redis import Redis

    monkeypatch.setenv("REDIS_URL", redis_url)
    connection = Redis.from_url(redis_url)
    connection.flushdb()
    yield connection
    connection.flushdb()


def build_tiny_bert(folder: Path, words: list[str] | None = None, lowercase: bool = True, mlm_head: bool = True,
                    seed: int = 0, pooler: bool = False, tied: bool = True) -> Path:
    """A 2-layer random BERT with a small WordPiece vocabulary, saved as safetensors. With pooler,
    saved as BERT checkpoints are (BertForPreTraining: MLM head, pooler and NSP head); untied
    (tied=False), its MLM decoder has weights and a bias of its own."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertForPreTraining, BertModel, BertTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz" + ("" if lowercase else "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(".,!?()<>0123456789") + list(letters)
    vocab += ["##" + c for c in letters + "0123456789"]
    vocab += words if words is not None else ["the", "of", "and", "in", "with", "was", "ka", "##lo", "##ma"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=lowercase)
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, tie_word_embeddings=tied)
    if mlm_head:
        model = BertForPreTraining(config) if pooler else BertForMaskedLM(config)
    else:
        model = BertModel(config, add_pooling_layer=pooler)
    with torch.no_grad():  # non-zero biases, so what happens to them is observable
        if mlm_head:
            model.cls.predictions.bias.copy_(torch.randn(len(vocab)))
            model.cls.predictions.decoder.bias.copy_(torch.randn(len(vocab)))  # the same tensor when tied
        if pooler:
            (model.bert.pooler if mlm_head else model.pooler).dense.bias.copy_(torch.randn(32))
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture
def tiny_bert(tmp_path) -> Path:
    return build_tiny_bert(tmp_path / f"tiny-bert-{uuid.uuid4().hex[:6]}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With RELIABILITY_REPORT=path, each test marked `tried` appends what was tried and how it went
    (one JSON line), for scripts/reliability_report.py."""
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("tried")
    target = os.environ.get("RELIABILITY_REPORT")
    if marker is None or not target or not (report.when == "call" or report.outcome != "passed"):
        return
    import json

    with open(target, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"tried": marker.args[0], "test": item.nodeid, "when": report.when,
                                 "outcome": report.outcome, "seconds": round(report.duration, 1),
                                 "message": report.longreprtext.strip().splitlines()[-1][:300]
                                 if report.outcome != "passed" and report.longreprtext else ""}) + "\n")


def wait_for_run(sessions, run_id: int, timeout: float = 240, until=lambda run: run.status.finished,
                 alive: dict | None = None):
    """The run once `until(run)` holds (default: it has finished); fails after `timeout` seconds, or
    as soon as one of the `alive` processes ({name: Popen}) has exited."""
    import time

    from db import store

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sessions.begin() as session:
            run = store.get(session, Run, run_id)
            if until(run):
                return run
        for name, process in (alive or {}).items():
            assert process.poll() is None, f"the {name} process exited ({process.returncode})"
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not reach the expected state within {timeout:.0f}s ({run.status.value})")
