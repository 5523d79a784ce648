"""Task metrics: classification scores (scikit-learn), entity-level tagging scores (seqeval)
and the mean and spread of a metric over several seeds. Nothing is computed by hand here;
the libraries are the reference implementations that papers report."""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PRIMARY = {"classification": "macro_f1", "ner": "entity_f1"}
# The scores of each task type (the keys the score functions return), any of which can select.
METRICS = {"classification": ("accuracy", "macro_f1", "micro_f1"),
           "ner": ("entity_f1", "entity_precision", "entity_recall", "token_accuracy")}
# With excluded labels (ChemProt's negative class) the classification primary is micro-F1
# over the scored labels, as the ChemProt literature reports it.
PRIMARY_WITH_EXCLUDED = "micro_f1"

# seqeval's strict mode needs the tagging scheme; BIOES is the same scheme as IOBES.
SCHEMES = ("IOB1", "IOB2", "IOE1", "IOE2", "IOBES", "BILOU")
_SCHEME_ALIASES = {"BIOES": "IOBES"}


def primary_metric(task_type: str, exclude: Sequence[str] = ()) -> str:
    """The key of the dev/selection metric for a task type."""
    if task_type not in PRIMARY:
        raise ValueError(f"unknown task type '{task_type}': use one of {', '.join(PRIMARY)}")
    if task_type == "classification" and exclude:
        return PRIMARY_WITH_EXCLUDED
    return PRIMARY[task_type]


def _scored_labels(labels: Sequence[str], exclude: Sequence[str]) -> list[str]:
    unknown = [label for label in exclude if label not in labels]
    if unknown:
        raise ValueError(f"excluded label(s) {', '.join(map(repr, unknown))} are not among the labels "
                         f"({', '.join(labels)})")
    scored = [label for label in labels if label not in set(exclude)]
    if not scored:
        raise ValueError("excluding those labels leaves no label to score: exclude fewer labels")
    return scored


