"""kernel_attention against a materialised float64 reference: forward and every gradient."""

import math

import pytest
import torch
import torch.nn.functional as F

from kernelattn.attention import kernel_attention, kernel_attention_step, kernel_mapping, last_backend
from kernelattn.attention._blocked import DEFAULT_BLOCK_ELEMENTS, Geometry
from kernelattn.mappings import resolve_mapping

from .reference import admissible, attention_ref

# (method for kernel_attention, extra kwargs for kernel_attention, kwargs for the reference)
METHODS = {
    "softmax": ("softmax", {}, {}),
    "sparsemax": ("sparsemax", {}, {}),
    "entmax15": ("entmax15", {}, {}),
    "entmax43": ("entmax43", {}, {}),
    "entmax1.25": ("entmax:1.25", {}, {}),
    "entmax2.5": ("entmax:2.5", {}, {}),
    # slope/bias chosen so some rows have an empty support (-> zeros)
    "normalized_relu": ("normalized_relu", {"relu_scale": 2.0, "bias": -0.5}, {"scale": 2.0, "bias": -0.5}),
    "normalized_relu2": ("normalized_relu:2", {"relu_scale": 1.0, "bias": 0.5}, {"scale": 1.0, "bias": 0.5}),
    "normalized_relu4": ("normalized_relu:4", {"relu_scale": 0.5, "bias": 1.0}, {"scale": 0.5, "bias": 1.0}),
    "relumax": ("relumax", {"temperature": 0.7}, {"temperature": 0.7}),
    "topk_softmax": ("topk_softmax", {"topk": 3}, {"topk": 3}),
    "topk_uniform": ("topk_uniform", {"topk": 3}, {"topk": 3}),
}


def _qkv(B=2, Hq=2, Hkv=2, Lq=9, Lk=9, E=5, Ev=4, seed=0, dtype=torch.float64, spread=2.0):
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(B, Hq, Lq, E, generator=g, dtype=dtype) * spread).requires_grad_()
    k = (torch.randn(B, Hkv, Lk, E, generator=g, dtype=dtype) * spread).requires_grad_()
    v = torch.randn(B, Hkv, Lk, Ev, generator=g, dtype=dtype).requires_grad_()
    return q, k, v


def _padding_mask(B, Lq, Lk, dead_row=True):
    """(B, 1, Lq, Lk) bool: batch 1 pads its last 3 keys; one query row sees nothing."""
    m = torch.ones(B, 1, Lq, Lk, dtype=torch.bool)
    m[-1, :, :, Lk - 3:] = False
    if dead_row:
        m[0, :, 1, :] = False
    return m


CONFIGS = {
    "plain": dict(),
    "causal": dict(is_causal=True),
    "padding_mask": dict(mask="bool"),
    "float_mask": dict(mask="float"),
    "gqa_causal": dict(Hq=4, Hkv=2, is_causal=True),
    "cross": dict(Lq=6, Lk=11),
    "cross_causal_short_q": dict(Lq=5, Lk=11, is_causal=True),
    "cross_causal_long_q": dict(Lq=11, Lk=5, is_causal=True),
    "mask_and_causal": dict(mask="bool", is_causal=True, Hq=4, Hkv=1),
}


def _build(cfg, seed=0):
    shape = {k: cfg[k] for k in ("Hq", "Hkv", "Lq", "Lk") if k in cfg}
    q, k, v = _qkv(seed=seed, **shape)
    B, Lq, Lk = q.shape[0], q.shape[2], k.shape[2]
    mask = None
    if cfg.get("mask") == "bool":
        mask = _padding_mask(B, Lq, Lk)
    elif cfg.get("mask") == "float":
        g = torch.Generator().manual_seed(seed + 1)
        mask = torch.randn(1, q.shape[1], Lq, Lk, generator=g, dtype=torch.float64)
        mask[0, 0, 2, :] = -math.inf  # a fully masked row
        mask[0, 1, :, 0] = -math.inf
    return q, k, v, mask


def _grads(out, inputs, seed=5):
    g = torch.Generator().manual_seed(seed)
    do = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
    return torch.autograd.grad(out, inputs, do, allow_unused=True)


def _close(a, b, tol):
    if a is None or b is None:
        assert (a is None or a.abs().max() == 0) and (b is None or b.abs().max() == 0)
        return
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a.double(), b.double(), atol=tol, rtol=tol)


