"""Models exported for serving: `models export-onnx` writes an ONNX encoder (fp32 or int8) with its
tokenizer, checked against PyTorch, and `bench` times it beside the PyTorch models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import build_tiny_bert

from core.errors import ConfigError, ModelError

ROOT = Path(__file__).resolve().parents[1]


def test_an_export_is_checked_written_whole_and_timed_beside_pytorch(cli, tmp_path, home):
    tiny = build_tiny_bert(tmp_path / "tiny")
    out = tmp_path / "exports"
    out.mkdir()
    fp32 = json.loads(cli("models", "export-onnx", str(tiny), "--out", str(out), "--json").stdout)
    folder = out / "tiny-onnx-fp32"
    assert fp32["path"] == str(folder) and fp32["precision"] == "fp32"
    assert fp32["max_abs_diff"] <= 1e-3 and fp32["min_pooled_cosine"] > 0.9999
    assert {p.name for p in folder.iterdir()} >= {"model.onnx", "export.json", "vocab.txt", "tokenizer.json",
                                                   "config.json"}
    assert json.loads((folder / "export.json").read_text())["dynamic_axes"] == ["batch", "sequence"]
    int8 = json.loads(cli("models", "export-onnx", str(tiny), "--quantize", "int8", "--out", f"{out}/",
                          "--json").stdout)
    assert int8["precision"] == "int8" and int8["min_pooled_cosine"] >= 0.95 and int8["max_abs_diff"] > 0
    again = cli("models", "export-onnx", str(tiny), "--out", str(folder), ok=False)
    assert "exists already" in again.stderr
    assert sorted(p.name for p in out.iterdir()) == ["tiny-onnx-fp32", "tiny-onnx-int8"], "no partial folder left"

    timed = json.loads(cli("bench", "--model", str(tiny), "--model", str(folder), "--model",
                           str(out / "tiny-onnx-int8"), "--seq-len", "32", "--batch-size", "4", "--json").stdout)
    rows = {r["model"]: r for r in timed["models"]}
    assert set(rows) == {str(tiny), str(folder), str(out / "tiny-onnx-int8")}
    for row in rows.values():
        assert row["latency_ms_p50"] > 0 and row["throughput_per_s"] > 0 and row["threads"] == 1
    assert rows[str(folder)]["params"] > 0.9 * rows[str(tiny)]["params"]  # the same weights, in the graph
    assert cli("bench", "--model", str(folder), "--device", "cuda", ok=False).stderr


def test_an_export_out_of_bounds_is_not_written(tmp_path, monkeypatch):
    from core import export

    tiny = build_tiny_bert(tmp_path / "tiny")
    monkeypatch.setattr(export, "FP32_MOST_DIFF", 0.0)  # no export can be that exact
    with pytest.raises(ModelError, match="differs from PyTorch by up to .* not written"):
        export.export_onnx(tiny, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"], "nothing half-written"
    with pytest.raises(ModelError, match="cosine 0.5000, below 0.95"):
        export.check_close("int8", {"max_abs_diff": 2.0, "min_cosine": 0.1, "min_pooled_cosine": 0.5})


def test_without_the_extra_the_command_says_how_to_install_it(tmp_path, monkeypatch):
    from core.export import require_onnx

    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"pip install 'adapt-distill\[onnx\]'"):
        require_onnx()
    tiny = build_tiny_bert(tmp_path / "tiny")
    code = ("import sys; sys.modules['onnxscript'] = None; from app.cli.parser import main; "
            f"sys.exit(main(['models', 'export-onnx', {str(tiny)!r}, '--out', {str(tmp_path / 'o')!r}]))")
    env = {**os.environ, "ADAPT_DISTILL_HOME": str(tmp_path / "home")}
    env.pop("DATABASE_URL", None)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "pip install 'adapt-distill[onnx]'" in result.stderr and not (tmp_path / "o").exists()


def test_an_evaluation_scores_the_fine_tuned_model_exported_to_onnx(cli, tmp_path, home):
    from conftest import write_task_csv

    tiny = build_tiny_bert(tmp_path / "tiny")
    data = json.loads(cli("evaluate", "--model", str(tiny), "--train", str(write_task_csv(tmp_path / "t.csv")),
                          "--task-type", "classification", "--seeds", "2", "--epochs", "10", "--lr", "1e-3",
                          "--max-length", "32", "--patience", "0", "--onnx", "fp32,int8", "--json").stdout)
    torch_score, onnx = data["metrics"]["macro_f1"], data["onnx"]
    assert set(onnx) == {"fp32", "int8"}
    assert onnx["fp32"]["macro_f1"] == pytest.approx(torch_score, abs=1e-9)  # the same predictions
    assert 0 <= onnx["int8"]["macro_f1"] <= 1 and len(onnx["int8"]["per_seed"]) == 2
    assert not list((home / "runs").rglob("*.onnx")), "the exported test models are removed"
    table = cli("evaluate", "--model", str(tiny), "--task", str(data["task_id"]), "--seeds", "1", "--epochs", "1",
                "--onnx", "int8").stdout
    assert "exported to ONNX int8: macro_f1" in table
    assert "--onnx takes fp32 and int8, got fp16" in cli("evaluate", "--model", str(tiny), "--task",
                                                          str(data["task_id"]), "--onnx", "fp16", ok=False).stderr


def test_a_kept_fine_tuned_model_is_served_with_its_task_head(cli, tmp_path, home):
    """evaluate --keep makes the best dev seed's fine-tuned model a model of its own; export-onnx writes
    it with its head (logits out), and ONNX Runtime scores the test split as that seed did in PyTorch.
    A fine-tuned model or an ONNX export cannot start a training or another fine-tuning."""
    from conftest import write_task_csv

    from core.export import OnnxTaskModel
    from core.judge.finetune import collator_for, encode, predict, scores
    from core.judge.settings import FinetuneConfig
    from core.judge.tasks import load_task
    from core.model_io import load_tokenizer

    tiny = build_tiny_bert(tmp_path / "tiny")
    data = json.loads(cli("evaluate", "--model", str(tiny), "--train", str(write_task_csv(tmp_path / "t.csv")),
                          "--task-type", "classification", "--seeds", "2", "--epochs", "4", "--lr", "1e-3",
                          "--max-length", "32", "--keep", "--json").stdout)
    kept = data["kept_model"]
    assert kept["spec"] == f"run:{data['run_id']}" and kept["seed"] in (0, 1)
    assert " · fine-tuned on 't.csv': tiny" in kept["name"]
    folder = home / "runs" / str(data["run_id"]) / "model"
    config = json.loads((folder / "config.json").read_text())
    info = json.loads((folder / "adapt_distill.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and info["kind"] == "fine-tuned"
    assert info["dev"]["macro_f1"] == max(data_seed["dev"]["macro_f1"] for data_seed in [
        json.loads((home / "runs" / str(data["run_id"]) / "seeds" / f"seed-{s}" / "result.json").read_text())
        for s in (0, 1)])
    assert "pipeline_tag: text-classification" in (folder / "README.md").read_text()
    assert not list((home / "runs").rglob("best-epoch-*.safetensors")), "the seeds' weights are removed"
    listed = {m["spec"]: m for m in json.loads(cli("models", "list", "--json").stdout)["models"]}
    assert listed[kept["spec"]]["kind"] == "fine-tuned" and listed[kept["spec"]]["name"] == kept["name"]

    out = tmp_path / "served"
    export = json.loads(cli("models", "export-onnx", kept["spec"], "--out", str(out), "--json").stdout)
    assert export["output"] == "logits" and export["task_type"] == "classification"
    assert export["labels"] == [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    assert export["max_abs_diff"] <= 1e-3 and export["same_prediction"] == 1.0
    int8 = json.loads(cli("models", "export-onnx", kept["spec"], "--quantize", "int8", "--out", f"{tmp_path}/",
                          "--json").stdout)
    assert int8["output"] == "logits" and int8["min_pooled_cosine"] >= 0.95
    task = load_task(next((home / "tasks").iterdir()))
    settings = FinetuneConfig(max_length=32)
    tokenizer = load_tokenizer(out)
    test = encode(task, "test", tokenizer, 32)
    served = predict(OnnxTaskModel(out / "model.onnx"), test, collator_for(task, tokenizer), "cpu", 16)
    assert scores(task, "test", test, served, settings)["macro_f1"] == pytest.approx(info["test"]["macro_f1"], abs=1e-9)

    texts = [x.text for x in task.splits["test"][:20]]  # served by the script an engineer would copy
    answered = subprocess.run([sys.executable, str(ROOT / "scripts" / "serve_onnx.py"), str(out), *texts], capture_output=True,
                              text=True, timeout=300, check=True).stdout.splitlines()
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(folder), use_safetensors=True).eval()
    with torch.inference_mode():
        logits = model(**tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")).logits
    assert [json.loads(line)["label"] for line in answered] == [config["id2label"][str(int(i))]
                                                                for i in logits.argmax(-1)]

    from conftest import write_corpus

    cli("corpus", "add", str(write_corpus(tmp_path / "c.txt", documents=50)))
    for args, said in ((("adapt", "--corpus", "1", "--model", kept["spec"]), "is a fine-tuned model with its task head"),
                       (("evaluate", "--model", kept["spec"], "--task", str(data["task_id"])), "fine-tuning starts "
                                                                                              "from an encoder"),
                       (("distill", "--corpus", "1", "--teacher", str(out)), "is an ONNX export for serving"),
                       (("vocab", "analyze", "--corpus", "1", "--base", str(folder)), "is a model fine-tuned for "
                                                                                     "classification"),
                       (("evaluate", "--model", str(out), "--task", str(data["task_id"])), "ONNX export")):
        assert said in cli(*args, ok=False).stderr

    cli("task", "delete", str(data["task_id"]))  # its evaluation goes; the kept model stays, and its card
    card = (folder / "README.md").read_text() if cli("models", "card", kept["spec"]) else ""
    assert "(seed " in card and "of 2 seeds" in card and "t.csv" not in card.split("## Model details")[1]
    assert cli("models", "export", kept["spec"], "--out", f"{tmp_path}/").returncode == 0


def test_a_kept_tagger_is_exported_benchmarked_and_served_with_its_tags(cli, tmp_path, home):
    from conftest import write_conll

    tiny = build_tiny_bert(tmp_path / "tiny")
    data = json.loads(cli("evaluate", "--model", str(tiny), "--train", str(write_conll(tmp_path / "ner.conll")),
                          "--task-type", "ner", "--seeds", "1", "--epochs", "2", "--lr", "1e-3", "--max-length", "32",
                          "--keep", "--json").stdout)
    kept = data["kept_model"]["spec"]
    folder = home / "runs" / str(data["run_id"]) / "model"
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["BertForTokenClassification"]
    assert "pipeline_tag: token-classification" in (folder / "README.md").read_text()
    fp32 = json.loads(cli("models", "export-onnx", kept, "--out", str(tmp_path / "f"), "--json").stdout)
    assert fp32["same_prediction"] == 1.0 and fp32["max_abs_diff"] <= 1e-3  # every probe token, the same tag
    export = json.loads(cli("models", "export-onnx", kept, "--quantize", "int8", "--out", str(tmp_path / "x"),
                            "--json").stdout)
    assert export["task_type"] == "ner" and export["output"] == "logits" and export["same_prediction"] >= 0.9
    assert export["min_pooled_cosine"] >= 0.95 and set(export["labels"]) >= {"O"}
    answer = json.loads(subprocess.run([sys.executable, str(ROOT / "scripts" / "serve_onnx.py"), str(tmp_path / "x"),
                                        "aspirin treats pain"], capture_output=True, text=True, timeout=300,
                                       check=True).stdout)
    assert answer["tokens"][0] == "[CLS]" and len(answer["tags"]) == len(answer["tokens"])
    nothing = subprocess.run([sys.executable, str(ROOT / "scripts" / "serve_onnx.py"), str(tmp_path / "x")], input="",
                             capture_output=True, text=True, timeout=300)
    assert nothing.returncode == 2 and nothing.stderr.count("\n") == 1 and "no text given" in nothing.stderr
    assert set(answer["tags"]) <= set(export["labels"])
    timed = json.loads(cli("bench", "--model", kept, "--model", str(tmp_path / "x"), "--seq-len", "32",
                           "--batch-size", "2", "--json").stdout)["models"]
    assert all(row["latency_ms_p50"] > 0 for row in timed)
    assert timed[0]["params"] == pytest.approx(timed[1]["params"], rel=0.2)  # the encoder, timed in both
