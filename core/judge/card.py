"""Model cards: a README.md for every model folder, in the Hugging Face model-card layout (YAML
front matter, then Markdown sections). The card is rendered from a plain dict of what is known
about the model; a section whose data is missing is left out rather than shown empty."""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

from core.errors import ConfigError, ModelError
from core.folder_kinds import FINE_TUNED
from core.formatting import count, human_bytes
from core.model_io import BUNDLED

CARD_FILE = "README.md"
BUNDLED_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # what the bundled package ships
VERSION_PACKAGES = ("adapt-distill", "torch", "transformers", "tokenizers")
# org/name: the form hub ids take today (a bare name could as well be a local folder name).
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# A YAML scalar that needs no quotes: starts with a letter and has no character YAML treats specially.
_PLAIN = re.compile(r"^[A-Za-z][A-Za-z0-9._/-]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}
# kind -> (what the model is, the word that introduces the model it started from)
_KINDS = {
    "expanded": ("a vocabulary-expanded copy", "of"),
    "adapted": ("a domain-adapted version (continued masked-LM pretraining)", "of"),
    "student": ("a small student distilled (MiniLM self-attention relations)", "from"),
    "base": ("a base model", "loaded from"),
    "folder": ("a model folder", "from"),
    FINE_TUNED: ("a model fine-tuned on a labelled task, its task head included", "from"),
}
_TASK_TYPES = {"classification": "text-classification", "ner": "token-classification"}


def library_versions() -> dict:
    """The installed versions of adapt-distill and the libraries a model folder depends on."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in VERSION_PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "unknown"
    return versions


# ---- formatting for people -------------------------------------------------------------------

def _present(value) -> bool:
    """Whether a value is worth rendering: not None, not an empty container, not NaN."""
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    if isinstance(value, (dict, list, tuple, str)) and not value:
        return False
    return True


def _int(value) -> str:
    return f"{int(value):,}"


def _score(value) -> str:
    """4 significant digits."""
    return f"{float(value):.4g}"


def _number(value) -> str:
    """A setting's value: integers with separators, floats short, booleans as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return _int(value)
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) >= 1 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_number(v) for v in value)
    return str(value)


def _cell(value) -> str:
    """A table cell: no pipe or newline may break the row."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: list[list]) -> list[str]:
    """Markdown table lines; no lines at all when there are no rows."""
    if not rows:
        return []
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def _pairs(items: list[tuple[str, str, Callable]], data: dict) -> list[list]:
    """(label, key, formatter) -> [label, formatted value] rows for the keys present in data."""
    return [[label, fmt(data[key])] for label, key, fmt in items if _present(data.get(key))]


def _flatten(settings: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested settings as dotted names (train.lr), None values left out."""
    flat = []
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat += _flatten(value, name + ".")
        elif _present(value):
            flat.append((name, value))
    return flat


# ---- YAML front matter -----------------------------------------------------------------------

def _yaml_scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        # YAML 1.1 (PyYAML) reads 1e-05 as a string: its floats need a dot
        return text.replace("e", ".0e") if "e" in text and "." not in text else text
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid double-quoted YAML scalar


def base_model_id(base_model: str | None) -> str | None:
    """The hub id of a base model spec: 'bundled' is all-MiniLM-L6-v2; an org/name spec that is
    not a local folder is taken as a hub id; anything else (a folder, a run) has none."""
    if not base_model:
        return None
    if base_model == BUNDLED:
        return BUNDLED_HUB_ID
    if _HUB_ID.match(base_model) and not Path(base_model).exists():
        return base_model
    return None


