"""The bundled teacher and its default student, each in PyTorch fp32, ONNX fp32 and ONNX int8, timed
side by side at one thread (core.judge.speed.measure_speed: the same token ids, interleaved, after a
warm-up), with their size on disk and the speed-up of each against the fp32 teacher.

    python bench/serving.py                      # 1 thread, sequence length 128, batch 32 for throughput
    python bench/serving.py --threads 2 --repeats 100
    python bench/serving.py --scores             # and the test score of each on the demo's task

With --scores the student is distilled from the teacher on the demo's corpus (the demo's settings:
150 steps) and both are fine-tuned on the demo's task (2 seeds, the demo's settings) with
`adapt-distill evaluate --onnx fp32,int8`, which scores each seed's fine-tuned model in PyTorch and
exported to ONNX fp32 and int8 on the same test split; all of it in a temporary data folder,
through the command line.

The student is the default shape a distillation gives the bundled 6 x 384 teacher (half its layers
and width: 3 x 192, 6 heads, FFN 768) with random weights: speed does not depend on the weights.
Both are exported with core.export (the checks of `models export-onnx` included)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.configs import default_student  # noqa: E402
from core.export import export_onnx  # noqa: E402
from core.formatting import human_bytes, latency_ms, speedup  # noqa: E402
from core.judge.speed import measure_speed  # noqa: E402
from core.model_io import bundled_path  # noqa: E402

TOKENIZER = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def student_folder(teacher: Path, folder: Path) -> Path:
    """The default student of the teacher, random weights, with the teacher's tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig.from_pretrained(teacher)
    shape = default_student(config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
                            config.intermediate_size)
    torch.manual_seed(0)
    student = BertModel(BertConfig(vocab_size=config.vocab_size, hidden_size=shape.hidden,
                                   num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                                   intermediate_size=shape.intermediate,
                                   max_position_embeddings=config.max_position_embeddings))
    student.save_pretrained(folder)
    for name in TOKENIZER:
        if (teacher / name).is_file():
            shutil.copy2(teacher / name, folder / name)
    return folder


def cli(home: Path, *args: str) -> dict:
    """`adapt-distill ARGS --json` in the data folder `home`: its JSON."""
    env = {**os.environ, "ADAPT_DISTILL_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-m", "app.cli", *args, "--json"], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"adapt-distill {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def scored_student(home: Path) -> tuple[Path, dict]:
    """The demo's corpus and task, a student distilled on the corpus and both models evaluated on the
    task in PyTorch and ONNX: (the student's folder, {"teacher": scores, "student": scores}) where
    scores maps "PyTorch fp32", "ONNX fp32", "ONNX int8" to (metric, mean, std)."""
    from db.migrate import upgrade
    from db.session import get_sessionmaker
    from worker.demo import DEMO_EXPERIMENT, prepare_demo

    os.environ["ADAPT_DISTILL_HOME"] = str(home)
    upgrade()
    corpus, task = prepare_demo(get_sessionmaker())
    distill = DEMO_EXPERIMENT["distill"]
    made = cli(home, "distill", "--teacher", "bundled", "--corpus", str(corpus.id), "--steps", str(distill["steps"]),
               "--batch-size", str(distill["batch_size"]), "--seq-len", str(distill["seq_len"]))["runs"][0]
    finetune = DEMO_EXPERIMENT["finetune"]
    scores = {}
    for name, model in (("teacher", "bundled"), ("student", f"run:{made['run_id']}")):
        result = cli(home, "evaluate", "--model", model, "--task", str(task.id), "--seeds", str(finetune["seeds"]),
                     "--epochs", str(finetune["epochs"]), "--patience", str(finetune["patience"]), "--max-length",
                     str(finetune["max_length"]), "--batch-size", str(finetune["batch_size"]), "--onnx", "fp32,int8")
        metric = result["metric"]
        scores[name] = {"PyTorch fp32": (metric, result["metrics"][metric], result["metrics"].get(f"{metric}_std"))}
        for precision, found in result["onnx"].items():
            scores[name][f"ONNX {precision}"] = (metric, found[metric], found.get(f"{metric}_std"))
    return Path(made["output_dir"]), scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=60, help="batch-1 forwards per model (at least 30)")
    parser.add_argument("--scores", action="store_true", help="distil the student on the demo's corpus and score "
                                                              "both on the demo's task in each format")
    args = parser.parse_args(argv)
    teacher = bundled_path()
    scores: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.scores:
            student, scores = scored_student(root / "home")
        else:
            student = student_folder(teacher, root / "student")
        models = []
        for name, folder in (("teacher", teacher), ("student", student)):
            models.append((f"{name} · PyTorch fp32", folder))
            for precision in ("fp32", "int8"):
                info = export_onnx(folder, root / f"{name}-{precision}", precision)
                models.append((f"{name} · ONNX {precision}", root / f"{name}-{precision}"))
                print(f"exported {name} {precision}: largest difference {info['max_abs_diff']:.2g}, smallest "
                      f"sequence cosine {info['min_pooled_cosine']:.4f}", file=sys.stderr)
        results = measure_speed(models, "cpu", args.seq_len, args.batch_size, args.repeats, 5, 3, args.threads)
    metric = next((m for by_format in scores.values() for m, _, _ in by_format.values()), None)
    print(f"| model | p50 (batch 1) | p95 (batch 1) | seq/s (batch {args.batch_size}) | size | "
          f"speed-up at batch 1 |" + (f" test {metric} |" if metric else ""))
    print("| --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if metric else ""))
    for r in results:
        who, fmt = r.name.split(" · ")
        score = scores.get(who, {}).get(fmt)
        shown = "" if not metric else (f" {score[1]:.4f}" + (f" ± {score[2]:.4f}" if score[2] else "") + " |"
                                       if score else " — |")
        print(f"| {r.name} | {latency_ms(r.latency_ms_p50)} | {latency_ms(r.latency_ms_p95)} | "
              f"{r.throughput_per_s:,.1f} | {human_bytes(r.size_bytes)} | {speedup(r.speedup_vs_first)}"
              + (" (noisy)" if r.noisy else "") + " |" + shown)
    first = results[0]
    print(f"\n{first.cpu_model}, {args.threads} thread(s), sequence length {args.seq_len}, {args.repeats} batch-1 "
          f"forwards per model interleaved; torch {first.torch_version}; load average {first.load_before} -> "
          f"{first.load_after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
