"""The support-restricted path (backend="sparse") against the materialised float64 reference.

Covers every α family (1 + 1/n, any float α, α > 2, per-head tensor α with its gradient),
masks, GQA, cross-attention, key lengths on and off the strip width, blocks where the
dense/sparse choice flips, and support-density edge cases (one key, all keys tied, a
dense head); plus the certified lower bound on τ that the whole path rests on.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernelattn.attention import _blocked, _sparse, kernel_attention, last_backend
from kernelattn.mappings import entmax

from .reference import attention_ref


def _qkv(B=2, Hq=4, Hkv=2, Lq=40, Lk=40, E=8, Ev=5, seed=0, spread=2.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(B, Hq, Lq, E, generator=g, dtype=dtype) * spread).requires_grad_()
    k = (torch.randn(B, Hkv, Lk, E, generator=g, dtype=dtype) * spread).requires_grad_()
    v = torch.randn(B, Hkv, Lk, Ev, generator=g, dtype=dtype).requires_grad_()
    return q, k, v


def _grads(out, inputs, seed=7):
    g = torch.Generator().manual_seed(seed)
    do = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
    return torch.autograd.grad(out, inputs, do)


def _close(a, b, tol=1e-9):
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a.double(), b.double(), atol=tol, rtol=tol)


@pytest.fixture
def always_sparse(monkeypatch):
    """Disable the density fallback so tiny test blocks exercise the sparse solver."""
    for name in ("STRIP_FRACTION", "DENSE_FRACTION", "STRIP_FRACTION_HIGH_ORDER", "DENSE_FRACTION_HIGH_ORDER"):
        monkeypatch.setattr(_sparse, name, 2.0)


@pytest.fixture
def path_counter(monkeypatch):
    """Counts the rows solved on the support and the blocks solved densely."""
    seen = {"sparse_rows": 0, "dense_blocks": 0}
    solve = _blocked._solve_sparse_parts

    def spy(parts, *args):
        seen["sparse_rows"] += sum(int(p.lengths.shape[0]) for p in parts)
        return solve(parts, *args)

    monkeypatch.setattr(_blocked, "_solve_sparse_parts", spy)
    dense = _blocked.solve_entmax_block

    def spy_dense(*args, **kw):
        seen["dense_blocks"] += 1
        return dense(*args, **kw)

    monkeypatch.setattr(_blocked, "solve_entmax_block", spy_dense)
    return seen


ALPHAS = {"sparsemax": 2.0, "entmax15": 1.5, "entmax43": 4 / 3, "alpha1.7": 1.7, "alpha1.25": 1.25,
          "alpha2.5": 2.5, "alpha3": 3.0}
SHAPES = {
    "causal_gqa": dict(Hq=4, Hkv=2, Lq=40, Lk=40, causal=True),
    "causal_len_on_strip": dict(Hq=2, Hkv=2, Lq=64, Lk=64, causal=True),
    "cross": dict(Hq=2, Hkv=1, Lq=13, Lk=37),
    "cross_causal": dict(Hq=2, Hkv=2, Lq=9, Lk=30, causal=True),
    "padding_and_dead_row": dict(Hq=2, Hkv=2, Lq=24, Lk=24, causal=True, mask="pad"),
    "float_mask": dict(Hq=2, Hkv=2, Lq=24, Lk=24, mask="float"),
}


def _mask(kind, B, H, Lq, Lk):
    if kind == "pad":
        m = torch.ones(B, 1, Lq, Lk, dtype=torch.bool)
        m[-1, ..., :3] = False  # left padding of the last sequence
        m[0, :, 5, :] = False  # a query that sees nothing
        return m
    if kind == "float":
        g = torch.Generator().manual_seed(3)
        m = torch.randn(1, H, Lq, Lk, generator=g, dtype=torch.float64)
        m[0, 0, 4, :] = -math.inf
        return m
    return None


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("name", list(ALPHAS))
def test_sparse_path_equals_materialised_reference(name, shape, path_counter, always_sparse):
    cfg = dict(SHAPES[shape])
    causal, mask_kind = cfg.pop("causal", False), cfg.pop("mask", None)
    q, k, v = _qkv(**cfg)
    mask = _mask(mask_kind, q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    alpha = ALPHAS[name]
    out, support = kernel_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True, alpha=alpha,
                                    backend="sparse", block_size=8, return_support=True)
    assert last_backend() == "sparse" and path_counter["sparse_rows"] > 0
    ref, p = attention_ref(q, k, v, alpha=alpha, mask=mask, causal_offset=0 if causal else None, return_p=True)
    _close(out, ref)
    assert torch.equal(support, (p > 0).sum(-1))
    for a, b in zip(_grads(out, (q, k, v)), _grads(ref, (q, k, v))):
        _close(a, b, 1e-8)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_learnable_tensor_alpha_gradient_on_the_support(dtype, path_counter, always_sparse):
    q, k, v = (x.detach().to(dtype).requires_grad_() for x in _qkv(Hq=4, Hkv=4, Lq=48, Lk=48))
    alpha = torch.tensor([1.2, 1.45, 1.9, 2.4], dtype=dtype, requires_grad=True)
    out = kernel_attention(q, k, v, is_causal=True, alpha=alpha, backend="sparse", block_size=16)
    assert path_counter["sparse_rows"] > 0
    ref = attention_ref(q, k, v, alpha=alpha.double().view(1, 4, 1, 1), causal_offset=0)
    tol = 1e-8 if dtype == torch.float64 else 2e-4
    _close(out, ref, tol)
    got, want = _grads(out, (q, k, v, alpha)), _grads(ref, (q, k, v, alpha))
    for a, b in zip(got, want):
        _close(a, b, tol * 10)


def test_gradcheck_sparse_path_with_tensor_alpha(always_sparse):
    q, k, v = _qkv(B=1, Hq=2, Hkv=1, Lq=6, Lk=6, E=3, Ev=2, spread=1.5)
    alpha = torch.tensor([1.3, 1.8], dtype=torch.float64, requires_grad=True)

    def f(a, b, c, al):
        return kernel_attention(a, b, c, is_causal=True, enable_gqa=True, alpha=al, backend="sparse", block_size=2)

    assert torch.autograd.gradcheck(f, (q, k, v, alpha))


def test_dense_sparse_choice_flips_between_blocks(path_counter):
    """Sharp queries (tiny support) in the first half, flat ones (support ~ all keys) in the
    second: with two blocks, one goes sparse and one dense, and both are exact."""
    q, k, v = _qkv(B=1, Hq=2, Hkv=2, Lq=256, Lk=256, spread=1.0)
    with torch.no_grad():
        q[:, :, :128] *= 8.0
        q[:, :, 128:] *= 0.01
    out = kernel_attention(q, k, v, is_causal=True, method="entmax15", backend="sparse", block_size=128)
    assert path_counter["sparse_rows"] > 0 and path_counter["dense_blocks"] > 0
    ref = attention_ref(q, k, v, "entmax15", causal_offset=0)
    _close(out, ref)
    for a, b in zip(_grads(out, (q, k, v)), _grads(ref, (q, k, v))):
        _close(a, b, 1e-8)


def test_dense_rows_forced_through_the_sparse_solver_stay_exact(path_counter, always_sparse):
    """With the density fallback disabled, rows whose support is every key still come out exact."""
    q, k, v = _qkv(B=1, Hq=2, Hkv=2, Lq=33, Lk=33, spread=0.05)
    out, support = kernel_attention(q, k, v, is_causal=True, alpha=1.25, backend="sparse", return_support=True)
    assert path_counter["dense_blocks"] == 0
    assert torch.equal(support[0, 0], torch.arange(1, 34))  # nearly flat scores: every key in the support
    ref = attention_ref(q, k, v, alpha=1.25, causal_offset=0)
    _close(out, ref)
    for a, b in zip(_grads(out, (q, k, v)), _grads(ref, (q, k, v))):
        _close(a, b, 1e-8)


@pytest.mark.parametrize("alpha", [2.0, 1.5, 1.25])
@pytest.mark.parametrize("forced", [False, True])
def test_one_key_and_all_keys_tied(alpha, forced, monkeypatch):
    if forced:
        for name in ("STRIP_FRACTION", "DENSE_FRACTION", "STRIP_FRACTION_HIGH_ORDER", "DENSE_FRACTION_HIGH_ORDER"):
            monkeypatch.setattr(_sparse, name, 2.0)
    q, k, v = _qkv(B=1, Hq=2, Hkv=2, Lq=5, Lk=1)
    out = kernel_attention(q, k, v, alpha=alpha, backend="sparse")
    _close(out, v.expand(1, 2, 5, v.shape[-1]))  # one key: weight 1
    q, k, v = _qkv(B=1, Hq=2, Hkv=2, Lq=6, Lk=20)
    k = torch.ones_like(k).requires_grad_()  # every score in a row equal: uniform weights
    out, support = kernel_attention(q, k, v, alpha=alpha, backend="sparse", return_support=True)
    assert (support == 20).all()
    _close(out, v.mean(dim=2, keepdim=True).expand_as(out))
    ref = attention_ref(q, k, v, alpha=alpha)
    for a, b in zip(_grads(out, (q, k, v)), _grads(ref, (q, k, v))):
        _close(a, b, 1e-8)


def test_float32_sparse_matches_dense_blocked_path():
    q, k, v = (x.detach().float().requires_grad_() for x in _qkv(B=1, Hq=4, Hkv=4, Lq=300, Lk=300, E=16,
                                                                  spread=1.5))
    for alpha in (2.0, 1.5, 4 / 3, 1.7):
        a = kernel_attention(q, k, v, is_causal=True, alpha=alpha, backend="sparse")
        b = kernel_attention(q, k, v, is_causal=True, alpha=alpha, backend="blocked")
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5)
        for ga, gb in zip(_grads(a, (q, k, v)), _grads(b, (q, k, v))):
            torch.testing.assert_close(ga, gb, atol=2e-4, rtol=2e-4)


def _tau64(row: torch.Tensor, alpha: float) -> float:
    """The α-entmax threshold of one row, in score units, by float64 bisection."""
    a = alpha - 1
    lo, hi = row.max().item() - 1 / a, row.max().item()
    for _ in range(200):
        mid = (lo + hi) / 2
        if ((row - mid).clamp(min=0) ** (1 / a)).sum().item() * a ** (1 / a) > 1:
            lo = mid
        else:
            hi = mid
    return lo


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), alpha=st.floats(1.05, 4.0), scale=st.sampled_from([0.1, 1.0, 5.0, 50.0]),
       seed=st.integers(0, 10_000), masked=st.floats(0.0, 0.9))
def test_lower_bound_never_exceeds_the_threshold(n, alpha, scale, seed, masked):
    g = torch.Generator().manual_seed(seed)
    row = torch.randn(1, n, generator=g, dtype=torch.float64) * scale
    drop = torch.rand(1, n, generator=g) < masked
    drop[0, 0] = False  # keep one admissible entry
    row = row.masked_fill(drop, -math.inf)
    for dt in (torch.float64, torch.float32):
        S2 = row.to(dt)
        strips = _sparse.strip_maxima(S2)
        t_lb, mx = _sparse.threshold_lower_bound(strips, alpha)
        assert mx.item() == S2.max().item()
        assert t_lb.item() <= _tau64(row[torch.isfinite(row)], alpha) + 1e-12
        cand = _sparse.extract_candidates(S2, strips, t_lb, max_fraction=2.0)
        # every entry above the bound (hence every support entry) is a candidate, in order
        want = (S2[0] > t_lb[0]).nonzero().squeeze(1)
        if cand is not None:
            assert torch.equal(cand.col, want) and torch.equal(cand.values, S2[0, want])


def test_per_row_tensor_alpha_bound_and_entmax_agree():
    g = torch.Generator().manual_seed(0)
    S2 = torch.randn(6, 50, generator=g, dtype=torch.float64) * 3
    alpha = torch.tensor([1.1, 1.3, 1.5, 1.9, 2.0, 2.6], dtype=torch.float64).view(6, 1)
    t_lb, _ = _sparse.threshold_lower_bound(_sparse.strip_maxima(S2), alpha)
    p = entmax(S2, alpha, dim=-1)
    for r in range(6):
        a = alpha[r].item()
        # the smallest support entry satisfies (a·s - a·τ)^{1/a} = p > 0, so τ < s_min
        tau = _tau64(S2[r], a)
        assert t_lb[r].item() <= tau + 1e-12
        assert (S2[r][p[r] > 0] > t_lb[r]).all()


@pytest.mark.parametrize("n,scale,bias", [(1, 2.0, -0.5), (2, 1.0, 0.5), (3, 0.7, -0.2)])
@pytest.mark.parametrize("forced", [False, True])
def test_normalized_relu_on_the_sparse_path(n, scale, bias, forced, monkeypatch):
    """Fixed-bandwidth kernels: the support s > -b/a is known, rows with an empty support give zeros."""
    if forced:
        for name in ("STRIP_FRACTION", "DENSE_FRACTION", "STRIP_FRACTION_HIGH_ORDER", "DENSE_FRACTION_HIGH_ORDER"):
            monkeypatch.setattr(_sparse, name, 2.0)
    q, k, v = _qkv(B=2, Hq=4, Hkv=2, Lq=70, Lk=70, spread=1.2)
    mask = _mask("pad", 2, 4, 70, 70)
    method = f"normalized_relu:{n}"
    out, support = kernel_attention(q, k, v, attn_mask=mask, is_causal=True, enable_gqa=True, method=method,
                                    relu_scale=scale, bias=bias, return_support=True, block_size=16)
    assert last_backend() == "sparse"
    ref, p = attention_ref(q, k, v, method, mask=mask, causal_offset=0, return_p=True, scale=scale, bias=bias)
    _close(out, ref)
    assert torch.equal(support, (p > 0).sum(-1))
    for a, b in zip(_grads(out, (q, k, v)), _grads(ref, (q, k, v))):
        _close(a, b, 1e-8)


def test_a_nan_query_stays_in_its_own_row_as_on_the_blocked_path():
    q, k, v = (x.detach() for x in _qkv(B=1, Hq=2, Hkv=2, Lq=40, Lk=40))
    q[0, 0, 5, 0] = math.nan
    for backend in ("blocked", "sparse"):
        out = kernel_attention(q, k, v, is_causal=True, method="entmax15", backend=backend)
        bad = (~torch.isfinite(out)).any(-1)
        assert bad.nonzero().tolist() == [[0, 0, 5]], backend


def test_a_nan_score_in_normalized_relu_stays_nan_on_the_sparse_path():
    q, k, v = (x.detach() for x in _qkv(B=1, Hq=2, Hkv=2, Lq=40, Lk=40))
    q[0, 1, 7, 2] = math.nan
    out = kernel_attention(q, k, v, is_causal=True, method="normalized_relu", relu_scale=1.0, bias=0.5)
    assert (~torch.isfinite(out)).any(-1).nonzero().tolist() == [[0, 1, 7]]


def test_no_grad_forward_keeps_no_supports_for_a_backward(monkeypatch):
    """Under no_grad the solved supports are dropped (long-context evaluation memory), and the output is
    the same as with gradients on."""
    from kernelattn.attention import _blocked

    seen = []
    init = _blocked._SparseParts.__init__

    def spy(self, *a, **kw):
        init(self, *a, **kw)
        seen.append(self)

    monkeypatch.setattr(_blocked._SparseParts, "__init__", spy)
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 300, 16, dtype=torch.float64) for _ in range(3))
    with torch.no_grad():
        y0 = kernel_attention(q, k, v, is_causal=True, method="sparsemax", backend="sparse")
    assert seen and not seen[-1].keep and not seen[-1].states
    q.requires_grad_(True)
    y1 = kernel_attention(q, k, v, is_causal=True, method="sparsemax", backend="sparse")
    assert seen[-1].keep and seen[-1].states
    torch.testing.assert_close(y0, y1.detach(), rtol=0, atol=0)
    y1.sum().backward()
    assert torch.isfinite(q.grad).all()
