"""Structured mappings for recall: constrained sparsemax and sequential k-subsets.

* :func:`constrained_sparsemax` (Martins & Kreutzer, 2017) — the Euclidean projection of
  the scores onto ``{p ∈ Δ : p ≤ u}``: ``p = clip(x − τ, 0, u)``. In *free recall* ``u`` is
  the weight each pattern has left (``u ← u − p`` after every recall), so a pattern, once
  recalled, cannot take the weight again.
* :func:`sequential_ksubsets` — SparseMAP over the windows of ``k`` patterns adjacent in
  the stored order: ``μ = argmax_{μ ∈ conv{1_w}} ⟨μ, x⟩ − ½||μ||²`` with ``1_w`` the
  indicator of the window ``w = [j, j + k)``. It is the limit of HFYN's chain-structured
  SparseMAP (``SequenceBudget`` with exactly k active variables) as the bonus for adjacent
  active pairs grows — HFYN uses 1e8, which leaves only contiguous windows in the support.
  In *sequential recall* the pair ``{current, next}`` is retrieved, so ``Xᵀμ − q`` is the
  next pattern.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import check_scores

__all__ = ["constrained_sparsemax", "sequential_ksubsets"]


def _to_last(x: Tensor, dim: int) -> Tensor:
    return x if dim == x.dim() - 1 else x.transpose(dim, -1)


# ---------------------------------------------------------------- constrained sparsemax


def _constrained_threshold(x: Tensor, u: Tensor, n_iter: int = 60) -> Tensor:
    """``τ`` with ``Σ clip(x − τ, 0, u) = 1`` along the last dim (x finite, u >= 0, Σu > 1).

    ``s(τ) = Σ clip(x − τ, 0, u)`` is piecewise linear and non-increasing, with kinks at
    ``x_i`` and ``x_i − u_i``. Rows of up to 512 entries evaluate ``s`` at every kink at
    once and take the bracketing pair; longer rows bisect on ``[min(x − u), max x]``.
    Either way the free set inside the bracket gives the exact
    ``τ = (Σ_F x + Σ_U u − 1) / |F|``.
    """
    if x.shape[-1] <= 512:
        kinks = torch.cat([x, x - u], dim=-1)  # (..., 2n)
        s = torch.minimum((x[..., None, :] - kinks[..., :, None]).clamp_min(0), u[..., None, :]).sum(-1)
        lo = torch.where(s >= 1, kinks, torch.full_like(kinks, -math.inf)).amax(-1, keepdim=True)
        hi = torch.where(s <= 1, kinks, torch.full_like(kinks, math.inf)).amin(-1, keepdim=True)
        ok = torch.isfinite(lo) & torch.isfinite(hi)
        tau = torch.where(ok, (lo + hi) / 2, torch.zeros_like(lo))
    else:
        lo = (x - u).amin(-1, keepdim=True)
        hi = x.amax(-1, keepdim=True)
        for _ in range(n_iter):
            mid = (lo + hi) / 2
            too_much = torch.minimum((x - mid).clamp_min(0), u).sum(-1, keepdim=True) > 1
            lo = torch.where(too_much, mid, lo)
            hi = torch.where(too_much, hi, mid)
        tau = (lo + hi) / 2
    z = x - tau
    free = (z > 0) & (z < u)
    up = (z >= u) & (u > 0)
    n_free = free.sum(-1, keepdim=True)
    exact = ((x * free).sum(-1, keepdim=True) + (u * up).sum(-1, keepdim=True) - 1) / n_free.clamp_min(1)
    return torch.where(n_free > 0, exact, tau)


class ConstrainedSparsemaxFunction(torch.autograd.Function):
    """Forward: the capped projection; backward: ``1_F(g − ḡ_F)`` for x, ``1_U(g − ḡ_F)`` for u."""

    @staticmethod
    def forward(ctx, x: Tensor, upper: Tensor, dim: int) -> Tensor:
        cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
        xl, ul = _to_last(x.to(cdt), dim), _to_last(upper.to(cdt), dim)
        fin = torch.isfinite(xl) & (ul > 0)
        ul = torch.where(fin, ul, torch.zeros_like(ul))
        xs = torch.where(fin, xl, torch.full_like(xl, -1e30 if cdt == torch.float32 else -1e300))
        # Σu <= 1: the budget cannot be spent, every pattern takes all it has left.
        tight = ul.sum(-1, keepdim=True) <= 1
        tau = _constrained_threshold(torch.where(fin, xl, torch.zeros_like(xl)), ul)
        p = torch.minimum((xs - tau).clamp_min(0), ul)
        p = torch.where(tight, ul, p)
        z = xs - tau
        free = fin & (z > 0) & (z < ul) & ~tight
        up = fin & ~free & (p > 0)
        ctx.dim = dim
        ctx.save_for_backward(free, up)
        return _to_last(p, dim).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        free, up = ctx.saved_tensors
        g = _to_last(grad, ctx.dim).to(torch.float64 if grad.dtype == torch.float64 else torch.float32)
        fr = free.to(g.dtype)
        n_free = fr.sum(-1, keepdim=True)
        mean = torch.where(n_free > 0, (g * fr).sum(-1, keepdim=True) / n_free.clamp_min(1), torch.zeros_like(n_free))
        dx = fr * (g - mean)
        du = up.to(g.dtype) * (g - mean)
        return _to_last(dx, ctx.dim).to(grad.dtype), _to_last(du, ctx.dim).to(grad.dtype), None


def constrained_sparsemax(x: Tensor, upper: Tensor, dim: int = -1) -> Tensor:
    """Sparsemax with upper bounds: ``argmin_{p ∈ Δ, p ≤ u} ||p − x||²`` along ``dim``.

    Args:
        x: scores of any shape; ``-inf`` = masked.
        upper: bounds ``u >= 0``, broadcastable to ``x``. Where ``Σu <= 1`` over the
            unmasked entries the simplex is out of reach and ``p = u`` (all that is left).
        dim: dimension to normalise over.

    Returns:
        Tensor of ``x``'s shape and dtype with ``0 <= p <= u`` and ``Σp = min(1, Σu)``;
        differentiable in ``x`` and ``upper``.
    """
    dim = check_scores(x, dim)
    if not isinstance(upper, Tensor):
        upper = torch.as_tensor(upper, dtype=x.dtype, device=x.device)
    try:
        upper = upper.to(x.dtype).expand_as(x)
    except RuntimeError:
        raise ValueError(f"upper of shape {tuple(upper.shape)} does not broadcast to x of shape "
                         f"{tuple(x.shape)}") from None
    if torch.isnan(upper).any() or (upper < 0).any():
        raise ValueError("upper must be >= 0 everywhere (the weight each entry may still take)")
    return ConstrainedSparsemaxFunction.apply(x, upper, dim)


# -------------------------------------------------------------- sequential k-subsets


def _window_sums(v: Tensor, k: int) -> Tensor:
    """Sums of ``v`` (n,) over the windows ``[j, j + k)``, ``j = 0 .. n − k``."""
    c = torch.cat([v.new_zeros(1), v.cumsum(0)])
    return c[k:] - c[:-k]


def _windows(support: list[int], n: int, k: int, like: Tensor) -> Tensor:
    a = like.new_zeros(n, len(support))
    for col, j in enumerate(support):
        a[j:j + k, col] = 1
    return a


def _seq_row(theta: Tensor, k: int, max_iter: int) -> tuple[Tensor, list[int]]:
    """Active-set SparseMAP on one row (float64): ``(μ (n,), support windows)``."""
    n = theta.shape[0]
    fin = torch.isfinite(theta)
    th = torch.where(fin, theta, torch.zeros_like(theta))
    blocked = _window_sums((~fin).to(theta.dtype), k) > 0  # windows touching a masked entry
    scores = _window_sums(th, k).masked_fill(blocked, -math.inf)
    if bool(blocked.all()):
        return torch.zeros_like(theta), []
    support = [int(scores.argmax())]
    pi = theta.new_ones(1)
    tol = 1e-12 * max(1.0, float(th.abs().max()))
    for _ in range(max_iter):
        a = _windows(support, n, k, theta)
        s = len(support)
        kkt = theta.new_zeros(s + 1, s + 1)
        kkt[:s, :s] = a.T @ a
        kkt[:s, s] = kkt[s, :s] = 1
        sol = torch.linalg.solve(kkt, torch.cat([a.T @ th, theta.new_ones(1)]))
        new, tau = sol[:s], sol[s]
        if bool((new < -1e-14).any()):
            # Step back to the first coordinate that hits zero and drop it.
            d = new - pi
            ratios = torch.where(d < 0, pi / (-d).clamp_min(1e-300), torch.full_like(pi, math.inf))
            t = float(ratios.min())
            pi = (pi + t * d).clamp_min(0)
            keep = [i for i in range(s) if i != int(ratios.argmin()) and float(pi[i]) > 0]
            support = [support[i] for i in keep]
            pi = pi[keep] / pi[keep].sum()
            continue
        pi = new.clamp_min(0)
        mu = a @ pi
        gain = _window_sums(th - mu, k).masked_fill(blocked, -math.inf)
        best = int(gain.argmax())
        if float(gain[best]) <= float(tau) + tol or best in support:
            return mu, support
        support.append(best)
        pi = torch.cat([pi, pi.new_zeros(1)])
    return _windows(support, n, k, theta) @ pi, support


class SequentialKSubsetsFunction(torch.autograd.Function):
    """Active-set forward; backward ``J g``, ``J = A(M⁻¹ − M⁻¹11ᵀM⁻¹/1ᵀM⁻¹1)Aᵀ`` on the support."""

    @staticmethod
    def forward(ctx, x: Tensor, k: int, dim: int, max_iter: int) -> Tensor:
        xl = _to_last(x, dim)
        flat = xl.reshape(-1, xl.shape[-1]).to(torch.float64)
        out = torch.zeros_like(flat)
        supports = []
        for r in range(flat.shape[0]):
            out[r], sup = _seq_row(flat[r], k, max_iter)
            supports.append(sup)
        ctx.supports, ctx.k, ctx.dim, ctx.shape = supports, k, dim, xl.shape
        return _to_last(out.view(xl.shape), dim).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        gl = _to_last(grad, ctx.dim).reshape(-1, ctx.shape[-1]).to(torch.float64)
        dx = torch.zeros_like(gl)
        n = gl.shape[-1]
        for r, sup in enumerate(ctx.supports):
            if not sup:
                continue
            a = _windows(sup, n, ctx.k, gl)
            m_inv = torch.linalg.inv(a.T @ a)
            one = m_inv.sum(1, keepdim=True)
            proj = m_inv - one @ one.T / one.sum()
            dx[r] = a @ (proj @ (a.T @ gl[r]))
        return _to_last(dx.view(ctx.shape), ctx.dim).to(grad.dtype), None, None, None


def sequential_ksubsets(x: Tensor, k: int = 2, dim: int = -1, max_iter: int = 1000) -> Tensor:
    """SparseMAP over windows of ``k`` adjacent entries: ``argmax_{μ ∈ conv{1_w}} ⟨μ, x⟩ − ½||μ||²``.

    Solved exactly per row by the active-set method of SparseMAP (Niculae et al., 2018):
    the support grows by the best window for the current gradient and shrinks when a
    weight would turn negative; the window indicators are linearly independent, so each
    step is a small positive-definite KKT solve. Runs a Python loop over rows (recall
    queries are few), in float64.

    Args:
        x: scores ``(..., n, ...)``; ``-inf`` = masked (windows touching it are excluded).
        k: window size (1 = sparsemax).
        dim: the sequence dimension.
        max_iter: active-set iterations per row.

    Returns:
        Marginals ``μ`` of ``x``'s shape and dtype: ``0 <= μ <= 1``, ``Σμ = k``; rows
        with no window of ``k`` unmasked entries are zeros. Differentiable in ``x``.
    """
    dim = check_scores(x, dim)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1 (the window size), got {k!r}")
    return SequentialKSubsetsFunction.apply(x, k, dim, max_iter)
