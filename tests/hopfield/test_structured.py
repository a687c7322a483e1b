"""Constrained sparsemax, sequential k-subsets, free/sequential recall and the DAM baselines."""

import math

import pytest
import torch
from torch.autograd import gradcheck

import kernelattn.hopfield as hf

entmax_pkg = pytest.importorskip("entmax")


def _x(shape, seed=0, scale=1.5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


# ------------------------------------------------------------------ constrained sparsemax


def test_constrained_sparsemax_without_binding_bounds_is_sparsemax():
    x = _x((20, 7), seed=1)
    torch.testing.assert_close(hf.constrained_sparsemax(x, torch.ones_like(x)), entmax_pkg.sparsemax(x, dim=-1))


def test_constrained_sparsemax_is_the_capped_projection():
    x = _x((30, 6), seed=2)
    g = torch.Generator().manual_seed(3)
    u = torch.rand(30, 6, generator=g, dtype=torch.float64) * 0.6 + 0.05
    p = hf.constrained_sparsemax(x, u)
    assert ((p >= 0) & (p <= u + 1e-12)).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(30, dtype=torch.float64))
    for seed in range(20):  # no other feasible point is closer to x
        other = hf.constrained_sparsemax(_x((30, 6), seed=100 + seed, scale=3.0), u)
        assert ((p - x).square().sum(-1) <= (other - x).square().sum(-1) + 1e-12).all()
    assert (p == u).any() and (p < u).any()  # bounds bind on some entries, not all


def test_constrained_sparsemax_edge_cases_and_gradients():
    x = _x((4, 5), seed=4)
    u = torch.full((4, 5), 0.3, dtype=torch.float64)
    u[1] = torch.tensor([0.2, 0.1, 0.0, 0.3, 0.1], dtype=torch.float64)  # Σu = 0.7 < 1: p = u
    x[2, :2] = -math.inf
    p = hf.constrained_sparsemax(x, u)
    torch.testing.assert_close(p[1], u[1])
    assert (p[2, :2] == 0).all() and abs(float(p[2].sum()) - 0.9) < 1e-12  # three entries of 0.3 left
    assert (p[:, :][u == 0] == 0).all()
    xs = _x((3, 6), seed=5).requires_grad_()
    us = (torch.rand(3, 6, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 0.5 + 0.1)
    assert gradcheck(lambda a, b: hf.constrained_sparsemax(a, b), (xs, us.requires_grad_()))
    with pytest.raises(ValueError, match="upper"):
        hf.constrained_sparsemax(x, -u)


# ------------------------------------------------------------------ sequential k-subsets


def _windows(n, k):
    a = torch.zeros(n, n - k + 1, dtype=torch.float64)
    for j in range(n - k + 1):
        a[j:j + k, j] = 1
    return a


@pytest.mark.parametrize("k", [1, 2, 3])
def test_sequential_ksubsets_is_optimal_over_windows(k):
    x = _x((15, 8), seed=7 + k, scale=2.0)
    mu = hf.sequential_ksubsets(x, k)
    torch.testing.assert_close(mu.sum(-1), torch.full((15,), float(k), dtype=torch.float64))
    assert ((mu >= -1e-12) & (mu <= 1 + 1e-12)).all()
    a = _windows(8, k)
    obj = (mu * x).sum(-1) - 0.5 * mu.square().sum(-1)
    g = torch.Generator().manual_seed(8)
    for _ in range(200):  # random points of the window polytope never do better
        pi = torch.distributions.Dirichlet(torch.full((8 - k + 1,), 0.3, dtype=torch.float64)).sample((15,))
        other = pi @ a.T
        assert (obj >= (other * x).sum(-1) - 0.5 * other.square().sum(-1) - 1e-10).all()
    if k == 1:
        torch.testing.assert_close(mu, entmax_pkg.sparsemax(x, dim=-1))
    del g


def test_sequential_ksubsets_picks_adjacent_patterns():
    x = torch.tensor([[5.0, 0.0, 0.0, 3.5, 4.5, 0.0]], dtype=torch.float64)
    # best unordered pair is {0, 4}; the best adjacent pair is {3, 4}
    torch.testing.assert_close(hf.sequential_ksubsets(x, 2), torch.tensor([[0, 0, 0, 1.0, 1.0, 0]],
                                                                          dtype=torch.float64))
    torch.testing.assert_close(hf.ksubsets(x, 2), torch.tensor([[1.0, 0, 0, 0, 1.0, 0]], dtype=torch.float64))


def test_sequential_ksubsets_masks_gradients_and_dims():
    x = _x((2, 7), seed=9)
    x[0, 3] = -math.inf
    mu = hf.sequential_ksubsets(x, 2)
    assert mu[0, 3] == 0 and abs(float(mu[0].sum()) - 2) < 1e-12
    short = torch.tensor([[1.0, -math.inf, 2.0]], dtype=torch.float64)
    assert (hf.sequential_ksubsets(short, 2) == 0).all()  # no two adjacent unmasked entries
    xs = _x((3, 6), seed=10).requires_grad_()
    assert gradcheck(lambda t: hf.sequential_ksubsets(t, 2), (xs,))
    xt = _x((6, 3), seed=11)
    torch.testing.assert_close(hf.sequential_ksubsets(xt, 2, dim=0), hf.sequential_ksubsets(xt.T, 2).T)
    with pytest.raises(ValueError, match="k must be"):
        hf.sequential_ksubsets(xt, 0)


# ---------------------------------------------------------------------------- recall


def _patterns(m, d, seed):
    return torch.randn(m, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1])
