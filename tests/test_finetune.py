"""Fine-tuning evaluation on tiny BERTs and generated tasks with a learnable signal: scores beat the
majority class, seeds give a mean and a spread, early stopping stops, and a cancelled evaluation
resumes to exactly the scores of an uninterrupted one."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from conftest import build_tiny_bert, labelled_examples, tagged_sentences

from core.judge.settings import FinetuneConfig, finetune_lr
from core.errors import Cancelled, ConfigError, ModelError
from core.judge.finetune import encode, epoch_batches, evaluate_model
from core.judge.task_files import Example, TaggedSentence
from core.judge.tasks import build_task
from core.model_io import load_tokenizer


def classification_task(n: int = 240, seed: int = 0):
    examples = [Example(text, label) for text, label in labelled_examples(n, seed)]
    task, _ = build_task("classification", {"train": examples}, seed=0, dev_fraction=0.15, test_fraction=0.2)
    return task


def ner_task(n: int = 200, seed: int = 0):
    sentences = [TaggedSentence(tuple(tokens), tuple(tags)) for tokens, tags in tagged_sentences(n, seed)]
    task, _ = build_task("ner", {"train": sentences}, seed=0)
    return task


@pytest.fixture
def tiny(tmp_path):
    return build_tiny_bert(tmp_path / "tiny")


def quick(**changes) -> FinetuneConfig:
    return FinetuneConfig(**{"epochs": 14, "patience": 0, "lr": 1e-3, "batch_size": 16, "seeds": 2,
                             "max_length": 32, "device": "cpu", **changes})


def test_a_fine_tuned_model_beats_the_majority_class_with_a_mean_and_a_spread(tiny, tmp_path):
    task = classification_task()
    result = evaluate_model(tiny, task, tmp_path / "eval", quick())
    gold = [x.label for x in task.splits["test"]]
    majority = Counter(gold).most_common(1)[0][1] / len(gold)
    assert result.metric == "macro_f1"
    assert result.test["accuracy"] > majority + 0.2, (result.test["accuracy"], majority)
    assert result.test["seeds"] == 2 and len(result.test["per_seed"]) == 2
    per_seed = [s["macro_f1"] for s in result.test["per_seed"]]
    assert result.test["macro_f1"] == pytest.approx(np.mean(per_seed))
    assert result.test["macro_f1_std"] == pytest.approx(np.std(per_seed, ddof=1))
    for seed in result.seeds:  # one dev point per epoch; the best epoch is the one scored
        assert [p["epoch"] for p in seed.curve] == list(range(1, 15))
        assert seed.dev["macro_f1"] == max(p["dev_macro_f1"] for p in seed.curve)
        assert seed.best_epoch == 1 + int(np.argmax([p["dev_macro_f1"] for p in seed.curve]))
    assert not list((tmp_path / "eval").rglob("*.safetensors")), "fine-tuned weights are not kept"


def test_entities_are_scored_by_seqeval(tiny, tmp_path):
    task = ner_task()
    result = evaluate_model(tiny, task, tmp_path / "ner", quick(seeds=1))
    assert result.metric == "entity_f1"
    assert result.test["entity_f1"] > 0.6  # predicting O everywhere scores 0
    assert {"entity_precision", "entity_recall", "token_accuracy"} <= set(result.test)


def test_early_stopping_stops_when_dev_stops_improving(tiny, tmp_path):
    task = classification_task()
    result = evaluate_model(tiny, task, tmp_path / "stop", quick(epochs=30, patience=1, seeds=1))
    seed = result.seeds[0]
    assert seed.stopped_early and seed.epochs_run < 30
    assert seed.epochs_run == seed.best_epoch + 1  # patience 1: one epoch without a better dev score
    assert result.converged


def test_a_cancelled_evaluation_resumes_to_the_same_scores(tiny, tmp_path):
    task = classification_task()
    config = quick(epochs=3)
    whole = evaluate_model(tiny, task, tmp_path / "whole", config)
    calls = {"n": 0}

    def cancel_once_in_the_second_seed() -> bool:
        calls["n"] += 1
        return calls["n"] == 40  # seed 0 has 3 epochs of 10 steps; this lands inside seed 1

    with pytest.raises(Cancelled):
        evaluate_model(tiny, task, tmp_path / "parts", config, cancel=cancel_once_in_the_second_seed)
    assert (tmp_path / "parts" / "seed-0" / "result.json").is_file()
    assert (tmp_path / "parts" / "seed-1" / "checkpoints" / "latest").is_file()
    resumed = evaluate_model(tiny, task, tmp_path / "parts", config)
    assert resumed.test["per_seed"] == whole.test["per_seed"]
    assert [s.curve for s in resumed.seeds] == [s.curve for s in whole.seeds]


def test_excluded_labels_and_metrics_are_checked(tiny, tmp_path):
    task = classification_task(60)
    with pytest.raises(ConfigError, match="not labels of this task"):
        evaluate_model(tiny, task, tmp_path / "x", quick(exclude_labels=("delta",)))
    with pytest.raises(ConfigError, match="metric 'entity_f1' is not one of a classification task's"):
        evaluate_model(tiny, task, tmp_path / "x", quick(metric="entity_f1"))
    result = evaluate_model(tiny, task, tmp_path / "ok", quick(exclude_labels=("alpha",), epochs=1, seeds=1))
    assert result.metric == "micro_f1"  # ChemProt style: the negative class is not scored
    with pytest.raises(ConfigError, match="patience must be"):
        FinetuneConfig(patience=-1)
    with pytest.raises(ConfigError, match="lr must be a positive number"):
        FinetuneConfig(lr=float("nan"))


def test_batches_depend_on_seed_and_epoch_and_cover_every_example():
    lengths = np.random.default_rng(0).integers(5, 60, size=203)
    first = epoch_batches(lengths, 16, seed=3, epoch=2)
    assert [b.tolist() for b in first] == [b.tolist() for b in epoch_batches(lengths, 16, seed=3, epoch=2)]
    assert sorted(np.concatenate(first).tolist()) == list(range(203))
    assert [b.tolist() for b in first] != [b.tolist() for b in epoch_batches(lengths, 16, seed=3, epoch=3)]
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in first])
    assert spread < 15  # similar lengths share a batch: little padding


def test_ner_labels_go_on_the_first_piece_of_each_word(tiny):
    task = ner_task(20)
    encoded = encode(task, "train", load_tokenizer(tiny), 64)
    sentence, feature, words = task.splits["train"][0], encoded.features[0], encoded.word_ids[0]
    firsts = [i for i, w in enumerate(words) if w is not None and (i == 0 or words[i - 1] != w)]
    assert [task.labels[feature["labels"][i]] for i in firsts] == list(sentence.tags)
    assert all(feature["labels"][i] == -100 for i in range(len(words)) if i not in firsts)


def test_the_learning_rate_follows_the_width():
    assert finetune_lr(768) == 3e-5 and finetune_lr(384) == 1e-4 and finetune_lr(192) == 2e-4
    assert FinetuneConfig().learning_rate(384) == 1e-4 and FinetuneConfig(lr=5e-5).learning_rate(384) == 5e-5


def test_special_token_strings_in_a_task_are_text(tiny):
    task, _ = build_task("classification", {"train": [Example(f"a [SEP] b [MASK] c {i}", "x" if i % 2 else "y")
                                                      for i in range(40)]}, seed=0)
    tokenizer = load_tokenizer(tiny)
    feature = encode(task, "train", tokenizer, 64).features[0]
    assert feature["input_ids"].count(tokenizer.sep_token_id) == 1 and tokenizer.mask_token_id not in \
        feature["input_ids"]


def test_keeping_the_best_seed_holds_one_finished_seeds_weights_at_a_time(tiny, tmp_path):
    """evaluate --keep: while a seed trains, the weights of at most one finished seed (the best so far)
    stay on disk; the kept model is the best dev seed's, and a resumed evaluation keeps the same."""
    import json
    import shutil

    task, out, keep = classification_task(), tmp_path / "eval", tmp_path / "kept"
    seen = []

    def count_weights(stage, fraction):
        seen.append(len({p.parent for p in out.glob("seed-*/best-epoch-*.safetensors")}))

    result = evaluate_model(tiny, task, out, quick(epochs=2, seeds=3, keep=True), progress=count_weights, keep=keep)
    assert max(seen) == 2  # the current seed's and the best finished one's
    best = max(result.seeds, key=lambda r: (r.dev["macro_f1"], -r.seed))
    kept = json.loads((keep / "adapt_distill.json").read_text())
    assert (kept["seed"], kept["seeds"], kept["test"]["macro_f1"]) == (best.seed, 3, best.test["macro_f1"])
    assert not list(out.rglob("*.safetensors"))
    shutil.rmtree(keep)
    with pytest.raises(ModelError, match="weights of seed .* are gone .*: start a new evaluation with --keep"):
        evaluate_model(tiny, task, out, quick(epochs=2, seeds=3, keep=True), keep=keep)  # the seeds are done
