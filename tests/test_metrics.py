"""core.judge.metrics on small examples whose expected values are worked out by hand below."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.judge.metrics import (
    aggregate,
    bootstrap_intervals,
    classification_sample,
    classification_scores,
    entity_sample,
    entity_scores,
    paired_difference,
    primary_metric,
    resamples,
)

# Ten examples, labels A, B and the negative class NEG:
#   index  0  1  2  3  4    5    6    7    8    9
#   gold   A  A  A  B  B    NEG  NEG  NEG  NEG  NEG
#   pred   A  A  B  B  NEG  NEG  NEG  NEG  A    B
GOLD = ["A", "A", "A", "B", "B", "NEG", "NEG", "NEG", "NEG", "NEG"]
PRED = ["A", "A", "B", "B", "NEG", "NEG", "NEG", "NEG", "A", "B"]
LABELS = ["A", "B", "NEG"]


def test_primary_metric():
    assert primary_metric("classification") == "macro_f1"
    assert primary_metric("classification", exclude=["NEG"]) == "micro_f1"
    assert primary_metric("ner") == "entity_f1"
    with pytest.raises(ValueError, match="unknown task type"):
        primary_metric("regression")


def test_classification_scores_without_exclusion():
    scores = classification_scores(GOLD, PRED, LABELS)
    # Correct at 0, 1, 3, 5, 6, 7: 6 of 10.
    assert scores["accuracy"] == pytest.approx(0.6)
    per = scores["per_label"]
    # A: predicted at 0, 1, 8 (3), gold at 0, 1, 2 (3), both at 0, 1 -> P = R = F1 = 2/3.
    assert per["A"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    # B: predicted at 2, 3, 9 (3), gold at 3, 4 (2), both at 3 -> P 1/3, R 1/2,
    #    F1 = 2 * (1/3 * 1/2) / (1/3 + 1/2) = (1/3) / (5/6) = 2/5.
    assert per["B"] == pytest.approx({"precision": 1 / 3, "recall": 1 / 2, "f1": 2 / 5, "support": 2})
    # NEG: predicted at 4-7 (4), gold at 5-9 (5), both at 5, 6, 7 -> P 3/4, R 3/5,
    #      F1 = 2 * (9/20) / (27/20) = 2/3.
    assert per["NEG"] == pytest.approx({"precision": 3 / 4, "recall": 3 / 5, "f1": 2 / 3, "support": 5})
    assert [per[label]["support"] for label in LABELS] == [3, 2, 5]
    # Macro: (2/3 + 2/5 + 2/3) / 3 = (10 + 6 + 10) / 45 = 26/45.
    assert scores["macro_f1"] == pytest.approx(26 / 45)
    # Micro over every label of single-label data: 6 of 10 predictions right = accuracy.
    assert scores["micro_f1"] == pytest.approx(0.6)


def test_classification_scores_chemprot_style_exclusion():
    scores = classification_scores(GOLD, PRED, LABELS, exclude=["NEG"])
    # Accuracy still counts every example.
    assert scores["accuracy"] == pytest.approx(0.6)
    # Micro over A and B only: TP = 2 (A) + 1 (B) = 3; predicted A or B at 0, 1, 2, 3, 8, 9 (6);
    # gold A or B at 0-4 (5). P = 3/6, R = 3/5, F1 = 2 * (3/10) / (11/10) = 6/11.
    assert scores["micro_f1"] == pytest.approx(6 / 11)
    # Macro over A and B: (2/3 + 2/5) / 2 = 8/15.
    assert scores["macro_f1"] == pytest.approx(8 / 15)
    # The excluded label is still reported on its own.
    assert scores["per_label"]["NEG"]["support"] == 5


def test_label_without_examples_counts_zero_in_macro():
    # C is a label of the task that this (dev) set never has nor predicts: its F1 is 0, so
    # macro = (2/3 + 2/5 + 2/3 + 0) / 4 = 26/60.
    scores = classification_scores(GOLD, PRED, LABELS + ["C"])
    assert scores["macro_f1"] == pytest.approx(26 / 60)
    assert scores["per_label"]["C"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_classification_scores_rejects_bad_exclusions_and_labels():
    with pytest.raises(ValueError, match="'OTHER' are not among the labels"):
        classification_scores(GOLD, PRED, LABELS, exclude=["OTHER"])
    with pytest.raises(ValueError, match="leaves no label"):
        classification_scores(GOLD, PRED, LABELS, exclude=LABELS)
    with pytest.raises(ValueError, match="gold label"):
        classification_scores(GOLD, PRED, ["A", "B"])
    with pytest.raises(ValueError, match="predictions"):
        classification_scores(GOLD, PRED[:-1], LABELS)


# Two sentences in IOB2; entities as (type, first token, last token):
#   gold 1: B-PER I-PER O B-LOC O       -> PER(0,1), LOC(3,3)
#   pred 1: B-PER O     O B-LOC B-MISC  -> PER(0,0) boundary error, LOC(3,3) right, MISC(4,4) spurious
#   gold 2: B-ORG I-ORG O B-PER         -> ORG(0,1), PER(3,3)
#   pred 2: B-LOC I-LOC O B-PER         -> LOC(0,1) type error, PER(3,3) right
TAG_GOLD = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "I-ORG", "O", "B-PER"]]
TAG_PRED = [["B-PER", "O", "O", "B-LOC", "B-MISC"], ["B-LOC", "I-LOC", "O", "B-PER"]]


@pytest.mark.parametrize("scheme", [None, "IOB2"])
def test_entity_scores_iob2(scheme):
    scores = entity_scores(TAG_GOLD, TAG_PRED, scheme=scheme)
    # 4 gold entities, 5 predicted, 2 exact matches (LOC(3,3) and PER(3,3)):
    # P = 2/5, R = 2/4, F1 = 2 * (1/5) / (9/10) = 4/9.
    assert scores["entity_precision"] == pytest.approx(2 / 5)
    assert scores["entity_recall"] == pytest.approx(1 / 2)
    assert scores["entity_f1"] == pytest.approx(4 / 9)
    # Tokens: sentence 1 wrong at 1 and 4 (3 of 5 right), sentence 2 wrong at 0, 1 (2 of 4): 5/9.
    assert scores["token_accuracy"] == pytest.approx(5 / 9)
    per = scores["per_type"]
    # PER: gold 2, predicted 2, matched 1. LOC: gold 1, predicted 2, matched 1 -> F1 = 2/3.
    # ORG: gold 1, never predicted. MISC: predicted once, never gold.
    assert per["PER"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert per["LOC"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert per["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert per["MISC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_default_mode_accepts_an_entity_that_starts_with_i_but_strict_iob2_does_not():
    gold = [["B-PER", "I-PER", "O"]]
    pred = [["I-PER", "I-PER", "O"]]
    # conlleval-compatible default: I-PER after the sentence start opens PER(0,1), which matches.
    default = entity_scores(gold, pred)
    assert (default["entity_precision"], default["entity_recall"], default["entity_f1"]) == (1.0, 1.0, 1.0)
    # Strict IOB2: an entity must start with B-, so the prediction has no entity at all:
    # P = 0 (nothing predicted, zero_division=0), R = 0/1, F1 = 0.
    strict = entity_scores(gold, pred, scheme="IOB2")
    assert (strict["entity_precision"], strict["entity_recall"], strict["entity_f1"]) == (0.0, 0.0, 0.0)
    # The tags differ only at token 0: 2 of 3 right either way.
    assert default["token_accuracy"] == strict["token_accuracy"] == pytest.approx(2 / 3)


def test_bioes_is_an_alias_of_iobes():
    gold = [["S-PER", "O", "B-LOC", "E-LOC"]]
    pred = [["S-PER", "O", "B-LOC", "I-LOC"]]
    # Strict IOBES: B-LOC I-LOC never ends with E-, so only PER(0,0) is predicted:
    # P = 1/1, R = 1/2, F1 = 2 * (1/2) / (3/2) = 2/3.
    bioes = entity_scores(gold, pred, scheme="BIOES")
    assert bioes == entity_scores(gold, pred, scheme="IOBES")
    assert bioes["entity_precision"] == 1.0
    assert bioes["entity_recall"] == pytest.approx(1 / 2)
    assert bioes["entity_f1"] == pytest.approx(2 / 3)
    # The default mode closes LOC(2,3) at the end of the sentence and counts it right.
    assert entity_scores(gold, pred)["entity_f1"] == 1.0


def test_entity_scores_edge_cases():
    no_entities = entity_scores([["O", "O"]], [["O", "O"]])
    assert no_entities["entity_f1"] == 0.0 and no_entities["token_accuracy"] == 1.0
    assert no_entities["per_type"] == {}
    with pytest.raises(ValueError, match="unknown tagging scheme"):
        entity_scores(TAG_GOLD, TAG_PRED, scheme="BIO3")
    with pytest.raises(ValueError, match="sentence 1"):
        entity_scores(TAG_GOLD, [TAG_PRED[0], TAG_PRED[1][:-1]])


def test_aggregate_two_seeds():
    seeds = [
        {"macro_f1": 0.5, "accuracy": 0.7, "steps": 100, "per_label": {"A": {"f1": 0.5}}, "note": "x"},
        {"macro_f1": 0.7, "accuracy": 0.9, "steps": 100, "per_label": {"A": {"f1": 0.7}}, "note": "y"},
    ]
    result = aggregate(seeds)
    # mean (0.5 + 0.7) / 2 = 0.6; sample std sqrt(((-0.1)^2 + 0.1^2) / (2 - 1)) = sqrt(0.02).
    assert result["macro_f1"] == pytest.approx(0.6)
    assert result["macro_f1_std"] == pytest.approx(math.sqrt(0.02))
    assert result["accuracy"] == pytest.approx(0.8)
    assert result["accuracy_std"] == pytest.approx(math.sqrt(0.02))
    assert result["steps"] == 100 and result["steps_std"] == 0.0
    assert "per_label" not in result and "note" not in result
    assert result["per_seed"] == seeds and result["seeds"] == 2


def test_aggregate_one_seed_and_mixed_keys():
    result = aggregate([{"entity_f1": 0.42, "flag": True}])
    assert result["entity_f1"] == pytest.approx(0.42)
    assert result["entity_f1_std"] is None  # one seed has no spread: never "± 0"
    assert "flag" not in result  # booleans are not averaged
    assert result["seeds"] == 1
    # A key that is not a number in every seed is left out.
    assert "loss" not in aggregate([{"loss": 1.0}, {"loss": None}])
    with pytest.raises(ValueError, match="no seeds"):
        aggregate([])


# --- bootstrap over test examples ------------------------------------------------------------------

def _random_labels(rng, n: int, labels: list[str], right: float, gold: list[str] | None = None) -> list[str]:
    gold = gold or [labels[i] for i in rng.integers(0, len(labels), n)]
    return [g if rng.random() < right else labels[rng.integers(0, len(labels))] for g in gold]


@pytest.mark.parametrize("exclude", [(), ("c",)])
def test_resampled_classification_scores_on_the_whole_sample_are_sklearns(exclude):
    rng = np.random.default_rng(3)
    labels = ["a", "b", "c", "d"]
    gold = _random_labels(rng, 300, labels, 1.0)
    predicted = {0: _random_labels(rng, 300, labels, 0.6, gold), 1: _random_labels(rng, 300, labels, 0.4, gold)}
    sample = classification_sample(gold, predicted, labels, exclude)
    whole = np.arange(300)[None, :]
    for metric in ("accuracy", "macro_f1", "micro_f1"):
        want = np.mean([classification_scores(gold, predicted[s], labels, exclude)[metric] for s in (0, 1)])
        assert sample.scores(metric, whole)[0] == pytest.approx(want, abs=1e-12), metric
    # one resample scored by hand: the examples it drew, with repeats, as a new test set
    index = resamples(300, count=2, seed=9)
    drawn = [int(i) for i in index[1]]
    want = classification_scores([gold[i] for i in drawn], [predicted[1][i] for i in drawn], labels, exclude)
    assert sample.scores("macro_f1", index, seeds=[1])[1] == pytest.approx(want["macro_f1"], abs=1e-12)


@pytest.mark.parametrize("scheme", [None, "IOB2"])
def test_resampled_entity_scores_on_the_whole_sample_are_seqevals(scheme):
    rng = np.random.default_rng(4)
    tags = ["O", "B-X", "I-X", "B-Y", "I-Y"]
    gold = [[tags[i] for i in rng.integers(0, 5, rng.integers(3, 12))] for _ in range(120)]
    predicted = {7: [[t if rng.random() < 0.7 else tags[rng.integers(0, 5)] for t in s] for s in gold]}
    sample = entity_sample(gold, predicted, scheme)
    want = entity_scores(gold, predicted[7], scheme)
    whole = np.arange(120)[None, :]
    for metric in ("entity_f1", "entity_precision", "entity_recall", "token_accuracy"):
        assert sample.scores(metric, whole)[0] == pytest.approx(want[metric], abs=1e-12), metric
    index = resamples(120, count=1, seed=2)
    drawn = [int(i) for i in index[0]]
    again = entity_scores([gold[i] for i in drawn], [predicted[7][i] for i in drawn], scheme)
    assert sample.scores("entity_f1", index)[0] == pytest.approx(again["entity_f1"], abs=1e-12)


def test_bootstrap_interval_holds_the_score_and_narrows_with_more_examples():
    rng = np.random.default_rng(5)
    labels = ["a", "b"]
    widths = []
    for n in (100, 1600):
        gold = _random_labels(rng, n, labels, 1.0)
        sample = classification_sample(gold, {0: _random_labels(rng, n, labels, 0.5, gold)}, labels)
        low, high = bootstrap_intervals(sample, ["accuracy"])["accuracy"]
        score = sample.scores("accuracy", np.arange(n)[None, :])[0]
        assert low < score < high
        widths.append(high - low)
    # the standard error of a share falls as 1/sqrt(n): 16 times the examples, about a quarter of the width
    assert 0.15 < widths[1] / widths[0] < 0.4
    assert bootstrap_intervals(sample, ["accuracy"]) == bootstrap_intervals(sample, ["accuracy"])  # seeded


def test_paired_difference_sees_a_small_consistent_gain_that_unpaired_intervals_overlap():
    rng = np.random.default_rng(6)
    labels = ["a", "b", "c"]
    gold = _random_labels(rng, 400, labels, 1.0)
    base = _random_labels(rng, 400, labels, 0.6, gold)
    # better on 16 examples the base got wrong, the same everywhere else
    wrong = [i for i in range(400) if base[i] != gold[i]][:16]
    better = [gold[i] if i in wrong else base[i] for i in range(400)]
    a = classification_sample(gold, {0: better}, labels)
    b = classification_sample(gold, {0: base}, labels)
    diff = paired_difference(a, b, "accuracy")
    assert diff["difference"] == pytest.approx(16 / 400)
    assert 0 < diff["ci95"][0] < diff["difference"] < diff["ci95"][1]
    alone_a, alone_b = bootstrap_intervals(a, ["accuracy"])["accuracy"], bootstrap_intervals(b, ["accuracy"])["accuracy"]
    assert alone_a[0] < alone_b[1]  # apart, the intervals overlap; paired, the gain is clear
    # no common seed, or other examples: no difference to give
    assert paired_difference(classification_sample(gold, {1: better}, labels), b, "accuracy") is None
    assert paired_difference(classification_sample(gold[:10], {0: better[:10]}, labels), b, "accuracy") is None


def test_the_interval_carries_the_spread_between_seeds_too():
    rng = np.random.default_rng(7)
    labels = ["a", "b"]
    gold = _random_labels(rng, 2000, labels, 1.0)
    good, poor = _random_labels(rng, 2000, labels, 0.8, gold), _random_labels(rng, 2000, labels, 0.0, gold)
    one = classification_sample(gold, {0: good}, labels)
    two = classification_sample(gold, {0: good, 1: poor}, labels)
    low, high = bootstrap_intervals(one, ["accuracy"])["accuracy"]
    assert high - low < 0.05  # 2,000 examples, one seed: only the examples vary
    accuracy = {s: classification_scores(gold, p, labels)["accuracy"] for s, p in ((0, good), (1, poor))}
    low, high = bootstrap_intervals(two, ["accuracy"])["accuracy"]
    # seeds 0.9 and 0.5 apart: a resample that draws one seed twice scores near it, so the interval spans both
    assert low < accuracy[1] + 0.02 and high > accuracy[0] - 0.02, (low, high, accuracy)
    diff = paired_difference(two, classification_sample(gold, {0: good, 1: good}, labels), "accuracy")
    assert diff["ci95"][0] < -0.3 and diff["ci95"][1] > -0.05  # the poor seed alone would make it -0.4