def classification_scores(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str],
                          exclude: Sequence[str] = ()) -> dict:
    """Accuracy over all examples; macro- and micro-F1 over `labels` minus `exclude` (labels
    with no gold and no predicted example count as F1 0 in the macro mean); per-label
    precision, recall, F1 and support for every label."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    gold, pred, labels = list(gold), list(pred), list(labels)
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    if not gold:
        raise ValueError("no examples to score")
    # sklearn silently ignores labels outside `labels`; a typo would skew every average.
    unknown = sorted(set(gold) - set(labels))
    if unknown:
        raise ValueError(f"gold label(s) {', '.join(map(repr, unknown))} are not among the labels "
                         f"({', '.join(labels)})")
    scored = _scored_labels(labels, exclude)
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, pred, labels=labels, average=None, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, labels=scored, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(gold, pred, labels=scored, average="micro", zero_division=0)),
        "per_label": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
    }


def _scheme_class(scheme: str | None):
    """None (conlleval-compatible default mode) or the seqeval.scheme class for strict mode."""
    if scheme is None:
        return None
    import seqeval.scheme

    name = _SCHEME_ALIASES.get(scheme.upper(), scheme.upper())
    if name not in SCHEMES:
        raise ValueError(f"unknown tagging scheme '{scheme}': use one of {', '.join(SCHEMES)}, BIOES or None")
    return getattr(seqeval.scheme, name)


def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], scheme: str | None = None) -> dict:
    """Entity-level precision, recall and F1 (micro over entities), token accuracy and per-type
    scores. scheme=None is seqeval's default, conlleval-compatible mode (an I- tag after O still
    starts an entity); a scheme name scores strictly under that scheme (such a tag is invalid)."""
    from seqeval.metrics import accuracy_score, classification_report

    gold = [list(sentence) for sentence in gold]
    pred = [list(sentence) for sentence in pred]
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted ones")
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted ones")
    if not any(gold):
        raise ValueError("no tokens to score")
    scheme_class = _scheme_class(scheme)
    mode = "strict" if scheme_class is not None else None
    with warnings.catch_warnings():  # no entity at all: numpy warns about the empty means handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        report = classification_report(gold, pred, output_dict=True, mode=mode, scheme=scheme_class,
                                       zero_division=0)
    averages = {"micro avg", "macro avg", "weighted avg"}
    per_type = {
        name: {"precision": float(row["precision"]), "recall": float(row["recall"]),
               "f1": float(row["f1-score"]), "support": int(row["support"])}
        for name, row in report.items() if name not in averages
    }
    micro = report.get("micro avg")
    # With no entity on either side seqeval's averages are empty (nan): nothing was found
    # and nothing was there to find, which scores 0 like zero_division=0 everywhere else.
    if not per_type or micro is None or any(math.isnan(float(micro[k])) for k in ("precision", "recall", "f1-score")):
        micro = {"precision": 0.0, "recall": 0.0, "f1-score": 0.0}
    return {
        "entity_precision": float(micro["precision"]),
        "entity_recall": float(micro["recall"]),
        "entity_f1": float(micro["f1-score"]),
        "token_accuracy": float(accuracy_score(gold, pred)),
        "per_type": per_type,
    }


def _is_number(value) -> bool:
    # bool is an int subclass, but a flag averaged over seeds means nothing.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def aggregate(per_seed: Sequence[dict]) -> dict:
    """Mean and sample standard deviation (ddof=1; None for one seed) of every key that is a
    number in all the dicts, plus the dicts themselves and their count. Keys whose values are
    not numbers everywhere (per_label, per_type...) are not aggregated."""
    per_seed = list(per_seed)
    if not per_seed:
        raise ValueError("no seeds to aggregate")
    result: dict = {}
    for key in per_seed[0]:
        values = [scores.get(key) for scores in per_seed]
        if not all(_is_number(value) for value in values):
            continue
        values = [float(value) for value in values]
        result[key] = statistics.fmean(values)
        # one seed has no spread: None, never a "± 0" that reads as a certainty nothing measured
        result[key + "_std"] = statistics.stdev(values) if len(values) > 1 else None
    result["per_seed"] = per_seed
    result["seeds"] = len(per_seed)
    return result


# --- uncertainty over test examples ---------------------------------------------------------------

BOOTSTRAP = {"resamples": 1000, "level": 0.95, "seed": 0}


@dataclass
class ExampleCounts:
    """Per test example and seed, the counts every score of a task type adds up from, so that a
    score on any resample of the examples is a few sums. `counts[name]` is (seeds, examples).
    Classification keeps each example's (gold, predicted) label; ner keeps per sentence the
    entities right, predicted and gold, and the tokens right and in all."""

    type: str
    seeds: list[int]
    counts: dict[str, np.ndarray]
    labels: int = 0  # classification: how many labels
    scored: np.ndarray | None = None  # classification: the labels the F1s average over (bool mask)

    @property
    def examples(self) -> int:
        return next(iter(self.counts.values())).shape[1]

    def scores(self, metric: str, index: np.ndarray, seeds: Sequence[int] | None = None,
               draws: np.ndarray | None = None) -> np.ndarray:
        """The metric on each resample (a row of example indices), averaged over the seeds, or over
        the seeds each resample drew (draws: a row of positions in `seeds` per resample)."""
        rows = [self.seeds.index(s) for s in (self.seeds if seeds is None else seeds)]
        per_seed = np.array([self._score(metric, row, index) for row in rows])  # (seeds, resamples)
        if draws is None:
            return per_seed.mean(axis=0)
        return per_seed[draws.T, np.arange(index.shape[0])].mean(axis=0)

    def _score(self, metric: str, row: int, index: np.ndarray) -> np.ndarray:
        if self.type == "classification":
            return self._classification(metric, row, index)
        total = {name: values[row][index].sum(axis=-1).astype(float) for name, values in self.counts.items()}
        right, predicted, gold = total["right"], total["predicted"], total["gold"]
        if metric == "entity_precision":
            return _ratio(right, predicted)
        if metric == "entity_recall":
            return _ratio(right, gold)
        if metric == "entity_f1":
            return _ratio(2 * right, predicted + gold)
        if metric == "token_accuracy":
            return _ratio(total["tokens_right"], total["tokens"])
        raise ValueError(f"no resampled score for '{metric}'")

    def _classification(self, metric: str, row: int, index: np.ndarray) -> np.ndarray:
        k = self.labels
        pairs = self.counts["pair"][row][index]  # (resamples, examples): gold * k + predicted
        offsets = np.arange(pairs.shape[0])[:, None] * k * k
        confusion = np.bincount((pairs + offsets).ravel(), minlength=pairs.shape[0] * k * k)
        confusion = confusion.reshape(pairs.shape[0], k, k).astype(float)  # [resample, gold, predicted]
        right = np.diagonal(confusion, axis1=1, axis2=2)
        if metric == "accuracy":
            return right.sum(axis=1) / pairs.shape[1]
        predicted, gold = confusion.sum(axis=1), confusion.sum(axis=2)
        right, predicted, gold = right[:, self.scored], predicted[:, self.scored], gold[:, self.scored]
        if metric == "macro_f1":
            return _ratio(2 * right, predicted + gold).mean(axis=1)
        if metric == "micro_f1":
            return _ratio(2 * right.sum(axis=1), predicted.sum(axis=1) + gold.sum(axis=1))
        raise ValueError(f"no resampled score for '{metric}'")


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """top / bottom, 0 where bottom is 0 (as zero_division=0 scores it)."""
    return np.divide(top, bottom, out=np.zeros_like(top, dtype=float), where=bottom > 0)


def classification_sample(gold: Sequence[str], predicted: dict[int, Sequence[str]], labels: Sequence[str],
                          exclude: Sequence[str] = ()) -> ExampleCounts:
    """The test sample of a classification task: gold labels and, per seed, the predicted ones."""
    index = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    gold_ids = np.array([index[g] for g in gold])
    pairs = np.array([gold_ids * k + np.array([index[p] for p in predicted[s]]) for s in predicted])
    scored = np.array([label in set(_scored_labels(labels, exclude)) for label in labels])
    return ExampleCounts("classification", list(predicted), {"pair": pairs}, labels=k, scored=scored)


def entity_sample(gold: Sequence[Sequence[str]], predicted: dict[int, Sequence[Sequence[str]]],
                  scheme: str | None = None) -> ExampleCounts:
    """The test sample of a tagging task: per sentence and seed, the entities found right, predicted
    and gold, by the same rules as entity_scores (seqeval's default mode, or strict under a scheme)."""
    gold_entities = _entities(gold, scheme)
    counts: dict[str, list] = {"right": [], "predicted": [], "gold": [], "tokens_right": [], "tokens": []}
    for seed, tags in predicted.items():
        found = _entities(tags, scheme)
        counts["right"].append([len(g & p) for g, p in zip(gold_entities, found)])
        counts["predicted"].append([len(p) for p in found])
        counts["gold"].append([len(g) for g in gold_entities])
        counts["tokens_right"].append([sum(a == b for a, b in zip(g, p)) for g, p in zip(gold, tags)])
        counts["tokens"].append([len(g) for g in gold])
    return ExampleCounts("ner", list(predicted), {name: np.array(rows) for name, rows in counts.items()})


def _entities(sentences: Sequence[Sequence[str]], scheme: str | None) -> list[set]:
    """Per sentence, its entities as (type, start, end)."""
    scheme_class = _scheme_class(scheme)
    if scheme_class is None:
        from seqeval.metrics.sequence_labeling import get_entities

        return [set(get_entities(list(sentence))) for sentence in sentences]
    from seqeval.scheme import Entities

    found = Entities([list(s) for s in sentences], scheme_class, suffix=False).entities
    return [{(e.tag, e.start, e.end) for e in sentence} for sentence in found]


def resamples(examples: int, count: int = BOOTSTRAP["resamples"], seed: int = BOOTSTRAP["seed"]) -> np.ndarray:
    """(count, examples) indices drawn with replacement; the same for every model of a task, so
    two models' scores on one resample are paired."""
    return np.random.default_rng(seed).integers(0, examples, size=(count, examples))


def seed_resamples(seeds: int, count: int = BOOTSTRAP["resamples"], seed: int = BOOTSTRAP["seed"]) -> np.ndarray:
    """(count, seeds) positions of fine-tuning seeds drawn with replacement, from a stream of its
    own: a resample that draws the seeds as well as the examples carries the variation between
    fine-tuning runs into the interval (with one seed there is none to carry)."""
    return np.random.default_rng([seed, 1]).integers(0, seeds, size=(count, seeds))


def interval(values: np.ndarray, level: float = BOOTSTRAP["level"]) -> list[float]:
    """The percentile interval of bootstrap values: [low, high]."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]


def bootstrap_intervals(sample: ExampleCounts, metrics: Sequence[str]) -> dict[str, list[float]]:
    """Each metric's 95% interval over test examples and seeds (seeded, 1,000 resamples, each of
    the examples and of the seeds, scored as the mean over the drawn seeds)."""
    index, draws = resamples(sample.examples), seed_resamples(len(sample.seeds))
    return {metric: interval(sample.scores(metric, index, draws=draws)) for metric in metrics}


def paired_difference(sample: ExampleCounts, reference: ExampleCounts, metric: str) -> dict | None:
    """sample minus reference on the same test examples and the seeds both have: the difference of
    the means and its 95% interval over the same resamples of the examples and of the seeds (a seed
    drawn for one model is drawn for the other). None when they share no seed or were not scored
    on the same examples."""
    seeds = [s for s in sample.seeds if s in reference.seeds]
    if not seeds or sample.examples != reference.examples:
        return None
    whole = np.arange(sample.examples)[None, :]
    index, draws = resamples(sample.examples), seed_resamples(len(seeds))
    differences = sample.scores(metric, index, seeds, draws) - reference.scores(metric, index, seeds, draws)
    point = float((sample.scores(metric, whole, seeds) - reference.scores(metric, whole, seeds))[0])
    return {"difference": point, "ci95": interval(differences), "seeds": len(seeds)}
