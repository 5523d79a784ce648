"""Base and expanded tokenizers for the side-by-side comparison. The expanded one is built in
memory (base WordPiece vocabulary + the first k incremental tokens, as core.vocab.expand writes it),
so any size can be tried before a model is written."""

from __future__ import annotations

import html
import json
from pathlib import Path

import streamlit as st


def expand_backend(backend, new_tokens: list[str]):
    """A tokenizers.Tokenizer like `backend` with new_tokens appended to its WordPiece vocabulary
    (ids from the base size on; base ids unchanged)."""
    from tokenizers import Tokenizer

    from core.vocab.expand import append_wordpiece_tokens

    spec = json.loads(backend.to_str())
    append_wordpiece_tokens(spec, new_tokens)
    return _unpadded(Tokenizer.from_str(json.dumps(spec)))


def _unpadded(tokenizer):
    # Exported tokenizers may pad or truncate to a fixed length (all-MiniLM-L6-v2: 128); here we
    # show the text's own tokens, with "[MASK]" in the text read as text, as training reads it.
    from core.model_io import plain_text

    return plain_text(tokenizer)


@st.cache_resource(max_entries=4, show_spinner="Loading the base tokenizer…")
def base_tokenizer(base: str):
    """The base model's fast tokenizer backend (a tokenizers.Tokenizer)."""
    from tokenizers import Tokenizer

    from core.model_io import load_tokenizer
    from worker.specs import ModelSpec

    return _unpadded(Tokenizer.from_str(load_tokenizer(ModelSpec.parse(base).path()).backend_tokenizer.to_str()))


@st.cache_resource(max_entries=8, show_spinner="Building the expanded tokenizer…")
def expanded_tokenizer(base: str, tokens_path: str, added: int):
    """The base tokenizer with the first `added` tokens of an analysis's incremental vocabulary."""
    tokens = Path(tokens_path).read_text(encoding="utf-8").splitlines()[:added]
    return expand_backend(base_tokenizer(base), tokens)


def tokenize(tokenizer, text: str) -> list[tuple[str, int]]:
    """(token, id) pairs of text, without special tokens."""
    encoding = tokenizer.encode(text, add_special_tokens=False)
    return list(zip(encoding.tokens, encoding.ids))


def chips_html(pieces: list[tuple[str, int]], base_size: int, unk_id: int | None = None) -> str:
    """Tokens as chips; tokens from the added vocabulary (id >= base_size) stand out."""
    chips = []
    for token, token_id in pieces:
        if token_id == unk_id:
            style = "background:#fde2e1;border-color:#e5534b"
        elif token_id >= base_size:
            style = "background:#ffe8cc;border-color:#f08c00;font-weight:600"
        else:
            style = "background:#eef2f7;border-color:#c9d3df"
        gap = "1px" if token.startswith("##") else "7px"
        chips.append(f'<span title="id {token_id}" style="display:inline-block;margin:2px 0 2px {gap};'
                     f'padding:1px 6px;border:1px solid;border-radius:6px;font-family:monospace;'
                     f'font-size:0.9em;{style}">{html.escape(token)}</span>')
    return f'<div style="line-height:1.9">{"".join(chips)}</div>'
