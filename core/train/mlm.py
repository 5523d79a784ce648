"""Masked-LM data and loss. Text is packed into full blocks (no padding), masking happens per
batch from a seeded generator (so a resumed run masks exactly as an uninterrupted one), and the
loss runs the MLM head only on the masked positions (~15% of the tokens)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import ConfigError, ModelError

IGNORE = -100


def pack_documents(documents: Iterable[str], tokenizer, block_size: int, batch: int = 2000,
                   cancel: Callable[[], bool] | None = None) -> np.ndarray:
    """(n_blocks, block_size) int32: [CLS] + tokens + [SEP], documents joined by [SEP]. The tail
    that does not fill a block is dropped. Special-token strings in the text are plain text.
    In memory; training reads the same blocks from a memory-mapped stream (core.train.tokens)."""
    from core.train.tokens import blocks_of, token_array

    if block_size < 8:
        raise ConfigError(f"sequence length must be at least 8, got {block_size}")
    return blocks_of(token_array(documents, tokenizer, batch, cancel), tokenizer, block_size)[:]


def split_heldout(blocks: np.ndarray, fraction: float, limit: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out): the held-out slice is the last `fraction` of blocks (at least 1, at most limit)."""
    if len(blocks) < 2:
        raise ConfigError(f"the corpus fills only {len(blocks)} block(s) of this length: add text or shorten "
                          f"the sequence length")
    n = min(max(1, int(len(blocks) * fraction)), limit, len(blocks) - 1)
    from core.train.tokens import Blocks

    if isinstance(blocks, Blocks):  # the training blocks stay on disk; the held-out ones (few) are read
        return blocks.range(0, len(blocks) - n), blocks.range(len(blocks) - n, len(blocks))[:]
    return blocks[:-n], blocks[-n:]


class Masker:
    """BERT masking: `probability` of the (non-special) tokens, or of the words with whole-word
    masking; of those 80% become [MASK], 10% a random token, 10% stay."""

    def __init__(self, tokenizer, probability: float = 0.15, whole_word: bool = False):
        if not 0 < probability < 1:
            raise ConfigError(f"mask probability must be between 0 and 1, got {probability}")
        vocab = tokenizer.get_vocab()
        size = max(vocab.values()) + 1
        self.special = torch.zeros(size, dtype=torch.bool)
        self.special[tokenizer.all_special_ids] = True
        self.continuation = torch.zeros(size, dtype=torch.bool)
        if whole_word:
            ids = [i for t, i in vocab.items() if t.startswith("##")]
            self.continuation[ids] = True
        self.whole_word = whole_word
        self.probability = probability
        self.mask_id = tokenizer.mask_token_id
        self.vocab_size = size

    def __call__(self, ids: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels) for a (B, T) batch of token ids; labels are IGNORE where not masked."""
        ids = ids.long()
        candidates = ~self.special[ids]
        draw = torch.rand(ids.shape, generator=generator)
        if self.whole_word:
            starts = ~self.continuation[ids]
            word = torch.cumsum(starts.long(), dim=1) - 1  # (B, T) index of each token's word
            chosen_start = ((draw < self.probability) & starts).float()
            flags = torch.zeros(ids.shape, dtype=torch.float).scatter_add_(1, word, chosen_start)
            chosen = (flags.gather(1, word) > 0) & candidates
        else:
            chosen = (draw < self.probability) & candidates
        if not chosen.any():  # never an empty loss: mask one real token
            flat = candidates.flatten().nonzero().flatten()
            chosen.view(-1)[flat[torch.randint(len(flat), (1,), generator=generator)]] = True
        labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
        action = torch.rand(ids.shape, generator=generator)
        random_ids = torch.randint(self.vocab_size, ids.shape, generator=generator)
        inputs = torch.where(chosen & (action < 0.8), torch.full_like(ids, self.mask_id), ids)
        inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, inputs)
        return inputs, labels


def mlm_parts(model):
    """(encoder, head) of a BERT masked-LM model."""
    encoder, head = getattr(model, "bert", None), getattr(model, "cls", None)
    if encoder is None or head is None:
        raise ModelError(f"{type(model).__name__} is not a BERT masked-LM model: adaptation needs BertForMaskedLM")
    return encoder, head


def masked_lm_loss(model, inputs: torch.Tensor, labels: torch.Tensor,
                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over the masked positions only; the head never sees the other ~85%."""
    encoder, head = mlm_parts(model)
    hidden = encoder(input_ids=inputs, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
    selected = labels != IGNORE
    logits = head(hidden[selected])  # (M, V)
    if not bool(selected.any()):  # a process's share of a batch may have no masked token
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels[selected])


def shard_of(inputs: torch.Tensor, labels: torch.Tensor, shard) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(inputs, labels, weight) of this process's rows of a masked batch (the whole batch was masked,
    so the masking is the single-process run's); the weight makes the processes' average of their
    mean losses the mean over the whole batch's masked tokens."""
    if shard is None or shard.world == 1:
        return inputs, labels, 1.0
    from core.train.distributed import share_weight

    total = int((labels != IGNORE).sum())
    inputs, labels = inputs[shard.rows], labels[shard.rows]
    return inputs, labels, share_weight(int((labels != IGNORE).sum()), total, shard)
