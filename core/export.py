"""An encoder exported for serving: ONNX with dynamic batch and sequence axes (torch.onnx's
torch.export-based exporter), optionally dynamically quantized to int8 by ONNX Runtime, checked
against PyTorch before anything is written.

The check runs both on probe batches of seeded token ids (two shapes, one row padded, so the
dynamic axes and the attention mask are exercised) and compares the last hidden states: the
largest absolute difference is stated, and a model out of bounds is not written (fp32 within
FP32_MOST_DIFF; int8, whose rounding moves every value a little, by the cosine similarity of each
sequence's mean-pooled vector, at least INT8_LEAST_COSINE; the weights are quantized per channel,
which keeps a MiniLM's token vectors at a cosine of 0.96 or more where one scale per tensor let
some fall to 0.80). The folder is built beside its destination and renamed
into place, with the tokenizer files and config.json beside model.onnx and export.json saying how
it was made and checked. onnx, onnxscript and onnxruntime are an optional extra."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import uuid
import warnings
from pathlib import Path

import numpy as np

from core.errors import ConfigError, ModelError
from core.folder_kinds import ONNX_FILE

ONNX_INSTALL = "pip install 'adapt-distill[onnx]'"
PRECISIONS = ("fp32", "int8")
FP32_MOST_DIFF = 1e-3
INT8_LEAST_COSINE = 0.95  # a broken export, not int8's rounding: what that costs is a task's score
OPSET = 18
INFO_FILE = "export.json"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")


@contextlib.contextmanager
def quiet(name: str):
    """The logger `name` (and its children) at ERROR for the block."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def require_onnx() -> None:
    """One line saying how to install the extra when it is missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"ONNX export and timing need the onnx extra ({exc.name} is missing): "
                          f"{ONNX_INSTALL}") from None


def probe_batches(vocab_size: int) -> list[dict[str, np.ndarray]]:
    """Two batches of seeded token ids: 2 x 16, and 3 x 7 with its last row half padding."""
    rng = np.random.default_rng(0)
    batches = []
    for rows, length in ((2, 16), (3, 7)):
        ids = rng.integers(5, max(6, vocab_size), size=(rows, length), dtype=np.int64)
        mask = np.ones_like(ids)
        if rows == 3:
            mask[-1, length // 2:] = 0
        batches.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
    return batches


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)


def compare(reference: list[np.ndarray], exported: list[np.ndarray], masks: list[np.ndarray]) -> dict:
    """Over the tokens the masks keep: the largest absolute difference, the smallest cosine
    similarity of a token's vector, and the smallest of a sequence's mean-pooled vector (what a
    sentence embedding or a classifier head reads)."""
    most, least, least_pooled = 0.0, 1.0, 1.0
    for ref, out, mask in zip(reference, exported, masks):
        keep = mask.astype(bool)
        most = max(most, float(np.abs(ref[keep] - out[keep]).max()))
        least = min(least, float(_cosines(ref[keep], out[keep]).min()))
        weights = mask[..., None].astype(ref.dtype)
        pooled = [(x * weights).sum(1) / weights.sum(1) for x in (ref, out)]
        least_pooled = min(least_pooled, float(_cosines(*pooled).min()))
    return {"max_abs_diff": most, "min_cosine": least, "min_pooled_cosine": least_pooled}


def same_prediction(reference: list[np.ndarray], exported: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """The share of the kept positions (a sequence, or a token) whose highest logit is the same label."""
    same = [(r.argmax(-1) == e.argmax(-1))[m.astype(bool)] for r, e, m in zip(reference, exported, masks)]
    return float(np.concatenate(same).mean())


def labels(config) -> list[str]:
    """A task model's labels in the order of its logits."""
    return [str(config.id2label[i]) for i in range(len(config.id2label))]


def check_close(precision: str, found: dict) -> None:
    if precision == "fp32" and found["max_abs_diff"] > FP32_MOST_DIFF:
        raise ModelError(f"the ONNX model differs from PyTorch by up to {found['max_abs_diff']:.3g} (more than "
                         f"{FP32_MOST_DIFF:g}): not written; report it with the model's config.json")
    if precision == "int8" and found["min_pooled_cosine"] < INT8_LEAST_COSINE:
        raise ModelError(f"int8 moves a sequence's vector too far from PyTorch's (cosine "
                         f"{found['min_pooled_cosine']:.4f}, below {INT8_LEAST_COSINE}): not written; export it in fp32")


