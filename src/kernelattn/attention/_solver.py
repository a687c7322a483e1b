"""Per-block threshold solvers: the α-entmax threshold of a (rows, keys) score block.

These work *in place* on caller-owned buffers: on CPU the cost of an attention
threshold is the number of passes over the block (each pass over a cache-resident block
is one eager PyTorch op) and allocating fresh (rows × keys) tensors, not arithmetic.
Every routine takes scores ``S`` (masked entries ``-inf``) and returns per-row
statistics from which the weights can be rebuilt exactly:

* α-entmax (α > 1), with ``a = α - 1`` and ``m = 1/a``:
  ``u = (S - t)_+``,  ``p = u^m / f``,  where ``f = Σ u^m`` at the returned ``t``.
  ``t`` solves ``Σ (S - t)_+^m = a^{-m}`` (the entmax condition written in score
  units), so ``f`` equals ``a^{-m}`` up to the solver tolerance; dividing by the measured
  ``f`` makes ``Σ p = 1`` exact in floating point. The entmax Jacobian needs
  ``g = p^{2-α} = u^{m-1} / f^{2-α}``, whose unscaled row sum ``f0 = Σ u^{m-1}`` is
  returned too.
* softmax (α = 1): ``t = logsumexp(S)``, ``p = exp(S - t)``; ``f = f0 = 1``.

Fully masked rows get ``t = +inf`` and ``f = f0 = 1``, so every rebuilt weight is 0.

Root finding on ``φ(t) = ||(S - t)_+||_m - 1/a``, started at ``t0 = max S - 1/a``
(the row maximum alone has weight 1) and kept inside the bracket ``[t0, max S]`` with a
bisection fallback. For ``m <= 2`` (sparsemax, 1.5-entmax) the update is Newton's: ``φ``
is convex and decreasing, so from the left it increases monotonically to the root (for
sparsemax it is exact once the support stops changing). For ``m >= 3`` (4/3-entmax and
beyond) it is Halley's, which needs one more row sum per sweep but about a third fewer
sweeps. Passes per sweep: sparsemax 5, 1.5-entmax 5, 4/3-entmax 7 (integer ``m`` uses
products, not pow); typical sweeps at T = 4096 with unit-variance scores: 7, 6, 4.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..mappings.threshold import bracketed_newton, iteration_bound

__all__ = ["BlockStats", "solve_entmax_block", "solve_entmax_rows", "solve_softmax_block", "integer_order"]

MAX_ITER = 50


def integer_order(alpha: float) -> int | None:
    """``m = 1/(α-1)`` when it is an integer (sparsemax 1, 1.5-entmax 2, 4/3-entmax 3, ...)."""
    m = 1.0 / (alpha - 1.0)
    r = round(m)
    return int(r) if abs(m - r) < 1e-9 and r >= 1 else None


def default_tol(dtype: torch.dtype) -> float:
    return 1e-12 if dtype == torch.float64 else 2e-6


class BlockStats:
    """Per-row state kept for the backward pass (each (R, 1)).

    ``t``: the threshold in score units (for comparisons, e.g. page bounds); ``f = Σu^m``,
    ``f0 = Σu^{m-1}``. The weights are rebuilt exactly from ``shift`` and ``rel``:

    * ``mode == "score"`` (α = 1 and integer ``m <= 4``): ``u = (S - shift - rel)_+``;
      ``shift`` is the row max when scores are large next to the support width ``1/a``
      (``|max|·a > SHIFT_ABOVE``; ``t = shift + rel`` could not resolve the weights there)
      and 0 otherwise.
    * ``mode == "sigma"`` / ``"rho"`` (any other α): ``X = a (S - shift)`` with
      ``shift`` the row max, and ``u = (1 + X - rel)_+`` / ``u = (X + rel)_+`` as in
      :func:`kernelattn.mappings.threshold.entmax_weights`.
    """

    __slots__ = ("t", "f", "f0", "n_iter", "shift", "rel", "mode")

    def __init__(self, t: Tensor, f: Tensor, f0: Tensor, n_iter: int, shift: Tensor | None = None,
                 rel: Tensor | None = None, mode: str = "score"):
        self.t, self.f, self.f0, self.n_iter = t, f, f0, n_iter
        self.shift = shift
        self.rel = t if rel is None else rel
        self.mode = mode


# Scores whose row max exceeds this many support widths (1/a) are shifted by the max
# before the threshold search: in score units t = max - 1/a + ... would lose the weights'
# precision to the rounding of ``max`` (scores of 3e6 in float32 gave all-zero rows).
SHIFT_ABOVE = 16.0


def general_order(alpha) -> bool:
    """Whether α is solved in normalised units (``"sigma"``/``"rho"`` modes): a tensor α, or
    ``m = 1/(α-1)`` not an integer <= 4 (score units would overflow ``u^m`` as α → 1)."""
    if isinstance(alpha, Tensor):
        return True
    m = integer_order(float(alpha))
    return m is None or m > 4


def _row_sum(x: Tensor) -> Tensor:
    return x.sum(dim=-1, keepdim=True)


def _power_sums(S: Tensor, t: Tensor, U: Tensor, W: Tensor, m: int | None, mm1, halley: bool,
                rsum=_row_sum):
    """One sweep at ``t``: fill ``U = (S - t)_+`` and the weights ``u^m``; return
    ``(weights buffer, Σu^m, Σu^{m-1}, Σu^{m-2} or None)`` per row.

    ``rsum`` reduces a buffer to per-row sums (dense rows by default; the sparse path
    passes a segment sum over ragged rows)."""
    torch.sub(S, t, out=U)
    U.clamp_(min=0)
    if m == 1:  # weights are U itself; W receives the support indicator
        f1 = rsum(U)
        torch.gt(S, t, out=W)
        return U, f1, rsum(W), None
    if m == 2:
        f0 = rsum(U)
        torch.mul(U, U, out=W)
        return W, rsum(W), f0, None
    if m is not None:  # integer m >= 3: build u^2, ..., u^m by products
        f2 = rsum(U) if halley and m == 3 else None
        torch.mul(U, U, out=W)
        for j in range(2, m):  # here W = u^j
            if halley and j == m - 2:
                f2 = rsum(W)
            if j == m - 1:
                f0 = rsum(W)
            W.mul_(U)
        return W, rsum(W), f0, f2
    # general (tensor or non-integer) exponent m - 1: exp(e·log u), twice as fast as pow on
    # CPU; zeros are replaced by ones before the log (log 0 = -inf and exp(-inf) take a
    # slow scalar path, 5× slower) and their result set to 0 after
    zero = U <= 0
    torch.add(U, zero, out=W)
    W.log_().mul_(mm1).exp_()
    W.masked_fill_(zero, 0.0)
    f0 = rsum(W)
    W.mul_(U)
    return W, rsum(W), f0, None


class _RootStep:
    """Newton / Halley update on ``||(S - t)_+||_m - 1/a`` for a batch of rows.

    The update costs a dozen small per-row ops, as much as a pass over the block, so the
    plain convex Newton case (``1 <= m <= 2``: monotone from the left, no bracket needed)
    takes a short path; Halley and ``m < 1`` keep a bisection-safeguarded bracket.
    """

    def __init__(self, dtype, m, inv_a, target, tol, dead, lo, hi, safeguard: bool):
        self.m, self.inv_a, self.target, self.tol = m, inv_a, target, tol
        self.dead, self.lo, self.hi, self.safeguard = dead, lo, hi, safeguard
        self.tiny, self.eps = torch.finfo(dtype).tiny, torch.finfo(dtype).eps

    def __call__(self, t: Tensor, f1: Tensor, f0: Tensor, f2: Tensor | None, n_iter: int) -> tuple[Tensor, bool]:
        """Next iterate from the power sums at ``t``; ``True`` when every row has converged."""
        rel = f1 / self.target - 1
        done = (rel.abs() <= self.tol) | self.dead
        if bool(done.all()):
            return t, True
        m = self.m
        f0c = f0.clamp_min(self.tiny)
        if not self.safeguard:
            # t += (f1 - f1^{1-1/m}/a) / f0; dead rows (t = +inf, f = 0) stay at +inf
            if isinstance(m, Tensor):
                new_t = t + (f1 - f1.pow(1 - 1 / m) * self.inv_a) / f0c
            elif m == 1:
                new_t = t + (f1 - self.inv_a) / f0c
            elif m == 2:
                new_t = t + (f1 - f1.sqrt() * self.inv_a) / f0c
            else:
                new_t = t + (f1 - f1.pow(1 - 1 / m) * self.inv_a) / f0c
        else:
            self.lo = torch.where(rel > 0, t, self.lo)
            self.hi = torch.where(rel < 0, t, self.hi)
            f1c = f1.clamp_min(self.tiny)
            phi = f1c.pow(1 / m) - self.inv_a
            d1 = -f1c.pow(1 / m - 1) * f0  # φ'
            if f2 is None:  # Newton
                new_t = t - phi / d1
            else:  # Halley: t - 2φφ' / (2φ'² - φφ'')
                d2 = (m - 1) * (f1c.pow(1 / m - 1) * f2 - f1c.pow(1 / m - 2) * f0 * f0)
                new_t = t - 2 * phi * d1 / (2 * d1 * d1 - phi * d2)
            ok = (new_t > self.lo) & (new_t < self.hi)  # also rejects NaN
            new_t = torch.where(ok, new_t, (self.lo + self.hi) / 2)
            new_t = torch.where(done, t, new_t)
        if n_iter >= 6:
            # float rounding can keep |Σp - 1| just above tol: a step below the rounding
            # of t then counts as converged
            stalled = (new_t - t).abs() <= 4 * self.eps * t.abs().clamp_min(1.0)
            if bool((done | stalled).all()):
                return t, True
        return new_t, False


def solve_entmax_block(S: Tensor, alpha: float | Tensor, U: Tensor, W: Tensor,
                       tol: float | None = None, max_iter: int = MAX_ITER,
                       t_init: Tensor | None = None) -> tuple[Tensor, BlockStats]:
    """Threshold of α-entmax (α > 1) for every row of ``S`` (R, n), in place.

    Args:
        S: scores, ``-inf`` = masked; not modified.
        alpha: float > 1, or a tensor (R, 1) of per-row α > 1.
        U, W: scratch buffers shaped like ``S``.
        tol: stop when ``|Σu^m · a^m - 1| <= tol`` on every row.
        t_init: optional (R, 1) lower bounds on the thresholds to start from (a better
            start than ``max S - 1/a``; must not exceed the true threshold).

    Returns:
        ``(weights, stats)``: ``weights`` is ``U`` or ``W`` holding the *unnormalised*
        weights ``u^m`` at the final threshold (``p = weights / stats.f``), and
        :class:`BlockStats`.
    """
    mx = S.amax(dim=-1, keepdim=True)
    return solve_entmax_rows(S, alpha, mx, U, W, tol=tol, max_iter=max_iter, t_init=t_init)


def solve_entmax_rows(values: Tensor, alpha: float | Tensor, mx: Tensor, U: Tensor, W: Tensor, *,
                      rsum=_row_sum, expand=None, tol: float | None = None, max_iter: int = MAX_ITER,
                      t_init: Tensor | None = None) -> tuple[Tensor, BlockStats]:
    """The root finding of :func:`solve_entmax_block` for dense or ragged rows.

    Args:
        values: scores, (R, n) dense rows or (N,) ragged entries (rows concatenated).
        alpha: float > 1 or per-row tensor (R, 1).
        mx: (R, 1) row maxima (``-inf`` for a row with no admissible entry).
        U, W: scratch buffers shaped like ``values``.
        rsum: per-row sum of a buffer shaped like ``values`` → (R, 1).
        expand: per-row (R, 1) → shaped like ``values`` (``None``: broadcasting).
        tol, max_iter, t_init: as in :func:`solve_entmax_block`.
    """
    dt = values.dtype
    tol = default_tol(dt) if tol is None else tol
    tiny = torch.finfo(dt).tiny
    expand = expand or (lambda x: x)
    if general_order(alpha):
        return _solve_normalised(values, alpha, mx, U, W, rsum, expand, t_init=t_init)
    dead = torch.isneginf(mx)
    shift = None
    mx_fin = torch.where(dead, torch.zeros_like(mx), mx)
    if bool((mx_fin.abs() * (float(alpha) - 1.0) > SHIFT_ABOVE).any()):
        # work relative to the row max (one pass; `values` is the caller's scratch)
        values.sub_(expand(mx_fin))
        shift, mx = mx_fin, torch.where(dead, mx, torch.zeros_like(mx))
        if t_init is not None:
            t_init = t_init - mx_fin
    if isinstance(alpha, Tensor):
        a = (alpha.to(dt) - 1).expand_as(mx)
        m_int, m = None, 1.0 / a
        mm1 = expand(m - 1)
        target = a.pow(-m)  # a^{-m}
    else:
        a = float(alpha) - 1.0
        m_int, m = integer_order(float(alpha)), 1.0 / a
        mm1 = None if m_int is not None else m - 1
        target = a ** (-m)
    halley = m_int is not None and m_int >= 3
    # φ(t) = ||(s - t)_+||_m - 1/a is convex for m >= 1 (α <= 2): Newton from the left
    # then climbs monotonically to the root and needs no bracket
    convex_newton = not halley and (bool((a <= 1).all()) if isinstance(a, Tensor) else m >= 1.0)
    mx0 = torch.where(dead, torch.zeros_like(mx), mx)
    t = torch.where(dead, torch.full_like(mx, math.inf), mx0 - 1.0 / a)
    if t_init is not None:  # a certified lower bound: keep the larger of the two
        t = torch.maximum(t, t_init.to(dt))
    step = _RootStep(dt, m, 1.0 / a, target, tol, dead, lo=t, hi=mx0, safeguard=not convex_newton)
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        P, f1, f0, f2 = _power_sums(values, expand(t), U, W, m_int, mm1, halley, rsum)
        new_t, finished = step(t, f1, f0, f2, n_iter)
        if finished or n_iter == max_iter:
            break
        t = new_t
    f = torch.where(dead, torch.ones_like(f1), f1.clamp_min(tiny))
    f0 = torch.where(dead, torch.ones_like(f0), f0.clamp_min(tiny))
    if shift is None:
        return P, BlockStats(t, f, f0, n_iter)
    return P, BlockStats(t + shift, f, f0, n_iter, shift=shift, rel=t)


def normalised_weights(X: Tensor, v: Tensor, m, edge: bool, U: Tensor, W: Tensor) -> tuple[Tensor, Tensor]:
    """In place: ``U = u^m``, ``W = u^{m-1}`` (0 off the support) at offset ``v`` (already
    expanded to ``X``'s shape); ``u`` as in :func:`kernelattn.mappings.threshold.entmax_weights`,
    whose math this is, on caller-owned buffers."""
    if edge:  # u = (X + ρ)_+, m < 1
        torch.add(X, v, out=U)
        U.clamp_(min=0)
        torch.pow(U, m - 1, out=W)
        W.masked_fill_(U <= 0, 0.0)  # 0^(m-1) = inf off the support
        U.mul_(W)
        return U, W
    torch.sub(X, v, out=U)
    U.clamp_(min=-1)
    off = U <= -1
    U.log1p_()  # log u = log1p(X - σ): exact relative precision for tiny X - σ (α → 1)
    torch.mul(U, m - 1, out=W)
    W.exp_().masked_fill_(off, 0.0)
    U.mul_(m).exp_()  # m > 0: exp(-inf) = 0 off the support
    return U, W


def _solve_normalised(values: Tensor, alpha, mx: Tensor, U: Tensor, W: Tensor, rsum, expand,
                      t_init: Tensor | None = None):
    """Threshold for a general α (tensor, α → 1, α > 2) relative to the row max.

    ``values`` becomes ``X = a (S - max)`` in place; the offset is found by the bracketed
    safeguarded Newton of :func:`kernelattn.mappings.threshold.entmax_offset` (see there
    for the step, the stopping rule and the iteration bound), with row sums ``rsum``.
    ``t_init`` (R, 1), certified lower bounds on the thresholds (α ≤ 2), is the first
    iterate: from the left of the root Newton on the convex rows converges monotonically,
    so a tight bound saves most of the full passes.
    """
    dt = values.dtype
    eps, tiny = torch.finfo(dt).eps, torch.finfo(dt).tiny
    dead = torch.isneginf(mx)
    mx_fin = torch.where(dead, torch.zeros_like(mx), mx)
    if isinstance(alpha, Tensor):
        a = (alpha.to(dt) - 1).expand_as(mx)
        m, edge, convex = 1.0 / a, False, bool((a <= 1).all())
        m_x, a_x = expand(m), expand(a)
    else:
        a = float(alpha) - 1.0
        m = 1.0 / a
        edge, convex = a > 1, a <= 1
        m_x, a_x = m, a
    values.sub_(expand(mx_fin)).mul_(a_x)  # X <= 0; masked stay -inf
    a_t = torch.as_tensor(a, dtype=dt, device=values.device).expand_as(mx)
    floor = torch.where(a_t <= 1, a_t, torch.full_like(a_t, eps))
    cvx_rows = a_t <= 1
    lo, hi = torch.zeros_like(mx_fin), torch.ones_like(mx_fin)
    v = hi.clone() if edge else lo.clone()
    if t_init is not None and not edge:
        # σ = 1 + a (t - max); the bracket stays [0, 1] so a first iterate on the wrong side
        # would only cost a step, never the answer
        v0 = (1.0 + a_t * (t_init.to(dt) - mx_fin)).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0).clamp(0.0, 1.0)
        v = torch.where(a_t <= 1, v0, v)
    sgn = 1.0 if edge else -1.0
    noise = 2 * math.log2(values.shape[-1] + 1)  # rounding of a row sum (ragged: bounded by all)

    def evaluate(v):
        Pw, G = normalised_weights(values, expand(v), m_x, edge, U, W)
        return rsum(Pw), rsum(G), Pw

    # a row sum within its own rounding noise of 1 is as converged as it can get (convex
    # rows: Newton from the left, so no oscillation hides behind it)
    tol_f = torch.where(cvx_rows, noise * eps, 2 * eps)
    v, n_iter, (F, F1, Pw) = bracketed_newton(evaluate, v, lo, hi, a, sgn, edge, convex, cvx_rows, floor, noise,
                                              tol_f, dead.clone(), iteration_bound(a_t, eps), "attention threshold")
    f = torch.where(dead, torch.ones_like(F), F.clamp_min(tiny))
    f0 = torch.where(dead, torch.ones_like(F1), F1.clamp_min(tiny))
    t = mx_fin - v / a if edge else mx_fin + (v - 1) / a  # informative (page bounds); rebuild uses rel
    t = torch.where(dead, torch.full_like(t, math.inf), t)
    return Pw, BlockStats(t, f, f0, n_iter, shift=mx_fin, rel=v, mode="rho" if edge else "sigma")


def solve_softmax_block(S: Tensor, U: Tensor) -> tuple[Tensor, BlockStats]:
    """Softmax of every row of ``S`` (R, n): ``U`` receives ``exp(S - max)``; ``p = U / f``.

    ``t = logsumexp`` is kept relative to the row max (``shift``) when the max is large,
    so the backward's ``exp(S - shift - rel)`` keeps full precision."""
    mx = S.amax(dim=-1, keepdim=True)
    dead = torch.isneginf(mx)
    mx0 = torch.where(dead, torch.zeros_like(mx), mx)
    torch.sub(S, mx0, out=U)
    U.exp_()
    s = U.sum(dim=-1, keepdim=True)
    lse = torch.log(s.clamp_min(torch.finfo(S.dtype).tiny))
    f = torch.where(dead, torch.ones_like(s), s)
    if bool((mx0.abs() > SHIFT_ABOVE).any()):
        t = torch.where(dead, torch.full_like(mx, math.inf), mx0 + lse)
        return U, BlockStats(t, f, torch.ones_like(s), 1, shift=mx0,
                             rel=torch.where(dead, torch.full_like(mx, math.inf), lse))
    t = torch.where(dead, torch.full_like(mx, math.inf), mx0 + lse)
    return U, BlockStats(t, f, torch.ones_like(s), 1)
