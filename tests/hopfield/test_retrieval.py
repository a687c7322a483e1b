"""Retrieval: energy descent, the margin condition for exact retrieval, post-transforms, API."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck

import kernelattn.hopfield as hf

MAPPINGS = ["softmax", "sparsemax", "entmax15", "entmax:1.25", "normmax:2", "normmax:5", "ksubsets:2"]


def _patterns(m, d, seed, unit=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, d, generator=g, dtype=torch.float64)
    return F.normalize(x, dim=-1) if unit else x


@settings(max_examples=30)
@given(st.sampled_from(MAPPINGS), st.sampled_from(["identity", "l2", "layernorm"]), st.floats(0.1, 20.0),
       st.integers(2, 12), st.integers(2, 10), st.integers(0, 10_000), st.booleans())
def test_energy_never_increases_and_is_nonnegative(mapping, post, beta, m, d, seed, unit):
    x = _patterns(m, d, seed, unit)
    g = torch.Generator().manual_seed(seed + 1)
    q = x[torch.arange(3) % m] + 0.5 * torch.randn(3, d, generator=g, dtype=torch.float64)
    energies = [hf.hopfield_energy(x, q, mapping, beta, post)]
    for _ in range(12):
        q, _ = hf.hopfield_step(x, q, mapping, beta, post)
        energies.append(hf.hopfield_energy(x, q, mapping, beta, post))
    e = torch.stack(energies)  # (steps, 3)
    assert torch.isfinite(e[1:]).all()  # after one step every state is feasible
    assert (e[1:] >= -1e-9).all()
    scale = 1e-9 * (1 + e[1:].abs().max())
    assert (e[2:] <= e[1:-1] + scale).all()
    if post == "identity":
        assert (e[1] <= e[0] + scale).all()


@pytest.mark.parametrize("mapping", ["sparsemax", "entmax15", "entmax:1.25", "entmax:3", "normmax:1.5",
                                     "normmax:2", "normmax:5"])
def test_fixed_point_exactly_when_margin_holds(mapping):
    """x_i is a fixed point  ⇔  β(x_iᵀx_i − max_{j≠i} x_iᵀx_j) >= 1/(α−1) (entmax) or 1 (normmax).

    Unit-norm patterns are extreme points of their convex hull, so the state equals x_i
    only if the weights are one-hot on i: the condition is necessary as well as
    sufficient. Cases within 5% of the threshold are skipped (either answer is a tie).
    """
    hm = hf.resolve_hopfield_mapping(mapping)
    held = failed = 0
    g = torch.Generator().manual_seed(0)
    for case in range(60):
        m = int(torch.randint(2, 9, (1,), generator=g))
        d = int(torch.randint(2, 9, (1,), generator=g))
        x = _patterns(m, d, 100 + case)
        beta = float(torch.empty(1).uniform_(0.2, 12.0, generator=g))
        gap = beta * hf.pattern_margins(x)
        step, w = hf.hopfield_step(x, x, hm, beta)
        fixed = (step - x).abs().amax(-1) <= 1e-9
        clear = (gap - hm.margin).abs() > 0.05 * hm.margin
        want = gap >= hm.margin
        assert torch.equal(fixed[clear], want[clear]), (case, gap, fixed)
        held += int((want & clear).sum())
        failed += int((~want & clear).sum())
    assert held > 20 and failed > 20  # both directions were exercised


def test_softmax_never_lands_exactly():
    x = _patterns(5, 6, 1)
    r = hf.hopfield_retrieve(x, x, "softmax", beta=50.0, n_iter=5, return_info=True)
    assert (r.weights > 0).all()


def test_store_and_retrieve_corrupted_pattern_in_one_call():
    x = _patterns(20, 32, 2)
    g = torch.Generator().manual_seed(3)
    q = x.clone()
    q[:, 16:] = 0  # half of each pattern lost
    q = q + 0.05 * torch.randn(q.shape, generator=g, dtype=torch.float64)
    for mapping in ("sparsemax", "entmax15", "normmax:2"):
        out = hf.hopfield_retrieve(x, q, mapping, beta=8.0)
        torch.testing.assert_close(out, x, atol=1e-12, rtol=0)
    soft = hf.hopfield_retrieve(x, q, "softmax", beta=8.0)
    assert (soft - x).abs().amax() > 1e-6  # only approximately


def test_ksubsets_retrieves_an_association_of_k_patterns():
    x = torch.eye(8, dtype=torch.float64)[:5]  # orthonormal patterns
    g = torch.Generator().manual_seed(4)
    q = x[0] + x[1] + 0.1 * torch.randn(8, generator=g, dtype=torch.float64)
    r = hf.hopfield_retrieve(x, q[None], "ksubsets:2", beta=4.0, return_info=True)
    torch.testing.assert_close(r.states[0], x[0] + x[1], atol=1e-12, rtol=0)
    torch.testing.assert_close(r.weights.sum(-1), torch.tensor([2.0], dtype=torch.float64))


def test_post_transforms():
    x = _patterns(6, 10, 5, unit=False)
    q = torch.randn(4, 10, dtype=torch.float64)
    l2 = hf.hopfield_retrieve(x, q, "entmax15", post="l2", n_iter=3)
    torch.testing.assert_close(l2.norm(dim=-1), torch.ones(4, dtype=torch.float64))
    ln = hf.hopfield_retrieve(x, q, "entmax15", post="layernorm", n_iter=3)
    torch.testing.assert_close(ln.mean(-1), torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(ln.var(-1, unbiased=False), torch.ones(4, dtype=torch.float64))
    custom = hf.hopfield_retrieve(x, q, "entmax15", post=torch.tanh, n_iter=3)
    assert custom.abs().max() < 1
    with pytest.raises(ValueError, match="unknown post"):
        hf.hopfield_retrieve(x, q, post="batchnorm")


def test_batched_and_masked():
    x = torch.stack([_patterns(5, 6, 6), _patterns(5, 6, 7)])  # (2, 5, 6)
    q = x + 0.01
    out = hf.hopfield_retrieve(x, q, "sparsemax", beta=10.0)
    assert out.shape == (2, 5, 6)
    for b in range(2):
        torch.testing.assert_close(out[b], hf.hopfield_retrieve(x[b], q[b], "sparsemax", beta=10.0))
    mask = torch.ones(5, dtype=torch.bool)
    mask[0] = False
    r = hf.hopfield_retrieve(x[0], q[0], "sparsemax", beta=10.0, mask=mask, return_info=True)
    assert (r.weights[:, 0] == 0).all()
    e = hf.hopfield_energy(x[0], r.states, "sparsemax", 10.0, mask=mask)
    assert torch.isfinite(e).all()


def test_converges_and_reports():
    x = _patterns(4, 5, 8)
    r = hf.hopfield_retrieve(x, x + 0.01, "sparsemax", beta=10.0, n_iter=50, return_info=True)
    assert r.converged.all() and r.n_iter <= 3


@pytest.mark.parametrize("mapping", ["softmax", "entmax15", "normmax:2", "ksubsets:2"])
def test_gradients_through_iterations(mapping):
    x = _patterns(4, 5, 9).requires_grad_()
    q = (0.3 * _patterns(3, 5, 10)).requires_grad_()
    assert gradcheck(lambda a, b: hf.hopfield_retrieve(a, b, mapping, beta=1.5, n_iter=2, tol=0.0), (x, q))


def test_bad_arguments():
    x = _patterns(4, 5, 11)
    with pytest.raises(ValueError, match="same pattern size"):
        hf.hopfield_retrieve(x, torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="n_iter"):
        hf.hopfield_retrieve(x, x, n_iter=0)
    with pytest.raises(ValueError, match="beta"):
        hf.hopfield_retrieve(x, x, beta=-1.0)
    with pytest.raises(ValueError, match="at least two"):
        hf.pattern_margins(x[:1])
    assert math.isinf(hf.hopfield_energy(x, 5 * x, "softmax", post="l2").max().item())
