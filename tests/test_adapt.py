import math

import numpy as np
import pytest
import torch
from conftest import build_tiny_bert, write_corpus
from transformers import AutoModelForMaskedLM

from core.configs import AdaptConfig, TrainConfig
from core.errors import Cancelled, ConfigError
from core.model_io import load_tokenizer
from core.seeds import batch_indices
from core.train.adapt import adapt
from core.train.loop import lr_factor
from core.train.mlm import IGNORE, Masker, pack_documents, split_heldout

WORDS = ["ka", "##lo", "##ma", "the", "of", "and", "in", "with", "was"]


@pytest.fixture
def teacher(tmp_path):
    return build_tiny_bert(tmp_path / "teacher", words=WORDS)


@pytest.fixture
def documents(tmp_path):
    path = write_corpus(tmp_path / "corpus.txt", documents=400, vocabulary=60)
    lines = path.read_text().splitlines()
    return lambda: iter(lines)


def test_packing_fills_every_block(teacher, documents):
    tokenizer = load_tokenizer(teacher)
    blocks = pack_documents(documents(), tokenizer, 32)
    assert blocks.shape[1] == 32 and len(blocks) > 10
    assert (blocks[:, 0] == tokenizer.cls_token_id).all() and (blocks[:, -1] == tokenizer.sep_token_id).all()
    assert not (blocks == tokenizer.pad_token_id).any()
    docs = list(documents())[:3]
    expected = []
    for d in docs:
        expected += tokenizer(d, add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id]
    assert blocks[:, 1:-1].reshape(-1)[: len(expected)].tolist() == expected
    train, held = split_heldout(blocks, 0.1)
    assert len(train) + len(held) == len(blocks) and len(held) == max(1, int(len(blocks) * 0.1))
    with pytest.raises(ConfigError, match="fills only"):
        split_heldout(blocks[:1], 0.1)


def test_masking_rates_specials_and_whole_words(teacher):
    tokenizer = load_tokenizer(teacher)
    ids = torch.tensor(pack_documents(["ka kalo kalolo kama the of " * 40] * 20, tokenizer, 64)).long()
    inputs, labels = Masker(tokenizer, 0.15)(ids, torch.Generator().manual_seed(0))
    masked = labels != IGNORE
    special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
    assert not (masked & special).any()
    assert 0.12 < masked.sum() / (~special).sum() < 0.18
    assert torch.equal(labels[masked], ids[masked])
    replaced = (inputs[masked] == tokenizer.mask_token_id).float().mean()
    assert 0.7 < replaced < 0.9
    again, _ = Masker(tokenizer, 0.15)(ids, torch.Generator().manual_seed(0))
    assert torch.equal(inputs, again)  # the same generator, the same masks
    _, labels = Masker(tokenizer, 0.15, whole_word=True)(ids, torch.Generator().manual_seed(1))
    vocab = {i: t for t, i in tokenizer.get_vocab().items()}
    for row, row_labels in zip(ids.tolist(), (labels != IGNORE).tolist()):
        for pos in range(1, len(row) - 1):
            if vocab[row[pos]].startswith("##"):  # a continuation shares its word's fate
                assert row_labels[pos] == row_labels[pos - 1] or vocab[row[pos - 1]] in ("[CLS]", "[SEP]")


def test_schedule_and_data_order():
    config = TrainConfig(steps=100, warmup=0.1, schedule="linear")
    assert lr_factor(0, config) == pytest.approx(0.1) and lr_factor(9, config) == pytest.approx(1.0)
    assert lr_factor(55, config) == pytest.approx(0.5) and lr_factor(100, config) == 0.0
    seen = np.concatenate([batch_indices(10, m, 4, 0) for m in range(5)])  # two epochs of 10
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    assert not np.array_equal(seen[:10], seen[10:20])


def test_adaptation_lowers_heldout_mlm_loss(teacher, documents, tmp_path):
    metrics = []
    config = AdaptConfig(seq_len=32, train=TrainConfig(steps=60, batch_size=16, lr=2e-3, warmup=0.1,
                                                       eval_every=30, checkpoint_every=25, log_every=5))
    result = adapt(teacher, documents, tmp_path / "adapted", config, on_metrics=lambda s, m: metrics.append((s, m)))
    assert result.heldout_loss < 0.8 * result.heldout_loss_before
    assert result.last_loss < result.first_loss
    assert [s for s, m in metrics if "heldout_loss" in m] == [0, 30, 60]
    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "adapted")
    assert model.get_input_embeddings().weight.shape[0] == len(load_tokenizer(tmp_path / "adapted"))
    assert not (tmp_path / "adapted" / "checkpoints").exists()


