"""Continuous-time memory: ridge regression onto bases and Gibbs retrieval over [0, 1]."""

import math

import pytest
import torch

import kernelattn.hopfield as hf


def _signal(L=60, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = (torch.arange(L, dtype=torch.float64) + 0.5) / L
    freq = torch.randn(d, generator=g, dtype=torch.float64) * 3
    return torch.sin(2 * math.pi * t[:, None] * freq[None] + torch.randn(d, generator=g, dtype=torch.float64))


def test_rectangular_coefficients_are_ridge_pooled_rows():
    x = _signal(L=60)
    lam = 0.5
    mem = hf.ContinuousMemory(x, n_basis=7, basis="rectangular", ridge=lam)
    bins = ((torch.arange(60) + 0.5) / 60 * 7).floor().long()
    pooled = torch.stack([x[bins == n].sum(0) / ((bins == n).sum() + lam) for n in range(7)])
    torch.testing.assert_close(mem.coefficients, pooled)


@pytest.mark.parametrize("beta", [0.5, 3.0])
def test_rectangular_continuous_retrieval_equals_discrete_attention(beta):
    """∫ p(t) x̄(t) dt with rectangular bases = softmax attention over the N pooled rows."""
    x = _signal(L=60, seed=1)
    q = torch.randn(5, 4, dtype=torch.float64)
    mem = hf.ContinuousMemory(x, n_basis=7, basis="rectangular", ridge=1e-3)
    exact = mem.retrieve(q, beta=beta, n_iter=2, tol=0.0, method="exact")
    discrete = hf.hopfield_retrieve(mem.coefficients, q, "softmax", beta=beta, n_iter=2, tol=0.0)
    torch.testing.assert_close(exact, discrete)
    # Gauss–Legendre inside each bin: exact for rectangular bases at any node count
    # (a midpoint grid that does not split the bins evenly was off by O(N/K)).
    for k in (7, 100, 1000, 10_001):
        quad = mem.retrieve(q, beta=beta, n_iter=2, tol=0.0, method="quadrature", n_points=k)
        torch.testing.assert_close(quad, exact, atol=1e-12, rtol=0)


def test_gaussian_bases_reconstruct_and_quadrature_converges():
    x = _signal(L=80, d=3, seed=2)
    errs = []
    for n in (8, 16, 32):
        mem = hf.ContinuousMemory(x, n_basis=n, basis="gaussian", ridge=1e-6)
        errs.append((mem.signal(mem.times) - x).square().mean().item())
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-2
    q = x[[10, 40]] * 1.0
    a = mem.retrieve(q, beta=4.0, n_points=2000)
    b = mem.retrieve(q, beta=4.0, n_points=4000)
    assert (a - b).abs().max() < 1e-5
    # one step of retrieval moves a stored sample towards itself more than towards the rest
    sims = torch.nn.functional.cosine_similarity(a[:, None], x[None], dim=-1)
    assert (sims.argmax(-1) - torch.tensor([10, 40])).abs().max() <= 4


def test_functional_form_and_errors():
    x = _signal(L=20, seed=3)
    q = torch.randn(2, 4, dtype=torch.float64)
    out = hf.continuous_hopfield_retrieve(x, q, n_basis=5, basis="rectangular", beta=2.0)
    torch.testing.assert_close(out, hf.ContinuousMemory(x, 5).retrieve(q, beta=2.0))
    with pytest.raises(ValueError, match="basis"):
        hf.ContinuousMemory(x, 5, basis="legendre")
    with pytest.raises(ValueError, match="n_basis"):
        hf.ContinuousMemory(x, 0)
    with pytest.raises(ValueError, match="exact"):
        hf.ContinuousMemory(x, 5, basis="gaussian").retrieve(q, method="exact")


def test_default_ridge_is_the_papers():
    x = _signal(L=30)
    assert hf.ContinuousMemory(x, 5).ridge == 0.5


def test_quadrature_nodes_integrate_polynomials_on_each_bin():
    mem = hf.ContinuousMemory(_signal(L=20), n_basis=4, basis="gaussian")
    t, w = mem.nodes(12)  # 3 Gauss–Legendre nodes per bin: exact up to degree 5 per bin
    assert t.shape == (12,) and abs(float(w.sum()) - 1) < 1e-14
    for deg in range(6):
        torch.testing.assert_close((w * t ** deg).sum(), torch.tensor(1 / (deg + 1), dtype=torch.float64),
                                   atol=1e-14, rtol=0)
    # Gaussian bases: the retrieval converges fast in the node count
    q = torch.randn(3, 4, dtype=torch.float64)
    a = mem.retrieve(q, beta=3.0, n_points=80)
    b = mem.retrieve(q, beta=3.0, n_points=4000)
    assert (a - b).abs().max() < 1e-10


def test_rectangular_energy_is_the_discrete_energy_of_the_pooled_rows():
    x = _signal(L=50, seed=4)
    mem = hf.ContinuousMemory(x, n_basis=6)
    q = torch.randn(5, 4, dtype=torch.float64)
    for beta in (0.3, 2.0):
        e = mem.energy(q, beta=beta)
        torch.testing.assert_close(e, hf.hopfield_energy(mem.coefficients, q, "softmax", beta))
        torch.testing.assert_close(mem.energy(q, beta=beta, method="quadrature", n_points=60), e)


@pytest.mark.parametrize("basis", ["rectangular", "gaussian"])
def test_continuous_energy_never_increases(basis):
    x = _signal(L=64, d=3, seed=5)
    mem = hf.ContinuousMemory(x, n_basis=10, basis=basis)
    q = torch.randn(6, 3, dtype=torch.float64) * 2
    energies = [mem.energy(q, beta=2.5, n_points=200)]
    for _ in range(8):
        q = mem.retrieve(q, beta=2.5, n_iter=1, n_points=200)
        energies.append(mem.energy(q, beta=2.5, n_points=200))
    e = torch.stack(energies)
    assert (e >= -1e-12).all()
    assert (e[1:] <= e[:-1] + 1e-12).all() and (e[-1] < e[0]).all()
