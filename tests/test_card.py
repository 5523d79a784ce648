import re

import pytest

from core.errors import ModelError
from core.judge.card import BUNDLED_HUB_ID, base_model_id, library_versions, model_card, write_model_card
from core.judge.measures import IntrinsicMeasures

try:
    import yaml
except ImportError:  # PyYAML is not a dependency: fall back to a structural check
    yaml = None

SECTIONS = ["Model details", "Vocabulary", "Training data", "Training procedure", "Evaluation", "Speed",
            "Intrinsic measures", "How to use", "Framework versions"]


def front_matter(text: str) -> tuple[dict | None, str]:
    """(the parsed front matter, or None without PyYAML after a structural check; the raw block)."""
    assert text.startswith("---\n")
    raw, rest = text[4:].split("\n---\n", 1)
    assert rest.startswith("\n# ")
    for line in raw.splitlines():  # top-level keys, list items and indented lines only
        assert re.match(r"^([a-z_-]+:( .+)?|- .+|  .+)$", line), line
    return (yaml.safe_load(raw) if yaml is not None else None), raw


def full_info() -> dict:
    intrinsic = IntrinsicMeasures(parameters=22_713_216, size_bytes=90_912_345, vocab_size=40_522, words=200_004,
                                  tokens_per_word=1.23456, unknown_rate=0.00123, mlm_head_trained=True,
                                  heldout_loss=2.3456789, perplexity=10.44, heldout_blocks=64).to_dict()
    return {
        "name": "run:12 · student of run:7",
        "kind": "student",
        "base_model": "bundled",
        "strategy": "adapt-and-distill",
        "corpus": {"name": "pubmed: abstracts #1", "sha256": "ab" * 32, "documents": 120_000, "bytes": 52_400_000},
        "vocabulary": {"base_vocab_size": 30_522, "added_tokens": 10_000, "vocab_size": 40_522, "analysis_id": 3,
                       "threshold": 0.01, "picked_vocab_size": 40_522},
        "shape": {"layers": 6, "hidden": 384, "heads": 12, "intermediate": 1536, "vocab_size": 40_522,
                  "parameters": 22_713_216, "size_bytes": 90_912_345},
        "training": {
            "adaptation": {"seq_len": 128, "whole_word": False, "heldout_fraction": 0.02,
                           "train": {"steps": 2000, "lr": 5e-05, "epochs": None, "device": "auto"}},
            "distillation": {"student": "L6-H384", "version": "v2", "train": {"steps": 5000, "lr": 0.0001}},
        },
        "scores": [
            {"task": "ncbi-disease", "task_type": "ner", "task_sha256": "cd" * 32, "metric": "f1", "seeds": 3,
             "per_seed": [0.81234, 0.82345, 0.80123], "metrics": {"f1": 0.81234, "precision": 0.8, "recall": 0.825},
             "std": {"f1": 0.0111, "precision": 0.01}, "ci95": {"f1": [0.7912, 0.8301]}},
            {"task": "pubmed-rct", "task_type": "classification", "metric": "accuracy", "seeds": 2,
             "per_seed": [0.9, 0.91], "metrics": {"accuracy": 0.905, "macro_f1": 1e-05}, "std": {"accuracy": 0.005}},
        ],
        "speed": {"device": "cpu", "seq_len": 128, "batch_size": 32, "latency_ms_p50": 12.3456,
                  "latency_ms_p95": 15.0, "throughput_per_s": 1234.5, "speedup_vs_teacher": 3.456},
        "intrinsic": {**intrinsic, "corpus": "pubmed"},
        "mlm_head_trained": True,
        "versions": library_versions(),
        "created": "2025-06-01",
    }


def test_full_card_has_every_section_and_a_valid_front_matter():
    text = model_card(full_info())
    assert "None" not in text
    for section in SECTIONS:
        assert f"\n## {section}\n" in text
    assert "\n# run:12 · student of run:7\n" in text
    meta, raw = front_matter(text)
    if meta is not None:
        assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "fill-mask"
        assert meta["tags"] == ["adapt-distill", "student", "adapt-and-distill"]
        assert meta["base_model"] == BUNDLED_HUB_ID
        (index,) = meta["model-index"]
        assert index["name"] == "run:12 · student of run:7"
        ner, cls = index["results"]
        assert ner["task"]["type"] == "token-classification" and cls["task"]["type"] == "text-classification"
        assert ner["dataset"]["name"] == "ncbi-disease"
        assert ner["metrics"][0] == {"type": "f1", "value": 0.81234}
        assert cls["metrics"] == [{"type": "accuracy", "value": 0.905}, {"type": "macro_f1", "value": 1e-05}]
    else:
        assert "pipeline_tag: fill-mask" in raw and f"base_model: {BUNDLED_HUB_ID}" in raw
        assert "value: 0.81234" in raw and "value: 1.0e-05" in raw
    # numbers for people
    assert "22,713,216" in text and "90.9 MB" in text and "120,000" in text
    assert "| ncbi-disease | **f1** | 0.8123 ± 0.0111 | 0.7912 to 0.8301 | 3 | 0.8123, 0.8235, 0.8012 |" in text
    assert "| ncbi-disease | recall | 0.825 | — | 3 | — |" in text
    assert "12.35 ms" in text and "1,234.5 sequences/s" in text and "3.46×" in text
    assert "| `train.lr` | 5e-05 |" in text and "`train.epochs`" not in text
    assert f"| Base model | `bundled` ({BUNDLED_HUB_ID}) |" in text
    assert "| Gain threshold | 1% |" in text and "| Perplexity | 10.44 |" in text
    assert "use_safetensors=True" in text and "AutoModelForMaskedLM" in text
    assert f"`{'cd' * 32}`" in text


