"""Thresholds of the α-entmax family: the math, with no autograd.

α-entmax maps scores ``x`` to ``p_i = [(α-1) x_i - τ]_+^{1/(α-1)}`` where ``τ`` is the
unique value making ``Σ p = 1``. Every routine here returns that ``τ`` in the units of
the *original* scores (so callers can rebuild ``p`` from ``x`` and ``τ`` alone, which is
what a memory-light attention backward needs) and works along the last dimension.

Conventions shared by all routines:

* ``-inf`` entries are masked and never enter the support.
* A fully masked row gets ``τ = +inf`` so the rebuilt ``p`` is all zeros.
* Scores are shifted by the row maximum first, so magnitudes like 1e4 are harmless.
* Work happens in the dtype given; callers pass float32 (or float64) scores.

Exact sort-based solutions exist for α = 2 (sparsemax) and α = 1.5
(:func:`sparsemax_threshold`, :func:`entmax15_threshold`). :func:`entmax_threshold`
handles any α with a safeguarded Newton iteration on ``φ(τ) = ||[X - τ]_+||_m`` (``m = 1/(α-1)``), which is
convex and nearly linear in ``τ`` far from the root, so Newton converges in a handful of
passes from the lower bound ``τ = -1``; a bisection step is taken whenever Newton leaves
the bracket. For α = 2 and 1.5 it finishes with the closed-form τ on the support it
found, which makes it exact and several times faster than sorting (no O(n log n) sort).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "sparsemax_threshold",
    "entmax15_threshold",
    "entmax_threshold",
    "entmax_from_threshold",
]


def _shift(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Subtract the row max; return (shifted, max, fully_masked, n_finite)."""
    mx = x.amax(dim=-1, keepdim=True)
    dead = torch.isneginf(mx)
    mx = torch.where(dead, torch.zeros_like(mx), mx)
    z = x - mx
    n_fin = torch.isfinite(z).sum(dim=-1, keepdim=True)
    return z, mx, dead, n_fin


