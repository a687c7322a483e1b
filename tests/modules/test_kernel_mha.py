"""KernelMultiheadAttention: a drop-in self-attention with a pluggable kernel."""

import pytest
import torch
from torch.nn import functional as F

from kernelattn.mappings import resolve_mapping
from kernelattn.modules import KernelMultiheadAttention


def _reference(m: KernelMultiheadAttention, x, mask=None):
    """Materialised float64 attention with the module's own weights."""
    B, T, C = x.shape
    H, Hkv, hd = m.num_heads, m.num_kv_heads, m.head_dim
    q = m.q_proj(x).view(B, T, H, hd).transpose(1, 2)
    k, v = m.kv_proj(x).view(B, T, 2, Hkv, hd).permute(2, 0, 3, 1, 4)
    k, v = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
    s = q @ k.transpose(-1, -2) / hd ** 0.5
    allowed = torch.ones(T, T, dtype=torch.bool).tril() if m.causal else torch.ones(T, T, dtype=torch.bool)
    if mask is not None:
        allowed = allowed & mask
    s = s.masked_fill(~allowed, float("-inf"))
    if m.learn_alpha:
        from kernelattn import entmax
        p = entmax(s, m.alpha.view(1, -1, 1, 1).double(), -1)
    else:
        p = resolve_mapping(m.mapping)(s, -1)
    y = (p @ v).transpose(1, 2).reshape(B, T, C)
    return m.out_proj(y)


@pytest.mark.parametrize("method", ["softmax", "sparsemax", "entmax43", "normalized_relu", "topk_softmax"])
@pytest.mark.parametrize("kv", [4, 2, 1])
def test_matches_materialised_reference(method, kv):
    torch.manual_seed(0)
    m = KernelMultiheadAttention(32, 4, num_kv_heads=kv, method=method, topk=3).double()
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    torch.testing.assert_close(m(x), _reference(m, x), atol=1e-10, rtol=0)


def test_padding_mask_and_non_causal():
    torch.manual_seed(0)
    m = KernelMultiheadAttention(16, 2, method="entmax15", causal=False).double()
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    pad = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    pad[1, ..., 5:] = False  # last two keys of sequence 1 are padding
    torch.testing.assert_close(m(x, attn_mask=pad), _reference(m, x, pad), atol=1e-10, rtol=0)


def test_learned_alpha_per_head_receives_gradient_and_matches_reference():
    torch.manual_seed(0)
    m = KernelMultiheadAttention(16, 4, method="entmax43", learn_alpha=True).double()
    torch.testing.assert_close(m.alpha.detach(), torch.full((4,), 4 / 3, dtype=torch.float64), atol=1e-6, rtol=0)
    x = torch.randn(2, 8, 16, dtype=torch.float64)
    torch.testing.assert_close(m(x), _reference(m, x), atol=1e-9, rtol=0)
    m(x).pow(2).sum().backward()
    assert m.alpha_param.grad is not None and m.alpha_param.grad.abs().sum() > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="divisible"):
        KernelMultiheadAttention(30, 4)
    with pytest.raises(ValueError, match="num_kv_heads"):
        KernelMultiheadAttention(32, 4, num_kv_heads=3)
    with pytest.raises(ValueError, match="unknown method"):
        KernelMultiheadAttention(32, 4, method="cosine")