def _model_index(name: str, scores: list[dict]) -> list[str]:
    results = []
    for score in scores:
        metrics = _score_metrics(score)
        finite = [(m, v) for m, v in metrics if isinstance(v, (int, float)) and math.isfinite(v)]
        if not finite or not _present(score.get("task")):
            continue
        task_type = _TASK_TYPES.get(score.get("task_type"), score.get("task_type") or "text-classification")
        results += [
            "  - task:",
            f"      type: {_yaml_scalar(task_type)}",
            "    dataset:",
            f"      name: {_yaml_scalar(score['task'])}",
            f"      type: {_yaml_scalar(score['task'])}",
            "    metrics:",
        ]
        for metric, value in finite:
            results += [f"    - type: {_yaml_scalar(metric)}", f"      value: {_yaml_scalar(float(value))}"]
    if not results:
        return []
    return ["model-index:", f"- name: {_yaml_scalar(name)}", "  results:", *results]


def _front_matter(info: dict, head_trained: bool) -> list[str]:
    tags = []
    for tag in ("adapt-distill", info.get("kind"), info.get("strategy")):
        if _present(tag) and tag not in tags:
            tags.append(tag)
    pipeline = _TASK_TYPES.get(info.get("task_type")) or ("fill-mask" if head_trained else "feature-extraction")
    lines = ["---", "library_name: transformers", f"pipeline_tag: {pipeline}", "tags:", *(f"- {_yaml_scalar(tag)}" for tag in tags)]
    hub_id = base_model_id(info.get("base_model"))
    if hub_id:
        lines.append(f"base_model: {_yaml_scalar(hub_id)}")
    lines += _model_index(info["name"], info.get("scores") or [])
    return lines + ["---"]


# ---- sections --------------------------------------------------------------------------------

def _summary(info: dict) -> list[str]:
    kind = info.get("kind")
    what, start = _KINDS.get(kind, (f"a {kind} model" if _present(kind) else "a model", "from"))
    text = f"**{info['name']}** is {what}"
    if _present(info.get("base_model")):
        text += f" {start} {_base(info['base_model'])}"
    if _present(info.get("strategy")):
        text += f", built with the {info['strategy']} strategy"
    corpus = info.get("corpus") or {}
    if _present(corpus.get("name")):
        text += f" on the corpus `{corpus['name']}`"
        if _present(corpus.get("documents")):
            text += f" ({count(int(corpus['documents']), 'document')})"
    return [text + ". It was made with adapt-distill, an implementation of Adapt-and-Distill "
                   "([Yao et al. 2021](https://arxiv.org/abs/2106.13474))."]


def _base(base_model: str) -> str:
    hub_id = base_model_id(base_model)
    return f"`{base_model}`" + (f" ({hub_id})" if hub_id and hub_id != base_model else "")


def _sizes(intrinsic: dict) -> dict:
    return {key: intrinsic[key] for key in ("vocab_size", "parameters", "size_bytes") if key in intrinsic}


def _details(info: dict) -> list[str]:
    rows = _pairs([("Kind", "kind", str), ("Base model", "base_model", _base),
                   ("Strategy", "strategy", str), ("Task", "task", str), ("Labels", "labels", ", ".join),
                   ("Created", "created", str)], info)
    rows += _pairs([("Layers", "layers", _int), ("Hidden size", "hidden", _int), ("Attention heads", "heads", _int),
                    ("Intermediate size", "intermediate", _int), ("Vocabulary size", "vocab_size", _int),
                    ("Parameters", "parameters", _int), ("Size on disk", "size_bytes", human_bytes)],
                   # without a shape, the intrinsic measures still know the size
                   {**_sizes(info.get("intrinsic") or {}), **(info.get("shape") or {})})
    return _table(["property", "value"], rows)


def _vocabulary(info: dict) -> list[str]:
    vocab = info.get("vocabulary") or {}
    rows = _pairs([("Base vocabulary", "base_vocab_size", _int), ("Added domain tokens", "added_tokens", _int),
                   ("Vocabulary size", "vocab_size", _int), ("Vocabulary analysis", "analysis_id", str),
                   ("Gain threshold", "threshold", lambda v: f"{float(v) * 100:.4g}%"),
                   ("Size the threshold picks", "picked_vocab_size", _int)], vocab)
    if not rows:
        return []
    lines = _table(["property", "value"], rows)
    if _present(vocab.get("added_tokens")):
        lines += ["", "New tokens are appended after the base vocabulary (base ids are unchanged); each new embedding "
                      "starts as the mean of the base embeddings of the pieces the base tokenizer splits it into."]
    return lines


