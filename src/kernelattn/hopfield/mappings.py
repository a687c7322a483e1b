"""Mappings of Hopfield–Fenchel–Young memories: α-entmax, α-normmax and k-subsets.

Every mapping here is a regularised argmax ``ŷ_Ω(θ) = argmax_{p ∈ C} ⟨p, θ⟩ − Ω(p)`` over
a convex set ``C``; its conjugate ``Ω*(θ) = ⟨ŷ, θ⟩ − Ω(ŷ)`` is what the Hopfield energy
is made of (``∇Ω* = ŷ``, Danskin). The three families:

* **α-entmax** (softmax α = 1, sparsemax α = 2): ``C`` the simplex, ``Ω`` the Tsallis
  negentropy ``(Σ p^α − 1) / (α(α−1))`` (Shannon ``Σ p log p`` at α = 1). The solver is
  :func:`kernelattn.mappings.entmax`.
* **α-normmax** (α > 1): ``C`` the simplex, ``Ω(p) = ||p||_α − 1`` (the norm negentropy).
  Stationarity gives ``p ∝ [θ − τ]_+^{1/(α−1)}`` with ``τ`` the root of
  ``Σ [θ − τ]_+^{α/(α−1)} = 1``; at the root ``⟨p, θ⟩ − ||p||_α = τ``.
* **k-subsets** (SparseMAP over subsets of size k): ``C = {0 ≤ p ≤ 1, Σ p = k}`` (the
  capped simplex, the marginal polytope of k-subsets), ``Ω = ½||p||²``, so ``ŷ`` is the
  Euclidean projection ``clip(θ − τ, 0, 1)``.

Scores follow ``torch.softmax(x, dim)``: ``-inf`` is masked, a fully masked row returns
zeros, half precision is solved in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..mappings import Mapping, resolve_mapping
from .._validation import check_alpha, check_entmax_alpha, check_scores, compute_dtype
from ..mappings.entmax import EntmaxFunction, masked_softmax
from ..mappings.threshold import entmax15_threshold, entmax_threshold

__all__ = ["normmax", "ksubsets", "HopfieldMapping", "resolve_hopfield_mapping", "HOPFIELD_METHODS"]

HOPFIELD_METHODS = ("softmax", "sparsemax", "entmax15", "entmax43", "entmax:<alpha>", "normmax",
                    "normmax:<alpha>", "ksubsets:<k>")


def _to_last(x: Tensor, dim: int) -> Tensor:
    return x if dim == x.dim() - 1 else x.transpose(dim, -1)


def _pow_pos(u: Tensor, e: float | Tensor) -> Tensor:
    """``u**e`` on ``u > 0`` and 0 elsewhere, with a finite gradient at ``u = 0``."""
    pos = u > 0
    return torch.where(pos, torch.where(pos, u, torch.ones_like(u)).pow(e), torch.zeros_like(u))


# ----------------------------------------------------------------------------- normmax


def normmax_threshold(x: Tensor, alpha: float | Tensor) -> Tensor:
    """Root ``τ`` of ``Σ_j [x_j − τ]_+^{α/(α−1)} = 1`` along the last dim (no autograd).

    With ``m = α/(α−1)`` this is the α-entmax threshold of ``m·x`` at ``α' = 1 + 1/m``
    (``[x/m·m − τ]_+^m``), so the tested entmax root finders are reused: exact and
    sort-based for normmax-2 (``α' = 1.5``), safeguarded Newton otherwise, plus one
    Newton polish. Masked rows (all ``-inf``) get ``τ = +inf``.
    """
    m = alpha / (alpha - 1)
    if not isinstance(m, Tensor) and abs(m - 2.0) < 1e-12:
        tau, _ = entmax15_threshold(2.0 * x)
    else:
        tau, _ = entmax_threshold(m * x, 1.0 + 1.0 / m)
    # One Newton step on F(τ) = Σ u^m − 1 takes the float tolerance to round-off.
    fin = torch.isfinite(tau)
    t0 = torch.where(fin, tau, torch.zeros_like(tau))
    u = (x - t0).clamp_min(0)
    f = _pow_pos(u, m).sum(-1, keepdim=True) - 1
    df = (m * _pow_pos(u, m - 1)).sum(-1, keepdim=True)
    step = torch.where(df > 0, f / df.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(f))
    return torch.where(fin, t0 + step, tau)


def normmax(x: Tensor, alpha: float | Tensor = 2.0, dim: int = -1) -> Tensor:
    """α-normmax: ``argmax_{p ∈ Δ} ⟨p, x⟩ − ||p||_α`` (sparse; exact retrieval at margin 1).

    ``p_j ∝ [x_j − τ]_+^{1/(α−1)}`` with ``τ`` solving ``Σ [x_j − τ]_+^{α/(α−1)} = 1``.
    Differentiable in ``x`` and in a tensor ``α`` by implicit differentiation of the
    threshold equation (autograd through one re-attached step of it), so the Jacobian is
    exact wherever the support is stable.

    Args:
        x: scores of any shape; ``-inf`` = masked.
        alpha: float > 1 or a tensor > 1 with ``x.dim()`` dims and size 1 on ``dim``
            (a learnable per-head α); α = 2 is the common choice.
        dim: dimension to normalise over.

    Returns:
        Tensor of ``x``'s shape and dtype on the simplex (zeros on fully masked rows).
    """
    dim = check_scores(x, dim)
    alpha = check_entmax_alpha(alpha, x, dim)
    if x.shape[dim] == 0:
        return x * 0  # nothing to normalise over (as torch.softmax)
    if (alpha <= 1).any() if isinstance(alpha, Tensor) else alpha <= 1:
        raise ValueError("normmax needs alpha > 1 (alpha = 1 is argmax, not differentiable); got "
                         f"{alpha if not isinstance(alpha, Tensor) else alpha.min().item()}")
    cdt = compute_dtype(x)
    xl = _to_last(x.to(cdt), dim)
    if isinstance(alpha, Tensor):
        a = _to_last(alpha.to(cdt), dim) if alpha.dim() else alpha.to(cdt).reshape([1] * xl.dim())
        a = a.expand(*xl.shape[:-1], 1)
    else:
        a = alpha
    dead = torch.isneginf(xl).all(dim=-1, keepdim=True)
    # relative to the row max (p is shift invariant): τ = max - O(1) cannot be resolved
    # next to scores of 1e8 in float32, which gave all-zero rows
    mx = xl.detach().amax(dim=-1, keepdim=True)
    xs = torch.where(dead, torch.zeros_like(xl), xl - torch.where(dead, torch.zeros_like(mx), mx))
    m = a / (a - 1)
    with torch.no_grad():
        tau0 = normmax_threshold(xs.detach(), a.detach() if isinstance(a, Tensor) else a)
    # Implicit function theorem: τ̃ = τ0 + (F − F.detach()) / ∂F/∂τ has value τ0 and the
    # exact dτ/dx, dτ/dα, because F(x, τ0, α) = 0 defines τ.
    u0 = (xs - tau0).clamp_min(0)
    f = _pow_pos(u0, m).sum(-1, keepdim=True)
    df = (m * _pow_pos(u0, m - 1)).sum(-1, keepdim=True).detach().clamp_min(torch.finfo(cdt).tiny)
    tau = tau0 + (f - f.detach()) / df
    w = _pow_pos((xs - tau).clamp_min(0), m - 1)
    p = w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(cdt).tiny)
    p = torch.where(dead, torch.zeros_like(p), p)
    return _to_last(p, dim).to(x.dtype)


# ---------------------------------------------------------------------------- k-subsets


def ksubsets_threshold(x: Tensor, k: float, n_iter: int = 60) -> Tensor:
    """``τ`` with ``Σ clip(x − τ, 0, 1) = k`` along the last dim (no autograd).

    Bisection on the bracket ``[min x − 1, max x]`` (the sum is monotone and piecewise
    linear in ``τ``), then an exact solve on the identified free set
    ``τ = (Σ_F x + |U| − k) / |F|`` (U = entries clipped at 1). Rows with at most ``k``
    finite entries get ``τ = -inf`` (every finite entry at 1).
    """
    fin = torch.isfinite(x)
    n_fin = fin.sum(-1, keepdim=True)
    big = torch.finfo(x.dtype).max
    hi = torch.where(fin, x, torch.full_like(x, -big)).amax(-1, keepdim=True)
    lo = torch.where(fin, x, torch.full_like(x, big)).amin(-1, keepdim=True) - 1
    few = n_fin <= k
    hi = torch.where(few, torch.zeros_like(hi), hi)
    lo = torch.where(few, torch.zeros_like(lo), lo)
    for _ in range(n_iter):
        mid = (lo + hi) / 2
        s = (x - mid).clamp(0, 1).sum(-1, keepdim=True)
        too_much = s > k
        lo = torch.where(too_much, mid, lo)
        hi = torch.where(too_much, hi, mid)
    tau = (lo + hi) / 2
    z = x - tau
    free = (z > 0) & (z < 1)
    n_free = free.sum(-1, keepdim=True)
    n_up = (z >= 1).sum(-1, keepdim=True)
    exact = (torch.where(free, x, torch.zeros_like(x)).sum(-1, keepdim=True) + n_up - k) / n_free.clamp_min(1)
    tau = torch.where(n_free > 0, exact, tau)
    return torch.where(few, torch.full_like(tau, -math.inf), tau)


class KSubsetsFunction(torch.autograd.Function):
    """Projection onto the capped simplex; backward ``1_F ⊙ (g − mean_F g)`` (F: free coords)."""

    @staticmethod
    def forward(ctx, x: Tensor, k: float, dim: int) -> Tensor:
        cdt = compute_dtype(x)
        xl = _to_last(x.to(cdt), dim)
        tau = ksubsets_threshold(xl, k)
        z = xl - tau
        p = torch.where(torch.isneginf(xl), torch.zeros_like(xl), z.clamp(0, 1))
        free = (z > 0) & (z < 1)
        ctx.dim = dim
        ctx.save_for_backward(free)
        return _to_last(p, dim).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (free,) = ctx.saved_tensors
        g = _to_last(grad, ctx.dim).to(torch.float64 if grad.dtype == torch.float64 else torch.float32)
        fr = free.to(g.dtype)
        mean = (g * fr).sum(-1, keepdim=True) / fr.sum(-1, keepdim=True).clamp_min(1)
        dx = fr * (g - mean)
        return _to_last(dx, ctx.dim).to(grad.dtype), None, None


def ksubsets(x: Tensor, k: float = 2, dim: int = -1) -> Tensor:
    """k-subsets SparseMAP: Euclidean projection of ``x`` onto ``{0 ≤ p ≤ 1, Σ p = k}``.

    The marginals of the sparsest distribution over size-k subsets that SparseMAP picks;
    a Hopfield memory with this mapping retrieves an association of k patterns.

    Args:
        x: scores of any shape; ``-inf`` = masked.
        k: the budget (> 0); a row with at most ``k`` unmasked entries puts 1 on each of
            them (the sum is then the number of unmasked entries).
        dim: dimension to project over.

    Returns:
        Tensor of ``x``'s shape and dtype with entries in ``[0, 1]`` summing to ``k``.
    """
    dim = check_scores(x, dim)
    if isinstance(k, bool) or not float(k) > 0:
        raise ValueError(f"k must be > 0 (the number of patterns to associate), got {k!r}")
    if x.shape[dim] == 0:
        return x * 0  # nothing to project
    return KSubsetsFunction.apply(x, float(k), dim)


# ------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class HopfieldMapping:
    """A Hopfield–Fenchel–Young mapping chosen by name, callable as ``mapping(scores, dim)``.

    Attributes:
        name: canonical name (``softmax``, ``sparsemax``, ``entmax15``, ``entmax:1.25``,
            ``normmax:2``, ``ksubsets:3``...).
        kind: ``"entmax"``, ``"normmax"`` or ``"ksubsets"``.
        alpha: α of entmax (1 = softmax) or normmax.
        k: budget of k-subsets.
    """

    name: str
    kind: str
    alpha: float | None = None
    k: float | None = None

    @property
    def total(self) -> float:
        """``Σ p``: 1 on the simplex, ``k`` for k-subsets."""
        return float(self.k) if self.kind == "ksubsets" else 1.0

    @property
    def margin(self) -> float | None:
        """Score gap ``β(x_iᵀx_i − max_{j≠i} x_iᵀx_j)`` at which pattern ``x_i`` becomes an
        exact fixed point: ``1/(α−1)`` for α-entmax, 1 for every normmax, ``inf`` for
        softmax (never exact), ``None`` for k-subsets (it retrieves associations)."""
        if self.kind == "entmax":
            return math.inf if self.alpha == 1.0 else 1.0 / (self.alpha - 1.0)
        if self.kind == "normmax":
            return 1.0
        return None

    def __call__(self, x: Tensor, dim: int = -1, alpha: Tensor | None = None) -> Tensor:
        """Apply the mapping; ``alpha`` (a tensor) overrides the stored α (learnable α)."""
        if self.kind == "entmax":
            if alpha is not None:
                dim = check_scores(x, dim)
                return EntmaxFunction.apply(x, check_alpha(alpha, x, dim), dim)
            dim = check_scores(x, dim)
            if self.alpha == 1.0:
                return masked_softmax(x, dim)
            return EntmaxFunction.apply(x, self.alpha, dim)
        if self.kind == "normmax":
            return normmax(x, self.alpha if alpha is None else alpha, dim)
        return ksubsets(x, self.k, dim)

    def regularizer(self, p: Tensor, dim: int = -1, alpha: float | Tensor | None = None) -> Tensor:
        """``Ω(p)`` reduced over ``dim`` (the negentropy; ``p`` a point of ``C``)."""
        a = self.alpha if alpha is None else alpha
        if self.kind == "entmax":
            if not isinstance(a, Tensor) and a == 1.0:
                return torch.special.xlogy(p, p).sum(dim)
            return ((_pow_pos(p, a).sum(dim, keepdim=True) - 1) / (a * (a - 1))).squeeze(dim)
        if self.kind == "normmax":
            return (_pow_pos(p, a).sum(dim, keepdim=True).pow(1.0 / a) - 1).squeeze(dim)
        return 0.5 * (p * p).sum(dim)

    def conjugate(self, x: Tensor, dim: int = -1, alpha: Tensor | None = None) -> Tensor:
        """``Ω*(x) = max_{p ∈ C} ⟨p, x⟩ − Ω(p)``, reduced over ``dim`` (its gradient is
        ``self(x)``); rows with every score masked give ``-inf``."""
        if self.kind == "entmax" and alpha is None and self.alpha == 1.0:
            return torch.logsumexp(x, dim)
        p = self(x, dim, alpha)
        px = torch.where(p > 0, p * x, torch.zeros_like(x)).sum(dim)
        out = px - self.regularizer(p, dim, alpha)
        dead = torch.isneginf(x).all(dim)
        return torch.where(dead, torch.full_like(out, -math.inf), out)

    def uniform_regularizer(self, n: int | Tensor) -> float | Tensor:
        """``Ω`` at the uniform point of ``C`` over ``n`` entries (its minimum over ``C``)."""
        n = torch.as_tensor(n, dtype=torch.float64)
        if self.kind == "entmax":
            if self.alpha == 1.0:
                return -torch.log(n)
            a = self.alpha
            return (n ** (1 - a) - 1) / (a * (a - 1))
        if self.kind == "normmax":
            return n ** (1.0 / self.alpha - 1.0) - 1.0
        kk = torch.minimum(torch.as_tensor(float(self.k), dtype=torch.float64), n)
        return kk * kk / (2 * n)


def _parse_number(name: str, what: str, example: str) -> float:
    try:
        return float(name.split(":", 1)[1])
    except ValueError:
        raise ValueError(f"mapping {name!r}: expected {what}, e.g. {example}") from None


def resolve_hopfield_mapping(method: str | Mapping | HopfieldMapping) -> HopfieldMapping:
    """Turn a name into a :class:`HopfieldMapping`.

    Args:
        method: ``softmax``, ``sparsemax``, ``entmax15``, ``entmax43``,
            ``entmax:<alpha>`` (and the kernel aliases ``gaussian``, ``epanechnikov``,
            ``biweight``, ``triweight``), ``normmax`` (= ``normmax:2``),
            ``normmax:<alpha>`` (α > 1), ``ksubsets:<k>`` (k > 0), an entmax-kind
            :class:`kernelattn.mappings.Mapping`, or a :class:`HopfieldMapping`.

    Raises:
        ValueError: unknown name, or a mapping with no Fenchel–Young energy (normalised
            ReLU, ReLU-max, top-k).
    """
    if isinstance(method, HopfieldMapping):
        return method
    if isinstance(method, str):
        raw = method.strip().lower()
        if raw == "normmax" or raw.startswith("normmax:"):
            a = 2.0 if raw == "normmax" else _parse_number(raw, "normmax:<alpha> with alpha > 1", "normmax:2")
            if not a > 1:
                raise ValueError(f"mapping {method!r}: normmax needs alpha > 1, got {a:g}")
            return HopfieldMapping(name=f"normmax:{a:g}", kind="normmax", alpha=a)
        if raw.startswith("ksubsets:") or raw == "ksubsets":
            if raw == "ksubsets":
                raise ValueError("mapping 'ksubsets' needs a budget: ksubsets:<k>, e.g. ksubsets:2")
            k = _parse_number(raw, "ksubsets:<k> with k > 0", "ksubsets:2")
            if not k > 0:
                raise ValueError(f"mapping {method!r}: k must be > 0, got {k:g}")
            return HopfieldMapping(name=f"ksubsets:{k:g}", kind="ksubsets", k=k)
        try:
            method = resolve_mapping(method)
        except ValueError as err:
            raise ValueError(f"{err}; Hopfield memories also take normmax:<alpha> and ksubsets:<k>") from None
    if isinstance(method, Mapping):
        if method.kind != "entmax":
            raise ValueError(f"mapping {method.name!r} is not a regularised argmax, so it has no Hopfield "
                             f"energy; choose one of: {', '.join(HOPFIELD_METHODS)}")
        return HopfieldMapping(name=method.name, kind="entmax", alpha=float(method.alpha))
    raise ValueError(f"mapping must be a name or a Mapping, got {type(method).__name__}")
