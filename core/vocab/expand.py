"""Expansion: append the first k incremental tokens to the base WordPiece vocabulary (base ids
never change) and give each new embedding row the mean of the base embeddings of the pieces the
*base* tokenizer splits that token into. Writes a Hugging Face model folder."""

from __future__ import annotations

import copy
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from core.errors import ConfigError
from core.model_io import (METADATA_FILE, check_written, load_mlm, load_tokenizer, open_to_group, scrub_remote_code,
    untie_head_bias)


@dataclass(frozen=True)
class ExpansionResult:
    output_dir: Path
    vocab_size: int
    added_tokens: int
    base_vocab_size: int
    mlm_head_fresh: bool  # the base had no MLM head: one was initialised and is untrained

    def to_dict(self) -> dict:
        data = asdict(self)
        data["output_dir"] = str(self.output_dir)
        return data


def wordpiece_split(token: str, vocab: dict[str, int], unk: str, prefix: str = "##", max_chars: int = 100) -> list[str]:
    """Greedy longest-match WordPiece split of one (already normalized) token with `vocab`.
    A token that starts with the prefix is a word continuation and is split as one."""
    continuation = token.startswith(prefix) and len(token) > len(prefix)
    text = token[len(prefix):] if continuation else token
    if len(text) > max_chars:
        return [unk]
    pieces, start = [], 0
    while start < len(text):
        end, match = len(text), None
        while start < end:
            piece = text[start:end]
            if start > 0 or continuation:
                piece = prefix + piece
            if piece in vocab:
                match = piece
                break
            end -= 1
        if match is None:
            return [unk]
        pieces.append(match)
        start = end
    return pieces


def append_wordpiece_tokens(spec: dict, new_tokens: list[str]) -> dict:
    """Append new_tokens to the WordPiece vocabulary of a tokenizer.json spec, in place: ids
    from the base size on, base ids unchanged. Returns the base vocabulary (token -> id)."""
    if spec["model"]["type"] != "WordPiece":
        raise ConfigError(f"the base tokenizer is {spec['model']['type']}, not WordPiece")
    vocab: dict[str, int] = spec["model"]["vocab"]
    base_vocab = dict(vocab)
    taken = max([*vocab.values(), *(t["id"] for t in spec.get("added_tokens", []))]) + 1
    if taken != len(vocab):
        raise ConfigError("the base tokenizer has ids outside its WordPiece vocabulary; it cannot be expanded safely")
    for token in new_tokens:
        if token in vocab:
            raise ConfigError(f"token '{token}' is already in the base vocabulary")
        vocab[token] = len(vocab)
    return base_vocab


def _expanded_tokenizer_files(base_path: Path, out: Path, new_tokens: list[str]) -> tuple[dict[str, int], dict]:
    """Save the base tokenizer into `out` with `new_tokens` appended to its WordPiece vocabulary.
    Returns the base vocabulary and the WordPiece model settings."""
    tokenizer = load_tokenizer(base_path)
    tokenizer.save_pretrained(str(out))
    spec_file = out / "tokenizer.json"
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    base_vocab = append_wordpiece_tokens(spec, new_tokens)
    spec_file.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    vocab = spec["model"]["vocab"]
    (out / "vocab.txt").write_text("".join(t + "\n" for t in sorted(vocab, key=vocab.get)), encoding="utf-8")
    return base_vocab, spec["model"]


