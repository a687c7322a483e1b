"""Gradcheck on the numerically hard edges: α → 1, large α, huge score scales (float64)."""

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck

import kernelattn as ka
from kernelattn import kernel_attention
from kernelattn.modules import KernelMultiheadAttention

from .conftest import DRAWN


def _separated(rows: int, n: int, seed: int, spread: float = 1.0) -> torch.Tensor:
    """Scores without near-ties (a permuted arithmetic grid plus a small offset), so the
    support is stable under gradcheck's 1e-6 perturbations."""
    g = torch.Generator().manual_seed(seed)
    base = torch.stack([torch.randperm(n, generator=g) for _ in range(rows)]).double()
    return (base * 0.37 * spread + torch.rand(rows, 1, generator=g, dtype=torch.float64))


@settings(max_examples=16, deadline=None)
@given(alpha=st.sampled_from([1 + 1e-6, 1 + 1e-3, 1.03, 1.25, 2.5, 5.0, 10.0, 20.0]), seed=st.integers(0, 1000),
       n=st.integers(2, 6))
def test_gradcheck_x_and_alpha_near_one_and_large(alpha, seed, n):
    DRAWN["cases"] += 1
    x = _separated(3, n, seed, spread=1.0 / max(1.0, alpha - 1))
    # the support must be stable under the perturbation: every entry at least 1e-3 (in
    # X = (α-1)x units) from the threshold, else finite differences cross a kink
    tau, _ = ka.entmax_threshold(x, alpha)
    assume(bool(((alpha - 1) * x - tau).abs().min() > 1e-3))
    a = torch.full((3, 1), alpha, dtype=torch.float64, requires_grad=True)
    eps = min(1e-6, (alpha - 1) / 10)  # α - eps must stay > 1
    assert gradcheck(lambda t, b: ka.entmax(t, b), (x.requires_grad_(), a), eps=eps, atol=1e-5, rtol=1e-3)


@settings(max_examples=12, deadline=None)
@given(fn=st.sampled_from(["sparsemax", "entmax15", "entmax1.25", "entmax3", "relumax", "normmax"]),
       e=st.sampled_from([-20, 0, 20]), seed=st.integers(0, 1000))
def test_gradcheck_at_huge_and_tiny_scales(fn, e, seed):
    DRAWN["cases"] += 1
    f = {"sparsemax": ka.sparsemax, "entmax15": ka.entmax15, "entmax1.25": lambda t: ka.entmax(t, 1.25),
         "entmax3": lambda t: ka.entmax(t, 3.0), "relumax": lambda t: ka.relumax(t, temperature=2.0 ** e),
         "normmax": ka.normmax}[fn]
    shift = 2.0 ** (e + 10)  # a large common offset: the answer is shift invariant
    x = (_separated(2, 5, seed) * 2.0 ** e / 4 + shift).requires_grad_()
    out = f(x)
    assert torch.isfinite(out).all() and torch.allclose(out.sum(-1), torch.ones(2, dtype=torch.float64))
    # gradcheck's perturbation: below the distance to a kink (relumax's scale with the
    # temperature 2^e; the entmax family's are O(1) in score units), above the rounding
    # of the offset (2^(e-42)) and of the O(1) outputs
    eps = 2.0 ** (e - 30) if fn == "relumax" else max(1e-6, 2.0 ** (e - 30))
    assert gradcheck(f, (x,), eps=eps, atol=1e-5, rtol=1e-3)


@settings(max_examples=10, deadline=None)
@given(alpha=st.sampled_from([1.03, 1.5, 2.0, 5.0, "tensor"]), e=st.sampled_from([-10, 0, 10]),
       backend=st.sampled_from(["blocked", "sparse"]), seed=st.integers(0, 1000))
def test_attention_gradcheck_edges(alpha, e, backend, seed):
    DRAWN["cases"] += 1
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 2, 3, 2, generator=g, dtype=torch.float64).requires_grad_()
    k = torch.randn(1, 2, 4, 2, generator=g, dtype=torch.float64).requires_grad_()
    v = torch.randn(1, 2, 4, 2, generator=g, dtype=torch.float64).requires_grad_()
    scale = 2.0 ** e
    if alpha == "tensor":
        a = torch.tensor([1.03, 1.7], dtype=torch.float64, requires_grad=True)
        assert gradcheck(lambda q, k, v, a: kernel_attention(q, k, v, alpha=a, scale=scale, backend=backend),
                         (q, k, v, a), atol=1e-5, rtol=1e-3)
    else:
        assert gradcheck(lambda q, k, v: kernel_attention(q, k, v, alpha=alpha, scale=scale, backend=backend),
                         (q, k, v), atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("method", ["entmax:1.03", "entmax:1.001", "entmax15", "softmax"])
def test_kernel_mha_learned_alpha_near_one_trains(method):
    DRAWN["cases"] += 1
    torch.manual_seed(0)
    m = KernelMultiheadAttention(16, 2, method=method, learn_alpha=True).double()
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    m(x).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # the α gradient agrees with a finite difference of the loss
    th = m.alpha_param
    with torch.no_grad():
        h = 1e-6
        th[0] += h
        up = m(x).square().sum()
        th[0] -= 2 * h
        dn = m(x).square().sum()
        th[0] += h
    assert torch.allclose(th.grad[0], (up - dn) / (2 * h), rtol=1e-4, atol=1e-6)
