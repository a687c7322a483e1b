"""Hypothesis properties of the adaptive family (α-entmax) and the fixed family."""

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import kernelattn as ka
from .reference import entmax_tau_ref

ALPHAS = st.sampled_from([1.0, 1.25, 4 / 3, 1.5, 1.75, 2.0, 2.5])
rows = st.integers(1, 40).flatmap(
    lambda n: arrays(np.float64, (3, n), elements=st.floats(-50, 50, allow_nan=False, width=64)))


@given(rows, ALPHAS)
def test_simplex(x, alpha):
    p = ka.entmax(torch.from_numpy(x), alpha)
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(3, dtype=torch.float64), atol=1e-9, rtol=0)


@given(rows, ALPHAS, st.randoms(use_true_random=False))
def test_permutation_equivariant(x, alpha, rnd):
    perm = list(range(x.shape[1]))
    rnd.shuffle(perm)
    t = torch.from_numpy(x)
    torch.testing.assert_close(ka.entmax(t[:, perm], alpha), ka.entmax(t, alpha)[:, perm], atol=1e-9, rtol=0)


@given(rows, ALPHAS, st.floats(-1e3, 1e3))
def test_shift_invariant(x, alpha, c):
    t = torch.from_numpy(x)
    torch.testing.assert_close(ka.entmax(t + c, alpha), ka.entmax(t, alpha), atol=1e-8, rtol=0)


@given(rows, st.sampled_from([1.25, 4 / 3, 1.5, 2.0]))
def test_support_matches_threshold_condition(x, alpha):
    """p_i > 0 exactly where (α-1) x_i > τ (τ from a plain float64 bisection)."""
    p = ka.entmax(torch.from_numpy(x), alpha).numpy()
    for row, prow in zip(x, p):
        margin = (alpha - 1) * row - entmax_tau_ref(row, alpha)
        clear = np.abs(margin) > 1e-7  # entries on the threshold are ties either way
        assert ((prow > 0) == (margin > 0))[clear].all()


@given(rows, st.integers(1, 4), st.floats(0.1, 5.0), st.floats(-2.0, 2.0))
def test_normalized_relu_simplex_or_empty(x, n, scale, bias):
    t = torch.from_numpy(x)
    p = ka.normalized_relu(t, n, scale=scale, bias=bias)
    s = p.sum(-1)
    empty = (torch.relu(t * scale + bias) == 0).all(-1)
    assert (p >= 0).all()
    torch.testing.assert_close(s[~empty], torch.ones_like(s[~empty]), atol=1e-9, rtol=0)
    assert (s[empty] == 0).all()


@given(rows, st.integers(1, 10))
def test_topk(x, k):
    t = torch.from_numpy(x)
    ps, pu = ka.topk_softmax(t, k), ka.topk_uniform(t, k)
    kk = min(k, x.shape[1])
    assert ((ps > 0).sum(-1) <= kk).all()
    assert ((pu > 0).sum(-1) == kk).all()
    torch.testing.assert_close(pu.sum(-1), torch.ones(3, dtype=torch.float64))
    # the kept entries are the largest: anything kept is >= anything dropped
    for row, keep in zip(t, pu > 0):
        if (~keep).any():
            assert row[keep].min() >= row[~keep].max()