def expand_model(
    base_path: str | Path,
    new_tokens: list[str],
    out_dir: str | Path,
    metadata: dict | None = None,
    progress: Callable[[str, float], None] | None = None,
    seed: int = 0,
) -> ExpansionResult:
    """Write the expanded model folder atomically (a temporary folder renamed at the end). A base
    without an MLM head gets a new one initialised from `seed`."""

    base_path, out_dir = Path(base_path), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir} already exists and is not empty: choose another output folder or delete it")
    if len(set(new_tokens)) != len(new_tokens):
        raise ConfigError("the tokens to add contain duplicates")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".tmp-{out_dir.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        if progress:
            progress("writing tokenizer", 0.0)
        base_vocab, wp = _expanded_tokenizer_files(base_path, tmp, new_tokens)
        if progress:
            progress("loading base model", 0.2)
        model, head_fresh = load_mlm(base_path, seed)
        base_size = model.get_input_embeddings().weight.shape[0]
        if base_size != len(base_vocab):
            raise ConfigError(
                f"the base model has {base_size} embedding rows but its tokenizer has {len(base_vocab)} tokens"
            )
        split = [
            [base_vocab[p] for p in wordpiece_split(
                t, base_vocab, wp.get("unk_token", "[UNK]"), wp.get("continuing_subword_prefix", "##"),
                wp.get("max_input_chars_per_word", 100),
            )]
            for t in new_tokens
        ]
        if progress:
            progress("initialising embeddings", 0.5)
        source = copy.deepcopy(model).eval()
        _init_new_rows(model, base_size, split, head_fresh)
        model.config.vocab_size = base_size + len(new_tokens)
        if progress:
            progress("saving", 0.8)
        model.save_pretrained(str(tmp))
        scrub_remote_code(tmp)
        open_to_group(tmp)
        if progress:
            progress("checking the written model", 0.9)
        check_expanded(source, check_written(model, tmp), base_size)
        info = {
            "kind": "expanded",
            "base_model": str(base_path),
            "base_vocab_size": base_size,
            "added_tokens": len(new_tokens),
            "mlm_head_trained": not head_fresh,
            **(metadata or {}),
        }
        (tmp / METADATA_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if progress:
        progress("done", 1.0)
    return ExpansionResult(out_dir, base_size + len(new_tokens), len(new_tokens), base_size, head_fresh)


def _init_new_rows(model, base_size: int, split: list[list[int]], head_fresh: bool) -> None:
    """Resize and set each new row to the mean of its pieces' rows (input embeddings, an untied
    output matrix, and the output bias)."""
    import torch

    output = model.get_output_embeddings()
    old_out_weight = output.weight.detach().clone() if output is not None else None
    old_bias = output.bias.detach().clone() if output is not None and output.bias is not None else None
    old_in = model.get_input_embeddings().weight.detach().clone()
    head = getattr(getattr(model, "cls", None), "predictions", None)
    old_head_bias = head.bias.detach().clone() if head is not None and head.bias is not None else None
    model.resize_token_embeddings(base_size + len(split), mean_resizing=False)
    untie_head_bias(model)
    index = mean_matrix(split, base_size)
    with torch.no_grad():
        embeddings = model.get_input_embeddings().weight
        embeddings[base_size:] = (index.to(old_in.dtype) @ old_in).to(embeddings.dtype)
        output = model.get_output_embeddings()
        if output is not None:
            if output.weight.data_ptr() != embeddings.data_ptr():
                output.weight[base_size:] = (index.to(old_out_weight.dtype) @ old_out_weight).to(output.weight.dtype)
            if output.bias is not None and old_bias is not None:
                output.bias[base_size:] = index.to(old_bias.dtype) @ old_bias
        if head is not None and output is not None and head.bias is not output.bias and old_head_bias is not None:
            # untied: `cls.predictions.bias` is a parameter of its own again; keep it as the source had it
            head.bias[:base_size] = old_head_bias
            head.bias[base_size:] = index.to(old_head_bias.dtype) @ old_head_bias


def mean_matrix(split: list[list[int]], base_size: int):
    """(len(split), base_size) weights whose product with a base matrix gives each row the mean
    of its pieces' rows. A piece that repeats ("interleukin": ##e twice) counts each time: the
    weights are accumulated, as advanced-index `+=` (which keeps one write per index) would not."""
    import torch

    rows = torch.tensor([row for row, pieces in enumerate(split) for _ in pieces], dtype=torch.long)
    cols = torch.tensor([piece for pieces in split for piece in pieces], dtype=torch.long)
    weights = torch.tensor([1.0 / len(pieces) for pieces in split for _ in pieces])
    return torch.zeros(len(split), base_size).index_put_((rows, cols), weights, accumulate=True)


def check_expanded(source, expanded, base_size: int) -> None:
    """Hold the reloaded expansion to its source: every weight of the source is there (the pooler
    and both biases included) with its base rows unchanged, and on a probe of base-vocabulary ids
    the logits over the base vocabulary are the source's."""
    import torch

    from core.errors import ModelError

    written = expanded.eval().state_dict()
    for key, tensor in source.state_dict().items():
        if key not in written:
            raise ModelError(f"the source's '{key}' was not written (a bug: please report it)")
        mine = written[key]
        if mine.ndim and mine.shape[1:] == tensor.shape[1:] and mine.shape[0] > tensor.shape[0] == base_size:
            mine = mine[:base_size]
        if not torch.equal(mine, tensor):
            raise ModelError(f"'{key}' differs from the source model on its base rows (a bug: please report it)")
    probe = torch.randint(0, base_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = source(input_ids=probe).logits
        got = expanded(input_ids=probe).logits[..., :base_size]
    if not torch.allclose(got, want, atol=1e-4, rtol=1e-4):
        raise ModelError(f"the expanded model's logits over the base vocabulary differ from the source's by "
                         f"{float((got - want).abs().max()):.2e} (a bug: please report it)")