def _training_data(info: dict) -> list[str]:
    rows = _pairs([("Corpus", "name", lambda v: f"`{v}`"), ("Documents", "documents", _int),
                   ("Size", "bytes", human_bytes), ("SHA-256", "sha256", lambda v: f"`{v}`")], info.get("corpus") or {})
    return _table(["property", "value"], rows)


def _training(info: dict) -> list[str]:
    lines = []
    for stage, settings in (info.get("training") or {}).items():
        rows = [[f"`{name}`", _number(value)] for name, value in _flatten(settings or {})]
        if rows:
            lines += [f"### {str(stage).replace('_', ' ').capitalize()}", "", *_table(["setting", "value"], rows), ""]
    return lines[:-1]


def _score_metrics(score: dict) -> list[tuple[str, object]]:
    """(metric, mean) pairs of a score, the primary metric first."""
    metrics = dict(score.get("metrics") or {})
    primary = score.get("metric")
    if primary in metrics:
        return [(primary, metrics.pop(primary)), *metrics.items()]
    return list(metrics.items())


def _evaluation(info: dict) -> list[str]:
    rows, hashes = [], []
    for score in info.get("scores") or []:
        task, primary, spread = score.get("task", "?"), score.get("metric"), score.get("std") or {}
        before = len(rows)
        for metric, mean in _score_metrics(score):
            if not isinstance(mean, (int, float)) or not _present(mean):
                continue
            # an evaluation stored before one seed's spread became None has 0.0 there: never "± 0"
            several = not _present(score.get("seeds")) or score["seeds"] > 1
            value = _score(mean) + (f" ± {_score(spread[metric])}" if several and _present(spread.get(metric)) else "")
            interval = (score.get("ci95") or {}).get(metric)
            per_seed = score.get("per_seed") if metric == primary else None
            rows.append([task, f"**{metric}**" if metric == primary else metric, value,
                         f"{_score(interval[0])} to {_score(interval[1])}" if _present(interval) else "—",
                         _int(score["seeds"]) if _present(score.get("seeds")) else "—",
                         ", ".join(_score(v) for v in per_seed) if _present(per_seed) else "—"])
        if len(rows) > before and _present(score.get("task_sha256")):
            hashes.append(f"- `{task}`: `{score['task_sha256']}`")
    if not rows:
        return []
    lines = ["Each task is fine-tuned once per seed: the mean ± standard deviation over the seeds (none with one "
             "seed), the 95% interval over the test examples and seeds (1,000 seeded bootstrap resamples), the "
             "primary metric "
             "in bold.", "", *_table(["task", "metric", "mean ± std", "95% interval", "seeds", "per seed"], rows)]
    if hashes:
        lines += ["", "Task data (SHA-256):", "", *hashes]
    return lines


def _speed(info: dict) -> list[str]:
    return _table(["measure", "value"], _pairs([
        ("Device", "device", str), ("CPU", "cpu_model", str), ("Threads", "threads", _int),
        ("Sequence length", "seq_len", _int), ("Batch size", "batch_size", _int),
        ("Latency p50 (batch 1)", "latency_ms_p50", lambda v: f"{v:,.2f} ms"),
        ("Latency p95 (batch 1)", "latency_ms_p95", lambda v: f"{v:,.2f} ms"),
        ("Latency spread p75 - p25", "latency_ms_iqr", lambda v: f"{v:,.2f} ms"),
        ("Throughput", "throughput_per_s", lambda v: f"{v:,.1f} sequences/s"),
        ("Noisy measurement", "noisy_reason", str),
        ("Speed-up vs the teacher", "speedup_vs_teacher", lambda v: f"{v:.2f}×"),
    ], info.get("speed") or {}))