ENTMAX_FAMILY = ("sparsemax", "entmax15", "entmax43", "entmax1.25", "entmax2.5")
SPARSE_PATH = ENTMAX_FAMILY + ("normalized_relu", "normalized_relu2", "normalized_relu4")  # backend="sparse"
CASES = [(name, "blocked") for name in METHODS] + [(name, "sparse") for name in SPARSE_PATH]


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("name,backend", CASES)
def test_forward_and_gradients_match_reference(name, backend, config):
    method, kw, ref_kw = METHODS[name]
    cfg = CONFIGS[config]
    q, k, v, mask = _build(cfg)
    causal = cfg.get("is_causal", False)
    out = kernel_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True, method=method,
                           backend=backend, block_size=4, **kw)
    ref = attention_ref(q, k, v, method, mask=mask, causal_offset=0 if causal else None, **ref_kw)
    _close(out, ref, 1e-9)
    for a, b in zip(_grads(out, (q, k, v)), _grads(ref, (q, k, v))):
        _close(a, b, 1e-8)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_softmax_auto_goes_to_sdpa_and_gives_zero_rows(config):
    cfg = CONFIGS[config]
    q, k, v, mask = _build(cfg)
    causal = cfg.get("is_causal", False)
    out = kernel_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True, method="softmax")
    assert last_backend() == "sdpa"
    ref = attention_ref(q, k, v, "softmax", mask=mask, causal_offset=0 if causal else None)
    _close(out, ref, 1e-10)
    for a, b in zip(_grads(out, (q, k, v)), _grads(ref, (q, k, v))):
        _close(a, b, 1e-9)


def test_dead_rows_are_zero_with_zero_gradient():
    q, k, v = _qkv()
    mask = torch.ones(9, 9, dtype=torch.bool)
    mask[3] = False
    for method in ("softmax", "sparsemax", "entmax15", "normalized_relu", "relumax", "topk_softmax"):
        kw = {"topk": 2} if method.startswith("topk") else {}
        out = kernel_attention(q, k, v, attn_mask=mask, method=method, **kw)
        assert torch.isfinite(out).all() and (out[:, :, 3] == 0).all(), method
        dq, dk, dv = _grads(out, (q, k, v))
        assert torch.isfinite(dq).all() and (dq[:, :, 3] == 0).all(), method
        assert torch.isfinite(dk).all() and torch.isfinite(dv).all(), method


def test_gradcheck_entmax15_causal_mask_and_gqa():
    q, k, v = _qkv(B=1, Hq=2, Hkv=1, Lq=5, Lk=5, E=3, Ev=2)
    mask = _padding_mask(1, 5, 5, dead_row=False)
    f = lambda a, b, c: kernel_attention(a, b, c, attn_mask=mask, is_causal=True, enable_gqa=True,
                                         method="entmax15", block_size=2)
    assert torch.autograd.gradcheck(f, (q, k, v))


@pytest.mark.parametrize("shape", ["heads", "broadcast4d", "scalar"])
def test_learnable_alpha_gradient(shape):
    q, k, v = _qkv(Hq=3, Hkv=3, Lq=7, Lk=7)
    base = torch.tensor([1.25, 1.5, 2.3], dtype=torch.float64)
    alpha = {"heads": base, "broadcast4d": base.view(1, 3, 1, 1), "scalar": torch.tensor(1.7, dtype=torch.float64)}
    alpha = alpha[shape].clone().requires_grad_()
    out = kernel_attention(q, k, v, is_causal=True, alpha=alpha, block_size=3)
    a_ref = alpha.reshape(1, -1, 1, 1) if alpha.dim() <= 1 else alpha
    ref = attention_ref(q, k, v, alpha=a_ref, causal_offset=0)
    _close(out, ref, 1e-9)
    got = _grads(out, (q, k, v, alpha))
    want = _grads(ref, (q, k, v, alpha))
    assert got[3].shape == alpha.shape
    for a, b in zip(got, want):
        _close(a, b, 1e-8)


def test_gradcheck_learnable_alpha():
    q, k, v = _qkv(B=1, Hq=2, Hkv=2, Lq=4, Lk=4, E=3, Ev=2)
    alpha = torch.tensor([1.4, 1.8], dtype=torch.float64, requires_grad=True)
    f = lambda a, b, c, al: kernel_attention(a, b, c, is_causal=True, alpha=al)
    assert torch.autograd.gradcheck(f, (q, k, v, alpha))


