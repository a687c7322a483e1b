"""Closed-form backward passes checked with torch.autograd.gradcheck in float64."""

import pytest
import torch
from torch.autograd import gradcheck

import kernelattn as ka


def _x(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * 2).requires_grad_()


@pytest.mark.parametrize("alpha", [1.0, 1.2, 1.25, 4 / 3, 1.5, 1.75, 2.0, 2.5])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_gradcheck_x(alpha, dim):
    x = _x((4, 6, 5))
    assert gradcheck(lambda t: ka.entmax(t, alpha, dim=dim), (x,))


def test_gradcheck_x_and_per_head_alpha():
    x = _x((2, 3, 4, 7))  # (B, H, T, T) scores
    alpha = torch.tensor([1.2, 1.5, 2.3], dtype=torch.float64).view(1, 3, 1, 1).requires_grad_()
    assert gradcheck(lambda t, a: ka.entmax(t, a, dim=-1), (x, alpha))


def test_gradcheck_alpha_other_dim():
    x = _x((5, 4))
    alpha = torch.tensor([[1.3, 1.6, 1.9, 1.45]], dtype=torch.float64).requires_grad_()
    assert gradcheck(lambda t, a: ka.entmax(t, a, dim=0), (x, alpha))


@pytest.mark.parametrize("fn", [
    lambda t: ka.sparsemax(t), lambda t: ka.entmax15(t),
    lambda t: ka.normalized_relu(t, 1, scale=1.0, bias=1.0),
    lambda t: ka.normalized_relu(t, 3, scale=0.5, bias=1.0),
    lambda t: ka.relumax(t, temperature=2.0), lambda t: ka.topk_softmax(t, 3), lambda t: ka.softmax(t)])
def test_gradcheck_other_mappings(fn):
    assert gradcheck(fn, (_x((3, 8), seed=1),))


def test_masked_entries_get_zero_gradient_and_dead_rows_too():
    x = _x((3, 6))
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[0] = True
    mask[1, :4] = True
    for f in (ka.sparsemax, ka.entmax15, lambda t: ka.entmax(t, 1.3), ka.softmax, ka.relumax,
              lambda t: ka.normalized_relu(t, 2, bias=1.0), lambda t: ka.topk_softmax(t, 2)):
        xx = x.detach().masked_fill(mask, float("-inf")).requires_grad_()
        p = f(xx)
        (p * torch.arange(6.0, dtype=torch.float64)).sum().backward()
        assert torch.isfinite(xx.grad).all()
        assert (xx.grad[mask] == 0).all()
        assert (p[0] == 0).all()
