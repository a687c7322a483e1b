"""The kernel view agrees with the attention view (SPEC §1)."""

import math

import numpy as np
import pytest
import torch

import kernelattn as ka
from kernelattn.kernels import KERNELS, NWeightKernel, gaussian, get_kernel, nadaraya_watson, nadaraya_watson_weights


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("h", [0.8, 1.2, 2.5])
def test_fixed_normalisation_is_normalized_relu(n, h):
    q, k = _unit(20, 8, 0), _unit(50, 8, 1)
    w = nadaraya_watson_weights(q, k, NWeightKernel(n), h, "fixed")
    scale, bias = ka.kernel_affine(h)
    torch.testing.assert_close(w, ka.normalized_relu(q @ k.T, n, scale=scale, bias=bias), atol=1e-12, rtol=0)


def test_fixed_normalisation_general_vectors_uses_norm_bias():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(10, 4, generator=g, dtype=torch.float64), torch.randn(30, 4, generator=g, dtype=torch.float64)
    h = 3.0
    sq = (q * q).sum(-1, keepdim=True) + (k * k).sum(-1)[None, :]
    scale, bias = ka.kernel_affine(h, sq)
    w = nadaraya_watson_weights(q, k, "biweight", h, "fixed")
    torch.testing.assert_close(w, ka.normalized_relu(q @ k.T, 2, scale=scale, bias=bias), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ["epanechnikov", "biweight", "triweight"])
@pytest.mark.parametrize("h", [0.3, 1.0])
def test_adaptive_normalisation_is_entmax(name, h):
    q, k = _unit(20, 8, 3), _unit(60, 8, 4)
    kern = get_kernel(name)
    w = nadaraya_watson_weights(q, k, kern, h, "adaptive")
    torch.testing.assert_close(w, ka.entmax(q @ k.T / h ** 2, kern.alpha), atol=1e-10, rtol=0)
    assert kern.alpha == pytest.approx(1 + 1 / kern.n)
    torch.testing.assert_close(w, ka.resolve_mapping(kern.method)(q @ k.T / h ** 2), atol=1e-10, rtol=0)


@pytest.mark.parametrize("norm", ["fixed", "adaptive"])
def test_gaussian_is_softmax(norm):
    q, k = _unit(10, 5, 5), _unit(40, 5, 6)
    h = 0.7
    w = nadaraya_watson_weights(q, k, gaussian, h, norm)
    torch.testing.assert_close(w, torch.softmax(q @ k.T / h ** 2, -1), atol=1e-12, rtol=0)


def test_entmax_approaches_softmax_at_rate_one_over_n():
    """max |entmax_{1+1/n}(z) - softmax(z)| = Θ(1/n): the measured log-log slope is ≈ -1."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(32, 64, generator=g, dtype=torch.float64) * 2
    ns = [4, 8, 16, 32, 64, 128, 256]
    errs = [(ka.entmax(z, 1 + 1 / n) - torch.softmax(z, -1)).abs().max().item() for n in ns]
    slope = np.polyfit(np.log(ns), np.log(errs), 1)[0]
    assert all(a > b for a, b in zip(errs, errs[1:]))
    assert -1.15 < slope < -0.85, (slope, errs)
    # and the n-weight kernel itself tends to the Gaussian: (1 - u²/(2n))^n -> exp(-u²/2)
    u = torch.linspace(0, 3, 50, dtype=torch.float64)
    assert (torch.relu(1 - u ** 2 / (2 * 256)) ** 256 - gaussian(u)).abs().max() < 1e-2


def test_one_dimensional_regression_recovers_a_line():
    x = torch.linspace(0, 1, 101, dtype=torch.float64)
    y = 3 * x + 1
    for kern in KERNELS.values():
        for norm in ("fixed", "adaptive"):
            pred = nadaraya_watson(torch.tensor([0.5]), x, y, kern, 0.1, norm)
            assert pred.item() == pytest.approx(2.5, abs=1e-6), (kern, norm)


def test_fixed_compact_kernel_empty_neighbourhood_is_zero():
    w = nadaraya_watson_weights(torch.tensor([10.0]), torch.tensor([0.0, 1.0]), "epanechnikov", 0.5, "fixed")
    assert (w == 0).all()
    w = nadaraya_watson_weights(torch.tensor([10.0]), torch.tensor([0.0, 1.0]), "epanechnikov", 0.5, "adaptive")
    assert w.sum().item() == pytest.approx(1.0) and w[0, 1] == 1.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="bandwidth"):
        nadaraya_watson_weights(torch.zeros(2), torch.zeros(3), "gaussian", 0.0)
    with pytest.raises(ValueError, match="normalization"):
        nadaraya_watson_weights(torch.zeros(2), torch.zeros(3), "gaussian", 1.0, "other")
    with pytest.raises(ValueError, match="unknown kernel"):
        get_kernel("cosine")
    with pytest.raises(ValueError, match="n must be"):
        NWeightKernel(0)
    with pytest.raises(ValueError, match="values"):
        nadaraya_watson(torch.zeros(2), torch.zeros(3), torch.zeros(4))
    assert math.isclose(get_kernel("nweight:4").alpha, 1.25)
