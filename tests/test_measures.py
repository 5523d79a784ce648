import json
import math

import pytest
from conftest import build_tiny_bert, write_corpus

from core.errors import Cancelled, CorpusError
from core.judge.measures import head_is_trained, intrinsic_measures, tokenizer_measures
from core.model_io import METADATA_FILE, count_parameters, folder_size, load_mlm, load_tokenizer
from core.train.adapt import heldout_loss
from core.train.mlm import Masker, pack_documents, split_heldout

WORDS = ["the", "ka", "##lo"]


@pytest.fixture
def model(tmp_path):
    return build_tiny_bert(tmp_path / "model", words=WORDS)


@pytest.fixture
def documents(tmp_path):
    lines = write_corpus(tmp_path / "corpus.txt", documents=150, vocabulary=60).read_text().splitlines()
    return lambda: iter(lines)


def test_tokenizer_measures_by_hand(model):
    tokenizer = load_tokenizer(model)
    # "The kalo ox." -> the | ka ##lo | o ##x | .   (4 words, 6 pieces)
    # "λx @"         -> [UNK] | [UNK]               (2 words, 2 pieces: no λ nor @ in the vocabulary)
    tokens_per_word, unknown_rate, words = tokenizer_measures(tokenizer, ["The kalo ox.", "λx @"])
    assert words == 6
    assert tokens_per_word == pytest.approx(8 / 6)
    assert unknown_rate == pytest.approx(2 / 8)
    with pytest.raises(CorpusError, match="no words"):
        tokenizer_measures(tokenizer, ["", "   "])


def test_tokenizer_measures_counts_long_documents_whole(model):
    tokenizer = load_tokenizer(model)
    tokenizer("x " * 1000, truncation=True, max_length=16)  # leaves truncation set on the backend
    tokens_per_word, _, words = tokenizer_measures(tokenizer, ["the " * 1000])
    assert words == 1000 and tokens_per_word == 1.0


def test_max_words_stops_after_the_document_that_reaches_it(model):
    tokenizer = load_tokenizer(model)
    read = []

    def corpus():
        for i in range(10):
            read.append(i)
            yield "the ka the"  # 3 words

    _, _, words = tokenizer_measures(tokenizer, corpus(), max_words=7)
    assert words == 9 and len(read) == 3


def test_trained_head_gets_the_adaptation_heldout_loss(model, documents):
    stages = []
    measures = intrinsic_measures(model, documents, seq_len=32, heldout_fraction=0.1, max_heldout_blocks=5,
                                  progress=lambda stage, fraction: stages.append((stage, fraction)))
    assert measures.mlm_head_trained and measures.heldout_blocks == 5
    assert math.isfinite(measures.perplexity) and measures.perplexity == pytest.approx(math.exp(measures.heldout_loss))
    tokenizer = load_tokenizer(model)
    blocks = pack_documents(documents(), tokenizer, 32)
    _, held = split_heldout(blocks, 0.1)
    mlm, _ = load_mlm(model)
    mlm.eval()
    expected = heldout_loss(mlm, held[-5:], Masker(tokenizer), 16, "cpu", 0)
    assert measures.heldout_loss == pytest.approx(expected, rel=1e-6)
    assert measures.parameters == count_parameters(model) and measures.size_bytes == folder_size(model)
    assert measures.vocab_size == len(tokenizer.get_vocab())
    tokens_per_word, unknown_rate, words = tokenizer_measures(tokenizer, documents())
    assert (measures.tokens_per_word, measures.unknown_rate, measures.words) == (tokens_per_word, unknown_rate, words)
    assert [s for s, _ in stages if s == "measuring tokenizer"] and stages[-1] == ("measuring perplexity", 1.0)
    assert stages.index(("measuring tokenizer", 1.0)) < stages.index(("measuring perplexity", 0.0))
    assert json.loads(json.dumps(measures.to_dict()))["heldout_blocks"] == 5


def test_no_head_means_no_perplexity(tmp_path, documents):
    folder = build_tiny_bert(tmp_path / "bare", words=WORDS, mlm_head=False)
    assert not head_is_trained(folder)
    measures = intrinsic_measures(folder, documents, seq_len=32)
    assert measures.mlm_head_trained is False
    assert measures.perplexity is None and measures.heldout_loss is None and measures.heldout_blocks == 0
    assert measures.tokens_per_word > 1


def test_metadata_saying_untrained_wins_over_the_weights(model, documents):
    assert head_is_trained(model)
    (model / METADATA_FILE).write_text(json.dumps({"kind": "expanded", "mlm_head_trained": False}))
    assert not head_is_trained(model)
    measures = intrinsic_measures(model, documents, seq_len=32)
    assert measures.mlm_head_trained is False and measures.perplexity is None


def test_tiny_corpus_has_no_perplexity_but_no_error(model):
    measures = intrinsic_measures(model, lambda: iter(["the kalo ox"]), seq_len=32)
    assert measures.mlm_head_trained and measures.perplexity is None and measures.heldout_blocks == 0
    assert measures.words == 3


def test_cancel(model, documents):
    with pytest.raises(Cancelled):
        intrinsic_measures(model, documents, seq_len=32, cancel=lambda: True)
    stages = []

    def cancel_in_perplexity():
        return bool(stages) and stages[-1][0] == "measuring perplexity"

    with pytest.raises(Cancelled):
        intrinsic_measures(model, documents, seq_len=32, cancel=cancel_in_perplexity,
                           progress=lambda stage, fraction: stages.append((stage, fraction)))
    assert stages[-1] == ("measuring perplexity", 0.0)
