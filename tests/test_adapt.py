import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForMaskedLM

from conftest import build_tiny_bert, write_corpus
from core.adapt import AdaptConfig, adapt
from core.errors import Cancelled, ConfigError
from core.mlm import IGNORE, Masker, pack_documents, split_heldout
from core.models import load_tokenizer
from core.training import TrainConfig, batch_indices, lr_factor

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
