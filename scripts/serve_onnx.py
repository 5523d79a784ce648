"""Serve an exported model with nothing but ONNX Runtime and a tokenizer: the smallest server-side
code for a folder `adapt-distill models export-onnx` wrote. A fine-tuned model (evaluate --keep)
answers labels; an encoder answers mean-pooled sentence vectors.

    python scripts/serve_onnx.py FOLDER "a text" "another text"     # one JSON line per text
    echo "a text" | python scripts/serve_onnx.py FOLDER               # texts from stdin, one per line
    printf 'a text\tits pair\n' | python scripts/serve_onnx.py FOLDER  # a pair task: the two texts, tab apart

Copy what it does into your service: load once, then tokenize, run and read the output per request.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from transformers import AutoTokenizer


class Served:
    """An export loaded once: its tokenizer, an ONNX Runtime session on the CPU and what export.json says."""

    def __init__(self, folder: str | Path, threads: int = 1, max_length: int | None = None):
        folder = Path(folder)
        self.info = json.loads((folder / "export.json").read_text())
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        positions = json.loads((folder / "config.json").read_text()).get("max_position_embeddings", 512)
        self.max_length = max_length or min(positions, self.tokenizer.model_max_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])

    def __call__(self, texts: list[str]) -> list[dict]:
        """Texts (a pair task's as "text<TAB>pair") in, one answer per text out."""
        pairs = [text.split("\t", 1) for text in texts]
        seconds = [p[1] if len(p) == 2 else None for p in pairs]
        batch = self.tokenizer([p[0] for p in pairs], seconds if any(seconds) else None, padding=True,
                               truncation=True, max_length=self.max_length, return_tensors="np")
        ids = batch["input_ids"].astype(np.int64)
        given = {"input_ids": ids, "attention_mask": batch["attention_mask"].astype(np.int64),
                 "token_type_ids": batch.get("token_type_ids", np.zeros_like(ids)).astype(np.int64)}
        output = self.session.run(None, {i.name: given[i.name] for i in self.session.get_inputs()})[0]
        if self.info.get("task_type") == "classification":  # (texts, labels) logits
            return [{"text": t, "label": self.info["labels"][int(row.argmax())]} for t, row in zip(texts, output)]
        if self.info.get("task_type") == "ner":  # (texts, tokens, labels): one tag per token piece
            tags = output.argmax(-1)
            return [{"text": t, "tokens": self.tokenizer.convert_ids_to_tokens(ids[i][given["attention_mask"][i] == 1]),
                     "tags": [self.info["labels"][int(k)] for k in tags[i][given["attention_mask"][i] == 1]]}
                    for i, t in enumerate(texts)]
        mask = given["attention_mask"][..., None]  # an encoder: mean-pooled last hidden states
        pooled = (output * mask).sum(1) / np.maximum(mask.sum(1), 1)
        return [{"text": t, "vector": [round(float(x), 6) for x in v]} for t, v in zip(texts, pooled)]


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    folder = Path(argv[0])
    if not (folder / "model.onnx").is_file() or not (folder / "export.json").is_file():
        print(f"error: {folder} is not an export (no model.onnx and export.json): write one with adapt-distill "
              f"models export-onnx", file=sys.stderr)
        return 2
    texts = argv[1:] or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        print("error: no text given: pass texts after the folder, or one per line on stdin", file=sys.stderr)
        return 2
    served = Served(folder)
    for answer in served(texts):
        print(json.dumps(answer, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