def write_onnx(model, example: dict[str, np.ndarray], output: str, file: Path, precision: str = "fp32") -> Path:
    """The model (on the CPU, in eval mode; called with INPUTS, its first output named `output`) as
    ONNX at `file`, with dynamic batch and sequence axes, its weights quantized to int8 per channel
    when asked (the fp32 graph written first beside it, then removed)."""
    import torch

    file = Path(file)
    fp32 = file.with_name(f"{file.stem}.fp32.onnx") if precision == "int8" else file
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    ids = example["input_ids"]
    defaults = {"attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    inputs = tuple(torch.from_numpy(np.ascontiguousarray(example.get(name, defaults.get(name)))) for name in INPUTS)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), quiet("torch.onnx"):
        warnings.simplefilter("ignore")  # the exporter's chatter
        torch.onnx.export(model, inputs, str(fp32), input_names=list(INPUTS), output_names=[output], dynamo=True,
                          opset_version=OPSET, verbose=False,
                          dynamic_shapes=tuple({0: batch, 1: sequence} for _ in INPUTS))
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with contextlib.redirect_stderr(io.StringIO()):  # its advice to pre-process, on every call
            quantize_dynamic(str(fp32), str(file), weight_type=QuantType.QInt8, per_channel=True)
        fp32.unlink()
        for extra in file.parent.glob(f"{fp32.name}*.data"):
            extra.unlink()
    return file


def cpu_session(file: Path, threads: int):
    """An ONNX Runtime session on the CPU with `threads` intra-op threads (one inter-op), quiet."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"ONNX Runtime cannot load {file}: {exc}") from None


def feed(session, inputs: dict) -> dict[str, np.ndarray]:
    """Keyword tensors as the session's inputs: those it takes, token types zero when not given."""
    names = [i.name for i in session.get_inputs()]
    arrays = {name: inputs[name].cpu().numpy() for name in names if name in inputs}
    if "token_type_ids" in names and "token_type_ids" not in arrays:
        arrays["token_type_ids"] = np.zeros_like(arrays["input_ids"])
    return arrays


class OnnxTaskModel:
    """A fine-tuned model with its task head, exported and run by ONNX Runtime on the CPU, called
    like the PyTorch one in fine-tuning's predict (keyword tensors in, .logits out)."""

    def __init__(self, file: Path, threads: int = 1):
        self.session = cpu_session(file, threads)

    def eval(self):
        return self

    def __call__(self, **inputs):
        import torch

        return type("Output", (), {"logits": torch.from_numpy(self.session.run(None, feed(self.session, inputs))[0])})


def export_onnx(model_dir: Path, out: Path, precision: str = "fp32") -> dict:
    """Write the encoder of model_dir to the folder `out` (which must not exist) as ONNX in the
    given precision; what export.json holds. A fine-tuned model (an evaluation that kept its model)
    goes with its task head: its output is the logits, checked as the hidden states are, and
    export.json names the task type and the labels in the order of the logits."""
    import onnxruntime as ort
    import torch
    from transformers import AutoModel

    from core.folder_kinds import task_class, task_head
    from core.model_io import quiet_transformers

    if precision not in PRECISIONS:
        raise ConfigError(f"--quantize must be int8 (or leave it out for fp32), got {precision}")
    require_onnx()
    out = Path(out)
    if out.exists():
        raise ConfigError(f"{out} exists already: choose another --out, or remove it first")
    model_dir = Path(model_dir)
    if not any(model_dir.glob("*.safetensors")):
        raise ModelError(f"{model_dir} has no .safetensors weights (pickled weights are never loaded)")
    head = task_head(model_dir)  # a fine-tuned model goes with its task head: logits out
    cls, output = (AutoModel, "last_hidden_state") if head is None else (task_class(head), "logits")
    with quiet_transformers():  # a missing MLM head or pooler is expected: the encoder is exported
        model = cls.from_pretrained(str(model_dir), use_safetensors=True, trust_remote_code=False,
                                    dtype=torch.float32).eval()
    work = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    work.mkdir(parents=True)
    try:
        probes = probe_batches(int(model.config.vocab_size))
        write_onnx(model, probes[0], output, work / ONNX_FILE, precision)
        session = ort.InferenceSession(str(work / ONNX_FILE), providers=["CPUExecutionProvider"])
        with torch.inference_mode():
            reference = [getattr(model(**{k: torch.from_numpy(v) for k, v in p.items()}), output).numpy()
                         for p in probes]
        exported = [session.run(None, p)[0] for p in probes]
        masks = [p["attention_mask"] for p in probes]
        if head == "classification":  # one row of logits per sequence: a sequence of one
            reference, exported = [r[:, None] for r in reference], [e[:, None] for e in exported]
            masks = [np.ones((len(m), 1), dtype=m.dtype) for m in masks]
        found = compare(reference, exported, masks)
        if head is not None:
            found["same_prediction"] = same_prediction(reference, exported, masks)
        check_close(precision, found)
        for name in TOKENIZER_FILES:
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, work / name)
        info = {"format": "onnx", "precision": precision, "opset": OPSET, "source": str(model_dir),
                "inputs": list(INPUTS), "output": output, "dynamic_axes": ["batch", "sequence"],
                **({"task_type": head, "labels": labels(model.config)} if head else {}),
                **found, "bounds": {"fp32_max_abs_diff": FP32_MOST_DIFF, "int8_min_pooled_cosine": INT8_LEAST_COSINE},
                "probe": "2 x 16 and 3 x 7 seeded token ids, one row half padding",
                "torch": torch.__version__, "onnxruntime": ort.__version__,
                "bytes": sum(f.stat().st_size for f in work.iterdir() if f.is_file())}
        (work / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        os.replace(work, out)
        return info
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


class OnnxEncoder:
    """An exported encoder run by ONNX Runtime on the CPU, called like the PyTorch one (keyword
    tensors in, the last hidden state first out), so the speed benchmark times both the same way:
    same token ids, interleaved, with ONNX Runtime's intra-op threads set to the benchmark's."""

    def __init__(self, folder: Path, threads: int):
        require_onnx()
        from core.folder_kinds import onnx_parameters

        self.folder = Path(folder)
        self.session = cpu_session(self.folder / ONNX_FILE, threads)
        config = json.loads((self.folder / "config.json").read_text())
        self.config = type("Config", (), {"vocab_size": int(config["vocab_size"]),
                                          "max_position_embeddings": int(config.get("max_position_embeddings", 512))})
        self.parameter_count = onnx_parameters(self.folder / ONNX_FILE)

    def __call__(self, **inputs):
        return self.session.run(None, feed(self.session, inputs))
