"""The bundled teacher and its default student, each in PyTorch fp32, ONNX fp32 and ONNX int8, timed
side by side at one thread (core.judge.speed.measure_speed: the same token ids, interleaved, after a
warm-up), with their size on disk and the speed-up of each against the fp32 teacher.

    python bench/serving.py                      # 1 thread, sequence length 128, batch 32 for throughput
    python bench/serving.py --threads 2 --repeats 100

The student is the default shape a distillation gives the bundled 6 x 384 teacher (half its layers
and width: 3 x 192, 6 heads, FFN 768) with random weights: speed does not depend on the weights.
Both are exported with core.export (the checks of `models export-onnx` included)."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=60, help="batch-1 forwards per model (at least 30)")
    args = parser.parse_args(argv)
    teacher = bundled_path()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
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
    print(f"| model | p50 (batch 1) | p95 (batch 1) | seq/s (batch {args.batch_size}) | size | "
          f"speed-up at batch 1 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r.name} | {latency_ms(r.latency_ms_p50)} | {latency_ms(r.latency_ms_p95)} | "
              f"{r.throughput_per_s:,.1f} | {human_bytes(r.size_bytes)} | {speedup(r.speedup_vs_first)}"
              + (" (noisy)" if r.noisy else "") + " |")
    first = results[0]
    print(f"\n{first.cpu_model}, {args.threads} thread(s), sequence length {args.seq_len}, {args.repeats} batch-1 "
          f"forwards per model interleaved; torch {first.torch_version}; load average {first.load_before} -> "
          f"{first.load_after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