def _intrinsic(info: dict) -> list[str]:
    data = info.get("intrinsic") or {}
    rows = _pairs([
        ("Corpus", "corpus", lambda v: f"`{v}`"), ("Words measured", "words", _int),
        ("Tokens per word", "tokens_per_word", _score),
        ("Unknown-token rate", "unknown_rate", lambda v: f"{v * 100:.4g}%"),
        ("Held-out blocks", "heldout_blocks", _int), ("Held-out MLM loss", "heldout_loss", _score),
        ("Perplexity", "perplexity", lambda v: f"{v:,.1f}" if v >= 1000 else _score(v)),
    ], data)
    if rows and not _present(data.get("perplexity")) and "mlm_head_trained" in data:
        why = "the corpus is too small" if data["mlm_head_trained"] else "the MLM head is untrained"
        rows.append(["Perplexity", f"not measured: {why}"])
    return _table(["measure", "value"], rows)


def _usage(head_trained: bool, task_type: str | None = None) -> list[str]:
    if task_type in _TASK_TYPES:
        return ["```python", "from transformers import pipeline", "",
                'folder = "path/to/this/folder"  # the folder this README is in',
                f'classify = pipeline("{_TASK_TYPES[task_type]}", model=folder)',
                'print(classify("The patient was treated."))', "```"]
    if head_trained:
        return ["```python", "from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline", "",
                'folder = "path/to/this/folder"  # the folder this README is in',
                "tokenizer = AutoTokenizer.from_pretrained(folder)",
                "model = AutoModelForMaskedLM.from_pretrained(folder, use_safetensors=True)",
                "fill = pipeline(\"fill-mask\", model=model, tokenizer=tokenizer)",
                'print(fill(f"The patient was treated with {tokenizer.mask_token}."))', "```"]
    return ["The MLM head of this model is untrained (the base had none, or it was not trained here): the model "
            "is meant for fine-tuning or feature extraction, not for filling in masks.", "",
            "```python", "import torch", "from transformers import AutoModel, AutoTokenizer", "",
            'folder = "path/to/this/folder"  # the folder this README is in',
            "tokenizer = AutoTokenizer.from_pretrained(folder)",
            "model = AutoModel.from_pretrained(folder, use_safetensors=True)",
            'inputs = tokenizer(["The patient was treated."], return_tensors="pt")',
            "with torch.inference_mode():",
            "    features = model(**inputs).last_hidden_state  # (batch, tokens, hidden)", "```"]


def _versions(info: dict) -> list[str]:
    return [f"- {name}: {version}" for name, version in (info.get("versions") or {}).items() if _present(version)]


def model_card(info: dict) -> str:
    """The README.md text of a model card for `info` (only `name` is required)."""
    if not _present(info.get("name")):
        raise ConfigError("a model card needs a name: pass info['name']")
    head_trained = info.get("mlm_head_trained")
    if head_trained is None:
        head_trained = (info.get("intrinsic") or {}).get("mlm_head_trained", False)
    head_trained = bool(head_trained)
    lines = [*_front_matter(info, head_trained), "", f"# {info['name']}", "", *_summary(info)]
    for title, body in (("Model details", _details(info)), ("Vocabulary", _vocabulary(info)),
                        ("Training data", _training_data(info)), ("Training procedure", _training(info)),
                        ("Evaluation", _evaluation(info)), ("Speed", _speed(info)),
                        ("Intrinsic measures", _intrinsic(info)), ("How to use", _usage(head_trained, info.get("task_type"))),
                        ("Framework versions", _versions(info))):
        if body:
            lines += ["", f"## {title}", "", *body]
    return "\n".join(lines) + "\n"


def write_model_card(folder: str | Path, info: dict) -> Path:
    """Write folder/README.md atomically (a temporary file renamed over it); its path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"no such model folder: {folder}")
    text = model_card(info)
    path = folder / CARD_FILE
    tmp = folder / f".{CARD_FILE}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
