"""Adaptive normalisation: softmax, sparsemax and α-entmax with closed-form backward.

Kernel view (SPEC §1): α-entmax with α = 1 + 1/n is the n-weight kernel
``(1 - u²)_+^n`` whose bandwidth adapts per query so the weights sum to one; α = 2 is
Epanechnikov (sparsemax), α = 1.5 biweight, α = 4/3 triweight, α → 1 the Gaussian
(softmax).

Every function takes scores like ``torch.softmax(x, dim)``. ``-inf`` entries are masked;
a fully masked row returns zeros with zero gradient. Half-precision input is solved in
float32 and returned in the input dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validation import check_entmax_alpha, check_scores, compute_dtype
from .threshold import entmax_offset, entmax_threshold, entmax_weights, softmax_limit

__all__ = [
    "softmax", "sparsemax", "entmax15", "entmax", "entmax_backward", "alpha_parameter", "alpha_from_parameter",
    "Softmax", "Sparsemax", "Entmax15", "Entmax",
]


def _to_last(x: Tensor, dim: int) -> Tensor:
    return x if dim == x.dim() - 1 else x.transpose(dim, -1)


def _shift_max(x: Tensor) -> Tensor:
    mx = x.amax(dim=-1, keepdim=True)
    return x - torch.where(torch.isneginf(mx), torch.zeros_like(mx), mx)


def masked_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """``torch.softmax`` that returns zeros (not NaN) on fully masked rows. No checks."""
    dead = torch.isneginf(x).all(dim=dim, keepdim=True)
    if not bool(dead.any()):
        return torch.softmax(x, dim=dim)
    p = torch.softmax(x.masked_fill(dead, 0.0), dim=dim)
    return p.masked_fill(dead, 0.0)


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """Softmax (Gaussian kernel, α = 1) with masked-row safety.

    Args:
        x: scores of any shape; ``-inf`` = masked.
        dim: dimension to normalise over.

    Returns:
        Tensor of ``x``'s shape and dtype; fully masked rows are zeros.
    """
    dim = check_scores(x, dim)
    return masked_softmax(x, dim)


def entmax_backward(p: Tensor, grad: Tensor, alpha: float | Tensor, dim: int = -1) -> Tensor:
    """Closed-form vector-Jacobian product of α-entmax from its output only.

    ``dz = g ⊙ (dp - Σ(g ⊙ dp) / Σ g)`` with ``g = p^(2-α)`` on the support and 0 off it
    (``g = 1[p > 0]`` for sparsemax). Rows with empty support get zero gradient.

    Args:
        p: entmax output (float32/float64), any shape.
        grad: upstream gradient, same shape as ``p``.
        alpha: float or tensor broadcastable to ``p``.
        dim: the normalised dimension.
    """
    if isinstance(alpha, Tensor):
        g = torch.where(p > 0, p.pow(2 - alpha), torch.zeros_like(p))
    elif alpha == 2.0:
        g = p.sign()
    elif alpha == 1.5:
        g = p.sqrt()
    elif alpha < 2.0:  # positive exponent keeps zeros at zero
        g = p.pow(2 - alpha)
    else:
        g = torch.where(p > 0, p.pow(2 - alpha), torch.zeros_like(p))
    gsum = g.sum(dim=dim, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
    dgrad = (g * grad).sum(dim=dim, keepdim=True) / gsum
    return g * (grad - dgrad)


def _expm1_ratio(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(expm1(x)/x, (expm1(x) - x)/x²)``, both accurate as ``x → 0`` (series below 1e-3)."""
    small = x.abs() < 1e-3
    xs = torch.where(small, torch.ones_like(x), x)
    q1 = torch.where(small, 1 + x / 2 + x * x / 6, torch.expm1(xs) / xs)
    q2 = torch.where(small, 0.5 + x / 6 + x * x / 24 + x * x * x / 120, (torch.expm1(xs) - xs) / (xs * xs))
    return q1, q2


