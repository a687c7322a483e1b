"""KernelKVCache: certified-exact page skipping in decoding equals attention over the whole cache."""

import math

import pytest
import torch

from kernelattn.attention import KernelKVCache, kernel_attention, kernel_attention_step
from kernelattn.attention.cache import paged_entmax_step


def _smooth_keys(B, H, L, E, seed=0, dtype=torch.float64):
    """Locally coherent keys (a random walk on the sphere), like a trained model's leaky-averaged keys."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.randn(B, H, L, E, generator=g, dtype=dtype) * 0.15
    walk = torch.randn(B, H, 1, E, generator=g, dtype=dtype) + steps.cumsum(2)
    return 3.0 * torch.nn.functional.normalize(walk, dim=-1)


def _qkv(B=2, Hq=4, Hkv=2, L=50, E=8, Ev=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed + 1)
    k = _smooth_keys(B, Hkv, L, E, seed, dtype)
    q = torch.randn(B, Hq, L, E, generator=g, dtype=dtype) * 2
    v = torch.randn(B, Hkv, L, Ev, generator=g, dtype=dtype)
    return q, k, v


@pytest.mark.parametrize("kw", [dict(method="sparsemax"), dict(method="entmax15"), dict(method="entmax43"),
                                dict(alpha=1.7), dict(alpha=2.5)])
def test_token_by_token_with_a_paged_cache_equals_the_full_causal_forward(kw):
    q, k, v = _qkv()
    full, full_support = kernel_attention(q, k, v, is_causal=True, enable_gqa=True, return_support=True, **kw)
    cache = KernelKVCache(2, 2, 8, 5, page_size=4, dtype=torch.float64, capacity=4)  # grows by doubling
    outs, sups = [], []
    for t in range(q.shape[2]):
        cache.append(k[:, :, t:t + 1], v[:, :, t:t + 1])
        o, s = kernel_attention_step(q[:, :, t:t + 1], cache, enable_gqa=True, return_support=True, **kw)
        outs.append(o)
        sups.append(s)
    assert cache.capacity >= 50 and len(cache) == 50
    torch.testing.assert_close(torch.cat(outs, 2), full, atol=1e-10, rtol=1e-10)
    assert torch.equal(torch.cat(sups, 2), full_support)


def test_pages_are_skipped_on_coherent_keys_and_the_result_is_exact():
    B, H, L, E = 1, 2, 4096, 16
    k = _smooth_keys(B, H, L, E, seed=3)
    v = torch.randn(B, H, L, 4, dtype=torch.float64)
    q = k[:, :, 1000:1001] * 1.0  # a query that matches one region of the past
    cache = KernelKVCache(B, H, E, 4, page_size=32, dtype=torch.float64)
    cache.append(k, v)
    for alpha in (2.0, 1.5):
        out, support, pages = paged_entmax_step(cache, q[:, :, 0], alpha, 1.0)
        ref, ref_support = kernel_attention_step(q, k, v, alpha=alpha, scale=1.0, return_support=True)
        torch.testing.assert_close(out, ref[:, :, 0], atol=1e-12, rtol=1e-12)
        assert torch.equal(support, ref_support[:, :, 0])
        assert pages < L // 32 // 4, f"read {pages} of {L // 32} pages"


def test_key_padding_mask_and_gqa_through_the_cache():
    q, k, v = _qkv(B=2, Hq=4, Hkv=2, L=30)
    pad = torch.ones(2, 1, 1, 30, dtype=torch.bool)
    pad[1, ..., :7] = False
    cache = KernelKVCache(2, 2, 8, 5, page_size=8, dtype=torch.float64)
    cache.append(k, v)
    got = kernel_attention_step(q[:, :, -1:], cache, attn_mask=pad, enable_gqa=True, method="entmax15")
    want = kernel_attention_step(q[:, :, -1:], k, v, attn_mask=pad, enable_gqa=True, method="entmax15")
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    everything_masked = torch.zeros(2, 1, 1, 30, dtype=torch.bool)
    zero = kernel_attention_step(q[:, :, -1:], cache, attn_mask=everything_masked, enable_gqa=True)
    assert torch.equal(zero, torch.zeros_like(zero))


def test_calls_the_pages_cannot_serve_read_the_whole_cache_and_stay_exact():
    q, k, v = _qkv(B=1, Hq=2, Hkv=2, L=20)
    cache = KernelKVCache(1, 2, 8, 5, page_size=4, dtype=torch.float64)
    cache.append(k, v)
    for kw in (dict(method="softmax"), dict(method="normalized_relu"), dict(alpha=torch.tensor([1.3, 1.8],
                                                                                               dtype=torch.float64))):
        got = kernel_attention_step(q[:, :, -3:], cache, **kw)  # three new queries: bottom-right causal
        want = kernel_attention_step(q[:, :, -3:], k, v, **kw)
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    qg = q[:, :, -1:].clone().requires_grad_()
    kernel_attention_step(qg, cache, method="entmax15").sum().backward()  # differentiable path
    assert qg.grad is not None and torch.isfinite(qg.grad).all()


def test_float32_cache_decoding_matches_float32_full_attention():
    q, k, v = (x.float() for x in _qkv(B=1, Hq=4, Hkv=4, L=200, E=16))
    cache = KernelKVCache(1, 4, 16, 5, page_size=16)
    cache.append(k, v)
    got = kernel_attention_step(q[:, :, -1:], cache, method="entmax15")
    want = kernel_attention_step(q[:, :, -1:], k, v, method="entmax15")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_cache_errors_name_the_argument():
    cache = KernelKVCache(1, 2, 8, page_size=4)
    q = torch.randn(1, 2, 1, 8)
    with pytest.raises(ValueError, match="empty"):
        kernel_attention_step(q, cache)
    with pytest.raises(ValueError, match="key must be"):
        cache.append(torch.randn(1, 3, 1, 8), torch.randn(1, 3, 1, 8))
    with pytest.raises(ValueError, match="value must be"):
        cache.append(torch.randn(1, 2, 1, 8), torch.randn(1, 2, 2, 8))
    with pytest.raises(ValueError, match="finite"):
        cache.append(torch.full((1, 2, 1, 8), math.nan), torch.randn(1, 2, 1, 8))
    cache.append(torch.randn(1, 2, 1, 8), torch.randn(1, 2, 1, 8))
    with pytest.raises(ValueError, match="value_cache=None"):
        kernel_attention_step(q, cache, torch.randn(1, 2, 1, 8))
    with pytest.raises(ValueError, match="page_size"):
        KernelKVCache(1, 2, 8, page_size=0)
    with pytest.raises(ValueError, match="value_cache is required"):
        kernel_attention_step(q, torch.randn(1, 2, 1, 8))


def test_random_keys_fall_back_to_reading_the_whole_cache_exactly():
    g = torch.Generator().manual_seed(0)
    k, v = torch.randn(1, 2, 2048, 16, generator=g), torch.randn(1, 2, 2048, 4, generator=g)
    q = torch.randn(1, 2, 1, 16, generator=g)
    cache = KernelKVCache(1, 2, 16, 4, page_size=32)
    cache.append(k, v)
    assert paged_entmax_step(cache, q[:, :, 0], 1.5, 0.25) is None  # loose bounds: most pages could matter
    got = kernel_attention_step(q, cache, method="entmax15")
    torch.testing.assert_close(got, kernel_attention_step(q, k, v, method="entmax15"), atol=1e-6, rtol=1e-6)
