"""Per-block threshold solvers: the α-entmax threshold of a (rows, keys) score block.

These work *in place* on caller-owned buffers because on CPU the cost of an attention
threshold is dominated by memory traffic and by allocating fresh (rows × keys) tensors,
not by arithmetic. Every routine takes scores ``S`` (masked entries ``-inf``) and
returns per-row statistics from which the weights can be rebuilt exactly:

* α-entmax (α > 1), with ``a = α - 1`` and ``m = 1/a``:
  ``u = (S - t)_+``,  ``p = u^m / f``,  where ``f = Σ u^m`` at the returned ``t``.
  ``t`` solves ``Σ (S - t)_+^m = a^{-m}`` (the entmax condition written in score
  units), so ``f`` equals ``a^{-m}`` up to the solver tolerance; dividing by the measured
  ``f`` makes ``Σ p = 1`` exact in floating point. The entmax Jacobian needs
  ``g = p^{2-α} = u^{m-1} / f^{2-α}``; its row sum is returned too.
* softmax (α = 1): ``t = logsumexp(S)``, ``p = exp(S - t)``.

Fully masked rows get ``t = +inf`` and ``f = 1``, so every rebuilt weight is 0.

Root finding: Newton's method on ``φ(t) = ||(S - t)_+||_m - 1/a``. For ``m >= 1``
(``α <= 2``) ``φ`` is convex and decreasing, so Newton started left of the root
(``t0 = max S - 1/a``, where the row maximum alone has weight 1) increases monotonically
to it and never overshoots; for sparsemax (``m = 1``) it is exact after finitely many
steps (the support stops changing). For ``α > 2`` a bisection safeguard keeps the iterate
inside a bracket. Each Newton step is one sweep over the block: 3 in-place passes for
sparsemax, 4 for 1.5-entmax, 6 for 4/3-entmax (integer ``m`` uses products, not pow).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["BlockStats", "solve_entmax_block", "solve_softmax_block", "integer_order"]

MAX_ITER = 50


def integer_order(alpha: float) -> int | None:
    """``m = 1/(α-1)`` when it is an integer (sparsemax 1, 1.5-entmax 2, 4/3-entmax 3, ...)."""
    m = 1.0 / (alpha - 1.0)
    r = round(m)
    return int(r) if abs(m - r) < 1e-9 and r >= 1 else None


def default_tol(dtype: torch.dtype) -> float:
    return 1e-12 if dtype == torch.float64 else 2e-6


class BlockStats:
    """Per-row state saved for the backward pass: ``t``, ``f`` and ``Σg`` (each (R, 1))."""

    __slots__ = ("t", "f", "gsum", "n_iter")

    def __init__(self, t: Tensor, f: Tensor, gsum: Tensor, n_iter: int):
        self.t, self.f, self.gsum, self.n_iter = t, f, gsum, n_iter


def _power_sums(S: Tensor, t: Tensor, U: Tensor, W: Tensor, m: int | None, mm1: Tensor | None):
    """Fill ``U = (S - t)_+`` and ``W = U^m`` (for m = 1, ``W`` gets ``1[U > 0]`` and
    ``U`` itself is ``U^m``); return ``(Σ U^m, Σ U^(m-1))`` per row."""
    torch.sub(S, t, out=U)
    U.clamp_(min=0)
    if m == 1:
        f1 = U.sum(dim=-1, keepdim=True)
        torch.sign(U, out=W)
        return f1, W.sum(dim=-1, keepdim=True)
    if m == 2:
        f0 = U.sum(dim=-1, keepdim=True)
        torch.mul(U, U, out=W)
        return W.sum(dim=-1, keepdim=True), f0
    if m is not None:  # integer m >= 3: W = U^(m-1), then one more product
        torch.mul(U, U, out=W)
        for _ in range(m - 3):
            W.mul_(U)
        f0 = W.sum(dim=-1, keepdim=True)
        W.mul_(U)
        return W.sum(dim=-1, keepdim=True), f0
    # general (tensor or non-integer) exponent m - 1, guarded at u = 0
    torch.pow(U, mm1, out=W)
    W.masked_fill_(U <= 0, 0.0)
    f0 = W.sum(dim=-1, keepdim=True)
    W.mul_(U)
    return W.sum(dim=-1, keepdim=True), f0


def solve_entmax_block(S: Tensor, alpha: float | Tensor, U: Tensor, W: Tensor,
                       tol: float | None = None, max_iter: int = MAX_ITER) -> BlockStats:
    """Threshold of α-entmax (α > 1) for every row of ``S`` (R, n), in place.

    Args:
        S: scores, ``-inf`` = masked; not modified.
        alpha: float > 1, or a tensor (R, 1) of per-row α > 1.
        U, W: scratch buffers shaped like ``S``. On return the *unnormalised* weights
            ``u^m`` at the final threshold are in ``U`` for sparsemax (``m = 1``) and in
            ``W`` otherwise (divide by ``stats.f`` for ``p``).
        tol: stop when ``|Σu^m · a^m - 1| <= tol`` on every row.

    Returns:
        :class:`BlockStats` with ``t``, ``f`` (= Σu^m) and ``gsum`` (= Σ p^{2-α}).
    """
    tol = default_tol(S.dtype) if tol is None else tol
    tiny = torch.finfo(S.dtype).tiny
    mx = S.amax(dim=-1, keepdim=True)
    dead = torch.isneginf(mx)
    if isinstance(alpha, Tensor):
        a = (alpha.to(S.dtype) - 1).expand_as(mx)
        m_int, m = None, 1.0 / a
        mm1 = m - 1
        inv_a = 1.0 / a
        convex = bool((a <= 1).all())
        target = a.pow(-m)  # a^{-m}
    else:
        a = float(alpha) - 1.0
        m_int, m = integer_order(float(alpha)), 1.0 / a
        mm1 = None if m_int is not None else torch.full_like(mx, m - 1)
        inv_a = 1.0 / a
        convex = a <= 1
        target = a ** (-m)
    mx0 = torch.where(dead, torch.zeros_like(mx), mx)
    t = torch.where(dead, torch.full_like(mx, math.inf), mx0 - inv_a)
    lo = t.clone()
    n_fin = (~torch.isneginf(S)).sum(dim=-1, keepdim=True).clamp_min(1).to(S.dtype) if not convex else None
    hi = (mx0 - n_fin.pow(-a) * inv_a) if not convex else None
    n_iter = 0
    f1 = f0 = None
    for n_iter in range(1, max_iter + 1):
        f1, f0 = _power_sums(S, t, U, W, m_int, mm1)
        rel = f1 / target - 1
        done = (rel.abs() <= tol) | dead
        if n_iter == max_iter or bool(done.all()):
            break
        # Newton on ||u||_m - 1/a:  t += (f1 - f1^{1-1/m}/a) / f0
        step = (f1 - f1.pow(1 - 1 / m) * inv_a) / f0.clamp_min(tiny)
        new_t = t + step
        if not convex:
            lo = torch.where(rel > 0, t, lo)
            hi = torch.where(rel < 0, t, hi)
            ok = (new_t > lo) & (new_t < hi) & (f0 > 0)
            new_t = torch.where(ok, new_t, (lo + hi) / 2)
        # Stagnation (step below rounding of t) counts as converged.
        stalled = (new_t - t).abs() <= 4 * torch.finfo(S.dtype).eps * t.abs().clamp_min(1.0)
        if bool((done | stalled).all()):
            break
        t = torch.where(done, t, new_t)
    f = torch.where(dead, torch.ones_like(f1), f1.clamp_min(tiny))
    # Σ g = Σ u^{m-1} / f^{2-α}
    gexp = 2 - (a + 1)
    gsum = torch.where(dead, torch.ones_like(f0), f0 / f.pow(gexp) if isinstance(gexp, Tensor) or gexp != 0
                       else f0)
    return BlockStats(t, f, gsum.clamp_min(tiny), n_iter)


def solve_softmax_block(S: Tensor, U: Tensor) -> BlockStats:
    """Softmax of every row of ``S`` (R, n): ``U`` receives ``exp(S - t)`` with ``t = logsumexp``."""
    mx = S.amax(dim=-1, keepdim=True)
    dead = torch.isneginf(mx)
    mx0 = torch.where(dead, torch.zeros_like(mx), mx)
    torch.sub(S, mx0, out=U)
    U.exp_()
    s = U.sum(dim=-1, keepdim=True)
    t = torch.where(dead, torch.full_like(mx, math.inf), mx0 + torch.log(s.clamp_min(torch.finfo(S.dtype).tiny)))
    U.div_(torch.where(dead, torch.ones_like(s), s))
    one = torch.ones_like(s)
    return BlockStats(t, one, one, 1)