@pytest.mark.parametrize("length", [1, 7, 300])
@pytest.mark.parametrize("method", ["sparsemax", "entmax15", "entmax43", "normalized_relu"])
def test_odd_lengths_float32(length, method):
    q, k, v = _qkv(B=1, Hq=2, Hkv=2, Lq=length, Lk=length, E=16, Ev=8, dtype=torch.float32, spread=1.5)
    out = kernel_attention(q, k, v, is_causal=True, method=method)
    ref = attention_ref(q, k, v, method, causal_offset=0)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-4)
    if length <= 300:
        got, want = _grads(out, (q, k, v)), _grads(ref, (q, k, v))
        for a, b in zip(got, want):
            torch.testing.assert_close(a.double(), b.double(), atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("method", ["sparsemax", "entmax15", "entmax43"])
def test_length_1000_float32_forward(method):
    q, k, v = _qkv(B=1, Hq=1, Hkv=1, Lq=1000, Lk=1000, E=32, Ev=8, dtype=torch.float32, spread=1.5)
    with torch.no_grad():
        out, support = kernel_attention(q, k, v, is_causal=True, method=method, return_support=True)
    ref, p = attention_ref(q.detach(), k.detach(), v.detach(), method, causal_offset=0, return_p=True)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-4)
    # support sizes can differ only where a weight sits at the float32 rounding of zero
    assert (support - (p > 0).sum(-1)).abs().max() <= 2


@pytest.mark.parametrize("name", ["softmax", "sparsemax", "entmax15", "normalized_relu", "topk_uniform"])
def test_return_support_counts_nonzero_weights(name):
    method, kw, ref_kw = METHODS[name]
    q, k, v, mask = _build(CONFIGS["mask_and_causal"])
    out, support = kernel_attention(q, k, v, attn_mask=mask, is_causal=True, enable_gqa=True, method=method,
                                    return_support=True, **kw)
    assert last_backend() == ("sparse" if name in SPARSE_PATH else "blocked")
    _, p = attention_ref(q, k, v, method, mask=mask, causal_offset=0, return_p=True, **ref_kw)
    assert support.dtype == torch.int64 and support.shape == q.shape[:-1]
    assert torch.equal(support, (p > 0).sum(-1))


@pytest.mark.parametrize("method", ["softmax", "entmax15", "sparsemax", "topk_softmax"])
def test_step_decoding_matches_full_causal_forward(method):
    kw = {"topk": 3} if method.startswith("topk") else {}
    q, k, v = _qkv(B=2, Hq=4, Hkv=2, Lq=10, Lk=10)
    full = kernel_attention(q, k, v, is_causal=True, enable_gqa=True, method=method, **kw)
    steps = [kernel_attention_step(q[:, :, t:t + 1], k[:, :, :t + 1], v[:, :, :t + 1], enable_gqa=True,
                                   method=method, **kw) for t in range(10)]
    _close(torch.cat(steps, dim=2), full, 1e-12)
    # a chunk of 4 new queries at once (prefill continuation) uses bottom-right alignment
    chunk = kernel_attention_step(q[:, :, 6:], k, v, enable_gqa=True, method=method, **kw)
    _close(chunk, full[:, :, 6:], 1e-12)


def test_step_with_padding_mask_on_the_cache():
    q, k, v = _qkv(B=2, Lq=8, Lk=8)
    pad = torch.ones(2, 1, 1, 8, dtype=torch.bool)
    pad[1, ..., :3] = False  # left padding of batch 1
    full = kernel_attention(q, k, v, attn_mask=pad, is_causal=True, method="entmax15")
    last = kernel_attention_step(q[:, :, -1:], k, v, attn_mask=pad, method="entmax15")
    _close(last, full[:, :, -1:], 1e-12)


def test_backend_selection_is_visible_and_forcing_is_checked():
    q, k, v = _qkv()
    kernel_attention(q, k, v, method="softmax")
    assert last_backend() == "sdpa"
    kernel_attention(q, k, v, method="entmax15")
    assert last_backend() == "sparse"
    kernel_attention(q, k, v, alpha=torch.tensor([1.3, 1.6], dtype=q.dtype))
    assert last_backend() == "sparse"
    kernel_attention(q, k, v, method="relumax")
    assert last_backend() == "blocked"
    kernel_attention(q, k, v, method="softmax", backend="blocked")
    assert last_backend() == "blocked"
    with pytest.raises(ValueError, match="sparse.*α-entmax"):
        kernel_attention(q, k, v, method="relumax", backend="sparse")
    with pytest.raises(ValueError, match="softmax only"):
        kernel_attention(q, k, v, method="entmax15", backend="sdpa")
    with pytest.raises(ValueError, match="adasplash"):
        kernel_attention(q, k, v, method="entmax15", backend="adasplash")
    with pytest.raises(ValueError, match="backend must be"):
        kernel_attention(q, k, v, backend="flash")