def test_a_resumed_run_matches_an_uninterrupted_one(teacher, documents, tmp_path):
    def config():
        return AdaptConfig(seq_len=32, train=TrainConfig(steps=16, batch_size=8, grad_accum=2, lr=1e-3,
                                                         eval_every=100, checkpoint_every=5))

    straight = adapt(teacher, documents, tmp_path / "straight", config())
    stop_at = {"step": 0}

    def progress(stage, fraction):
        stop_at["step"] = round(fraction * 16) if stage == "training" else stop_at["step"]

    with pytest.raises(Cancelled, match="cancelled at step 7"):
        adapt(teacher, documents, tmp_path / "resumed", config(), progress=progress,
              cancel=lambda: stop_at["step"] >= 7)
    resumed = adapt(teacher, documents, tmp_path / "resumed", config())
    assert resumed.resumed_from == 7 and resumed.steps == 16
    assert resumed.last_loss == pytest.approx(straight.last_loss, rel=1e-5)
    a = AutoModelForMaskedLM.from_pretrained(tmp_path / "straight").state_dict()
    b = AutoModelForMaskedLM.from_pretrained(tmp_path / "resumed").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_epochs_decide_the_number_of_steps(teacher, documents, tmp_path):
    tokenizer = load_tokenizer(teacher)
    train, _ = split_heldout(pack_documents(documents(), tokenizer, 32), 0.02)
    totals = []
    config = AdaptConfig(seq_len=32, train=TrainConfig(epochs=0.5, batch_size=8, eval_every=1000))
    result = adapt(teacher, documents, tmp_path / "a", config,
                   on_metrics=lambda s, m: totals.append(m["total_steps"]) if "total_steps" in m else None)
    assert result.steps == math.ceil(0.5 * len(train) / 8) == totals[0]


def test_seed_streams_are_independent():
    from core.seeds import STREAMS, stream_seed

    assert stream_seed(1, "dropout", 0) != stream_seed(0, "dropout", 7_919)  # the old seed * 7919 + step
    assert stream_seed(1, "mask", 0) != stream_seed(0, "mask", 1_000_003)
    assert len({stream_seed(0, name, 3) for name in STREAMS}) == len(STREAMS)
    assert stream_seed(5, "order", 2) == stream_seed(5, "order", 2)
    with pytest.raises(ConfigError, match=">= 0"):
        stream_seed(-1, "order")
    with pytest.raises(ConfigError, match="seed must be a whole number from 0 to"):
        TrainConfig(seed=-3)


def test_the_same_seed_gives_the_same_model_byte_for_byte(tmp_path, documents):
    from transformers import AutoModelForSequenceClassification, BertModel

    teacher = build_tiny_bert(tmp_path / "headless", words=WORDS, mlm_head=False, pooler=True)

    def run(name, seed):
        config = AdaptConfig(seq_len=32, head_warmup=3, train=TrainConfig(steps=6, batch_size=8, lr=1e-3, seed=seed,
                                                                          eval_every=100))
        result = adapt(teacher, documents, tmp_path / name, config)
        return result, (tmp_path / name / "model.safetensors").read_bytes()

    (first, a), (second, b), (_, c) = run("a", 0), run("b", 0), run("c", 1)
    assert a == b != c
    assert first.to_dict() | {"output_dir": "", "tokens_per_second": 0} == \
        second.to_dict() | {"output_dir": "", "tokens_per_second": 0}
    # the source's pooler is in the adapted folder, untouched (nothing trains it)
    pooler = BertModel.from_pretrained(teacher).pooler.state_dict()
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "a", num_labels=2)
    assert all(torch.equal(classifier.bert.pooler.state_dict()[k], v) for k, v in pooler.items())


def test_a_model_without_a_trained_head_trains_the_head_alone_first(tmp_path, documents):
    teacher = build_tiny_bert(tmp_path / "headless", words=WORDS, mlm_head=False)

    def run(name, warmup):
        config = AdaptConfig(seq_len=32, head_warmup=warmup, head_lr=3e-3,
                             train=TrainConfig(steps=20, batch_size=8, lr=1e-3, eval_every=100))
        return adapt(teacher, documents, tmp_path / name, config)

    warmed, cold = run("warm", 0.5), run("cold", 0)
    assert warmed.mlm_head_started_untrained and cold.mlm_head_started_untrained
    assert warmed.head_warmup_steps == 10 and cold.head_warmup_steps == 0
    # "before" is measured with the warmed-up head: lower than with the random one
    assert warmed.heldout_loss_before < cold.heldout_loss_before - 0.1
    assert not (tmp_path / "warm" / "head-warmup").exists()
    trained = build_tiny_bert(tmp_path / "with-head", words=WORDS)
    result = adapt(trained, documents, tmp_path / "trained", AdaptConfig(
        seq_len=32, train=TrainConfig(steps=4, batch_size=8, eval_every=100)))
    assert not result.mlm_head_started_untrained and result.head_warmup_steps == 0
