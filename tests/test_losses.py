import math

import pytest
import torch

from core.train.losses import masked_kl, minilm_v1_loss, minilm_v2_loss, relation_kl, relation_logits


def loop_relation_kl(student, teacher, mask, heads):
    """The definition, one sequence, head and query at a time."""
    total, count = 0.0, 0
    for b in range(student.shape[0]):
        keep = mask[b].bool()
        s_seq, t_seq = student[b][keep].double(), teacher[b][keep].double()
        for r in range(heads):
            ds, dt = s_seq.shape[-1] // heads, t_seq.shape[-1] // heads
            s = s_seq[:, r * ds:(r + 1) * ds]
            t = t_seq[:, r * dt:(r + 1) * dt]
            ps = torch.softmax(s @ s.T / math.sqrt(ds), -1)
            pt = torch.softmax(t @ t.T / math.sqrt(dt), -1)
            for q in range(s.shape[0]):
                total += float((pt[q] * (pt[q].log() - ps[q].log())).sum())
                count += 1
    return total / count


def test_relation_kl_matches_the_definition_with_padding_and_different_widths():
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 7, 12), torch.randn(3, 7, 24)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    expected = loop_relation_kl(student, teacher, mask, heads=4)
    assert relation_kl(student, teacher, mask, 4).item() == pytest.approx(expected, rel=1e-5)
    # padding positions do not matter, whatever they hold
    noisy = student.clone()
    noisy[1, 4:] = 1e3
    assert relation_kl(noisy, teacher, mask, 4).item() == pytest.approx(expected, rel=1e-5)


def test_identical_relations_have_zero_loss_and_the_loss_has_gradients():
    torch.manual_seed(1)
    x = torch.randn(2, 5, 8)
    mask = torch.ones(2, 5)
    assert relation_kl(x, x, mask, 2).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.randn(2, 5, 8, requires_grad=True)
    loss = minilm_v2_loss((student, student, student), (x, x, x), mask, 2)
    loss.backward()
    assert loss.item() > 0 and student.grad.abs().sum() > 0


def test_fp32_even_for_half_inputs():
    x = torch.randn(1, 4, 8).to(torch.bfloat16)
    assert relation_logits(x, 2).dtype == torch.float32
    assert masked_kl(torch.randn(1, 2, 4, 4, dtype=torch.bfloat16), torch.randn(1, 2, 4, 4),
                     torch.ones(1, 4)).dtype == torch.float32


def test_minilm_v1_needs_matching_heads():
    x = torch.randn(1, 4, 8)
    with pytest.raises(ValueError, match="as many attention heads"):
        minilm_v1_loss((x, x, x), (x, x, x), torch.ones(1, 4), 2, 4)
    assert minilm_v1_loss((x, x, x), (x, x, x), torch.ones(1, 4), 2, 2).item() == pytest.approx(0.0, abs=1e-6)


def test_the_no_padding_path_equals_the_masked_one():
    torch.manual_seed(2)
    s, t = torch.randn(2, 3, 6, 6, requires_grad=True), torch.randn(2, 3, 6, 6)
    full = masked_kl(s, t, torch.ones(2, 6))
    fast = masked_kl(s, t, None)
    assert fast.item() == pytest.approx(full.item(), rel=1e-6)
    (g_full,) = torch.autograd.grad(full, s)
    (g_fast,) = torch.autograd.grad(fast, s)
    assert torch.allclose(g_full, g_fast, atol=1e-6)