def test_sdpa_conventions_scale_3d_and_noncontiguous():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 7, 3, 8, generator=g, dtype=torch.float64)  # (B, L, H, E) layout
    q = k = v = x.transpose(1, 2)
    out = kernel_attention(q, k, v, is_causal=True, scale=0.3, method="sparsemax")
    ref = attention_ref(q, k, v, "sparsemax", causal_offset=0, score_scale=0.3)
    _close(out, ref, 1e-12)
    out3 = kernel_attention(q[0], k[0], v[0], is_causal=True, scale=0.3, method="sparsemax")
    _close(out3, ref[0], 1e-12)
    sd = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3)
    _close(kernel_attention(q, k, v, is_causal=True, scale=0.3, method="softmax", backend="blocked"), sd, 1e-12)


def test_half_precision_inputs_are_solved_in_float32():
    q, k, v = _qkv(B=1, Lq=33, Lk=33, E=16, dtype=torch.float32, spread=1.0)
    out = kernel_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), is_causal=True, method="entmax15")
    assert out.dtype == torch.bfloat16
    ref = kernel_attention(q.bfloat16().float(), k.bfloat16().float(), v.bfloat16().float(), is_causal=True)
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)
    qb = q.detach().bfloat16().requires_grad_()
    kernel_attention(qb, k.bfloat16(), v.bfloat16(), is_causal=True).sum().backward()
    assert qb.grad.dtype == torch.bfloat16 and torch.isfinite(qb.grad.float()).all()


def test_kernel_view_equals_attention_view():
    q, k, v = _qkv()
    a = kernel_attention(q, k, v, is_causal=True, method=kernel_mapping("biweight"))
    b = kernel_attention(q, k, v, is_causal=True, method="entmax15")
    _close(a, b, 1e-12)
    h = 1.5
    fixed = kernel_mapping("epanechnikov", "fixed", bandwidth=h)
    c = kernel_attention(q, k, v, is_causal=True, method=fixed)
    ref = attention_ref(q, k, v, resolve_mapping("normalized_relu", scale=2 / h**2, bias=1 - 2 / h**2),
                        causal_offset=0)
    _close(c, ref, 1e-12)
    with pytest.raises(ValueError):
        kernel_mapping("gaussian", "fixed", bandwidth=1.0)


def test_memory_plan_is_linear_in_length():
    """Blocks hold at most ~4 · 2^20 scores, whatever the length: no (T × T) tensor."""
    sizes = []
    for T in (1024, 4096, 16384, 65536):
        geo = Geometry(B=1, Hq=4, Hkv=4, Lq=T, Lk=T, D=64, Dv=64, causal_offset=0)
        geo.plan(None)
        assert geo.blocks[-1][1] == T and geo.blocks[0][0] == 0
        sizes.append(geo.buffer_elements())
    assert max(sizes) <= 4 * DEFAULT_BLOCK_ELEMENTS + 8 * 4 * 65536
    assert sizes[-1] < 65536 * 65536 // 100


def test_argument_errors_are_explicit():
    q, k, v = _qkv(Hq=4, Hkv=2)
    with pytest.raises(ValueError, match="enable_gqa"):
        kernel_attention(q, k, v)
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="unknown mapping option"):
        kernel_attention(q, k, v, method="sparsemax", temprature=1.0)
    with pytest.raises(ValueError, match="do not apply"):
        kernel_attention(q, k, v, method="sparsemax", temperature=1.0)
    with pytest.raises(ValueError, match="alpha"):
        kernel_attention(q, k, v, alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        kernel_attention(q, k, v, alpha=torch.tensor([1.0, 1.5]))
    with pytest.raises(ValueError, match="broadcast"):
        kernel_attention(q, k, v, attn_mask=torch.ones(3, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match="dropout"):
        kernel_attention(q, k, v, method="entmax15", dropout_p=0.1)


def test_admissible_helper_matches_sdpa_causal_alignment():
    q, k, v = _qkv(Lq=4, Lk=7)
    sd = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    sd2 = F.scaled_dot_product_attention(q, k, v, attn_mask=admissible(4, 7, 0))
    _close(sd, sd2, 1e-14)
