"""α-entmax against independent oracles: the entmax package and plain float64 bisection."""

import entmax as entmax_pkg
import numpy as np
import pytest
import torch

import kernelattn as ka
from .reference import rows_ref


def _rand(shape, scale=1.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype) * scale


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0])
@pytest.mark.parametrize("n", [1, 2, 7, 100, 1000])
def test_sparsemax_and_entmax15_match_entmax_package(n, scale):
    x = _rand((16, n), scale)
    torch.testing.assert_close(ka.sparsemax(x), entmax_pkg.sparsemax(x, dim=-1), atol=1e-12, rtol=0)
    torch.testing.assert_close(ka.entmax15(x), entmax_pkg.entmax15(x, dim=-1), atol=1e-12, rtol=0)


@pytest.mark.parametrize("alpha", [1.25, 4 / 3, 1.75])
@pytest.mark.parametrize("n", [3, 50, 2000])
def test_general_alpha_matches_entmax_bisect(alpha, n):
    x = _rand((8, n), 2.0, seed=n)
    ref = entmax_pkg.entmax_bisect(x, alpha, n_iter=100)
    torch.testing.assert_close(ka.entmax(x, alpha), ref, atol=1e-10, rtol=0)
    # float32 path within float32 tolerance
    torch.testing.assert_close(ka.entmax(x.float(), alpha), ref.float(), atol=2e-6, rtol=0)


@pytest.mark.parametrize("alpha", [1.0, 1.1, 1.25, 4 / 3, 1.5, 1.75, 2.0, 2.5, 3.0])
def test_matches_plain_float64_reference(alpha):
    x = _rand((6, 40), 3.0, seed=int(alpha * 100))
    x[0, :5] = float("-inf")
    got = ka.entmax(x, alpha).numpy()
    np.testing.assert_allclose(got, rows_ref(x.numpy(), alpha), atol=1e-9)


@pytest.mark.parametrize("alpha", [1.25, 4 / 3, 1.5, 2.0])
def test_gradient_matches_entmax_package(alpha):
    x = _rand((5, 30), 2.0, seed=3).requires_grad_()
    g = _rand((5, 30), 1.0, seed=4)
    (ka.entmax(x, alpha) * g).sum().backward()
    x2 = x.detach().clone().requires_grad_()
    (entmax_pkg.entmax_bisect(x2, alpha, n_iter=100) * g).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-8, rtol=0)


def test_alpha_gradient_matches_entmax_package():
    x = _rand((6, 20), 2.0, seed=5)
    g = _rand((6, 20), 1.0, seed=6)
    a1 = torch.linspace(1.1, 2.5, 6, dtype=torch.float64)[:, None].requires_grad_()
    (ka.entmax(x, a1) * g).sum().backward()
    a2 = a1.detach().clone().requires_grad_()
    (entmax_pkg.entmax_bisect(x, a2, n_iter=100) * g).sum().backward()
    torch.testing.assert_close(a1.grad, a2.grad, atol=1e-7, rtol=1e-6)
