"""Cheap intrinsic measures of a model folder on a corpus: size, how finely its tokenizer cuts the
corpus (pieces per word, share of unknown pieces) and, when the folder has a trained MLM head, the
masked-LM loss and perplexity on the same held-out blocks an adaptation with these settings holds
out, masked the same way, so the numbers are comparable with what an adaptation run reports."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from core.train.adapt import heldout_loss
from core.errors import Cancelled, ConfigError, CorpusError
from core.train.mlm import Masker, mlm_parts, split_heldout
from core.train.tokens import corpus_blocks
from core.model_io import METADATA_FILE, count_parameters, folder_size, load_mlm, load_tokenizer, plain_text_backend
from core.devices import resolve_device

Progress = Callable[[str, float], None]  # (stage, fraction of that stage done)
CancelCheck = Callable[[], bool]

TOKENIZER_STAGE = "measuring tokenizer"
PERPLEXITY_STAGE = "measuring perplexity"
HEAD_PREFIX = "cls.predictions."  # the BERT MLM head's weights in a safetensors file
ENCODE_BATCH = 1000  # documents per encode_batch call
HELDOUT_BATCH = 16


@dataclass
class IntrinsicMeasures:
    parameters: int
    size_bytes: int
    vocab_size: int
    words: int  # words measured: whole documents up to the one that reaches max_words
    tokens_per_word: float  # WordPiece pieces per word on the corpus sample
    unknown_rate: float  # share of pieces that are the unknown token
    mlm_head_trained: bool
    heldout_loss: float | None  # mean MLM loss on the held-out blocks; None without a trained MLM head
    perplexity: float | None  # exp(heldout_loss)
    heldout_blocks: int

    def to_dict(self) -> dict:
        return asdict(self)


def _check(cancel: CancelCheck | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled("cancelled")


def _words(backend, document: str) -> int:
    """Words of a document as the tokenizer itself sees them (its normalizer, then its pre-tokenizer)."""
    text = backend.normalizer.normalize_str(document) if backend.normalizer is not None else document
    if backend.pre_tokenizer is None:
        return len(text.split())
    return len(backend.pre_tokenizer.pre_tokenize_str(text))


def tokenizer_measures(tokenizer, documents: Iterable[str], max_words: int = 200_000,
                       cancel: CancelCheck | None = None,
                       progress: Callable[[float], None] | None = None) -> tuple[float, float, int]:
    """(tokens_per_word, unknown_rate, words) of the tokenizer on the documents, read up to and
    including the document that reaches max_words."""
    if max_words < 1:
        raise ConfigError(f"max-words must be at least 1, got {max_words}")
    backend = plain_text_backend(tokenizer)
    unk = tokenizer.unk_token_id
    words = tokens = unknown = 0
    buffer: list[str] = []

    def flush() -> None:
        nonlocal tokens, unknown
        for encoding in backend.encode_batch(buffer, add_special_tokens=False):
            tokens += len(encoding.ids)
            unknown += sum(1 for i in encoding.ids if i == unk)
        buffer.clear()
        _check(cancel)
        if progress:
            progress(min(words / max_words, 1.0))

    for document in documents:
        words += _words(backend, document)
        buffer.append(document)
        if words >= max_words:
            break
        if len(buffer) >= ENCODE_BATCH:
            flush()
    if buffer:
        flush()
    if words == 0:
        raise CorpusError("the corpus has no words to measure: add text to it or pick another corpus")
    return tokens / words, (unknown / tokens if tokens else 0.0), words


def head_is_trained(folder: str | Path) -> bool:
    """Whether the folder's MLM head is trained: its adapt_distill.json says so when it has the
    field, else whether its safetensors weights hold a BERT MLM head (headers only, no tensor loaded)."""
    from safetensors import safe_open

    folder = Path(folder)
    metadata = folder / METADATA_FILE
    if metadata.is_file():
        try:
            data = json.loads(metadata.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = {}  # an unreadable note says nothing: fall back to the weights
        if isinstance(data, dict) and "mlm_head_trained" in data:
            return bool(data["mlm_head_trained"])
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="numpy") as weights:
            if any(key.startswith(HEAD_PREFIX) for key in weights.keys()):
                return True
    return False


class _WatchedMasker:
    """A Masker that checks cancel and reports progress before each batch. heldout_loss calls
    the masker once per batch, so the loss is exactly heldout_loss's with the plain Masker."""

    def __init__(self, masker, batches: int, progress: Progress | None, cancel: CancelCheck | None):
        self.masker, self.batches, self.progress, self.cancel = masker, batches, progress, cancel
        self.done = 0

    def __call__(self, ids, generator):
        _check(self.cancel)
        if self.progress:
            self.progress(PERPLEXITY_STAGE, min(self.done / self.batches, 1.0))
        self.done += 1
        return self.masker(ids, generator)


