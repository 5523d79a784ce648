"""Task metrics: classification scores (scikit-learn), entity-level tagging scores (seqeval)
and the mean and spread of a metric over several seeds. Nothing is computed by hand here;
the libraries are the reference implementations that papers report."""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence

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
    """Mean and sample standard deviation (ddof=1; 0.0 for one seed) of every key that is a
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
        result[key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    result["per_seed"] = per_seed
    result["seeds"] = len(per_seed)
    return result
