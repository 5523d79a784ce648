"""Tokenize once: the on-disk token stream, its blocks, its cache, and training on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import build_tiny_bert, write_corpus

from core.corpus import read_documents
from core.errors import Cancelled
from core.model_io import load_tokenizer
from core.train.mlm import pack_documents, split_heldout
from core.train.tokens import (
    Blocks,
    CachedCorpus,
    blocks_of,
    build_stream,
    cached_stream,
    list_streams,
    open_stream,
    stream_dtype,
    stream_path,
    tokenizer_key,
)


@pytest.fixture
def tokenizer(tiny_bert):
    return load_tokenizer(tiny_bert)


def test_blocks_read_from_the_stream_on_disk_are_the_packed_blocks(tmp_path, tokenizer):
    corpus = write_corpus(tmp_path / "c.txt", documents=300)
    stream = build_stream(read_documents(corpus), tokenizer, tmp_path / "cache" / "s.tokens", "abc")
    assert stream.dtype == "uint16" and stream.bytes == os.path.getsize(stream.path) == 2 * stream.tokens
    assert stream.documents == 300
    packed = pack_documents(read_documents(corpus), tokenizer, 32)
    blocks = blocks_of(stream.array(), tokenizer, 32)
    assert isinstance(stream.array(), np.memmap) and blocks.shape == packed.shape
    assert np.array_equal(blocks[:], packed)
    rows = np.array([5, 0, len(packed) - 1, 7, 5])
    assert np.array_equal(blocks[rows], packed[rows]) and np.array_equal(blocks[-1], packed[-1])
    train, held = split_heldout(blocks, 0.1)
    expected_train, expected_held = split_heldout(packed, 0.1)
    assert isinstance(train, Blocks) and isinstance(held, np.ndarray)
    assert np.array_equal(train[:], expected_train) and np.array_equal(held, expected_held)
    assert np.array_equal(train[[len(train) - 1]], expected_train[[len(expected_train) - 1]])
    with pytest.raises(IndexError):
        train[[len(train)]]


def test_ids_take_two_bytes_while_the_vocabulary_fits():
    assert stream_dtype(30_522) is np.uint16 and stream_dtype(65_536) is np.uint16
    assert stream_dtype(65_537) is np.uint32 and stream_dtype(250_002) is np.uint32


def test_an_interrupted_build_leaves_nothing_that_passes_for_a_cache(tmp_path, tokenizer):
    corpus = write_corpus(tmp_path / "c.txt", documents=3000)
    folder = tmp_path / "cache"
    path = stream_path(folder, "abc", tokenizer_key(tokenizer))
    with pytest.raises(Cancelled):
        build_stream(read_documents(corpus), tokenizer, path, "abc", batch=100, cancel=lambda: True)
    assert list(folder.iterdir()) == [] and open_stream(path) is None
    killed = path.with_name(f".tmp-{path.stem}-deadbeef")  # what a SIGKILLed build leaves
    killed.write_bytes(b"\0" * 64)
    os.utime(killed, (time.time() - 3600, time.time() - 3600))
    running = path.with_name(f".tmp-{path.stem}-cafecafe")  # another build, writing right now
    running.write_bytes(b"\0" * 64)
    stream, built = cached_stream(folder, "abc", lambda: read_documents(corpus), tokenizer)
    assert built and open_stream(path) == stream
    assert not killed.exists() and running.exists()
    running.unlink()
    with open(path, "r+b") as handle:  # a stream cut short (a disk that filled) is not used
        handle.truncate(stream.bytes - 2)
    assert open_stream(path) is None and list_streams(folder) == []


def test_a_corpus_is_tokenized_once_per_tokenizer(tmp_path, tokenizer):
    corpus = write_corpus(tmp_path / "c.txt", documents=200)
    folder = tmp_path / "cache"
    reads = []

    def documents():
        reads.append(1)
        return read_documents(corpus)

    first, built = cached_stream(folder, "abc", documents, tokenizer, total_documents=200)
    again, built_again = cached_stream(folder, "abc", documents, tokenizer)
    assert built and not built_again and first == again and len(reads) == 1
    other = build_tiny_bert(tmp_path / "other", words=["kalo", "mine", "phor"])  # another vocabulary
    third, built_third = cached_stream(folder, "abc", documents, load_tokenizer(other))
    assert built_third and third.path != first.path and len(list_streams(folder, "abc")) == 2


def test_training_on_the_cached_stream_matches_training_on_text_and_reuses_it(home, sessions, tmp_path,
                                                                             tiny_bert):
    from core.configs import AdaptConfig, TrainConfig
    from core.train.adapt import adapt
    from db import settings
    from worker import corpora

    corpus_file = write_corpus(tmp_path / "c.txt", documents=400)
    corpus, _ = corpora.add_corpus(sessions, corpus_file)
    source = CachedCorpus(tmp_path / "home" / "corpora" / f"{corpus.sha256}.txt", corpus.sha256, corpus.documents,
                          settings.token_cache_dir())
    config = AdaptConfig(seq_len=32, head_warmup=0, train=TrainConfig(steps=6, batch_size=4, eval_every=3,
                                                                      device="cpu", log_every=1))
    stages = []
    cached = adapt(tiny_bert, source, tmp_path / "a", config, progress=lambda stage, f: stages.append(stage))
    plain = adapt(tiny_bert, lambda: read_documents(corpus_file), tmp_path / "b", config)
    assert cached.first_loss == pytest.approx(plain.first_loss, abs=1e-6)
    assert cached.last_loss == pytest.approx(plain.last_loss, abs=1e-6)
    assert cached.heldout_loss == pytest.approx(plain.heldout_loss, abs=1e-6)
    assert "tokenizing" in stages
    (stream,) = list_streams(settings.token_cache_dir())
    built_at = stream.path.stat().st_mtime_ns
    adapt(tiny_bert, source, tmp_path / "c", config)  # a later run maps the same stream
    assert list_streams(settings.token_cache_dir()) == [stream] and stream.path.stat().st_mtime_ns == built_at
    listed = corpora.token_caches(sessions)
    assert [(c["corpus_id"], c["tokens"], c["bytes"]) for c in listed] == [(corpus.id, stream.tokens, stream.bytes)]
    env = {**os.environ, "ADAPT_DISTILL_HOME": str(home)}
    env.pop("DATABASE_URL", None)
    cli = [sys.executable, "-m", "app.cli", "corpus"]
    shown = json.loads(subprocess.run(cli + ["caches", "--json"], env=env, capture_output=True, text=True).stdout)
    assert shown["caches"][0]["bytes"] == stream.bytes
    corpora.delete_corpus(sessions, corpus.id)  # its streams go with it
    assert not stream.path.exists() and list(settings.token_cache_dir().iterdir()) == []