def _sorted_prefix(z: Tensor, n_fin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Sort descending; masked entries become 0 and are excluded by ``valid``."""
    zs = torch.sort(z, dim=-1, descending=True).values
    rho = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
    valid = rho <= n_fin
    zs = torch.where(valid, zs, torch.zeros_like(zs))
    return zs, rho, valid


def sparsemax_threshold(x: Tensor) -> tuple[Tensor, Tensor]:
    """Exact sparsemax threshold along the last dim.

    Args:
        x: scores ``(..., n)``; ``-inf`` = masked.

    Returns:
        ``(tau, support_size)``, both ``(..., 1)``; ``p = clamp(x - tau, min=0)``.
    """
    z, mx, dead, n_fin = _shift(x)
    zs, rho, valid = _sorted_prefix(z, n_fin)
    cs = zs.cumsum(dim=-1) - 1
    support = (rho * zs > cs) & valid
    k = support.sum(dim=-1, keepdim=True).clamp_min(1)
    tau = cs.gather(-1, k - 1) / k.to(z.dtype)
    tau = torch.where(dead, torch.full_like(tau, float("inf")), tau + mx)
    return tau, torch.where(dead, torch.zeros_like(k), k)


def entmax15_threshold(x: Tensor) -> tuple[Tensor, Tensor]:
    """Exact 1.5-entmax threshold along the last dim.

    Returns ``(tau, support_size)`` with ``p = clamp(x/2 - tau, min=0) ** 2``.
    """
    z, mx, dead, n_fin = _shift(x)
    zs, rho, valid = _sorted_prefix(z / 2, n_fin)
    mean = zs.cumsum(dim=-1) / rho
    mean_sq = (zs * zs).cumsum(dim=-1) / rho
    ss = rho * (mean_sq - mean * mean)
    delta = ((1 - ss) / rho).clamp_min(0)
    tau = mean - torch.sqrt(delta)
    support = (tau <= zs) & valid
    k = support.sum(dim=-1, keepdim=True).clamp_min(1)
    tau = tau.gather(-1, k - 1)
    tau = torch.where(dead, torch.full_like(tau, float("inf")), tau + mx / 2)
    return tau, torch.where(dead, torch.zeros_like(k), k)


def _default_tol(dtype: torch.dtype) -> float:
    return 1e-12 if dtype == torch.float64 else 1e-6


def softmax_limit(alpha_minus_1: float | Tensor, dtype: torch.dtype) -> bool | Tensor:
    """Whether α-entmax equals softmax to float rounding at this α.

    With ``p = exp(m log1p(a (z - s)))`` (``a = α - 1``, ``m = 1/a``) the log-weights are
    ``(z - s) - a (z - s)²/2 + O(a²)``, so ``|p_α - softmax| <= a · max_t t² e^{-t} / 2
    ≈ 0.27 a``: below ``a = eps`` of the dtype the difference is under one rounding step
    and softmax (exact, one pass) is returned instead of a root-finding problem whose
    exponent ``1/a`` would exceed what the dtype resolves.
    """
    return alpha_minus_1 <= torch.finfo(dtype).eps


def entmax_weights(X: Tensor, v: Tensor, m: float | Tensor, int_m: int | None, edge: bool = False,
                   unit: float = 1.0) -> tuple[Tensor, Tensor]:
    """``(w, w1) = (u^m, u^{m-1})`` on the support (0 off it) for the base ``u`` at offset ``v``.

    ``X = (α-1)(x - max x) <= 0``. With ``edge=False`` the offset is ``v = σ`` and
    ``u = (1 + X - σ)_+``; with ``edge=True`` it is ``v = ρ = 1 - σ`` and ``u = (X + ρ)_+``
    (used for α > 2, where the answer hinges on entries at the support's edge and ``ρ``
    resolves them finely). Every weight is at most 1: no overflow for any α, and
    ``m = 1/(α-1)`` may be huge (α → 1). For a non-integer or large ``m`` the σ form is
    evaluated as ``exp(m log1p(X - σ))``: ``X - σ`` keeps its relative precision even
    when it is ~1e-9, where ``1 + X - σ`` would round to 1. With ``edge`` and ``unit = a``,
    ``X`` and ``v`` are in score units instead (``u = a (z + r)``): the one rounding of
    ``z + r`` is then the only absolute error in ``u``.
    """
    if edge:
        u = (X + v).clamp_min_(0)
        if unit != 1.0:
            u.mul_(unit)
        live = u > 0
        w1 = torch.where(live, u.pow(m - 1), torch.zeros_like(u))  # (m - 1) < 0: 0^(m-1) = inf is masked
        return w1 * u, w1
    if int_m is not None and int_m <= 4:  # a >= 1/4: 1 + X - σ is well resolved; products beat pow
        u = (X - v).add_(1).clamp_min_(0)
        if int_m == 1:
            return u, u.sign()
        w1 = u if int_m == 2 else u * u
        for _ in range(int_m - 3):
            w1 = w1 * u
        return w1 * u, w1
    d = (X - v).clamp_min_(-1)
    live = d > -1
    L = torch.log1p(d)  # -inf off the support
    w = torch.exp(L * m)  # m > 0: exp(-inf) = 0
    # (m - 1) < 0 for α > 2 would turn log 0 = -inf into +inf: zero those explicitly
    w1 = torch.where(live, torch.exp(L * (m - 1)), torch.zeros_like(L))
    return w, w1


def iteration_bound(a_t: Tensor, eps: float) -> int:
    """Bisection alone closes the bracket to the stopping width within this many steps."""
    a_small = float(a_t.min()) if a_t.numel() else 1.0
    return int(2 * math.log2(1.0 / (eps * max(min(a_small, 1.0), eps)))) + 40


def bracketed_newton(evaluate, v: Tensor, lo: Tensor, hi: Tensor, a, sgn: float, edge: bool, convex: bool,
                     cvx_rows: Tensor, floor: Tensor, noise: float, tol_f, done: Tensor, max_iter: int, what: str):
    """The safeguarded Newton of :func:`entmax_offset`, shared with the attention solvers.

    Args:
        evaluate: ``v -> (F, F1, *extra)``, per-row sums (R, 1) of the weights and of their
            derivative at offsets ``v`` (R, 1); ``extra`` is returned from the last call.
        v, lo, hi: first iterate and bracket (R, 1).
        a: α − 1 (float or (R, 1)); ``sgn``: +1/unit when ``F`` increases with ``v`` (edge
            offsets), −1 when it decreases.
        cvx_rows: (R, 1) rows with α ≤ 2; ``floor``: (R, 1) scale of the bracket test;
            ``noise``: rounding of a row sum in rounding units; ``tol_f``: row-sum tolerance
            (float or (R, 1)); ``done``: rows already finished (e.g. fully masked).

    Returns:
        ``(v, n_iter, last)`` with ``last`` the final call's ``(F, F1, *extra)``. Raises ``RuntimeError`` after ``max_iter`` steps (bisection
        alone converges within :func:`iteration_bound`, so that means a bug).
    """
    eps = torch.finfo(v.dtype).eps
    widths = [torch.full_like(lo, 2.0), torch.full_like(lo, 2.0)]  # bracket widths two and one steps ago
    last = torch.full_like(lo, math.inf)  # previous Newton step size
    for n_iter in range(1, max_iter + 1):
        F, F1, *extra = evaluate(v)
        left = (F > 1) if not edge else (F < 1)  # v is left of the root
        lo = torch.where(left, v, lo)
        hi = torch.where(left, hi, v)
        step = sgn * F * torch.expm1(-a * torch.log(F)) / F1
        new = v + step
        newton = (new > lo) & (new < hi) & torch.isfinite(step)
        if not convex:
            width = hi - lo
            newton = newton & (cvx_rows | (width <= 0.5 * widths[0]))
            widths = [widths[1], width]
        tol_v = 2 * eps * torch.maximum(v, floor)
        size = step.abs()
        # convex rows: a Newton step below two rounding units, or one that stopped
        # shrinking while at the rounding noise of the row sum, means converged
        stalled = cvx_rows & newton & ((size <= tol_v) | ((size >= last) & (size <= noise * tol_v)))
        done = done | ((F - 1).abs() <= tol_f) | (hi - lo <= tol_v) | stalled
        if bool(done.all()):
            return v, n_iter, (F, F1, *extra)
        last = torch.where(newton, size, torch.full_like(last, math.inf))  # compare Newton with Newton only
        v = torch.where(done, v, torch.where(newton, new, (lo + hi) / 2))
    raise RuntimeError(f"{what} did not reach float resolution in {max_iter} steps; please report this input "
                       "(it should be impossible)")


def entmax_offset(X: Tensor, a: float | Tensor, max_iter: int | None = None, score_units: bool = False
                  ) -> tuple[Tensor, int, bool]:
    """Solve ``Σ_j u_j^{1/a} = 1`` along the last dim, relative to the row maximum.

    ``X = a (x - max x)`` (``a = α - 1``, entries ``<= 0``, ``-inf`` = masked; every row
    must hold a finite entry). The unknown is the offset ``σ ∈ [0, 1]`` with
    ``u = (1 + X - σ)_+`` (α-entmax's ``τ = σ - 1`` in the units of ``X``) or, for a
    float α > 2, ``ρ = 1 - σ`` with ``u = (X + ρ)_+`` (see :func:`entmax_weights`). Working
    relative to the max keeps the answer exact for huge scores and for α → 1.

    Safeguarded Newton inside a shrinking bracket ``[lo, hi]`` (``F = Σ u^m`` crosses 1
    between ``v = 0`` and ``v = 1``). The step is Newton's on
    ``φ = ||u||_m - 1`` (``m = 1/a``), convex and nearly linear for ``m >= 1`` (α <= 2:
    from ``σ = 0`` it climbs monotonically to the root) and exactly linear in the softmax
    limit; written as ``Δ = ∓F expm1(-a log F) / F₁`` (``F₁ = Σ u^{m-1}``) it stays
    accurate when ``a`` is tiny. A step that leaves the bracket or is not finite is
    replaced by bisection, and for α > 2 a bisection is also forced whenever two steps
    did not halve the bracket, so the bracket closes at least geometrically.

    A row stops when ``|F - 1| <= 2 eps``, when the
    bracket is below two rounding units of ``max(v, a)`` (α <= 2) or of ``v`` (α > 2),
    or (α <= 2) when a Newton step is below that or stops shrinking at the rounding noise
    of the row sum. Bisection alone
    meets the bracket test within ``2 log2(1/(eps·min(a, 1))) + 40`` steps, which is the
    loop's bound; reaching it raises instead of returning an unconverged answer.

    With ``score_units`` (float α > 2 only), ``X`` is ``x - max x`` and the unknown is
    ``r = ρ/a`` in score units, ``u = a (X + r)``: this avoids the rounding of ``a·(x - max)``,
    which near-ties at the support's edge would otherwise amplify.

    Returns:
        ``(v, n_iter, edge)``: ``v`` shaped ``(..., 1)`` (σ, or ρ when ``edge``; ``r`` with
        ``score_units``).
    """
    dt = X.dtype
    eps = torch.finfo(dt).eps
    shape = X.shape[:-1] + (1,)
    m = 1.0 / a
    int_m = None
    if not isinstance(m, Tensor) and abs(m - round(m)) < 1e-9:
        int_m = int(round(m))
    edge = not isinstance(a, Tensor) and a > 1
    unit = a if edge and score_units else 1.0
    convex = bool((a <= 1).all()) if isinstance(a, Tensor) else a <= 1
    a_t = torch.as_tensor(a, dtype=dt, device=X.device)
    floor = torch.where(a_t <= 1, a_t, torch.full_like(a_t, eps / unit)).expand(shape)
    cvx_rows = (a_t <= 1).expand(shape)
    tol_f = 2 * eps
    lo = X.new_zeros(shape)
    hi = X.new_full(shape, 1.0 / unit)
    v = hi.clone() if edge else lo.clone()
    sgn = 1.0 / unit if edge else -1.0  # F increases with ρ, decreases with σ
    noise = 2 * math.log2(X.shape[-1] + 1)  # rounding of a sum of n terms, in units of tol_v
    if max_iter is None:
        max_iter = iteration_bound(a_t, eps)

    def evaluate(v):
        w, w1 = entmax_weights(X, v, m, int_m, edge, unit)
        return w.sum(dim=-1, keepdim=True), w1.sum(dim=-1, keepdim=True)

    v, n_iter, _ = bracketed_newton(evaluate, v, lo, hi, a, sgn, edge, convex, cvx_rows, floor, noise, tol_f,
                                    torch.zeros(shape, dtype=torch.bool, device=X.device), max_iter,
                                    "entmax threshold")
    return v, n_iter, edge


def _relative(x: Tensor, alpha):
    """``(X, mx, dead, am1)``: the scores relative to the row max in units of ``α − 1``
    (the max entry 0, masked entries ``-inf``), the row max (0 on a fully masked row),
    which rows are fully masked, and ``α − 1``."""
    mx = x.amax(dim=-1, keepdim=True)
    dead = torch.isneginf(mx)
    mx = torch.where(dead, torch.zeros_like(mx), mx)
    am1 = alpha - 1
    if isinstance(am1, Tensor):
        am1 = am1.to(x.dtype)
    return (x - mx) * am1, mx, dead, am1


def _newton_sparse_orders(x: Tensor, alpha: float, tol: float | None = None, max_iter: int = 40):
    """The fast path for α = 2 and α = 1.5 (m = 1, 2): Newton on the convex ``||[X - τ]_+||_m``
    from the left, whose support is exact once it stops changing; the closed form on that
    support then gives τ exactly (see :func:`entmax_threshold`). Returns ``(X, tau, dead, mx, am1, n_iter)``
    with ``tau`` in the units of ``X`` (monotone convergence: the iteration cap is never what stops it
    on a finite row, as the support can only shrink, at most n times)."""
    tol = _default_tol(x.dtype) if tol is None else tol
    X, mx, dead, am1 = _relative(x, alpha)
    m = 1.0 / am1
    int_m = None
    if not isinstance(m, Tensor) and abs(m - round(m)) < 1e-9:
        int_m = int(round(m))
    # Bracket: f(-1) >= 0 (the max alone gives 1), f(0) = -1.
    lo = torch.full_like(mx, -1.0)
    hi = torch.zeros_like(mx)
    tau = lo.clone()
    tiny = torch.finfo(x.dtype).tiny
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        u = (X - tau).clamp_min_(0)
        if int_m == 1:  # sign(u) is the support indicator, without a bool -> float copy
            s_m, s_m1 = u.sum(dim=-1, keepdim=True), u.sign().sum(dim=-1, keepdim=True)
        elif int_m == 2:
            s_m, s_m1 = (u * u).sum(dim=-1, keepdim=True), u.sum(dim=-1, keepdim=True)
        else:
            if int_m is not None and int_m <= 4:  # repeated products beat pow()
                um1 = u * u if int_m > 2 else u
                for _ in range(int_m - 3):
                    um1 = um1 * u
            elif int_m is not None:
                um1 = u.pow(int_m - 1)
            elif not isinstance(m, Tensor) and m > 1:  # positive exponent: 0 stays 0
                um1 = u.pow(m - 1)
            else:
                um1 = torch.where(u > 0, u.pow(m - 1), torch.zeros_like(u))
            s_m = (um1 * u).sum(dim=-1, keepdim=True)
            s_m1 = um1.sum(dim=-1, keepdim=True)
        f = s_m - 1
        done = (f.abs() <= tol) | dead
        if bool(done.all()):
            break
        lo = torch.where(f > 0, tau, lo)
        hi = torch.where(f < 0, tau, hi)
        phi = s_m.pow(am1)  # ||u||_m
        newton = tau + (phi - 1) * s_m / (phi * s_m1).clamp_min(tiny)
        ok = (newton > lo) & (newton < hi) & (s_m1 > 0)
        tau = torch.where(done, tau, torch.where(ok, newton, (lo + hi) / 2))
    return X, tau, dead, mx, am1, n_iter


def entmax_threshold(
    x: Tensor,
    alpha: float | Tensor,
    tol: float | None = None,
    max_iter: int | None = None,
) -> tuple[Tensor, int]:
    """α-entmax threshold for any α > 1 along the last dim (bracketed safeguarded Newton).

    Works relative to the row maximum (:func:`entmax_offset`), so scores of any magnitude
    and α close to 1 keep their exact answer. For α = 2 and α = 1.5 the support found this
    way then gives ``τ`` in closed form (the same formula the sort-based solution
    evaluates), so those are exact, without sorting.

    Args:
        x: scores ``(..., n)``; ``-inf`` = masked.
        alpha: a float > 1 or a tensor ``(..., 1)`` broadcastable to ``x`` (all > 1).
        tol: unused (kept for compatibility): the solver stops at float resolution.
        max_iter: override the guaranteed iteration bound (tests only).

    Returns:
        ``(tau, n_iter)``: ``tau`` of shape ``(..., 1)`` with
        ``p = clamp((alpha-1) x - tau, min=0) ** (1/(alpha-1))``, and the number of
        passes used. For α very close to 1, ``tau`` in these units cannot resolve the
        answer; :func:`kernelattn.mappings.entmax` uses :func:`entmax_offset` directly.
    """
    if not isinstance(alpha, Tensor) and float(alpha) in (2.0, 1.5):
        X, tau, dead, mx, am1, n_iter = _newton_sparse_orders(x, float(alpha))
        int_m = 1 if float(alpha) == 2.0 else 2
        tau = _closed_form_on_support(X, tau, int_m)
        # certify: the closed form is exact only on the right support; a row that the fast
        # path left unconverged goes through the bracketed solver below instead
        err = ((X - tau).clamp_min(0) ** int_m).sum(dim=-1, keepdim=True) - 1
        if bool(((err.abs() <= 1e3 * _default_tol(x.dtype)) | dead).all()):
            return torch.where(dead, torch.full_like(tau, float("inf")), tau + mx * am1), n_iter
    X, mx, dead, am1 = _relative(x, alpha)
    X = torch.where(dead, torch.zeros_like(X), X)
    v, n_iter, edge = entmax_offset(X, am1)
    tau = -v if edge else v - 1
    int_m = None
    if not isinstance(am1, Tensor) and abs(1 / am1 - round(1 / am1)) < 1e-9:
        int_m = int(round(1 / am1))
    if int_m in (1, 2):
        tau = _closed_form_on_support(X, tau, int_m)
    tau = torch.where(dead, torch.full_like(tau, float("inf")), tau + mx * am1)
    return tau, n_iter


def _closed_form_on_support(X: Tensor, tau: Tensor, m: int) -> Tensor:
    """Exact τ given the support ``{X > τ}`` (m = 1: sparsemax, m = 2: 1.5-entmax)."""
    ind = (X - tau).clamp_min_(0).sign_()
    k = ind.sum(dim=-1, keepdim=True).clamp_min(1)
    Xs = torch.nan_to_num_(X * ind, nan=0.0)  # masked: -inf * 0 = nan -> 0
    s1 = Xs.sum(dim=-1, keepdim=True)
    if m == 1:
        return (s1 - 1) / k
    s2 = (Xs * Xs).sum(dim=-1, keepdim=True)
    mean = s1 / k
    return mean - torch.sqrt(((1 - (s2 - s1 * mean)) / k).clamp_min(0))


def entmax_from_threshold(x: Tensor, tau: Tensor, alpha: float | Tensor) -> Tensor:
    """Rebuild ``p = clamp((alpha-1) x - tau, min=0) ** (1/(alpha-1))`` (any α > 1)."""
    am1 = alpha - 1
    u = (x * am1 - tau).clamp_min(0)
    if isinstance(am1, Tensor):
        return u.pow(1.0 / am1)
    m = 1.0 / am1
    if abs(m - round(m)) < 1e-9:
        return u.pow(int(round(m)))
    return u.pow(m)
