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


class _Newton:
    """Safeguarded Newton update on ``||(S - t)_+||_m - 1/a`` for a batch of rows."""

    def __init__(self, dtype, a, m, inv_a, target, tol, dead, convex, lo, hi):
        self.a, self.m, self.inv_a, self.target, self.tol = a, m, inv_a, target, tol
        self.dead, self.convex, self.lo, self.hi = dead, convex, lo, hi
        self.tiny, self.eps = torch.finfo(dtype).tiny, torch.finfo(dtype).eps

    def step(self, t: Tensor, f1: Tensor, f0: Tensor) -> tuple[Tensor, bool]:
        """Next iterate from the power sums at ``t``; ``True`` when every row has converged."""
        rel = f1 / self.target - 1
        done = (rel.abs() <= self.tol) | self.dead
        if bool(done.all()):
            return t, True
        # t += (f1 - f1^{1-1/m}/a) / f0
        new_t = t + (f1 - f1.pow(1 - 1 / self.m) * self.inv_a) / f0.clamp_min(self.tiny)
        if not self.convex:
            self.lo = torch.where(rel > 0, t, self.lo)
            self.hi = torch.where(rel < 0, t, self.hi)
            ok = (new_t > self.lo) & (new_t < self.hi) & (f0 > 0)
            new_t = torch.where(ok, new_t, (self.lo + self.hi) / 2)
        # a step below the rounding of t counts as converged
        stalled = (new_t - t).abs() <= 4 * self.eps * t.abs().clamp_min(1.0)
        if bool((done | stalled).all()):
            return t, True
        return torch.where(done, t, new_t), False


def _solve_on_candidates(S: Tensor, t: Tensor, newton: _Newton, m_int, mm1, max_iter: int) -> Tensor:
    """Newton restricted to the entries ``S > t`` (a superset of the final support).

    The candidates are gathered into one flat vector with a row index, so each further
    iteration costs a pass over a few percent of the block instead of all of it.
    Returns ``t`` unchanged when the candidates are not few enough to pay off.
    """
    cand = S > t
    counts = cand.sum(dim=-1)
    if int(counts.sum()) > S.numel() // 4:
        return t
    vals = S.masked_select(cand)
    R = S.shape[0]
    rows = torch.repeat_interleave(torch.arange(R, device=S.device), counts)
    if isinstance(mm1, Tensor):
        mm1 = mm1.reshape(-1)[rows]
    zeros = torch.zeros(R, dtype=S.dtype, device=S.device)
    for _ in range(max_iter):
        u = (vals - t.reshape(-1)[rows]).clamp_(min=0)
        if m_int == 1:
            um1 = (u > 0).to(u.dtype)
        elif m_int is not None:
            um1 = u.pow(m_int - 1)
        else:
            um1 = torch.where(u > 0, u.pow(mm1), torch.zeros_like(u))
        f0 = zeros.index_add(0, rows, um1).unsqueeze(1)
        f1 = zeros.index_add(0, rows, um1.mul_(u)).unsqueeze(1)
        t, finished = newton.step(t, f1, f0)
        if finished:
            break
    return t


def solve_entmax_block(S: Tensor, alpha: float | Tensor, U: Tensor, W: Tensor,
                       tol: float | None = None, max_iter: int = MAX_ITER, compact: bool = True) -> BlockStats:
    """Threshold of α-entmax (α > 1) for every row of ``S`` (R, n), in place.

    Args:
        S: scores, ``-inf`` = masked; not modified.
        alpha: float > 1, or a tensor (R, 1) of per-row α > 1.
        U, W: scratch buffers shaped like ``S``. On return the *unnormalised* weights
            ``u^m`` at the final threshold are in ``U`` for sparsemax (``m = 1``) and in
            ``W`` otherwise (divide by ``stats.f`` for ``p``).
        tol: stop when ``|Σu^m · a^m - 1| <= tol`` on every row.
        compact: after the first sweep, iterate on the candidate entries only (α <= 2).

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
    n_fin = (~torch.isneginf(S)).sum(dim=-1, keepdim=True).clamp_min(1).to(S.dtype) if not convex else None
    newton = _Newton(S.dtype, a, m, inv_a, target, tol, dead, convex, t,
                     None if convex else mx0 - n_fin.pow(-a) * inv_a)
    n_iter = 0
    f1 = f0 = None
    compacted = not (compact and convex)
    for n_iter in range(1, max_iter + 1):
        f1, f0 = _power_sums(S, t, U, W, m_int, mm1)
        new_t, finished = newton.step(t, f1, f0)
        if finished or n_iter == max_iter:
            break
        t = new_t
        if not compacted:
            # Newton from the left never overshoots, so keys with S <= t stay out of the
            # support: finish on the few remaining candidates, then sweep once to confirm.
            t = _solve_on_candidates(S, t, newton, m_int, mm1, max_iter)
            compacted = True
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
