"""Property-based adversarial tests of every probability mapping against a float64 reference.

Inputs are drawn on a coarse grid (multiples of 1/4, times 2^e with e in [-100, 100]) so that
they are exact in float32, float64 and bfloat16 alike and the reference sees the very same
numbers; shapes include empty and length-1 dims, masks include fully masked rows, and α
runs from the softmax limit (1 + 1e-9) to 10. Non-finite scores and bad options must raise
``ValueError``/``TypeError`` (the policy in :mod:`kernelattn._validation`).
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kernelattn as ka
from kernelattn.mappings import resolve_mapping

from . import _ref
from .conftest import DRAWN

DTYPES = (torch.float32, torch.float64, torch.bfloat16)
ALPHAS = (1.0, 1 + 1e-9, 1 + 1e-6, 1 + 1e-3, 1.03, 1.25, 4 / 3, 1.5, 1.7, 2.0, 2.5, 5.0, 10.0)
MAPPINGS = ("softmax", "sparsemax", "entmax15", "entmax", "entmax_tensor", "Entmax_module", "normalized_relu",
            "relumax", "topk_softmax", "topk_uniform", "registry")


@st.composite
def scores(draw, max_last: int = 9):
    """(x, dtype): grid-valued scores, -inf masked entries, some fully masked rows."""
    batch = draw(st.lists(st.integers(0, 3), min_size=0, max_size=2))
    n = draw(st.integers(0, max_last))
    shape = tuple(batch) + (n,)
    numel = int(np.prod(shape)) if shape else 1
    vals = draw(st.lists(st.integers(-8, 8), min_size=numel, max_size=numel))
    e = draw(st.integers(-100, 100))
    x = torch.tensor(vals, dtype=torch.float64).reshape(shape) / 4 * 2.0 ** e
    if n and numel:
        masked = draw(st.lists(st.booleans(), min_size=numel, max_size=numel))
        m = torch.tensor(masked).reshape(shape) & (torch.rand(shape, generator=torch.Generator().manual_seed(
            draw(st.integers(0, 2**16)))) < 0.3)
        x = x.masked_fill(m, -math.inf)
        if draw(st.booleans()) and x.dim() > 1:
            x.view(-1, n)[0] = -math.inf  # a fully masked row
    dtype = draw(st.sampled_from(DTYPES))
    return x.to(dtype), dtype


def _apply(name, x, alpha, k, opts):
    """Run mapping ``name``; return (output, float64 reference or a checker)."""
    x64 = x.double().numpy()
    if name == "softmax":
        return ka.softmax(x), _ref.entmax_ref(x64, 1.0)
    if name == "sparsemax":
        return ka.sparsemax(x), _ref.entmax_ref(x64, 2.0)
    if name == "entmax15":
        return ka.entmax15(x), _ref.entmax_ref(x64, 1.5)
    if name == "entmax":
        return ka.entmax(x, alpha), _ref.entmax_ref(x64, alpha)
    if name == "entmax_tensor":
        a = torch.full(x.shape[:-1] + (1,), alpha, dtype=torch.float32 if x.dtype != torch.float64 else x.dtype)
        return ka.entmax(x, a), _ref.entmax_ref(x64, alpha)
    if name == "Entmax_module":
        return ka.Entmax(alpha)(x), _ref.entmax_ref(x64, alpha)
    if name == "normalized_relu":
        n, scale, bias = opts
        return ka.normalized_relu(x, n, scale=scale, bias=bias), _ref.relu_ref(x64, n, scale, bias)
    if name == "relumax":
        return ka.relumax(x, temperature=opts[1]), _ref.relumax_ref(x64, opts[1])
    if name in ("topk_softmax", "topk_uniform"):
        fn = ka.topk_softmax if name == "topk_softmax" else ka.topk_uniform
        return fn(x, k), ("topk", name, k)
    # registry names (what models and the CLI use)
    mname = {1.5: "biweight", 2.0: "epanechnikov", 1.0: "gaussian"}.get(alpha, f"entmax:{alpha!r}")
    return resolve_mapping(mname)(x), _ref.entmax_ref(x64, resolve_mapping(mname).alpha)


def _tol(dtype, alpha):
    if dtype == torch.bfloat16:
        return 1e-2
    if dtype == torch.float32:
        return 2e-5 if alpha <= 2 else 1e-4
    return 1e-9 if alpha <= 2 else 1e-7


@settings(max_examples=150, deadline=None)
@given(case=scores(), name=st.sampled_from(MAPPINGS), alpha=st.sampled_from(ALPHAS), k=st.integers(1, 4),
       opts=st.tuples(st.integers(1, 3), st.sampled_from([0.5, 1.0, 3.0]), st.sampled_from([0.0, 0.5, 2.0])))
def test_mapping_matches_float64_reference(case, name, alpha, k, opts):
    DRAWN["cases"] += 1
    x, dtype = case
    if name in ("normalized_relu",) and x.numel() and bool(torch.isfinite(x).any()) and \
            x[torch.isfinite(x)].abs().max() > 2.0 ** 60:
        opts = (opts[0], 1.0, opts[2])
    out, ref = _apply(name, x, alpha, k, opts)
    assert out.shape == x.shape and out.dtype == dtype
    assert torch.isfinite(out).all(), "a finite input must never give NaN/inf"
    got = out.double().numpy()
    if isinstance(ref, tuple):
        _ref.check_topk(got, x.double().numpy(), ref[2], ref[1], 1e-2 if dtype == torch.bfloat16 else 1e-5)
        return
    np.testing.assert_allclose(got, ref, atol=_tol(dtype, alpha), rtol=0)


NONFINITE_FNS = {
    "softmax": ka.softmax, "sparsemax": ka.sparsemax, "entmax15": ka.entmax15,
    "entmax1.7": lambda t: ka.entmax(t, 1.7), "entmax5": lambda t: ka.entmax(t, 5.0),
    "entmax_tensor": lambda t: ka.entmax(t, torch.full(t.shape[:-1] + (1,), 1.25)),
    "normalized_relu": ka.normalized_relu, "relumax": ka.relumax, "topk_softmax": lambda t: ka.topk_softmax(t, 2),
    "topk_uniform": lambda t: ka.topk_uniform(t, 2), "normmax": ka.normmax, "ksubsets": lambda t: ka.ksubsets(t, 2),
}


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(NONFINITE_FNS)), bad=st.sampled_from([math.nan, math.inf]),
       rows=st.integers(1, 3), n=st.integers(1, 6), pos=st.integers(0, 100),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]))
def test_nan_or_plus_inf_scores_raise(name, bad, rows, n, pos, dtype):
    """Policy: NaN and +inf scores raise ValueError (``-inf`` means masked)."""
    DRAWN["cases"] += 1
    x = torch.randn(rows, n, dtype=torch.float64)
    x.view(-1)[pos % x.numel()] = bad
    with pytest.raises(ValueError, match="NaN|inf"):
        NONFINITE_FNS[name](x.to(dtype))


BAD_OPTIONS = [
    (lambda v: ka.entmax(torch.randn(2, 4), v), [math.inf, math.nan, 0.5, -1.0, "1.5", None]),
    (lambda v: ka.Entmax(v), [math.inf, math.nan, 0.5]),
    (lambda v: ka.normmax(torch.randn(2, 4), v), [math.inf, math.nan, 1.0]),
    (lambda v: ka.topk_softmax(torch.randn(2, 4), v), [2.7, 0, -1, "2", True, None, math.nan]),
    (lambda v: ka.topk_uniform(torch.randn(2, 4), v), [2.7, 0, -1, "2", True, None]),
    (lambda v: ka.normalized_relu(torch.randn(2, 4), v), [2.5, 0, -1, "2", True]),
    (lambda v: ka.normalized_relu(torch.randn(2, 4), scale=v), [math.nan, math.inf, 0.0, -1.0, "1"]),
    (lambda v: ka.normalized_relu(torch.randn(2, 4), bias=v), [math.nan, math.inf, -math.inf, "0"]),
    (lambda v: ka.relumax(torch.randn(2, 4), temperature=v), [math.nan, math.inf, 0.0, -1.0]),
    (lambda v: resolve_mapping(v), ["entmax:inf", "entmax:nan", "entmax:0.5", "nope", 3]),
    (lambda v: resolve_mapping("topk_softmax", topk=v), [2.7, 0, "3", None]),
    (lambda v: ka.sparsemax(torch.randn(2, 4), dim=v), [2, -3]),
    (lambda v: ka.entmax(torch.randn(2, 4), torch.full((2, 1), v)), [math.inf, math.nan, 0.9]),
]


@settings(max_examples=60, deadline=None)
@given(which=st.integers(0, len(BAD_OPTIONS) - 1), j=st.integers(0, 10))
def test_bad_options_raise_value_or_type_error(which, j):
    DRAWN["cases"] += 1
    fn, values = BAD_OPTIONS[which]
    with pytest.raises((ValueError, TypeError)):
        fn(values[j % len(values)])


@settings(max_examples=40, deadline=None)
@given(case=scores(max_last=5), alpha=st.sampled_from([1 + 1e-6, 1.03, 1.5, 2.0, 3.0]))
def test_backward_is_finite_on_masked_empty_and_extreme_rows(case, alpha):
    DRAWN["cases"] += 1
    x, dtype = case
    x = x.detach().requires_grad_()
    a = torch.tensor(alpha, requires_grad=True)
    p = ka.entmax(x, a.reshape([1] * x.dim()) if x.dim() else a)
    (p.float() * torch.arange(p.numel(), dtype=torch.float32).reshape(p.shape)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert a.grad is not None and torch.isfinite(a.grad)
