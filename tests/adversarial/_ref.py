"""Plain float64 references for the adversarial suite (numpy, bisection; written for clarity)."""

import math

import numpy as np
import torch


def entmax_ref(x: np.ndarray, alpha: float, iters: int = 200) -> np.ndarray:
    """α-entmax along the last axis in float64; -inf = masked, fully masked rows are 0.

    Bisection on the offset s ∈ [0, 1/a] of p = (1 + a (z - s))_+^{1/a}, z = x - max,
    evaluated as exp(log1p(a (z - s)) / a) so that α → 1 keeps its precision."""
    x = np.asarray(x, dtype=np.float64)
    shape = x.shape
    if x.size == 0:
        return np.zeros(shape)
    x = x.reshape(-1, shape[-1])
    fin = np.isfinite(x)
    live = fin.any(-1) if x.shape[-1] else np.zeros(x.shape[0], bool)
    out = np.zeros_like(x)
    if x.shape[-1] == 0:
        return out.reshape(shape)
    mx = np.where(fin, x, -np.inf).max(-1)
    mx = np.where(live, mx, 0)[:, None]
    z = np.where(fin, x - mx, -np.inf)
    if alpha == 1.0:
        e = np.exp(z)
        out = e / np.maximum(e.sum(-1, keepdims=True), 1e-300)
    else:
        a = alpha - 1
        lo, hi = np.zeros((x.shape[0], 1)), np.full((x.shape[0], 1), 1 / a)

        def weights(s):
            d = a * (z - s)
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                return np.exp(np.log1p(np.where(d > -1, d, 0)) / a) * (d > -1)

        for _ in range(iters):
            mid = (lo + hi) / 2
            big = weights(mid).sum(-1, keepdims=True) > 1
            lo, hi = np.where(big, mid, lo), np.where(big, hi, mid)
        p = weights((lo + hi) / 2)
        out = p / np.maximum(p.sum(-1, keepdims=True), 1e-300)
    out[~live] = 0
    return out.reshape(shape)


def relu_ref(x: np.ndarray, n: int, scale: float, bias: float) -> np.ndarray:
    if x.size == 0:
        return np.zeros(x.shape)
    w = np.maximum(np.where(np.isfinite(x), x * scale + bias, -np.inf), 0) ** n
    s = w.sum(-1, keepdims=True)
    return w / np.where(s > 0, s, 1)


def relumax_ref(x: np.ndarray, temperature: float) -> np.ndarray:
    if x.size == 0:
        return np.zeros(x.shape)
    fin = np.isfinite(x)
    mx = np.where(fin, x, -np.inf).max(-1, keepdims=True, initial=-np.inf)
    mx = np.where(np.isfinite(mx), mx, 0)
    w = np.maximum(np.where(fin, (x - mx) / temperature + 1, 0), 0)
    s = w.sum(-1, keepdims=True)
    return w / np.where(s > 0, s, 1)


def check_topk(p: np.ndarray, x: np.ndarray, k: int, kind: str, atol: float) -> None:
    """Top-k outputs: ties make the kept set ambiguous, so check its properties instead."""
    if x.size == 0:
        return
    x2, p2 = x.reshape(-1, x.shape[-1]), p.reshape(-1, x.shape[-1])
    for xr, pr in zip(x2, p2):
        fin = np.isfinite(xr)
        kept = pr > 0
        want = min(k, int(fin.sum()))
        if kind == "topk_uniform" or not fin.any():
            assert kept.sum() == want, (xr, pr)
        else:  # softmax weights can underflow to 0 in float32: at most `want` kept
            assert 1 <= kept.sum() <= want, (xr, pr)
        if not fin.any():
            assert (pr == 0).all()
            continue
        assert abs(pr.sum() - 1) <= atol
        assert not (kept & ~fin).any()
        if kept.any() and (~kept & fin).any() and kind == "topk_uniform":
            assert xr[kept].min() >= xr[~kept & fin].max()
        if kind == "topk_uniform":
            assert np.allclose(pr[kept], 1 / want, atol=atol)
        else:
            mx = xr[kept].max()
            # kept weights are a softmax over the kept set
            ref = np.exp(xr[kept] - mx)
            assert np.allclose(pr[kept], ref / ref.sum() * (pr[kept].sum()), atol=atol)


def attention_scores(q, k, scale, mask=None, causal=False):
    """float64 scores (B, Hq, Lq, Lk) with -inf where inadmissible."""
    q, k = q.double(), k.double()
    G = q.shape[1] // max(k.shape[1], 1)
    k = k.repeat_interleave(G, dim=1)
    s = scale * q @ k.transpose(-1, -2)
    Lq, Lk = s.shape[-2], s.shape[-1]
    if mask is not None:
        if mask.dtype == torch.bool:
            s = s.masked_fill(~mask, -math.inf)
        else:
            s = s + mask.double()
    if causal:
        s = s.masked_fill(~torch.ones(Lq, Lk, dtype=torch.bool).tril(), -math.inf)
    return s