def _heldout(model_path: Path, tokenizer, documents: Callable[[], Iterable[str]], seq_len: int,
             heldout_fraction: float, max_heldout_blocks: int, device: torch.device, seed: int,
             progress: Progress | None, cancel: CancelCheck | None) -> tuple[float | None, int, bool]:
    """(held-out loss or None, held-out blocks used, head usable). None when the corpus fills
    fewer than 2 blocks; head usable is False when the weights turn out to have no MLM head."""
    model, fresh = load_mlm(model_path)
    if fresh:  # the note said trained, but the weights lack the head: a loss would be noise
        return None, 0, False
    mlm_parts(model)
    longest = getattr(model.config, "max_position_embeddings", None)
    if longest is not None and seq_len > longest:
        raise ConfigError(f"seq-len {seq_len} is longer than the model accepts ({longest}): lower --seq-len")
    blocks = corpus_blocks(documents, tokenizer, seq_len, cancel=cancel)
    if len(blocks) < 2:
        return None, 0, True
    _, held = split_heldout(blocks, heldout_fraction)  # the blocks adaptation would hold out
    held = held[-max_heldout_blocks:]
    batches = math.ceil(len(held) / HELDOUT_BATCH)
    masker = _WatchedMasker(Masker(tokenizer), batches, progress, cancel)
    model.eval().to(device)
    with torch.inference_mode():
        loss = heldout_loss(model, held, masker, HELDOUT_BATCH, device, seed)
    return loss, len(held), True


def intrinsic_measures(
    model_path: str | Path,
    documents: Callable[[], Iterable[str]],
    seq_len: int = 128,
    heldout_fraction: float = 0.02,
    max_heldout_blocks: int = 64,
    max_words: int = 200_000,
    device: str = "cpu",
    seed: int = 0,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
) -> IntrinsicMeasures:
    """Size, tokenizer measures and (with a trained MLM head) held-out loss and perplexity of the
    model folder on the corpus; documents() yields the corpus afresh on each call."""
    if not 0 < heldout_fraction < 0.5:
        raise ConfigError(f"heldout-fraction must be between 0 and 0.5, got {heldout_fraction}")
    if max_heldout_blocks < 1:
        raise ConfigError(f"max-heldout-blocks must be at least 1, got {max_heldout_blocks}")
    path = Path(model_path)
    target = resolve_device(device)
    parameters, size = count_parameters(path), folder_size(path)
    tokenizer = load_tokenizer(path)
    _check(cancel)
    if progress:
        progress(TOKENIZER_STAGE, 0.0)
    stage = (lambda fraction: progress(TOKENIZER_STAGE, fraction)) if progress else None
    tokens_per_word, unknown_rate, words = tokenizer_measures(tokenizer, documents(), max_words, cancel, stage)
    if progress:
        progress(TOKENIZER_STAGE, 1.0)
    _check(cancel)
    trained = head_is_trained(path)
    loss, held = None, 0
    if trained:
        if progress:
            progress(PERPLEXITY_STAGE, 0.0)
        loss, held, trained = _heldout(path, tokenizer, documents, seq_len, heldout_fraction, max_heldout_blocks,
                                       target, seed, progress, cancel)
        if progress:
            progress(PERPLEXITY_STAGE, 1.0)
    return IntrinsicMeasures(
        parameters=parameters, size_bytes=size, vocab_size=len(tokenizer), words=words,
        tokens_per_word=tokens_per_word, unknown_rate=unknown_rate, mlm_head_trained=trained,
        heldout_loss=loss,
        # capped like adaptation's held-out perplexity, so a diverged model gives a number, not an overflow
        perplexity=math.exp(min(loss, 50.0)) if loss is not None else None,
        heldout_blocks=held,
    )