def _alpha_grad(p: Tensor, grad: Tensor, alpha: Tensor, dim: int) -> Tensor:
    """Gradient of the loss w.r.t. α, per row (shape of p with ``dim`` reduced to 1).

    With β = 1/(α-1), g = p^{2-α}, ĝ = g/Σg, L = log p and H = Σ p L the closed form is
    ``dL/dα = β² Σ dp (p - ĝ) - β Σ dp (p L - ĝ H)``. Both terms grow like β as α → 1 and
    cancel, so for α < 2 it is evaluated in the algebraically equal form

        dL/dα = Σ_j dp_j p_j [R - r_j - a c_j R / (1 + Z)],

    ``a = α-1``, ``e_j = expm1(-a L_j)/a``, ``r_j = (e_j + L_j)/a = L_j² (expm1(x) - x)/x²``
    at ``x = -a L_j``, ``R = Σ p r``, ``c_j = Σ p e - e_j``, ``Z = a Σ p e`` — no β left,
    so it is accurate down to α = 1, where it gives the softmax limit
    ``-½ Σ dp p (L² - Σ p L²)``. Computed in float64 (per-row sums only).
    """
    dt = p.dtype
    p, grad, alpha = p.double(), grad.double(), alpha.double()
    a = alpha - 1
    supp = p > 0
    L = torch.where(supp, torch.log(torch.where(supp, p, torch.ones_like(p))), torch.zeros_like(p))
    near = a < 1  # α < 2: the cancellation-free form (its expm1 cannot overflow there)
    a_n = torch.where(near, a, torch.zeros_like(a))
    x = -a_n * L
    q1, q2 = _expm1_ratio(x)
    e = -L * q1
    r = L * L * q2
    pe = (p * e).sum(dim=dim, keepdim=True)
    R = (p * r).sum(dim=dim, keepdim=True)
    Z = a_n * pe
    c = pe - e
    da_near = (grad * p * (R - r - a_n * c * R / (1 + Z))).sum(dim=dim, keepdim=True)
    # α >= 2: the direct form has no cancellation (β <= 1)
    a_f = torch.where(near, torch.ones_like(a), a)
    beta = 1.0 / a_f
    gw = torch.where(supp, torch.exp((1 - a_f) * L), torch.zeros_like(p))  # p^{2-α}
    ghat = gw / gw.sum(dim=dim, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
    plogp = p * L
    ent = plogp.sum(dim=dim, keepdim=True)
    da_far = beta * beta * (grad * (p - ghat)).sum(dim=dim, keepdim=True)
    da_far = da_far - beta * (grad * (plogp - ghat * ent)).sum(dim=dim, keepdim=True)
    return torch.where(near, da_near, da_far).to(dt)


def _entmax_rows(xl: Tensor, a: float | Tensor) -> Tensor:
    """α-entmax along the last dim of max-shifted scores ``xl`` (a = α - 1 > eps; float or (..., 1))."""
    dead = torch.isneginf(xl).all(dim=-1, keepdim=True)
    score_units = not isinstance(a, Tensor) and a > 1  # see entmax_offset
    X = torch.where(dead, torch.zeros_like(xl), xl if score_units else xl * a)
    v, _, edge = entmax_offset(X, a, score_units=score_units)
    if score_units:
        # α > 2: re-solve with the origin at a score z_k next to the support's edge, so the
        # offset δ = r + z_k (often far below one rounding unit of r: a near-tie at the
        # edge) is resolved in its own right (z_j - z_k is exact for near values). Two
        # origins: the nearest score to the edge when the edge is above it (δ >= 0, the
        # solver's bracket), else the support's smallest score.
        fin = torch.isfinite(X)
        inf = torch.full_like(X, float("inf"))
        near = X.gather(-1, torch.where(fin, (X + v).abs(), inf).argmin(dim=-1, keepdim=True))
        low = torch.where(X + v > 0, X, inf).amin(dim=-1, keepdim=True)
        near = torch.where(torch.isfinite(near), near, torch.zeros_like(near))
        low = torch.where(torch.isfinite(low), low, near)
        f0, _ = entmax_weights(X - near, torch.zeros_like(near), 1.0 / a, None, True, a)
        zk = torch.where(f0.sum(dim=-1, keepdim=True) <= 1, near, low)
        X = X - zk
        v, _, edge = entmax_offset(X, a, score_units=True)
    m = 1.0 / a
    int_m = None if isinstance(m, Tensor) or abs(m - round(m)) > 1e-9 else int(round(m))
    w, _ = entmax_weights(X, v, m, int_m, edge, a if score_units else 1.0)
    # σ is at float resolution, so Σw = 1 up to rounding: dividing by it makes the sum exact
    p = w / w.sum(dim=-1, keepdim=True)
    return torch.where(dead, torch.zeros_like(p), p)


def _solve(xc: Tensor, alpha: float | Tensor, dim: int) -> Tensor:
    """Forward α-entmax in the compute dtype (α may be a tensor; rows in the softmax limit get softmax)."""
    if isinstance(alpha, Tensor) and alpha.dim() == 0:
        alpha = alpha.item()
    if not isinstance(alpha, Tensor):
        if alpha == 1.0 or softmax_limit(alpha - 1.0, xc.dtype):
            return masked_softmax(xc, dim)
        # Shift by the row max here so p is rebuilt from small numbers: with scores of
        # magnitude 1e4 in float32, x - (max + τ) would lose ~1e-3 to rounding.
        xl = _shift_max(_to_last(xc, dim))
        if alpha == 2.0:
            tau, _ = entmax_threshold(xl, alpha)
            p = (xl - tau).clamp_min(0)
        elif alpha == 1.5:
            tau, _ = entmax_threshold(xl, alpha)
            p = (xl / 2 - tau).clamp_min(0).square()
        elif alpha > 2.0 and xl.dtype == torch.float32:
            # α > 2: a weight u^{1/(α-1)} at the support's edge hinges on the last digits of
            # u, so the (exact) float32 scores are solved in float64 — a per-row cost that
            # the sensitivity is worth (the entmax package's float32 answers are off by 0.1 there)
            p = _entmax_rows(xl.double(), alpha - 1.0).float()
        else:
            p = _entmax_rows(xl, alpha - 1.0)
        return _to_last(p, dim)
    xl = _shift_max(_to_last(xc, dim))
    a = _to_last(alpha.to(xc.dtype), dim).expand(*xl.shape[:-1], 1) - 1
    is_soft = softmax_limit(a, xc.dtype)
    a_safe = torch.where(is_soft, torch.full_like(a, 1.0), a)
    p = _entmax_rows(xl, a_safe)
    if bool(is_soft.any()):
        p = torch.where(is_soft, masked_softmax(xl, -1), p)
    return _to_last(p, dim)


class EntmaxFunction(torch.autograd.Function):
    """α-entmax with closed-form backward for x and (tensor) α; saves only the output."""

    @staticmethod
    def forward(ctx, x: Tensor, alpha: float | Tensor, dim: int) -> Tensor:
        cdt = compute_dtype(x)
        p = _solve(x.to(cdt), alpha, dim)
        ctx.dim = dim
        ctx.alpha_is_tensor = isinstance(alpha, Tensor)
        if ctx.alpha_is_tensor:
            ctx.save_for_backward(p, alpha)
        else:
            ctx.alpha = float(alpha)
            ctx.save_for_backward(p)
        return p.to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        dim = ctx.dim
        if ctx.alpha_is_tensor:
            p, alpha_t = ctx.saved_tensors
            alpha = alpha_t.to(p.dtype)
        else:
            (p,) = ctx.saved_tensors
            alpha = ctx.alpha
        gp = grad.to(p.dtype)
        if not isinstance(alpha, Tensor) and alpha == 1.0:
            dx = p * (gp - (p * gp).sum(dim=dim, keepdim=True))
        else:
            dx = entmax_backward(p, gp, alpha, dim)
            if isinstance(alpha, Tensor) and bool((alpha == 1).any()):
                soft = p * (gp - (p * gp).sum(dim=dim, keepdim=True))
                dx = torch.where(alpha == 1, soft, dx)
        dalpha = None
        if ctx.alpha_is_tensor and ctx.needs_input_grad[1]:
            da = _alpha_grad(p, gp, alpha, dim)
            # Reduce over the dims along which α was broadcast.
            shape = alpha_t.shape
            if alpha_t.dim() == 0:
                da = da.sum()
            else:
                red = [i for i, (s, t) in enumerate(zip(shape, da.shape)) if s == 1 and t != 1]
                if red:
                    da = da.sum(dim=red, keepdim=True)
            dalpha = da.to(alpha_t.dtype)
        return dx.to(grad.dtype), dalpha, None


def entmax(x: Tensor, alpha: float | Tensor = 1.5, dim: int = -1) -> Tensor:
    """α-entmax: ``p_i = [(α-1) x_i - τ]_+^{1/(α-1)}`` with ``τ`` making ``Σ p = 1``.

    α = 1 is softmax, α = 2 sparsemax; α = 1 + 1/n is the n-weight compact kernel under
    adaptive normalisation. α = 2 and 1.5 use exact sort-based thresholds; other α a
    safeguarded Newton root finder (a few passes to float tolerance).

    Args:
        x: scores of any shape; ``-inf`` = masked.
        alpha: float >= 1, or a tensor >= 1 with ``x.dim()`` dims, size 1 on ``dim`` and
            broadcastable to ``x`` (e.g. ``(1, H, 1, 1)`` for one α per head); a tensor
            with ``requires_grad`` receives a gradient.
        dim: dimension to normalise over.

    Returns:
        Tensor of ``x``'s shape and dtype, non-negative, summing to one along ``dim``
        (zeros on fully masked rows).
    """
    dim = check_scores(x, dim)
    alpha = check_entmax_alpha(alpha, x, dim)
    if x.numel() == 0:  # nothing to normalise over (as torch.softmax); keeps α in the graph
        return x * 0 if not isinstance(alpha, Tensor) else x * 0 + 0 * alpha.sum()
    return EntmaxFunction.apply(x, alpha, dim)


def sparsemax(x: Tensor, dim: int = -1) -> Tensor:
    """Sparsemax = 2-entmax (Epanechnikov kernel, adaptive): Euclidean projection onto the simplex.

    Args:
        x: scores of any shape; ``-inf`` = masked.
        dim: dimension to normalise over.

    Returns:
        Tensor of ``x``'s shape and dtype.
    """
    dim = check_scores(x, dim)
    if x.shape[dim] == 0:
        return x * 0  # nothing to normalise over (as torch.softmax)
    return EntmaxFunction.apply(x, 2.0, dim)


def entmax15(x: Tensor, dim: int = -1) -> Tensor:
    """1.5-entmax (biweight kernel, adaptive), exact sort-based threshold.

    Args:
        x: scores of any shape; ``-inf`` = masked.
        dim: dimension to normalise over.

    Returns:
        Tensor of ``x``'s shape and dtype.
    """
    dim = check_scores(x, dim)
    if x.shape[dim] == 0:
        return x * 0  # nothing to normalise over (as torch.softmax)
    return EntmaxFunction.apply(x, 1.5, dim)


def alpha_parameter(alpha: float | Tensor, shape: tuple[int, ...] = ()) -> nn.Parameter:
    """An unconstrained parameter θ with ``alpha_from_parameter(θ) = alpha`` (α > 1 kept).

    α is parametrised as ``1 + softplus(θ)`` so gradient steps cannot leave α > 1.
    """
    a = torch.as_tensor(alpha, dtype=torch.float32).expand(shape).clone() if shape else \
        torch.as_tensor(alpha, dtype=torch.float32).clone()
    check_entmax_alpha(a, None, -1)
    am1 = (a - 1).clamp_min(1e-4)  # α = 1 exactly would need θ = -inf
    return nn.Parameter(am1 + torch.log(-torch.expm1(-am1)))  # inverse softplus


def alpha_from_parameter(theta: Tensor) -> Tensor:
    """α = 1 + softplus(θ)."""
    return 1 + nn.functional.softplus(theta)


class Softmax(nn.Module):
    """Module form of :func:`softmax`."""

    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return softmax(x, self.dim)


class Sparsemax(nn.Module):
    """Module form of :func:`sparsemax`."""

    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return sparsemax(x, self.dim)


class Entmax15(nn.Module):
    """Module form of :func:`entmax15`."""

    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return entmax15(x, self.dim)


class Entmax(nn.Module):
    """Module form of :func:`entmax`, optionally with a learnable α.

    Args:
        alpha: initial α (float >= 1) or a tensor of per-row α (e.g. ``(1, H, 1, 1)``).
        dim: dimension to normalise over.
        learnable: make α an ``nn.Parameter``; it is kept >= 1 by parametrising
            ``α = 1 + softplus(θ)`` so gradient steps cannot leave the valid range.
    """

    def __init__(self, alpha: float | Tensor = 1.5, dim: int = -1, learnable: bool = False):
        super().__init__()
        self.dim = dim
        self.learnable = learnable
        check_entmax_alpha(alpha, None, dim)
        if isinstance(alpha, Tensor) and alpha.requires_grad:
            if learnable:
                raise ValueError("alpha is already a tensor that requires grad: pass learnable=False to use it "
                                 "(its gradient flows to it), or a float/detached tensor with learnable=True")
            # the caller's own (e.g. learned elsewhere) α: kept as is, so its gradient flows
            self._alpha_ext = alpha
        else:
            self._alpha_ext = None
        a = torch.as_tensor(alpha.detach() if isinstance(alpha, Tensor) else alpha, dtype=torch.float32)
        if learnable:
            self.theta = alpha_parameter(a)
        else:
            self.register_buffer("_alpha", a)

    @property
    def alpha(self) -> Tensor:
        if self.learnable:
            return alpha_from_parameter(self.theta)
        if self._alpha_ext is not None:
            return self._alpha_ext
        return self._alpha

    def forward(self, x: Tensor) -> Tensor:
        a = self.alpha
        if a.dim() == 0 and not self.learnable and not a.requires_grad:
            return entmax(x, float(a), self.dim)
        if a.dim() == 0:
            a = a.reshape([1] * x.dim())
        return entmax(x, a, self.dim)