def test_minimal_card_has_no_none_and_no_empty_table():
    text = model_card({"name": "bare"})
    assert "None" not in text and "|" not in text
    assert [line for line in text.splitlines() if line.startswith("## ")] == ["## How to use"]
    meta, raw = front_matter(text)
    assert "model-index" not in raw and "base_model" not in raw
    if meta is not None:
        assert meta == {"library_name": "transformers", "pipeline_tag": "feature-extraction", "tags": ["adapt-distill"]}


def test_missing_values_are_left_out():
    info = {"name": "partial", "speed": {"device": "cpu", "speedup_vs_teacher": None}, "scores": [],
            "training": {"adaptation": {}}, "vocabulary": {"threshold": None},
            "intrinsic": {"words": 10, "perplexity": None, "heldout_loss": None, "mlm_head_trained": False}}
    text = model_card(info)
    assert "None" not in text and "## Evaluation" not in text and "## Training procedure" not in text
    assert "## Vocabulary" not in text and "Speed-up" not in text
    sized = model_card({"name": "sized", "intrinsic": {"parameters": 1234, "size_bytes": 2_500_000}})
    assert "| Parameters | 1,234 |" in sized and "| Size on disk | 2.5 MB |" in sized
    assert "| Perplexity | not measured: the MLM head is untrained |" in text


def test_pipeline_tag_follows_the_mlm_head():
    trained = model_card({"name": "m", "mlm_head_trained": True})
    untrained = model_card({"name": "m", "mlm_head_trained": False})
    assert "pipeline_tag: fill-mask" in trained and "AutoModelForMaskedLM" in trained
    assert "pipeline_tag: feature-extraction" in untrained and "untrained" in untrained
    assert "AutoModelForMaskedLM" not in untrained and "use_safetensors=True" in untrained
    from_intrinsic = model_card({"name": "m", "intrinsic": {"mlm_head_trained": True}})
    assert "pipeline_tag: fill-mask" in from_intrinsic


def test_base_model_and_quoting(tmp_path, monkeypatch):
    assert base_model_id("bundled") == BUNDLED_HUB_ID
    assert base_model_id("google-bert/bert-base-uncased") == "google-bert/bert-base-uncased"
    assert base_model_id("run:7") is None and base_model_id(str(tmp_path)) is None and base_model_id(None) is None
    (tmp_path / "models" / "mine").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert base_model_id("models/mine") is None  # a local folder, though it looks like org/name
    name = 'a "quoted": name # with - yes'
    text = model_card({"name": name, "kind": "adapted", "strategy": "yes", "base_model": "org/model",
                       "scores": [{"task": "true", "metric": "acc: top-1", "metrics": {"acc: top-1": 0.5}}]})
    meta, raw = front_matter(text)
    if meta is not None:
        assert meta["tags"] == ["adapt-distill", "adapted", "yes"] and meta["base_model"] == "org/model"
        (index,) = meta["model-index"]
        assert index["name"] == name
        assert index["results"][0]["dataset"]["name"] == "true"
        assert index["results"][0]["metrics"] == [{"type": "acc: top-1", "value": 0.5}]


def test_write_model_card_is_atomic(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "README.md").write_text("old")
    path = write_model_card(folder, full_info())
    assert path == folder / "README.md"
    assert path.read_text(encoding="utf-8") == model_card(full_info())
    assert [p.name for p in folder.iterdir()] == ["README.md"]
    with pytest.raises(ModelError, match="no such model folder"):
        write_model_card(tmp_path / "missing", {"name": "x"})


def test_library_versions():
    import torch

    versions = library_versions()
    assert set(versions) == {"adapt-distill", "torch", "transformers", "tokenizers"}
    assert all(isinstance(v, str) and v for v in versions.values())
    assert versions["torch"] == torch.__version__


def test_sizes_and_counts_read_as_in_the_dashboard():
    text = model_card({"name": "small", "kind": "expanded", "base_model": "bundled",
                       "corpus": {"name": "notes", "documents": 1, "bytes": 2_500},
                       "shape": {"parameters": 1_234, "size_bytes": 750}})
    assert "on the corpus `notes` (1 document)" in text
    assert "| Size | 2.5 kB |" in text and "| Size on disk | 750 B |" in text
    assert "(4,321 documents)" in model_card({"name": "big", "corpus": {"name": "notes", "documents": 4_321}})


def test_a_score_of_one_seed_shows_no_spread_even_as_stored_before_it_was_none():
    info = {"name": "m", "scores": [
        {"task": "old", "task_type": "classification", "metric": "accuracy", "seeds": 1, "per_seed": [0.7],
         "metrics": {"accuracy": 0.7}, "std": {"accuracy": 0.0}},
        {"task": "new", "task_type": "classification", "metric": "accuracy", "seeds": 2, "per_seed": [0.7, 0.8],
         "metrics": {"accuracy": 0.75}, "std": {"accuracy": 0.0707}}]}
    text = model_card(info)
    assert "| old | **accuracy** | 0.7 | — | 1 |" in text and "± 0.0" not in text.split("| new |")[0]
    assert "| new | **accuracy** | 0.75 ± 0.0707 |" in text
