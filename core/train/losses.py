"""Distillation losses: pure functions of tensors, computed in fp32.

MiniLMv2 (Wang et al. 2021) transfers self-attention *relations*: for the queries, keys and
values of one layer, split into R relation heads, the scaled dot products of every pair of
positions, softmaxed over the keys. The student's last layer learns the teacher layer's
relations by KL divergence; the hidden sizes and head counts of the two may differ because the
relation matrices are (T x T) whatever the width."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_NEG = torch.finfo(torch.float32).min


def relation_logits(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, H) projections -> (B, R, T, T) scaled dot products in fp32."""
    batch, length, hidden = x.shape
    if hidden % heads:
        raise ValueError(f"hidden size {hidden} is not divisible by {heads} relation heads")
    size = hidden // heads
    x = x.float().view(batch, length, heads, size).transpose(1, 2)  # (B, R, T, d)
    return x @ x.transpose(-1, -2) / math.sqrt(size)


def attention_logits(query: torch.Tensor, key: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, H) query and key projections -> (B, A, T, T) attention scores in fp32 (MiniLM v1)."""
    batch, length, hidden = query.shape
    size = hidden // heads
    q = query.float().view(batch, length, heads, size).transpose(1, 2)
    k = key.float().view(batch, length, heads, size).transpose(1, 2)
    return q @ k.transpose(-1, -2) / math.sqrt(size)


def masked_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """KL(teacher || student) of row-wise softmaxes over keys, (B, R, T, T) each; padding keys are
    excluded from the softmax and padding queries from the mean. mask: (B, T), 1 for real tokens,
    or None when there is no padding (packed blocks): one fused pass instead of several masked ones."""
    if mask is None:
        log_s = F.log_softmax(student_logits.float(), dim=-1)
        with torch.no_grad():
            log_t = F.log_softmax(teacher_logits.float(), dim=-1)
        batch, heads, length, _ = log_s.shape
        return F.kl_div(log_s, log_t, reduction="sum", log_target=True) / (batch * heads * length)
    keys = mask[:, None, None, :].bool()
    log_s = F.log_softmax(student_logits.float().masked_fill(~keys, _NEG), dim=-1)
    log_t = F.log_softmax(teacher_logits.float().masked_fill(~keys, _NEG), dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).masked_fill(~keys, 0.0).sum(-1)  # (B, R, T)
    queries = mask[:, None, :].float()
    return (kl * queries).sum() / (queries.sum() * kl.shape[1])


def relation_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None, heads: int) -> torch.Tensor:
    """KL between the self-relations of student and teacher projections (B, T, H_s) and (B, T, H_t)."""
    return masked_kl(relation_logits(student, heads), relation_logits(teacher, heads), mask)


def minilm_v2_loss(student_qkv, teacher_qkv, mask: torch.Tensor | None, heads: int) -> torch.Tensor:
    """Sum of the query-query, key-key and value-value relation losses."""
    return sum(relation_kl(s, t, mask, heads) for s, t in zip(student_qkv, teacher_qkv))


def minilm_v1_loss(student_qkv, teacher_qkv, mask: torch.Tensor | None, student_heads: int,
                   teacher_heads: int) -> torch.Tensor:
    """MiniLM v1: attention distributions (same head count needed) plus the value relation."""
    if student_heads != teacher_heads:
        raise ValueError(f"MiniLM v1 needs as many attention heads in the student ({student_heads}) "
                         f"as in the teacher ({teacher_heads}); use MiniLMv2 relations otherwise")
    attention = masked_kl(attention_logits(*student_qkv[:2], student_heads),
                          attention_logits(*teacher_qkv[:2], teacher_heads), mask)
    return attention + relation_kl(student_qkv[2], teacher_qkv[2], mask, student_heads)