def test_free_recall_visits_every_pattern(seed):
    x = _patterns(12, 40, seed)
    for order in (hf.free_recall(x, method="constrained", beta=1.0), hf.free_recall(x, "sparsemax", beta=1.0)):
        assert order[0] == 0 and sorted(order) == list(range(12))
    # at small β softmax settles on mixtures and keeps recalling the same few patterns
    assert len(set(hf.free_recall(x, "softmax", beta=0.1))) <= 6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sequential_recall_follows_the_stored_order(seed):
    order = hf.sequential_recall(_patterns(12, 40, seed), "sparsemax", beta=1.0)
    assert order == list(range(1, 12))


def test_levenshtein_coefficient():
    assert hf.levenshtein_coefficient([1, 2, 3], [1, 2, 3]) == 1.0
    assert hf.levenshtein_coefficient([1, 3], [1, 2, 3]) == pytest.approx(2 / 3)
    assert hf.levenshtein_coefficient([3, 2, 1], [1, 2, 3]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        hf.free_recall(torch.zeros(1, 3, dtype=torch.float64))


# ------------------------------------------------------------------------------- DAM


def test_dam_retrieves_separated_patterns_and_rejects_bad_kinds():
    x = torch.sign(torch.randn(6, 40, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    q = x.clone()
    q[:, 20:] = 0  # half of each pattern lost
    for kind, beta in (("poly:3", 1.0), ("poly:10", 0.1), ("exp", 0.1), ("exp:0.2", 0.1)):
        out = hf.dam_retrieve(x, q, kind, beta=beta, inner_beta=0.2, n_iter=5)
        cos = torch.nn.functional.cosine_similarity(out, x, dim=-1)
        assert (cos > 0.99).all(), (kind, cos)
    # the classical network (poly:1) is one matrix product: tanh(β XᵀX q)
    torch.testing.assert_close(hf.dam_retrieve(x, q, "poly:1", beta=0.01, n_iter=1),
                               torch.tanh(0.01 * (q @ x.T) @ x))
    torch.testing.assert_close(hf.dam_retrieve(x, q, "exp:0.3"), hf.dam_retrieve(x, q, "exp", inner_beta=0.3))
    for bad in ("poly:0", "poly", "gauss", "exp:-1", "exp:x"):
        with pytest.raises(ValueError, match="DAM kind"):
            hf.dam_retrieve(x, q, bad)


def test_constrained_sparsemax_long_rows_use_bisection_and_agree():
    """Rows over 512 entries take the bisection path; it lands on the same projection."""
    x = _x((3, 600), seed=12)
    u = torch.rand(3, 600, generator=torch.Generator().manual_seed(13), dtype=torch.float64) * 0.05
    p = hf.constrained_sparsemax(x, u)
    # optimality: one threshold τ on the free entries; entries at 0 lie below it, at u above it
    torch.testing.assert_close(p.sum(-1), torch.ones(3, dtype=torch.float64))
    for r in range(3):
        free = (p[r] > 0) & (p[r] < u[r])
        tau = (x[r] - p[r])[free]
        assert float(tau.max() - tau.min()) < 1e-9  # one threshold on the free entries
        t = float(tau.mean())
        assert ((x[r] - t <= 1e-9) | (p[r] > 0)).all() and ((x[r] - t >= u[r] - 1e-9) | (p[r] < u[r])).all()
