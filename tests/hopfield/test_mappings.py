"""normmax and k-subsets against the entmax package, their gradients, and the conjugates."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch.autograd import gradcheck

from kernelattn.hopfield import HopfieldMapping, ksubsets, normmax, resolve_hopfield_mapping

entmax_pkg = pytest.importorskip("entmax")

rows = st.integers(2, 12).flatmap(
    lambda n: arrays(np.float64, (3, n), elements=st.floats(-10, 10, allow_nan=False, width=64)))


def _x(shape, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


@settings(max_examples=25)
@given(rows, st.sampled_from([1.5, 2.0, 3.0, 5.0]))
def test_normmax_matches_entmax_package(x, alpha):
    t = torch.from_numpy(x)
    p = normmax(t, alpha)
    ref = entmax_pkg.normmax_bisect(t, alpha, n_iter=200)
    torch.testing.assert_close(p, ref, atol=1e-9, rtol=0)
    torch.testing.assert_close(p.sum(-1), torch.ones(3, dtype=torch.float64), atol=1e-12, rtol=0)


@settings(max_examples=25)
@given(rows, st.integers(1, 4))
def test_ksubsets_sums_to_k_and_matches_entmax_package(x, k):
    t = torch.from_numpy(x)
    p = ksubsets(t, k)
    assert ((p >= 0) & (p <= 1)).all()
    kk = min(k, x.shape[1])
    torch.testing.assert_close(p.sum(-1), torch.full((3,), float(kk), dtype=torch.float64), atol=1e-9, rtol=0)
    if k < x.shape[1]:
        torch.testing.assert_close(p, entmax_pkg.budget_bisect(t, k, n_iter=200), atol=1e-9, rtol=0)


def test_ksubsets_is_the_projection():
    """p minimises ||p − x||² over the capped simplex: no feasible direction improves it."""
    x = _x((50, 9), seed=1)
    p = ksubsets(x, 3)
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        other = ksubsets(torch.randn(50, 9, generator=g, dtype=torch.float64) * 3, 3)
        assert ((p - x).square().sum(-1) <= (other - x).square().sum(-1) + 1e-12).all()


@pytest.mark.parametrize("dim", [0, -1])
@pytest.mark.parametrize("alpha", [1.5, 2.0, 3.0])
def test_normmax_gradcheck(alpha, dim):
    x = _x((4, 7), seed=3).requires_grad_()
    assert gradcheck(lambda t: normmax(t, alpha, dim=dim), (x,))


def test_normmax_gradcheck_learnable_alpha():
    x = _x((1, 3, 2, 5), seed=4).requires_grad_()
    a = torch.tensor([1.5, 2.0, 4.0], dtype=torch.float64).view(1, 3, 1, 1).requires_grad_()
    assert gradcheck(lambda t, al: normmax(t, al), (x, a))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_ksubsets_gradcheck(k):
    x = _x((5, 8), seed=5).requires_grad_()
    assert gradcheck(lambda t: ksubsets(t, k, dim=-1), (x,))
    xt = _x((8, 5), seed=6).requires_grad_()
    assert gradcheck(lambda t: ksubsets(t, k, dim=0), (xt,))


@pytest.mark.parametrize("name", ["softmax", "sparsemax", "entmax15", "entmax:1.25", "normmax:2", "normmax:4",
                                  "ksubsets:2"])
def test_conjugate_gradient_is_the_mapping(name):
    """Danskin: ∇Ω*(θ) = ŷ(θ), which checks the regulariser of each mapping."""
    hm = resolve_hopfield_mapping(name)
    x = _x((6, 7), seed=7).requires_grad_()
    (g,) = torch.autograd.grad(hm.conjugate(x).sum(), x)
    torch.testing.assert_close(g, hm(x.detach()), atol=1e-8, rtol=0)


@pytest.mark.parametrize("name", ["softmax", "entmax15", "normmax:2", "ksubsets:2"])
def test_conjugate_is_a_max(name):
    """Ω*(θ) >= ⟨p, θ⟩ − Ω(p) for other feasible p (here: the mapping at other scores)."""
    hm = resolve_hopfield_mapping(name)
    x = _x((40, 6), seed=8)
    conj = hm.conjugate(x)
    other = hm(_x((40, 6), seed=9))
    val = (other * x).sum(-1) - hm.regularizer(other)
    assert (conj >= val - 1e-10).all()


def test_masked_rows_and_entries():
    x = _x((3, 6), seed=10)
    x[0, :2] = -math.inf
    x[1] = -math.inf
    for fn in (lambda t: normmax(t, 2.0), lambda t: ksubsets(t, 2)):
        xx = x.clone().requires_grad_()
        p = fn(xx)
        assert (p[0, :2] == 0).all() and (p[1] == 0).all()
        p.sum().backward()
        assert torch.isfinite(xx.grad).all()


def test_half_precision_is_solved_in_float32():
    x = _x((4, 9), seed=11).half()
    torch.testing.assert_close(normmax(x, 2.0).float(), normmax(x.float(), 2.0), atol=2e-3, rtol=0)
    assert ksubsets(x, 2).dtype == torch.float16


def test_resolve_names():
    assert resolve_hopfield_mapping("entmax:1.25") == HopfieldMapping("entmax:1.25", "entmax", alpha=1.25)
    assert resolve_hopfield_mapping("biweight").alpha == 1.5
    assert resolve_hopfield_mapping("normmax").name == "normmax:2"
    assert resolve_hopfield_mapping("ksubsets:3").total == 3.0
    assert resolve_hopfield_mapping("sparsemax").margin == 1.0
    assert resolve_hopfield_mapping("entmax15").margin == 2.0
    assert resolve_hopfield_mapping("normmax:5").margin == 1.0
    assert resolve_hopfield_mapping("softmax").margin == math.inf
    for bad in ("normalized_relu", "topk_softmax", "ksubsets", "normmax:1", "ksubsets:0", "nope"):
        with pytest.raises(ValueError):
            resolve_hopfield_mapping(bad)
    with pytest.raises(ValueError, match="alpha > 1"):
        normmax(_x((2, 3)), 1.0)
    with pytest.raises(ValueError, match="k must be"):
        ksubsets(_x((2, 3)), 0)
