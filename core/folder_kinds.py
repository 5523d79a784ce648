"""What a model folder holds, read from its files without loading it: an encoder (with or without
its MLM head), a fine-tuned model with a task head (an evaluation that kept its model), or an ONNX
export for serving (core.export). Only encoders start trainings and fine-tunings."""

from __future__ import annotations

import json
import math
from pathlib import Path

from core.errors import ModelError

ONNX_FILE = "model.onnx"  # an encoder exported for serving (core.export): timed and judged, never trained


def is_onnx_folder(path: str | Path) -> bool:
    return (Path(path) / ONNX_FILE).is_file()


FINE_TUNED = "fine-tuned"  # the kind of the model an evaluation keeps (evaluate --keep), with its task head
# The task heads of a fine-tuned model (an evaluation that kept its model), by the class its
# config.json names, as the task types call them.
TASK_HEADS = {"ForSequenceClassification": "classification", "ForTokenClassification": "ner"}


def task_head(path: str | Path) -> str | None:
    """The task type whose head a model folder carries ('classification', 'ner'), None for an
    encoder (with or without its MLM head)."""
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for architecture in (config.get("architectures") or []) if isinstance(config, dict) else []:
        for suffix, task in TASK_HEADS.items():
            if str(architecture).endswith(suffix):
                return task
    return None


def not_trainable(path: str | Path) -> str | None:
    """Why a model folder cannot start a training or a fine-tuning, None when it can: an ONNX export
    serves (it has no PyTorch weights), a fine-tuned model carries a task head."""
    path = Path(path)
    if is_onnx_folder(path):
        try:
            source = json.loads((path / "export.json").read_text()).get("source")
        except (OSError, ValueError, AttributeError):
            source = None
        return "an ONNX export for serving, with no PyTorch weights" + (f" (exported from {source})" if source else "")
    head = task_head(path)
    return f"a model fine-tuned for {head}, with its task head" if head else None


def onnx_parameters(path: Path) -> int:
    """Weights stored in an ONNX graph: the elements of its initializers of two or more dimensions and
    its biases (an int8 graph's scales and zero points, scalars or one per channel, are not)."""
    try:
        import onnx
    except ImportError:
        raise ModelError(f"{path} is an ONNX model: reading it needs the onnx extra, pip install "
                         f"'adapt-distill[onnx]'") from None
    graph = onnx.load(str(path), load_external_data=False).graph
    return sum(math.prod(t.dims) for t in graph.initializer
               if len(t.dims) >= 2 or (len(t.dims) == 1 and "bias" in t.name.lower()))


def task_class(task_type: str):
    """transformers' auto class of a task type's head (sequence or token classification)."""
    import transformers

    return getattr(transformers, {"classification": "AutoModelForSequenceClassification",
                                  "ner": "AutoModelForTokenClassification"}[task_type])
