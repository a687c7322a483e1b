"""Census of the hardening issue's cases: how many give a silent wrong answer, a raw traceback, or are right.

Runs a fixed list of hostile calls to the public API (mappings and attention) drawn from
the hardening issue's categories and classifies each:

* ``ok``: a valid call returned the right answer (checked against a plain float64
  bisection reference written here), or an invalid call raised ``ValueError``/``TypeError``;
* ``silent``: a finite wrong answer, an unexpected NaN, or an invalid call that returned;
* ``raw``: any other exception type (an internal traceback the user cannot act on);
* ``refused``: a valid call that raised ``ValueError``/``TypeError``.

    python benchmarks/adversarial_census.py            # counts per category
    python benchmarks/adversarial_census.py -v         # and every case that is not ok
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter, defaultdict

import numpy as np
import torch

import kernelattn as ka
from kernelattn import kernel_attention
from kernelattn.modules import KernelMultiheadAttention

torch.set_num_threads(1)
INF = float("inf")


# ---------------------------------------------------------------- float64 references
def entmax_rows(x: np.ndarray, alpha: float, iters: int = 300) -> np.ndarray:
    """α-entmax along the last axis by bisection in float64 (vectorised; -inf = masked)."""
    x = np.asarray(x, dtype=np.float64)
    shape = x.shape
    x = x.reshape(-1, shape[-1])
    out = np.zeros_like(x)
    fin = np.isfinite(x)
    live = fin.any(-1)
    if alpha == 1.0:
        mx = np.where(live, np.where(fin, x, -np.inf).max(-1, initial=-np.inf), 0)[:, None]
        e = np.where(fin, np.exp(np.where(fin, x - mx, 0)), 0)
        out = e / np.maximum(e.sum(-1, keepdims=True), 1e-300)
        return out.reshape(shape)
    a = alpha - 1
    mx = np.where(live, np.where(fin, x, -np.inf).max(-1, initial=-np.inf), 0)[:, None]
    z = np.where(fin, x - mx, -np.inf)  # <= 0
    # p = [1 + a (z - s)]_+^{1/a}; s in [0, 1/a]
    lo, hi = np.zeros((x.shape[0], 1)), np.full((x.shape[0], 1), 1 / a)
    for _ in range(iters):
        mid = (lo + hi) / 2
        d = a * (z - mid)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            s = (np.exp(np.log1p(np.where(d > -1, d, 0)) / a) * (d > -1)).sum(-1, keepdims=True)
        lo, hi = np.where(s > 1, mid, lo), np.where(s > 1, hi, mid)
    d = a * (z - (lo + hi) / 2)  # u = 1 + d, formed as exp(log1p(d)) to keep d's precision as a -> 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        p = np.exp(np.log1p(np.where(d > -1, d, 0)) / a) * (d > -1)
    out = p / np.maximum(p.sum(-1, keepdims=True), 1e-300)
    out[~live] = 0
    return out.reshape(shape)


def attn_ref(q, k, v, alpha, scale=None, mask=None):
    q, k, v = (t.double().numpy() for t in (q, k, v))
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = scale * q @ np.swapaxes(k, -1, -2)
    if mask is not None:
        m = mask.numpy()
        s = np.where(m, s, -np.inf) if m.dtype == bool else s + m.astype(np.float64)
    p = entmax_rows(s, alpha)
    return torch.from_numpy(p @ v)


# ---------------------------------------------------------------- the cases
CASES: list = []


def case(category: str, kind: str = "value"):
    """Register a case. ``kind="value"``: fn returns (got, expected, atol) or a bool;
    ``kind="error"``: the call must raise ValueError/TypeError."""
    def deco(fn):
        CASES.append((category, fn.__name__, kind, fn))
        return fn
    return deco


def close(got, want, atol):
    got = torch.as_tensor(got).double()
    want = torch.as_tensor(want).double()
    return bool(got.shape == want.shape and torch.isfinite(got).all() and (got - want).abs().max() <= atol)


g = torch.Generator().manual_seed(0)


def rnd(*shape, dtype=torch.float32):
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def qkv64():
    """float64 q, k ``(1, 2, 12, 8)`` and v ``(1, 2, 12, 4)``, drawn in that order."""
    return rnd(1, 2, 12, 8, dtype=torch.float64), rnd(1, 2, 12, 8, dtype=torch.float64), \
        rnd(1, 2, 12, 4, dtype=torch.float64)


# -- large scores collapse
for method, alpha in (("sparsemax", 2.0), ("entmax15", 1.5), ("entmax43", 4 / 3), ("entmax:1.25", 1.25)):
    for backend in ("blocked", "sparse"):
        for sc in (1e8, 3e6):
            def _f(method=method, backend=backend, sc=sc):
                q, k = rnd(1, 2, 16, 8), rnd(1, 2, 16, 8)
                v = torch.ones(1, 2, 16, 1)
                out = kernel_attention(q, k, v, method=method, scale=sc, backend=backend)
                return out, torch.ones_like(out), 1e-4
            _f.__name__ = f"attn_{method}_{backend}_scale{sc:g}_rows_sum_to_one"
            case("large scores")(_f)

        def _f64(method=method, alpha=alpha, backend=backend):
            q, k, v = qkv64()
            q = q * 1e4
            return kernel_attention(q, k, v, method=method, scale=1e4, backend=backend), \
                attn_ref(q, k, v, alpha, 1e4), 1e-6
        _f64.__name__ = f"attn_{method}_{backend}_float64_scale1e8_vs_ref"
        case("large scores")(_f64)

        def _mask(method=method, alpha=alpha, backend=backend):
            # a whole row shifted by -1e9: float32 keeps no digit of the scores there, but the
            # row must still be a distribution (support >= 1), not all zeros
            q, k = rnd(1, 2, 12, 8), rnd(1, 2, 12, 8)
            m = torch.zeros(12, 12)
            m[3] = -1e9
            out = kernel_attention(q, k, torch.ones(1, 2, 12, 1), attn_mask=m, method=method, backend=backend)
            return out, torch.ones_like(out), 1e-4
        _mask.__name__ = f"attn_{method}_{backend}_additive_mask_-1e9_whole_row_sums_to_one"
        case("large scores")(_mask)

        def _mask64(method=method, alpha=alpha, backend=backend):
            q, k, v = qkv64()
            m = torch.zeros(12, 12, dtype=torch.float64)
            m[3] = -1e9  # entmax is shift invariant: the row's answer is unchanged (to 1e-9 · ulp)
            return kernel_attention(q, k, v, attn_mask=m, method=method, backend=backend), \
                attn_ref(q, k, v, alpha), 1e-5
        _mask64.__name__ = f"attn_{method}_{backend}_float64_additive_mask_-1e9_whole_row_vs_ref"
        case("large scores")(_mask64)

for alpha in (2.0, 1.5, 3.0):
    def _nm(alpha=alpha):
        x = rnd(6, 10, dtype=torch.float64)
        p = ka.normmax(x * 1e8, alpha)
        return p.sum(-1), torch.ones(6, dtype=torch.float64), 1e-9
    _nm.__name__ = f"normmax_alpha{alpha}_scores_times_1e8_sums_to_one"
    case("large scores")(_nm)

for alpha in (2.0, 3.0):
    def _nm32(alpha=alpha):
        x = rnd(6, 10)
        p = ka.normmax(x * 1e8, alpha)
        return p.sum(-1), torch.ones(6), 1e-5
    _nm32.__name__ = f"normmax_alpha{alpha}_float32_scores_times_1e8_sums_to_one"
    case("large scores")(_nm32)

for fn_name in ("sparsemax", "entmax15"):
    def _mp(fn_name=fn_name):
        x = rnd(6, 10) * 1e8
        return getattr(ka, fn_name)(x).sum(-1), torch.ones(6), 1e-5
    _mp.__name__ = f"{fn_name}_scores_1e8_sums_to_one"
    case("large scores")(_mp)

# -- alpha near 1
for alpha in (1.03, 1.005, 1 + 1e-4):
    for backend in ("blocked", "sparse"):
        def _a(alpha=alpha, backend=backend):
            q, k, v = rnd(1, 2, 16, 8), rnd(1, 2, 16, 8), rnd(1, 2, 16, 4)
            return kernel_attention(q, k, v, alpha=alpha, backend=backend), attn_ref(q, k, v, alpha), 1e-4
        _a.__name__ = f"attn_alpha{alpha:g}_{backend}_float32_vs_ref"
        case("alpha near 1")(_a)


def _kmha_near_one():
    torch.manual_seed(0)
    m = KernelMultiheadAttention(16, 2, method="entmax:1.03", learn_alpha=True)
    x = torch.randn(2, 10, 16)
    y = m(x)
    y.square().sum().backward()
    grads = [p.grad for p in m.parameters()]
    return bool(torch.isfinite(y).all() and all(gr is not None and torch.isfinite(gr).all() for gr in grads))


case("alpha near 1")(_kmha_near_one)

for alpha in (1 + 1e-6, 1 + 1e-9, 1 + 1e-3, 1.01):
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-9)):
        def _e(alpha=alpha, tol=tol, dtype=dtype):
            x = rnd(64, 50, dtype=dtype) * 3
            return ka.entmax(x, alpha), entmax_rows(x.double().numpy(), alpha), tol
        _e.__name__ = f"entmax_alpha1+{alpha - 1:.0e}_{str(dtype)[6:]}_vs_ref"
        case("alpha near 1")(_e)

    def _grad(alpha=alpha):
        x = rnd(4, 7, dtype=torch.float64)
        a = torch.tensor([[alpha]], dtype=torch.float64, requires_grad=True)
        p = ka.entmax(x, a)
        (p * torch.arange(7.0, dtype=torch.float64)).sum().backward()
        # forward difference of the float64 reference (α - h could fall below 1)
        h = 1e-5
        w = np.arange(7.0)
        fd = ((entmax_rows(x.numpy(), alpha + h) * w).sum() - (entmax_rows(x.numpy(), alpha) * w).sum()) / h
        return a.grad.view(()), torch.tensor(fd), 1e-4 + 1e-3 * abs(fd)
    _grad.__name__ = f"entmax_alpha_grad_at_1+{alpha - 1:.0e}"
    case("alpha near 1")(_grad)

# -- large alpha: near-ties make these rows ill-conditioned (a weight u^{1/(α-1)} hinges on
# u at the last digits of the scores), so the check is "match or beat the entmax package"
# against a 40-digit reference on the rows where the two disagree most, plus random rows
def mp_entmax(x, alpha, iters=150):
    import mpmath
    mpmath.mp.dps = 40
    x = [mpmath.mpf(float(v)) for v in x]
    mx = max(x)
    a = mpmath.mpf(alpha) - 1
    z = [v - mx for v in x]
    lo, hi = mpmath.mpf(0), 1 / a
    for _ in range(iters):
        mid = (lo + hi) / 2
        s = sum((1 + a * (zz - mid)) ** (1 / a) for zz in z if 1 + a * (zz - mid) > 0)
        lo, hi = (mid, hi) if s > 1 else (lo, mid)
    mid = (lo + hi) / 2
    p = [(1 + a * (zz - mid)) ** (1 / a) if 1 + a * (zz - mid) > 0 else mpmath.mpf(0) for zz in z]
    tot = sum(p)
    return np.array([float(v / tot) for v in p])


def match_or_beat(x, ours, alpha, floor):
    try:
        import entmax as entmax_pkg
    except ImportError:
        return ours, torch.from_numpy(entmax_rows(x.double().numpy(), alpha)), floor
    pk = entmax_pkg.entmax_bisect(x, alpha, n_iter=100)
    d = (ours.double() - pk.double()).abs().amax(-1)
    rows = torch.cat([d.topk(8).indices, torch.arange(8)])
    ref = torch.from_numpy(np.stack([mp_entmax(x[r].tolist(), alpha) for r in rows.tolist()]))
    err_pkg = float((pk[rows].double() - ref).abs().max())
    return ours[rows], ref, max(floor, err_pkg * 1.01)


for alpha in (5.0, 10.0, 20.0):
    for dtype, floor in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        def _l(alpha=alpha, dtype=dtype, floor=floor):
            x = rnd(2000, 30, dtype=dtype) * 2
            return match_or_beat(x, ka.entmax(x, alpha), alpha, floor)
        _l.__name__ = f"entmax_alpha{alpha:g}_{str(dtype)[6:]}_2000_rows_match_or_beat_entmax_pkg"
        case("large alpha")(_l)

    def _la(alpha=alpha):
        # v = identity makes the attention output the weights themselves
        q, k = rnd(1, 2, 30, 8, dtype=torch.float64) * 3, rnd(1, 2, 30, 8, dtype=torch.float64)
        eye = torch.eye(30, dtype=torch.float64).expand(1, 2, 30, 30)
        p = kernel_attention(q, k, eye, alpha=alpha).reshape(60, 30)
        s = (q @ k.transpose(-1, -2) / math.sqrt(8)).reshape(60, 30)
        return match_or_beat(s, p, alpha, 1e-12)
    _la.__name__ = f"attn_alpha{alpha:g}_float64_match_or_beat_entmax_pkg"
    case("large alpha")(_la)

# -- alpha = inf (refuse)
case("alpha inf", "error")(lambda: ka.entmax(rnd(3, 5), INF))
case("alpha inf", "error")(lambda: kernel_attention(rnd(1, 1, 4, 8), rnd(1, 1, 4, 8), rnd(1, 1, 4, 8), alpha=INF))
case("alpha inf", "error")(lambda: kernel_attention(rnd(1, 1, 4, 8), rnd(1, 1, 4, 8), rnd(1, 1, 4, 8),
                                                    method="entmax:inf"))
case("alpha inf", "error")(lambda: ka.Entmax(alpha=INF)(rnd(3, 5)))
case("alpha inf", "error")(lambda: ka.entmax(rnd(3, 5), torch.full((3, 1), INF)))
case("alpha inf", "error")(lambda: ka.normmax(rnd(3, 5), INF))


# -- silently ignored or changed options
def _kmha_topk_learn():
    KernelMultiheadAttention(16, 2, method="topk_softmax", topk=2, learn_alpha=True)


case("ignored options", "error")(_kmha_topk_learn)
case("ignored options", "error")(lambda: KernelMultiheadAttention(16, 2, method="relumax", learn_alpha=True))
case("ignored options", "error")(
    lambda: kernel_attention(rnd(1, 1, 4, 8), rnd(1, 1, 4, 8), rnd(1, 1, 4, 8), attn_mask=torch.ones(4, 4, dtype=torch.bool,
                                                                                                     device="meta")))


def _entmax_tensor_alpha_grad():
    a = torch.tensor(1.5, requires_grad=True)
    mod = ka.Entmax(alpha=a)
    mod(rnd(3, 6)).pow(2).sum().backward()
    return a.grad is not None and bool(torch.isfinite(a.grad).all())


def _entmax_tensor_alpha_grad_or_raise():
    try:
        return _entmax_tensor_alpha_grad()
    except (ValueError, TypeError):
        return True


case("ignored options")(_entmax_tensor_alpha_grad_or_raise)
for name, val in (("scale", float("nan")), ("scale", INF), ("scale", 0.0), ("scale", -INF)):
    case("ignored options", "error")(
        lambda name=name, val=val: kernel_attention(rnd(1, 1, 4, 8), rnd(1, 1, 4, 8), rnd(1, 1, 4, 8),
                                                    method="sparsemax", **{name: val}))
for name, val in (("relu_scale", float("nan")), ("relu_scale", INF), ("relu_scale", 0.0),
                  ("bias", float("nan")), ("bias", INF)):
    case("ignored options", "error")(
        lambda name=name, val=val: kernel_attention(rnd(1, 1, 4, 8), rnd(1, 1, 4, 8), rnd(1, 1, 4, 8),
                                                    method="normalized_relu", **{name: val}))
    case("ignored options", "error")(
        lambda name=name, val=val: ka.normalized_relu(rnd(3, 5), **{name.replace("relu_", ""): val}))
for val in (float("nan"), INF, 0.0, -1.0):
    case("ignored options", "error")(
        lambda val=val: kernel_attention(rnd(1, 1, 4, 8), rnd(1, 1, 4, 8), rnd(1, 1, 4, 8), method="relumax",
                                         temperature=val))
    case("ignored options", "error")(lambda val=val: ka.relumax(rnd(3, 5), temperature=val))
for topk in (2.7, "2", 0, -1, True):
    case("ignored options", "error")(lambda topk=topk: ka.topk_softmax(rnd(3, 5), topk))
    case("ignored options", "error")(lambda topk=topk: ka.topk_uniform(rnd(3, 5), topk))
    case("ignored options", "error")(
        lambda topk=topk: kernel_attention(rnd(1, 1, 4, 8), rnd(1, 1, 4, 8), rnd(1, 1, 4, 8), method="topk_softmax",
                                           topk=topk))
case("ignored options", "error")(lambda: KernelMultiheadAttention(16, 2, method="topk_uniform", topk=2.7))
case("ignored options", "error")(lambda: ka.normalized_relu(rnd(3, 5), 2.5))
case("ignored options", "error")(lambda: ka.entmax(rnd(3, 5), float("nan")))
case("ignored options", "error")(lambda: ka.entmax(rnd(3, 5), 0.5))

# -- raw tracebacks: shapes and option ranges
for p in (-0.1, 1.5, float("nan")):
    case("raw tracebacks", "error")(
        lambda p=p: kernel_attention(rnd(1, 1, 4, 8), rnd(1, 1, 4, 8), rnd(1, 1, 4, 8), method="softmax", dropout_p=p))
case("raw tracebacks", "error")(
    lambda: kernel_attention(rnd(1, 1, 4, 0), rnd(1, 1, 4, 0), rnd(1, 1, 4, 8), method="sparsemax"))
case("raw tracebacks", "error")(
    lambda: kernel_attention(rnd(1, 1, 4, 0), rnd(1, 1, 4, 0), rnd(1, 1, 4, 8), method="softmax"))
case("raw tracebacks", "error")(lambda: KernelMultiheadAttention(16, 0))
case("raw tracebacks", "error")(lambda: KernelMultiheadAttention(0, 2))
case("raw tracebacks", "error")(lambda: KernelMultiheadAttention(16, 2, dropout=-0.5))
case("raw tracebacks", "error")(lambda: KernelMultiheadAttention(16, 2, method="entmax15")(rnd(2, 5)))


def _empty_ok(fn):
    """An empty reduced dim returns an empty result (like torch.softmax) or raises ValueError."""
    def run():
        x = torch.empty(3, 0)
        try:
            out = fn(x)
        except (ValueError, TypeError):
            return True
        return tuple(out.shape) == (3, 0)
    return run


for nm, fn in (("sparsemax", ka.sparsemax), ("entmax15", ka.entmax15), ("entmax1.7", lambda x: ka.entmax(x, 1.7)),
               ("normmax", ka.normmax), ("ksubsets", lambda x: ka.ksubsets(x, 2)), ("softmax", ka.softmax),
               ("normalized_relu", ka.normalized_relu), ("relumax", ka.relumax),
               ("topk_softmax", lambda x: ka.topk_softmax(x, 2)), ("topk_uniform", lambda x: ka.topk_uniform(x, 2))):
    f = _empty_ok(fn)
    f.__name__ = f"{nm}_empty_reduced_dim"
    case("raw tracebacks")(f)

for method in ("softmax", "sparsemax", "entmax15", "relumax", "topk_softmax"):
    def _zh(method=method):
        q = torch.empty(2, 0, 4, 8)
        try:
            out = kernel_attention(q, q, q, method=method, topk=2 if method.startswith("topk") else None)
        except (ValueError, TypeError):
            return True
        return tuple(out.shape) == (2, 0, 4, 8)
    _zh.__name__ = f"attn_{method}_zero_heads"
    case("raw tracebacks")(_zh)

# -- length 1, fully masked rows, bf16: never NaN silently
METHODS = ("softmax", "sparsemax", "entmax15", "entmax43", "entmax:1.7", "entmax:3", "normalized_relu", "relumax",
           "topk_softmax", "topk_uniform")
ALPHA = {"softmax": 1.0, "sparsemax": 2.0, "entmax15": 1.5, "entmax43": 4 / 3, "entmax:1.7": 1.7, "entmax:3": 3.0}
for method in METHODS:
    kw = {"topk": 2} if method.startswith("topk") else {}

    def _len1(method=method, kw=kw):
        q, k, v = rnd(2, 2, 1, 8), rnd(2, 2, 1, 8), rnd(2, 2, 1, 4)
        out = kernel_attention(q, k, v, method=method, **kw)
        want = v if method != "normalized_relu" else None
        if want is None:  # fixed bandwidth: the only key may lie outside the support -> 0
            return bool(torch.isfinite(out).all() and ((out - v).abs().amax(-1) < 1e-6).logical_or(out.abs().amax(-1) == 0).all())
        return out, want, 1e-6
    _len1.__name__ = f"attn_{method}_length_1"
    case("length1/masked/bf16")(_len1)

    def _dead(method=method, kw=kw):
        q, k, v = rnd(1, 2, 6, 8), rnd(1, 2, 6, 8), rnd(1, 2, 6, 4)
        m = torch.ones(6, 6, dtype=torch.bool)
        m[2] = False
        out = kernel_attention(q, k, v, attn_mask=m, method=method, **kw)
        return bool(torch.isfinite(out).all() and (out[:, :, 2] == 0).all())
    _dead.__name__ = f"attn_{method}_fully_masked_row"
    case("length1/masked/bf16")(_dead)

    def _bf(method=method, kw=kw):
        q, k, v = rnd(1, 2, 16, 8), rnd(1, 2, 16, 8), rnd(1, 2, 16, 4)
        qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
        out = kernel_attention(qb, kb, vb, method=method, is_causal=True, **kw)
        ref = kernel_attention(qb.double(), kb.double(), vb.double(), method=method, is_causal=True, **kw)
        return out, ref, 0.05
    _bf.__name__ = f"attn_{method}_bf16"
    case("length1/masked/bf16")(_bf)


# -- non-finite inputs: NaN raises in mappings; in attention it stays in its own row
def _nan_row():
    q, k, v = rnd(1, 1, 5, 8), rnd(1, 1, 5, 8), rnd(1, 1, 5, 4)
    q[0, 0, 2, 0] = float("nan")
    out = kernel_attention(q, k, v, method="entmax15")
    ok_rows = [0, 1, 3, 4]
    ref = attn_ref(q[:, :, ok_rows], k, v, 1.5)
    return bool(torch.isnan(out[0, 0, 2]).all()) and close(out[:, :, ok_rows], ref, 1e-5)


case("non-finite")(_nan_row)
for fn in (ka.sparsemax, ka.entmax15, lambda x: ka.entmax(x, 1.7), ka.softmax, ka.relumax, ka.normalized_relu,
           ka.normmax):
    x = rnd(3, 5)
    x[1, 2] = float("nan")
    case("non-finite", "error")(lambda fn=fn, x=x: fn(x))
    y = rnd(3, 5)
    y[1, 2] = INF
    case("non-finite", "error")(lambda fn=fn, y=y: fn(y))


# ---------------------------------------------------------------- run
def run(verbose: bool) -> Counter:
    total = Counter()
    per_cat: dict[str, Counter] = defaultdict(Counter)
    for cat, name, kind, fn in CASES:
        try:
            res = fn()
        except (ValueError, TypeError) as e:
            verdict = "ok" if kind == "error" else "refused"
            detail = f"{type(e).__name__}: {e}"
        except Exception as e:  # noqa: BLE001 - the census counts them
            verdict, detail = "raw", f"{type(e).__name__}: {str(e)[:120]}"
        else:
            if kind == "error":
                verdict, detail = "silent", "returned instead of raising"
            elif isinstance(res, tuple):
                got, want, atol = res
                ok = close(got, want, atol)
                verdict = "ok" if ok else "silent"
                detail = "" if ok else f"max err {float((torch.as_tensor(got).double() - torch.as_tensor(want).double()).abs().max()):.3g}" \
                    if torch.as_tensor(got).shape == torch.as_tensor(want).shape else "shape"
            else:
                verdict, detail = ("ok", "") if res else ("silent", "check failed")
        total[verdict] += 1
        per_cat[cat][verdict] += 1
        if verbose and verdict != "ok":
            print(f"  {verdict:8s} {cat:22s} {name}: {detail}")
    print(f"{'category':24s} {'cases':>5s} {'ok':>4s} {'silent':>6s} {'raw':>4s} {'refused':>7s}")
    for cat, c in per_cat.items():
        print(f"{cat:24s} {sum(c.values()):5d} {c['ok']:4d} {c['silent']:6d} {c['raw']:4d} {c['refused']:7d}")
    print(f"{'total':24s} {sum(total.values()):5d} {total['ok']:4d} {total['silent']:6d} {total['raw']:4d} "
          f"{total['refused']:7d}")
    return total


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-v", "--verbose", action="store_true", help="list every case that is not ok")
    args = ap.parse_args()
    import warnings
    warnings.simplefilter("ignore")
    t = run(args.verbose)
    sys.exit(0)
